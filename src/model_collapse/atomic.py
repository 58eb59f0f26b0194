"""Files and directories written whole or not at all.

Each is written under a temporary name beside its final one, flushed to disk and renamed into place;
the directory holding it is flushed too, so that the rename itself survives a power cut. A crash at
any point leaves the old file (or no file), never a half-written one. Files get the mode the user's
umask gives any other file, although the temporary names come from ``mkstemp`` (0600).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(Path(root))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(fd_or_path: int | Path, directory: bool = False) -> None:
    """mkstemp and mkdtemp create private files (0600, 0700); give them the mode any other file of
    the user gets, so that a run directory on a shared filesystem is as readable as the user expects."""
    mode = (0o777 if directory else 0o666) & ~_umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def write_file_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write`` writes to a binary file: all of it or, after a
    crash at any point, the old file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        honour_umask(fd)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise _naming(error, path) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` naming the path being written, which errors from ``write`` or ``fsync`` do not carry."""
    return error if error.filename is not None else OSError(error.errno, error.strerror, str(path))


def write_text_atomic(path: Path, text: str) -> None:
    data = text.encode("utf-8")

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    write_file_atomic(path, write)


def write_directory_atomic(path: Path, fill: Callable[[Path], None]) -> None:
    """Create or replace the directory ``path`` with what ``fill`` puts into an empty directory,
    assembled beside it as ``<name>.partial`` and renamed as a whole once it is on disk."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        fill(partial)
        fsync_tree(partial)
    except OSError as error:
        # the partial directory stays until the next attempt, which removes it (so does resume)
        raise _naming(error, path) from None
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    fsync_directory(path.parent)


def write_json(path: Path, value: Any, compact: bool = False) -> None:
    # Compact output goes through json's C encoder; indented output is pure Python and, for a
    # per-iteration record of thousands of seeds, costs as much as the fsyncs that make it durable.
    write_text_atomic(path, json.dumps(value, indent=None if compact else 1, allow_nan=True) + "\n")
