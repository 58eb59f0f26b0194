"""The paper-scale image data sets read offline from their real file formats, without torchvision:
MNIST's IDX files (gzipped or not, flat or in torchvision's MNIST/raw layout, or fetched from a mirror)
and CelebA's aligned JPEGs with its partition list. The files are made here, in those formats."""

import gzip
import hashlib
import http.server
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_collapse.errors import ConfigError
from model_collapse.settings import images
from model_collapse.settings.images import load_images, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX format: two zero bytes, the element type (0x08: unsigned byte), the number of
    dimensions, each dimension as a big-endian int32, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_files(directory: Path, compress: bool, train: int = 12, test: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("layout,compress", [(".", True), ("MNIST/raw", False), ("MNIST/raw", True)])
def test_mnist_reads_its_idx_files_in_either_layout(tmp_path, layout, compress):
    arrays = mnist_files(tmp_path / layout, compress)
    train, test = load_images("mnist", 28, 5, str(tmp_path), False, 1)
    np.testing.assert_array_equal(train.images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(train.labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(test.images[:, 0], arrays["t10k-images-idx3-ubyte"][:5])  # test_samples of them
    np.testing.assert_array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"][:5])
    resized, _ = load_images("mnist", 16, 5, str(tmp_path), False, 1)
    assert resized.images.shape == (12, 1, 16, 16) and resized.images.dtype == np.uint8


def test_damaged_or_missing_mnist_files_get_one_line(tmp_path):
    arrays = mnist_files(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match="lacks MNIST's t10k-labels-idx1-ubyte"):
        load_images("mnist", 28, 5, str(tmp_path), False, 1)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 a zip, not an IDX file")
    with pytest.raises(ConfigError, match="is not an IDX file of bytes"):
        load_images("mnist", 28, 5, str(tmp_path), False, 1)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["t10k-labels-idx1-ubyte"])[:-2])
    with pytest.raises(ConfigError, match=r"holds 5 bytes of data, its header says \(7,\)"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["t10k-labels-idx1-ubyte"][:3]))
    with pytest.raises(ConfigError, match="MNIST test files disagree"):
        load_images("mnist", 28, 2, str(tmp_path), False, 1)


@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on localhost serving a directory, as an MNIST mirror would."""
    served = tmp_path / "mirror"
    served.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_mnist_download_fetches_checked_files_from_a_mirror(tmp_path, mirror, monkeypatch):
    served, url = mirror
    arrays = mnist_files(served, compress=True)
    monkeypatch.setenv("MODEL_COLLAPSE_MNIST_MIRROR", url)
    monkeypatch.setattr(images, "MNIST_MIRRORS", ())  # nothing but the local mirror
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz has the wrong checksum"):
        load_images("mnist", 28, 5, str(tmp_path / "data"), True, 1)  # these are not LeCun's files
    assert not list((tmp_path / "data").iterdir())  # nothing half-fetched left behind
    checksums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    monkeypatch.setattr(images, "MNIST_MD5", checksums)
    train, _ = load_images("mnist", 28, 5, str(tmp_path / "data"), True, 1)
    np.testing.assert_array_equal(train.labels, arrays["train-labels-idx1-ubyte"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(checksums)


def celeba_files(root: Path, partition: list[int]) -> None:
    """Aligned CelebA-sized images (178 x 218): a red frame outside the central 148 x 148 face region,
    green inside, and the official partition list (0 train, 1 validation, 2 test)."""
    (root / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, split in enumerate(partition, 1):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[..., 0] = 220
        top, left = (218 - 148) // 2, (178 - 148) // 2
        pixels[top : top + 148, left : left + 148] = (20, 200 - 10 * i, 40)
        Image.fromarray(pixels).save(root / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {split}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("under", [".", "celeba"])
def test_celeba_takes_the_official_splits_and_crops_the_face_region(tmp_path, under):
    celeba_files(tmp_path / under, [0, 0, 0, 1, 2, 2, 2])
    train, test = load_images("celeba", 16, 2, str(tmp_path), False, 3)
    assert train.images.shape == (3, 3, 16, 16) and test.images.shape == (2, 3, 16, 16)
    assert train.labels is None
    red, green = train.images[:, 0].astype(int), train.images[:, 1].astype(int)
    assert (green > red + 100).all()  # the red frame is cropped away at every pixel
    np.testing.assert_allclose(green.mean(axis=(1, 2)), [190, 180, 170], atol=4)  # images 1, 2, 3 in order
    np.testing.assert_allclose(test.images[:, 1].mean(axis=(1, 2)), [150, 140], atol=4)  # the test split: 5, 6


def test_celeba_problems_get_one_line(tmp_path):
    with pytest.raises(ConfigError, match="lacks CelebA's img_align_celeba/ and list_eval_partition.txt"):
        load_images("celeba", 16, 2, str(tmp_path), False, 3)
    celeba_files(tmp_path, [0, 2])
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg test\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_images("celeba", 16, 2, str(tmp_path), False, 3)
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    (tmp_path / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError, match="cannot read CelebA image"):
        load_images("celeba", 16, 2, str(tmp_path), False, 3)
    with pytest.raises(ConfigError, match="cannot be fetched automatically"):
        load_images("celeba", 16, 2, str(tmp_path), True, 3)
