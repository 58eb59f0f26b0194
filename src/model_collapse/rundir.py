"""The run directory: the single record of a run.

    RUN/run.json                      marker: format, version, tool version, creation time
    RUN/config.yaml                   the resolved config (overrides applied)
    RUN/run.lock                      locked (flock) by the one process running or resuming the run
    RUN/chains/<point>/<regime>/      one directory per chain
        chain.json                    what the chain is: setting fields, regime, seeds
        real_preview.npy              a few real samples beside which figures show the synthetic ones
        progress.json                 {"completed": n}: the last iteration that is fully on disk
        iter_0001/metrics.json        per-iteration record (train size, real fraction, metrics per seed)
        iter_0001/model/              checkpoint (kept for every iteration or the last one only)
        iter_0002/synthetic/          synthetic batch, kept when the regime needs its history to resume
        iter_0001/preview.npy         samples of this iteration's model: images (uint8 N,H,W,C) or texts
        iter_0001/diagnostics.json    details of the fit a setting keeps (a language model's learning curve)
        iter_0003.scratch/            the running iteration's own progress (a language model's finished
                                      sampling shards, its last saved training step): kept across an
                                      interruption, removed at commit
    RUN/figures/                      written by `model-collapse plot`

Every file is written to a temporary name, flushed to disk and renamed into place (``atomic.py``); an iteration is
assembled in ``iter_NNNN.partial`` and renamed as a whole, and only then does progress.json move on.
A crash at any point therefore leaves either the old state or the new one, never a half-written one.
An ``iter_NNNN`` directory is committed the moment it appears, so nothing ever deletes one: progress.json
is a record kept in step with them, rebuilt from them when it lags behind (a crash between the rename
and its update, or a file rolled back), and a gap in the iterations is refused rather than repaired.
The run directory itself is assembled beside its final name and renamed into place, so a crash while
creating it leaves no half-made run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import __version__, distributed
from .atomic import fsync_directory, honour_umask, write_atomic, write_directory_atomic, write_file_atomic, write_json
from .errors import RunDirectoryError, yaml_problem

FORMAT = "model-collapse-run"
FORMAT_VERSION = 2  # 2: config.yaml holds the sweep under ``sweep:`` and sectioned settings
READABLE_VERSIONS = (1, 2)  # 1: sweeps as lists inside ``setting`` (upgraded when read, see config.py)
MARKER = "run.json"
CONFIG = "config.yaml"
LOCK = "run.lock"
_ITERATION = re.compile(r"iter_(\d+)(\.partial|\.scratch)?")

log = logging.getLogger(__name__)


def load_array(path: Path) -> np.ndarray:
    """An .npy file written by this tool; anything else is a RunDirectoryError naming the file (and
    never a hint to load it with pickles enabled)."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {path}") from None
    except Exception:  # numpy raises several types for a damaged file, some suggesting allow_pickle
        raise RunDirectoryError(f"corrupted file {path}: not an array file this tool wrote") from None
    if not isinstance(array, np.ndarray):
        raise RunDirectoryError(f"corrupted file {path}: not an array file this tool wrote")
    return array


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
        holder = f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:2])})\n".encode()
        os.pwrite(fd, holder, 0)  # written before trimmed, so that a contender reading it sees a whole name
        os.ftruncate(fd, len(holder))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays, holding no meaning by itself
            self._fd = None


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


def create_run(directory: Path, config: Mapping[str, Any]) -> RunLock:
    """Start a run directory and return its lock, held; refuses one that already holds anything.

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
        write_atomic(staging / CONFIG, yaml.safe_dump(dict(config), sort_keys=False))
        write_json(
            staging / MARKER,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "tool_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
        config = yaml.safe_load((directory / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {directory / CONFIG}") from None
    except yaml.YAMLError as error:
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: {yaml_problem(error)}") from None
    if not isinstance(config, dict):
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: not a mapping")
    return config, version


# -- one chain -------------------------------------------------------------------------------------
@dataclass
class IterationRecord:
    iteration: int
    train_size: int
    real_fraction: np.ndarray  # (batch,)
    metrics: dict[str, np.ndarray]  # name -> (batch,)

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "train_size": self.train_size,
            "real_fraction": self.real_fraction.tolist(),
            "metrics": {name: np.asarray(values, dtype=float).tolist() for name, values in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, value: Any, path: Path, batch: int) -> IterationRecord:
        try:
            record = cls(
                iteration=int(value["iteration"]),
                train_size=int(value["train_size"]),
                real_fraction=np.asarray(value["real_fraction"], dtype=float),
                metrics={k: np.asarray(v, dtype=float) for k, v in value["metrics"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise RunDirectoryError(f"corrupted file {path}: {error!r}") from None
        if any(a.shape != (batch,) for a in (record.real_fraction, *record.metrics.values())):
            raise RunDirectoryError(f"corrupted file {path}: expected {batch} values per metric")
        return record


class ChainStore:
    """Reads and writes one chain's directory."""

    def __init__(self, directory: Path, description: Mapping[str, Any], writer: bool = True):
        self.directory = directory
        self.writer = writer  # False for the other ranks of a data-parallel run: they read, never write
        self.description = json.loads(json.dumps(dict(description)))  # as it reads back from chain.json

    @classmethod
    def at(cls, run_directory: Path, relative: Path, description: Mapping[str, Any], writer: bool = True) -> ChainStore:
        """The chain at ``relative`` inside ``run_directory``, refused if that path leads outside it."""
        return cls(inside(run_directory, relative), description, writer)

    def _iteration_directory(self, iteration: int) -> Path:
        return self.directory / f"iter_{iteration:04d}"

    def open(self) -> int:
        """Create or check the chain directory for writing; returns the last completed iteration (0 if none)."""
        if not self.writer:
            return self.completed() if self.directory.exists() else 0
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / "chain.json").exists():
            write_json(self.directory / "chain.json", self.description)
        completed = self.completed(repair=True)
        # Assembling directories are the remains of an interrupted commit; scratch directories are
        # dropped too, but for the one the interrupted iteration saved its progress in, to resume from.
        keep = self.scratch_directory(completed + 1)
        for path in self.directory.glob("iter_*"):
            match = _ITERATION.fullmatch(path.name)
            if match and match.group(2) and path != keep:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        return completed

    def _check_description(self) -> None:
        """chain.json must describe the chain the run's config names: a config edited after the run
        started would otherwise label these numbers with settings they were not computed with."""
        path = self.directory / "chain.json"
        if not path.exists():
            if any(self.directory.glob("iter_*")):
                raise RunDirectoryError(f"missing file {path}")
            return
        found = read_json(path)
        if found != self.description:
            raise RunDirectoryError(
                f"{path} describes another chain than the run's config.yaml: {found} != {self.description}"
            )

    def _committed(self) -> list[int]:
        """The iterations whose directory is on disk: each was renamed into place whole, so committed."""
        found = []
        for path in self.directory.glob("iter_*"):
            match = _ITERATION.fullmatch(path.name)
            if match is None or match.group(2):
                continue
            if not path.is_dir() or path.is_symlink():
                raise RunDirectoryError(f"corrupted run directory: {path} should be an iteration's directory")
            found.append(int(match.group(1)))
        return sorted(found)

    def completed(self, repair: bool = False) -> int:
        """The last iteration of the unbroken sequence 1, 2, ... of committed iterations.

        progress.json is checked against it: one that lags behind is rebuilt when ``repair`` (a crash
        between an iteration's rename and the record's update leaves it one behind); one that counts
        iterations no longer on disk, or a gap before later iterations, is refused, naming what is missing."""
        if not self.directory.is_dir():
            return 0
        self._check_description()
        committed = self._committed()
        completed = 0
        while completed < len(committed) and committed[completed] == completed + 1:
            completed += 1
        if completed < len(committed):
            raise RunDirectoryError(
                f"{self._iteration_directory(completed + 1)} is missing but later iterations of the chain are on disk"
            )
        path = self.directory / "progress.json"
        recorded = 0
        if path.exists():
            progress = read_json(path)
            if (
                not isinstance(progress, dict)
                or type(progress.get("completed")) is not int
                or progress["completed"] < 0
            ):
                raise RunDirectoryError(f"corrupted file {path}")
            recorded = progress["completed"]
        if recorded > completed:
            raise RunDirectoryError(
                f"{path} records {recorded} completed iterations "
                f"but {self._iteration_directory(completed + 1)} is missing"
            )
        if recorded < completed and repair and self.writer:
            if completed > recorded + 1:
                log.warning(
                    "%s recorded %d completed iterations, %d are on disk: record rebuilt", path, recorded, completed
                )
            write_json(path, {"completed": completed})
        return completed

    def wait_for_commit(self) -> None:
        """Under ``torchrun``, hold every rank until the writer (rank 0) has committed what it was
        committing, so that the others can read it; without ``torchrun``, nothing to wait for."""
        distributed.barrier()

    def scratch_directory(self, iteration: int) -> Path:
        """Where the sampling and the fit of ``iteration`` may keep their progress (created by the
        setting if it wants)."""
        return self.directory / f"iter_{iteration:04d}.scratch"

    def commit(
        self,
        record: IterationRecord,
        save_model: Callable[[Path], None],
        save_synthetic: Callable[[Path], None] | None,
        keep_models: bool,
        preview: np.ndarray | None = None,
        diagnostics: dict[str, Any] | None = None,
    ) -> None:
        if not self.writer:
            return

        def fill(partial: Path) -> None:
            (partial / "model").mkdir()
            write_json(partial / "metrics.json", record.to_json(), compact=True)
            save_model(partial / "model")
            if save_synthetic is not None:
                (partial / "synthetic").mkdir()
                save_synthetic(partial / "synthetic")
            if preview is not None:
                np.save(partial / "preview.npy", preview)
            if diagnostics is not None:
                write_json(partial / "diagnostics.json", diagnostics, compact=True)

        target = self._iteration_directory(record.iteration)
        if target.exists():  # committed iterations are never replaced (resume starts after them)
            raise RunDirectoryError(f"{target} is already committed")
        write_directory_atomic(target, fill)
        write_json(self.directory / "progress.json", {"completed": record.iteration})
        shutil.rmtree(self.scratch_directory(record.iteration), ignore_errors=True)
        if not keep_models and record.iteration > 1:
            shutil.rmtree(self._iteration_directory(record.iteration - 1) / "model", ignore_errors=True)

    def model_directory(self, iteration: int) -> Path:
        path = self._iteration_directory(iteration) / "model"
        if not path.is_dir():
            raise RunDirectoryError(f"missing checkpoint {path}")
        return path

    def synthetic_directory(self, iteration: int) -> Path:
        path = self._iteration_directory(iteration) / "synthetic"
        if not path.is_dir():
            raise RunDirectoryError(f"missing synthetic data {path}")
        return path

    def save_real_preview(self, preview: np.ndarray) -> None:
        """Real samples for figures, written once per chain (so plotting never reloads a data set)."""
        path = self.directory / "real_preview.npy"
        if not self.writer or path.exists():
            return
        write_file_atomic(path, lambda handle: np.save(handle, preview))

    def real_preview(self) -> np.ndarray | None:
        return self._load_preview(self.directory / "real_preview.npy")

    def preview(self, iteration: int) -> np.ndarray | None:
        return self._load_preview(self._iteration_directory(iteration) / "preview.npy")

    @staticmethod
    def _load_preview(path: Path) -> np.ndarray | None:
        """Images as uint8 (N, H, W, C) with C = 1 or 3, or texts (N,); anything else is refused."""
        if not path.exists():
            return None
        preview = load_array(path)
        images = (
            preview.ndim == 4 and preview.dtype == np.uint8 and preview.shape[-1] in (1, 3) and preview.shape[0] > 0
        )
        texts = preview.ndim == 1 and preview.dtype.kind == "U"
        if not (images or texts):
            raise RunDirectoryError(
                f"corrupted file {path}: a preview holds images (N, H, W, 1 or 3) of uint8 or texts, "
                f"not an array of shape {preview.shape} and type {preview.dtype}"
            )
        return preview

    def diagnostics(self, iteration: int) -> dict[str, Any] | None:
        path = self._iteration_directory(iteration) / "diagnostics.json"
        return read_json(path) if path.exists() else None

    def records(
        self, seed_count: int, metrics: Collection[str] | None = None, completed: int | None = None
    ) -> list[IterationRecord]:
        """The records of iterations 1..``completed`` (default: all completed), each checked: the
        right iteration, ``seed_count`` values per metric, and exactly the metric names ``metrics``."""
        records = []
        for iteration in range(1, (self.completed() if completed is None else completed) + 1):
            path = self._iteration_directory(iteration) / "metrics.json"
            record = IterationRecord.from_json(read_json(path), path, seed_count)
            if record.iteration != iteration:
                raise RunDirectoryError(f"corrupted file {path}: it records iteration {record.iteration}")
            if metrics is not None and set(record.metrics) != set(metrics):
                raise RunDirectoryError(
                    f"corrupted file {path}: it records the metrics {', '.join(sorted(record.metrics))}, "
                    f"this setting has {', '.join(sorted(metrics))}"
                )
            records.append(record)
        return records
