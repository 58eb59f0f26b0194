"""Arrays on disk: ``.npy`` files (which can be memory-mapped) and ``.npz`` archives, written by this
tool and read back with pickles disabled. Whatever cannot be read as such (missing, damaged, foreign,
a pickled object array) is a ``RunDirectoryError`` naming the file, never numpy's hint to allow pickles.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import RunDirectoryError


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # (numpy's stubs misread **kwds)


def load_arrays(path: Path, required: Iterable[str]) -> dict[str, np.ndarray]:
    """Arrays from an .npz file, which must hold every name in ``required``."""
    try:  # the file opened here, so that it is closed whatever numpy makes of it
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {path}") from None
    except Exception:  # numpy raises several types for a damaged archive, some suggesting allow_pickle
        raise RunDirectoryError(f"corrupted file {path}: not an array archive this tool wrote") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise RunDirectoryError(f"corrupted file {path}: not from this setting (it lacks {', '.join(missing)})")
    return arrays


def save_array(path: Path, array: np.ndarray) -> None:
    """One array as an .npy file, which ``load_array`` can memory-map."""
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array))


def load_array(path: Path, mapped: bool = False) -> np.ndarray:
    """An array from an .npy file, memory-mapped if ``mapped``."""
    try:
        array = np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {path}") from None
    except Exception:  # numpy raises several types for a damaged header, some suggesting allow_pickle
        raise RunDirectoryError(f"corrupted file {path}: not an array file this tool wrote") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        raise RunDirectoryError(f"corrupted file {path}: not an array file this tool wrote")
    return array
