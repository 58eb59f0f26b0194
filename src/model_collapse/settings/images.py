"""Real image data sets as uint8 arrays (N, C, H, W), with class labels where the data set has them.

* ``digits``: scikit-learn's bundled handwritten digits (1,797 8x8 grey images from the UCI ML
  hand-written digits data set, CC BY 4.0), upscaled to ``image_size``. Ships with scikit-learn, so it
  works offline: tests and the CPU config use it.
* ``mnist`` and ``celeba``: through torchvision from ``data_dir``, downloaded there first when
  ``download: true`` (torchvision is imported only for these; install it beside your torch build).
  CelebA is centre-cropped to 148x148 (the face region) and resized, as common CelebA VAEs do.
* ``folder``: every image file under ``data_dir`` (sorted by path), converted to grey or RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CHANNELS = {"digits": 1, "mnist": 1, "celeba": 3}


@dataclass
class ImageSplit:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray | None  # int (N,) or None


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 (N, C, h, w) images to (N, C, size, size)."""
    import torch
    import torch.nn.functional as F

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    tensor = torch.from_numpy(images).float()
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def _digits(image_size: int, test_size: int) -> tuple[ImageSplit, ImageSplit]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # values 0..16 -> 0..255
    order = np.random.default_rng(0).permutation(len(images))  # one fixed split for every run
    images, labels = _resize(images[order], image_size), digits.target[order]
    if not 0 < test_size < len(images):
        raise ConfigError(f"setting.test_samples: digits has {len(images)} images, cannot hold out {test_size}")
    return ImageSplit(images[:-test_size], labels[:-test_size]), ImageSplit(images[-test_size:], labels[-test_size:])


def _torchvision(dataset: str, data_dir: Path, download: bool, image_size: int) -> tuple[ImageSplit, ImageSplit]:
    try:
        import torchvision
        from torchvision import transforms
    except ImportError:
        raise ConfigError(
            f"setting.dataset: {dataset} needs torchvision; install the build that matches your torch"
        ) from None
    if dataset == "mnist":
        transform = transforms.Compose([transforms.Resize(image_size), transforms.PILToTensor()])
        make = lambda train: torchvision.datasets.MNIST(data_dir, train=train, download=download, transform=transform)  # noqa: E731
        splits = (make(True), make(False))
    else:
        transform = transforms.Compose(
            [transforms.CenterCrop(148), transforms.Resize(image_size), transforms.PILToTensor()]
        )
        splits = tuple(
            torchvision.datasets.CelebA(
                data_dir, split=split, target_type="attr", download=download, transform=transform
            )
            for split in ("train", "test")
        )
    result = []
    for split in splits:
        images = np.stack([np.asarray(split[i][0]) for i in range(len(split))])
        labels = np.asarray(split.targets) if dataset == "mnist" else None
        result.append(ImageSplit(images, labels))
    return result[0], result[1]


def _folder(data_dir: Path, channels: int, image_size: int, test_size: int) -> tuple[ImageSplit, ImageSplit]:
    from PIL import Image

    files = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) <= test_size:
        raise ConfigError(
            f"setting.data_dir: {data_dir} holds {len(files)} images, need more than test_samples={test_size}"
        )
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert(mode).resize((image_size, image_size), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except OSError as error:
            raise ConfigError(f"setting.data_dir: cannot read image {path}: {error}") from None
        images.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    images = np.stack(images)[np.random.default_rng(0).permutation(len(files))]
    return ImageSplit(images[:-test_size], None), ImageSplit(images[-test_size:], None)


def load_images(
    dataset: str, image_size: int, test_size: int, data_dir: str | None, download: bool, channels: int
) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) of a data set; the test split is held out and never trained on."""
    if dataset == "digits":
        return _digits(image_size, test_size)
    if data_dir is None:
        raise ConfigError(f"setting.data_dir: data set {dataset!r} needs a data directory")
    directory = Path(data_dir).expanduser()
    if dataset == "folder":
        if not directory.is_dir():
            raise ConfigError(f"setting.data_dir: {directory} is not a directory")
        return _folder(directory, channels, image_size, test_size)
    train, test = _torchvision(dataset, directory, download, image_size)
    return train, ImageSplit(test.images[:test_size], None if test.labels is None else test.labels[:test_size])
