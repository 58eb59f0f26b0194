"""The run as a whole: its directory's creation (assembled beside its final name and renamed into
place), its marker (``run.json``: format and version), its config, and the lock held by the one process
running or resuming it. The layout is in ``rundir/__init__.py``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .._version import __version__
from ..atomic import (
    fsync_directory,
    honour_umask,
    write_json,
    write_text_atomic,
)
from ..errors import RunDirectoryError
from ..provenance import environment
from ..runmarker import FORMAT, MARKER
from ..yaml_text import YamlProblem, load_yaml

# 3: commits of several iterations (``iter_0001-0042``, metrics.json a list); 2: config.yaml holds the
# sweep under ``sweep:`` and sectioned settings; 1: sweeps as lists inside ``setting`` (see config.py).
# Versions 1 and 2 are read as they are (a commit of one iteration each); resuming one marks it 3.
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
CONFIG = "config.yaml"
LOCK = "run.lock"
SHARED = "shared"  # Setting.shared: what a setting makes once per run
DAMAGED = "damaged"  # resume --recompute-damaged: commits set aside, by time
LOGS = "logs"  # the tracebacks of chains stopped by a bug, by time

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirectoryError(f"corrupted file {path}: {error}") from None
    except OSError as error:
        raise RunDirectoryError(f"cannot read {path}: {error.strerror}") from None


# -- the run ---------------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run directory, held for the life of ``run`` or ``resume``.

    ``flock`` on ``RUN/run.lock``: the kernel releases it when the holder exits, however it exits, so
    a killed run never leaves a stale lock behind. The file names the holder for the error message."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise RunDirectoryError(f"cannot open the lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirectoryError(
                f"{self.path.parent} is in use by {holder}; wait for it to end or stop it, then try again"
            ) from None
        name = f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:2])})\n".encode()
        os.pwrite(fd, name, 0)  # written before trimmed, so that a contender reading it sees a whole name
        os.ftruncate(fd, len(name))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, holding no meaning by itself
            self._fd = None


def run_in_use(directory: Path) -> str | None:
    """Who holds the run's lock (a ``run`` or ``resume`` going on), or None when nobody does."""
    try:
        fd = os.open(directory / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # taken only while no run holds it exclusively
    except BlockingIOError:
        return os.read(fd, 512).decode("utf-8", "replace").strip() or "another process"
    finally:
        os.close(fd)
    return None


def lock_run(directory: Path) -> RunLock:
    """Lock an existing run directory (see ``RunLock``)."""
    return RunLock(directory / LOCK).acquire()


def _check_out_path(directory: Path) -> None:
    """Refuse an --out whose existing part is not a directory, before anything is written."""
    for ancestor in [directory, *directory.parents]:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise RunDirectoryError(f"cannot create the run directory {directory}: {ancestor} is not a directory")
            return


def create_run(directory: Path, config: Mapping[str, Any], setting: Mapping[str, Any] | None = None) -> RunLock:
    """Start a run directory and return its lock, held; refuses one that already holds anything.
    ``setting``: where the setting's code came from (its origin and version), recorded in run.json.

    The directory is assembled beside its final name (config, marker, lock) and renamed into place in
    one step, so a crash leaves either no run or a whole one, and of two processes starting the same
    directory at once exactly one succeeds (rename refuses a non-empty target)."""
    _check_out_path(directory)
    if directory.exists():
        if (directory / MARKER).exists():
            raise RunDirectoryError(
                f"{directory} already holds a run: continue it with `model-collapse resume {directory}` "
                "or choose another --out"
            )
        if any(directory.iterdir()):
            raise RunDirectoryError(f"{directory} exists and is not an empty directory")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.creating-"))
    except OSError as error:
        raise RunDirectoryError(f"cannot create the run directory {directory}: {error.strerror}") from None
    lock = RunLock(staging / LOCK)
    try:
        honour_umask(staging, directory=True)
        lock.acquire()  # the lock follows the file through the rename below
        write_text_atomic(staging / CONFIG, yaml.safe_dump(dict(config), sort_keys=False))
        write_json(
            staging / MARKER,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tool_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "environment": environment(),
                **({"setting": dict(setting)} if setting is not None else {}),
            },
        )
        try:
            os.rename(staging, directory)  # replaces an empty directory, refuses a non-empty one
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise RunDirectoryError(f"{directory} was started by another process at the same moment") from None
            raise RunDirectoryError(f"cannot create the run directory {directory}: {error.strerror}") from None
        lock.path = directory / LOCK
        fsync_directory(directory.parent)
    except BaseException:
        lock.release()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return lock


def inside(root: Path, relative: Path | str) -> Path:
    """``root / relative``, refused unless it lies inside ``root`` once every link is resolved and
    every existing part of it is a directory: no config value can make the run touch other files."""
    parts = Path(relative).parts
    path = root.joinpath(*parts)
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise RunDirectoryError(f"{path} lies outside the run directory {root}") from None
    for depth in range(1, len(parts) + 1):
        candidate = root.joinpath(*parts[:depth])
        if candidate.exists() and not candidate.is_dir():
            raise RunDirectoryError(f"corrupted run directory: {candidate} is not a directory")
    return path


def run_marker(directory: Path) -> dict[str, Any]:
    """The marker of a run directory (checked by ``open_run``): format, creation time, environment."""
    return read_json(directory / MARKER)


def open_run(directory: Path) -> tuple[dict[str, Any], int]:
    """The resolved config of an existing run directory and its format version, after checking that
    it is one of ours."""
    if not directory.is_dir():
        raise RunDirectoryError(f"{directory} is not a directory")
    marker_path = directory / MARKER
    if not marker_path.exists():
        raise RunDirectoryError(f"{directory} is not a model-collapse run directory (no {MARKER})")
    marker = read_json(marker_path)
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise RunDirectoryError(f"{marker_path} is not a model-collapse run marker")
    version = marker.get("format_version")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise RunDirectoryError(f"{directory} was written in run format {version}, this version reads {readable}")
    try:
        config = load_yaml((directory / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {directory / CONFIG}") from None
    except UnicodeDecodeError:
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: not a text file (not UTF-8)") from None
    except YamlProblem as problem:
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: {problem}") from None
    if not isinstance(config, dict):
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: not a mapping")
    return config, version
