"""Real image data sets as uint8 arrays (N, C, H, W), with class labels where the data set has them.

* ``digits``: scikit-learn's bundled handwritten digits (1,797 8x8 grey images from the UCI ML
  hand-written digits data set, CC BY 4.0), upscaled to ``image_size``. Ships with scikit-learn, so it
  works offline: tests and the CPU config use it.
* ``mnist``: LeCun's four IDX files (gzipped or not) in ``data_dir`` or in torchvision's layout below
  it (``MNIST/raw/``), read with numpy; the official 60,000 / 10,000 split. ``download: true`` fetches
  them into ``data_dir`` first (checked against their MD5).
* ``celeba``: ``img_align_celeba/`` and ``list_eval_partition.txt`` in ``data_dir`` or under
  ``celeba/``, read with PIL, centre-cropped to 148x148 (the face region) and resized, as common CelebA
  VAEs do; the official train split to train on, its test split held out.
* ``folder``: every image file under ``data_dir`` (sorted by path), converted to grey or RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

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


# MNIST's four files, as LeCun's site and every mirror name them (torchvision keeps them in MNIST/raw/).
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX element types (the third byte of the magic number) this loader reads: unsigned bytes.
_IDX_UBYTE = 0x08


def _find(directory: Path, name: str, layouts: tuple[str, ...]) -> Path | None:
    for layout in layouts:
        for candidate in (directory / layout / name, directory / layout / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format for MNIST; gzipped or not) as a uint8 array of its stated shape."""
    import gzip

    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ConfigError(f"setting.data_dir: cannot read {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or not 1 <= data[3] <= 4:
        raise ConfigError(f"setting.data_dir: {path} is not an IDX file of bytes (it starts {data[:4].hex()})")
    dims = data[3]
    shape = tuple(int(x) for x in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    body = 4 + 4 * dims
    if len(data) - body != int(np.prod(shape)):
        raise ConfigError(f"setting.data_dir: {path} holds {len(data) - body} bytes of data, its header says {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=body).reshape(shape).copy()  # writable, for torch


# Where ``download: true`` fetches MNIST from (the mirror torchvision uses, then LeCun's site), and the
# MD5 of each gzipped file; MODEL_COLLAPSE_MNIST_MIRROR names another mirror (tried first).
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def download_mnist(data_dir: Path) -> None:
    """Fetch MNIST's four gzipped IDX files into ``data_dir`` (those already there are kept), each
    checked against its MD5 and written whole or not at all."""
    import hashlib
    import os
    import urllib.request

    from ..atomic import write_file_atomic

    mirrors = [m for m in (os.environ.get("MODEL_COLLAPSE_MNIST_MIRROR"),) if m] + list(MNIST_MIRRORS)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, md5 in MNIST_MD5.items():
        if (data_dir / name).is_file():
            continue
        problems = []
        for mirror in mirrors:
            try:
                with urllib.request.urlopen(mirror.rstrip("/") + "/" + name, timeout=60) as response:
                    payload = response.read()
            except OSError as error:
                problems.append(f"{mirror}: {getattr(error, 'reason', error)}")
                continue
            if hashlib.md5(payload).hexdigest() != md5:
                problems.append(f"{mirror}: {name} has the wrong checksum")
                continue
            write_file_atomic(data_dir / name, partial(_write_bytes, payload))
            break
        else:
            raise ConfigError(f"setting.download: cannot fetch MNIST's {name} ({'; '.join(problems)})")


def _write_bytes(payload: bytes, handle: BinaryIO) -> None:
    handle.write(payload)


def _mnist(data_dir: Path, image_size: int) -> tuple[ImageSplit, ImageSplit]:
    """MNIST from its IDX files, in ``data_dir`` itself or in torchvision's ``MNIST/raw`` below it."""
    splits = []
    for split, names in MNIST_FILES.items():
        paths = [_find(data_dir, name, (".", "MNIST/raw", "mnist")) for name in names]
        missing = [name for name, path in zip(names, paths) if path is None]
        if missing:
            raise ConfigError(
                f"setting.data_dir: {data_dir} lacks MNIST's {', '.join(missing)} (or .gz), directly "
                "or under MNIST/raw/; get the four files from an MNIST mirror"
            )
        images, labels = (read_idx(path) for path in paths if path is not None)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(
                f"setting.data_dir: MNIST {split} files disagree: images {images.shape}, labels {labels.shape}"
            )
        splits.append(ImageSplit(_resize(np.ascontiguousarray(images[:, None]), image_size), labels.astype(np.int64)))
    return splits[0], splits[1]


# The face region of CelebA's aligned 178x218 images, as the common CelebA VAEs crop it.
CELEBA_CROP = 148


def _celeba(data_dir: Path, image_size: int, test_size: int) -> tuple[ImageSplit, ImageSplit]:
    """CelebA from ``img_align_celeba/`` and ``list_eval_partition.txt`` (in ``data_dir`` or under
    ``celeba/``): the official train split (0) to train on, the test split (2) held out; each image
    centre-cropped to 148x148 and resized to ``image_size``."""
    from PIL import Image

    root = next((d for d in (data_dir, data_dir / "celeba") if (d / "list_eval_partition.txt").is_file()), None)
    if root is None or not (root / "img_align_celeba").is_dir():
        raise ConfigError(
            f"setting.data_dir: {data_dir} lacks CelebA's img_align_celeba/ and list_eval_partition.txt "
            "(directly or under celeba/)"
        )
    partition: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for number, line in enumerate((root / "list_eval_partition.txt").read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ConfigError(f"setting.data_dir: {root / 'list_eval_partition.txt'} line {number}: {line!r}")
        partition[int(fields[1])].append(fields[0])

    def load(names: list[str]) -> np.ndarray:
        images = np.empty((len(names), 3, image_size, image_size), dtype=np.uint8)
        for i, name in enumerate(names):
            path = root / "img_align_celeba" / name
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    left, top = (image.width - CELEBA_CROP) // 2, (image.height - CELEBA_CROP) // 2
                    image = image.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
                    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    images[i] = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
            except OSError as error:
                raise ConfigError(f"setting.data_dir: cannot read CelebA image {path}: {error}") from None
        return images

    return ImageSplit(load(partition[0]), None), ImageSplit(load(partition[2][:test_size]), None)


def _folder(data_dir: Path, channels: int, image_size: int, test_size: int) -> tuple[ImageSplit, ImageSplit]:
    from PIL import Image

    files = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) <= test_size:
        raise ConfigError(
            f"setting.data_dir: {data_dir} holds {len(files)} images, need more than test_samples={test_size}"
        )
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except OSError as error:
            raise ConfigError(f"setting.data_dir: cannot read image {path}: {error}") from None
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    images = np.stack(arrays)[np.random.default_rng(0).permutation(len(files))]
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
    if download and dataset == "celeba":
        raise ConfigError(
            "setting.download: CelebA cannot be fetched automatically (its files sit behind Google Drive's "
            "quotas); download img_align_celeba.zip and list_eval_partition.txt from its site into data_dir"
        )
    if download:
        download_mnist(directory)
    if not directory.is_dir():
        raise ConfigError(f"setting.data_dir: {directory} is not a directory")
    if dataset == "celeba":
        return _celeba(directory, image_size, test_size)
    train, test = _mnist(directory, image_size)
    labels = test.labels[:test_size] if test.labels is not None else None
    return train, ImageSplit(test.images[:test_size], labels)
