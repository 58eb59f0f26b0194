"""The run directory: the single record of a run.

    RUN/run.json                      marker: format, version, tool version, creation time, environment
                                      (the tool's commit, libraries, machine: provenance.py)
    RUN/config.yaml                   the resolved config (overrides applied)
    RUN/run.lock                      locked (flock) by the one process running or resuming the run
    RUN/chains/<point>/<regime>/      one directory per chain
        chain.json                    what the chain is: setting fields, regime, seeds
        real_preview.npy              a few real samples beside which figures show the synthetic ones
        progress.json                 {"completed": n}: the last iteration that is fully on disk
        iter_0001-0042/               a commit of several iterations (cheap settings commit in groups)
            metrics.npz               their records: train size, real fraction and metrics per seed
                                      (metrics.json, one record, in run formats 1 and 2)
            model/                    the model of the commit's last iteration, when kept (``checkpoints``)
            preview_0001.npy …        samples of each iteration's model, for a cheap setting with previews
        iter_0043/                    a commit of one iteration, holding the same and, for that iteration:
            synthetic/                its synthetic batch, kept when the regime needs its history
            preview.npy               samples of its model: images (uint8 N,H,W,C) or texts
            diagnostics.json          details of the fit a setting keeps (a language model's learning curve)
        iter_0044.scratch/            the running iteration's own progress (a language model's finished
                                      sampling shards, its last saved training step): kept across an
                                      interruption, removed at commit
    RUN/first-iterations/<point>/     while a run of a costly setting is under way: the first iteration
                                      of each sweep point (and seed), computed once and committed as it
                                      is into every regime's chain (it fits the real data alone, so it
                                      is the same in every regime); removed once the run is complete
    RUN/damaged/<UTC time>/chains/…   commits ``resume --recompute-damaged`` set aside (a damaged one
                                      and those after it), as they were
    RUN/shared/                       what a setting makes once per run for all its chains (a model
                                      the fine-tuning setting pretrains): ``Setting.shared``
    RUN/figures/                      written by `model-collapse plot`
    RUN/logs/<UTC time>-<chain>.txt   the full traceback of a chain that stopped on an unexpected error
                                      (the command prints one line naming this file)

Every file is written to a temporary name, flushed to disk and renamed into place (``atomic.py``); a commit is
assembled in ``iter_....partial`` and renamed as a whole, and only then does progress.json move on.
A crash at any point therefore leaves either the old state or the new one, never a half-written one.
A commit's directory is committed the moment it appears, so nothing ever deletes one: progress.json
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
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from . import distributed
from ._version import __version__
from .arrayio import load_array, load_arrays
from .atomic import (
    fsync_directory,
    honour_umask,
    write_directory_atomic,
    write_file_atomic,
    write_json,
    write_text_atomic,
)
from .errors import RunDirectoryError
from .provenance import environment
from .runmarker import FORMAT, MARKER
from .yaml_text import YamlProblem, load_yaml

if TYPE_CHECKING:
    from .experiment import ChainSpec

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
_COMMIT = re.compile(r"iter_(\d+)(?:-(\d+))?(\.partial|\.scratch)?")

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


# -- one chain -------------------------------------------------------------------------------------
@dataclass
class IterationRecord:
    iteration: int
    train_size: int
    real_fraction: np.ndarray  # (batch,)
    metrics: dict[str, np.ndarray]  # name -> (batch,)
    seconds: float = float("nan")  # wall-clock time of the iteration (sample, fit, evaluate); NaN: not recorded

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


def _without_added(description: Any, found: Any, defaults: Any) -> Any:
    """``description`` without the keys ``found`` lacks whose value is their default (``defaults``)."""
    if not (isinstance(description, dict) and isinstance(found, dict)):
        return description
    defaults = defaults if isinstance(defaults, dict) else {}
    return {
        key: _without_added(value, found[key], defaults.get(key))
        for key, value in description.items()
        if key in found or key not in defaults or value != defaults[key]
    }


@dataclass(frozen=True)
class Commit:
    """One committed directory of a chain: the iterations ``first``..``last``."""

    first: int
    last: int
    path: Path


def commit_name(first: int, last: int) -> str:
    return f"iter_{last:04d}" if first == last else f"iter_{first:04d}-{last:04d}"


class ChainStore:
    """Reads and writes one chain's directory."""

    def __init__(
        self,
        directory: Path,
        description: Mapping[str, Any],
        writer: bool = True,
        defaults: Mapping[str, Any] | None = None,
    ):
        self.directory = directory
        self.writer = writer  # False for the other ranks of a data-parallel run: they read, never write
        self.description = json.loads(json.dumps(dict(description)))  # as it reads back from chain.json
        # the description's values when nothing is set: a field added to a setting since a chain started
        # is missing from its chain.json, which is the same chain if the field holds its default
        self.defaults = json.loads(json.dumps(dict(defaults or {})))

    @classmethod
    def at(
        cls,
        run_directory: Path,
        relative: Path,
        description: Mapping[str, Any],
        writer: bool = True,
        defaults: Mapping[str, Any] | None = None,
    ) -> ChainStore:
        """The chain at ``relative`` inside ``run_directory``, refused if that path leads outside it."""
        return cls(inside(run_directory, relative), description, writer, defaults)

    @classmethod
    def of(cls, run_directory: Path, spec: ChainSpec, writer: bool = True) -> ChainStore:
        """The directory of the chain ``spec`` in ``run_directory``."""
        return cls.at(run_directory, spec.relative_directory, spec.description(), writer, spec.defaults())

    def prepare(self) -> None:
        """Create or check the chain directory for writing (nothing for a reader): the remains of an
        interrupted commit are cleared, and an earlier failure's record."""
        if not self.writer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / "chain.json").exists():
            write_json(self.directory / "chain.json", self.description)
        completed = self.completed(repair=True)
        (self.directory / self.FAILURE).unlink(missing_ok=True)  # running again: the old failure is history
        # Assembling directories are the remains of an interrupted commit; scratch directories are
        # dropped too, but for the one the interrupted iteration saved its progress in, to resume from.
        keep = self.scratch_directory(completed + 1)
        for path in self.directory.glob("iter_*"):
            match = _COMMIT.fullmatch(path.name)
            if match and match.group(3) and path != keep:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()

    FAILURE = "failure.json"

    def record_failure(self, reason: str) -> None:
        """Say in the chain's directory why it stopped (``model-collapse status`` shows it); the next
        ``open`` for writing (its resume) clears it. Best effort: a full disk may be the reason."""
        try:
            if self.directory.is_dir():
                when = datetime.now(timezone.utc).isoformat(timespec="seconds")
                write_json(self.directory / self.FAILURE, {"reason": reason, "at": when})
        except OSError:
            pass

    def keep_traceback(self, run_directory: Path, text: str) -> Path | None:
        """Keep the traceback of the error that stopped the chain in ``RUN/logs/`` (kept across its
        resume, unlike ``failure.json``); its path, or None where it cannot be written (a full disk)."""
        when = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = "-".join(self.directory.relative_to(run_directory).parts[1:]) or self.directory.name
        path = run_directory / LOGS / f"{when}-{name}.txt"
        try:
            path.parent.mkdir(exist_ok=True)
            write_text_atomic(path, text if text.endswith("\n") else text + "\n")
        except OSError:
            return None
        return path

    def failure(self) -> dict[str, Any] | None:
        """What ``record_failure`` recorded, or None (also for an unreadable record)."""
        try:
            found = read_json(self.directory / self.FAILURE)
        except (OSError, RunDirectoryError):
            return None
        return found if isinstance(found, dict) and isinstance(found.get("reason"), str) else None

    def _check_description(self) -> None:
        """chain.json must describe the chain the run's config names: a config edited after the run
        started would otherwise label these numbers with settings they were not computed with."""
        path = self.directory / "chain.json"
        if not path.exists():
            if any(self.directory.glob("iter_*")):
                raise RunDirectoryError(f"missing file {path}")
            return
        found = read_json(path)
        if found != self.description and found != _without_added(self.description, found, self.defaults):
            raise RunDirectoryError(
                f"{path} describes another chain than the run's config.yaml: {found} != {self.description}"
            )

    def commits(self) -> list[Commit]:
        """The commits on disk, in order: each was renamed into place whole, so committed."""
        found = []
        for path in self.directory.glob("iter_*"):
            match = _COMMIT.fullmatch(path.name)
            if match is None or match.group(3):
                continue
            if not path.is_dir() or path.is_symlink():
                raise RunDirectoryError(f"corrupted run directory: {path} should be an iteration's directory")
            last = int(match.group(2) or match.group(1))
            first = int(match.group(1)) if match.group(2) else last
            if first > last:
                raise RunDirectoryError(f"corrupted run directory: {path} names its iterations backwards")
            found.append(Commit(first, last, path))
        return sorted(found, key=lambda c: (c.last, c.first))

    def _unbroken(self) -> list[Commit]:
        """The commits holding iterations 1, 2, ... without a gap; a gap or an overlap before later
        commits is refused, naming what is missing."""
        commits = self.commits()
        end = 0
        for index, commit in enumerate(commits):
            if commit.first != end + 1:
                if commit.first <= end:
                    raise RunDirectoryError(
                        f"corrupted run directory: {commit.path} holds iterations that "
                        f"{commits[index - 1].path} holds too"
                    )
                missing = end + 1 if commit.first == end + 2 else f"{end + 1}-{commit.first - 1}"
                raise RunDirectoryError(
                    f"the commit of iteration {missing} ({self.directory / commit_name(end + 1, end + 1)}) is "
                    "missing but later iterations of the chain are on disk"
                )
            end = commit.last
        return commits

    def completed(self, repair: bool = False) -> int:
        """The last iteration of the unbroken sequence 1, 2, ... of committed iterations.

        progress.json is checked against it: one that lags behind is rebuilt when ``repair`` (a crash
        between a commit's rename and the record's update leaves it behind); one that counts
        iterations no longer on disk, or a gap before later iterations, is refused, naming what is missing."""
        if not self.directory.is_dir():
            return 0
        self._check_description()
        commits = self._unbroken()
        completed = commits[-1].last if commits else 0
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
                f"{path} records {recorded} completed iterations but the commit of iteration {completed + 1} "
                f"({self.directory / commit_name(completed + 1, completed + 1)}) is missing"
            )
        if recorded < completed and repair and self.writer:
            if len(commits) > 1 and commits[-2].last > recorded:
                log.warning(
                    "%s recorded %d completed iterations, %d are on disk: record rebuilt", path, recorded, completed
                )
            write_json(path, {"completed": completed})
        return completed

    def progress(self) -> int:
        """The completed count progress.json records, unchecked (0 when absent or unreadable): for a
        display polling chains that other processes write; ``completed`` is the checked count."""
        try:
            found = json.loads((self.directory / "progress.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        return found["completed"] if isinstance(found, dict) and type(found.get("completed")) is int else 0

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
        records: list[IterationRecord],
        save_model: Callable[[Path], None] | None,
        save_synthetic: Callable[[Path], None] | None = None,
        drop_earlier_models: bool = True,
        previews: Mapping[int, np.ndarray] | None = None,
        diagnostics: dict[str, Any] | None = None,
    ) -> None:
        """Commit ``records`` (consecutive iterations) as one directory, with the model of the last
        when ``save_model`` is given, and the previews of its iterations (by iteration); the synthetic
        batch and diagnostics belong to the last iteration and are kept only in a commit of one."""
        if not self.writer:
            return
        first, last = records[0].iteration, records[-1].iteration
        if [r.iteration for r in records] != list(range(first, last + 1)):
            raise ValueError("a commit holds consecutive iterations")
        if first != last and (save_synthetic is not None or diagnostics is not None):
            raise ValueError("a synthetic batch or diagnostics is committed with its iteration alone")

        def fill(partial: Path) -> None:
            with open(partial / RECORDS, "wb") as handle:
                np.savez(handle, **records_to_arrays(records))  # type: ignore[arg-type]  # (numpy's stubs)
            if save_model is not None:
                (partial / "model").mkdir()
                save_model(partial / "model")
            if save_synthetic is not None:
                (partial / "synthetic").mkdir()
                save_synthetic(partial / "synthetic")
            for iteration, preview in (previews or {}).items():
                np.save(partial / _preview_name(first, last, iteration), preview)
            if diagnostics is not None:
                write_json(partial / "diagnostics.json", diagnostics, compact=True)

        earlier = self.commits()
        if earlier and earlier[-1].last >= first:  # committed iterations are never replaced (resume starts after them)
            raise RunDirectoryError(f"iteration {first} of {self.directory} is already committed")
        write_directory_atomic(self.directory / commit_name(first, last), fill)
        write_json(self.directory / "progress.json", {"completed": last})
        shutil.rmtree(self.scratch_directory(last), ignore_errors=True)
        if drop_earlier_models and earlier:  # only the previous commit can hold one: each commit drops the one before
            shutil.rmtree(earlier[-1].path / "model", ignore_errors=True)

    def adopt_first_iteration(self, source: ChainStore) -> bool:
        """Commit ``source``'s first iteration (its record, model, preview and diagnostics) as this
        chain's, its files hard-linked where the filesystem allows and copied elsewhere; False, and
        nothing done, when this chain has committed an iteration already or ``source`` has no first
        iteration with its model to give."""
        if not self.writer or self.completed() > 0:
            return False
        try:
            if source.completed() < 1:
                return False
        except RunDirectoryError:  # a damaged copy: the chain computes its own
            return False
        first = source.commits()[0]
        if first.last != 1 or not (first.path / "model").is_dir():
            return False

        def fill(partial: Path) -> None:
            shutil.copytree(first.path, partial, dirs_exist_ok=True, copy_function=_link_or_copy)

        write_directory_atomic(self.directory / commit_name(1, 1), fill)
        write_json(self.directory / "progress.json", {"completed": 1})
        return True

    def model_directory(self, iteration: int) -> Path:
        """The model kept by the commit that ends at ``iteration``."""
        commit = next((c.path for c in self.commits() if c.last == iteration), None)
        path = (commit or self.directory / commit_name(iteration, iteration)) / "model"
        if not path.is_dir():
            raise RunDirectoryError(f"missing checkpoint {path}")
        return path

    def synthetic_directory(self, iteration: int) -> Path:
        path = self.directory / commit_name(iteration, iteration) / "synthetic"
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
        """The preview of ``iteration``'s model, or None (none kept, or the iteration not committed)."""
        alone = self.directory / commit_name(iteration, iteration)
        if alone.is_dir():  # a commit of one iteration (every costly chain's): no need to list the others
            return self._load_preview(alone / _preview_name(iteration, iteration, iteration))
        commit = next((c for c in self.commits() if c.first <= iteration <= c.last), None)
        if commit is None:
            return None
        return self._load_preview(commit.path / _preview_name(commit.first, commit.last, iteration))

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
        path = self.directory / commit_name(iteration, iteration) / "diagnostics.json"
        return read_json(path) if path.exists() else None

    def records(
        self, seed_count: int, metrics: Collection[str] | None = None, completed: int | None = None
    ) -> list[IterationRecord]:
        """The records of iterations 1..``completed`` (default: all completed), each checked: the
        right iteration, ``seed_count`` values per metric, and exactly the metric names ``metrics``
        (or some of them: metrics a setting gained since an iteration ran read as NaN there)."""
        end = self.completed() if completed is None else completed
        if not self.directory.is_dir():
            return []
        records = []
        for commit in self._unbroken():
            if commit.first > end:
                break
            for record in self._read_commit(commit, seed_count):
                if metrics is not None and set(record.metrics) < set(metrics):
                    # metrics the setting gained after these iterations ran: not measured then
                    record.metrics.update(
                        {name: np.full(seed_count, np.nan) for name in metrics if name not in record.metrics}
                    )
                if metrics is not None and set(record.metrics) != set(metrics):
                    raise RunDirectoryError(
                        f"corrupted file {self._records_path(commit)}: it records the metrics "
                        f"{', '.join(sorted(record.metrics))}, this setting has {', '.join(sorted(metrics))}"
                    )
                if record.iteration <= end:
                    records.append(record)
        return records

    def damaged_commits(
        self, seed_count: int, metrics: Collection[str], keeps_models: bool, unreadable_from: int | None = None
    ) -> list[Commit]:
        """The commits ``resume --recompute-damaged`` sets aside: the first whose records cannot be read
        (or that follows a gap, or that holds iteration ``unreadable_from``, whose kept model or synthetic
        batch cannot be read) and every later one; for a chain that resumes from its last model
        (``keeps_models``), also those after the last readable commit that still holds its model.
        Nothing when every record reads."""
        commits = self.commits()
        good = self._readable(commits, seed_count, metrics, unreadable_from)
        if good == len(commits):
            return []
        if keeps_models:
            while good and not (commits[good - 1].path / "model").is_dir():
                good -= 1  # the chain would resume from this commit's model, which is gone
        return commits[good:]

    def _readable(
        self, commits: list[Commit], seed_count: int, metrics: Collection[str], unreadable_from: int | None = None
    ) -> int:
        """How many of ``commits``, from the first, hold iterations 1, 2, ... without a gap, with records
        that read (and no iteration from ``unreadable_from`` on)."""
        end, good = 0, 0
        for commit in commits:
            try:
                if commit.first != end + 1:
                    raise RunDirectoryError(f"a gap before {commit.path}")
                if unreadable_from is not None and commit.last >= unreadable_from:
                    raise RunDirectoryError(f"an unreadable model or synthetic batch in {commit.path}")
                for record in self._read_commit(commit, seed_count):
                    if not set(record.metrics) <= set(metrics):
                        raise RunDirectoryError(f"foreign metrics in {commit.path}")
            except RunDirectoryError:
                break
            end, good = commit.last, good + 1
        return good

    def readable_iterations(self, seed_count: int, metrics: Collection[str]) -> int:
        """The iterations committed whole before a damaged chain's damage (what ``status`` counts, where
        progress.json may count iterations that are missing or unreadable)."""
        try:
            commits = self.commits()
        except RunDirectoryError:
            return 0
        good = self._readable(commits, seed_count, metrics)
        return commits[good - 1].last if good else 0

    def set_aside(self, commits: list[Commit], destination: Path) -> None:
        """Move ``commits`` (the last ones of the chain) into ``destination``, nothing deleted, and record
        the iterations that remain as completed."""
        kept = [c for c in self.commits() if c not in commits]
        completed = kept[-1].last if kept else 0
        destination.mkdir(parents=True, exist_ok=True)
        scratches = ((p, _COMMIT.fullmatch(p.name)) for p in self.directory.glob("iter_*.scratch"))
        later = [p for p, match in scratches if match is not None and int(match.group(1)) > completed + 1]
        for path in [c.path for c in commits] + later:  # a later iteration's scratch goes with them
            os.replace(path, destination / path.name)
        fsync_directory(self.directory)
        write_json(self.directory / "progress.json", {"completed": completed})

    @staticmethod
    def _records_path(commit: Commit) -> Path:
        legacy = commit.path / "metrics.json"  # run formats 1 and 2
        return legacy if legacy.exists() or legacy.is_symlink() else commit.path / RECORDS

    def _read_commit(self, commit: Commit, seed_count: int) -> list[IterationRecord]:
        """The records of a commit, checked to be those of its iterations with ``seed_count`` seeds."""
        path = self._records_path(commit)
        if path.name == RECORDS:
            records = records_from_arrays(load_arrays(path, _RECORD_ARRAYS), path, seed_count)
        else:
            records = [IterationRecord.from_json(read_json(path), path, seed_count)]
        found = [r.iteration for r in records]
        if found != list(range(commit.first, commit.last + 1)):
            span = commit.first if commit.first == commit.last else f"{commit.first}-{commit.last}"
            raise RunDirectoryError(f"corrupted file {path}: it records iterations {found}, not {span}")
        return records


RECORDS = "metrics.npz"
_RECORD_ARRAYS = ("iteration", "train_size", "real_fraction")
_METRIC = "metric."


def _preview_name(first: int, last: int, iteration: int) -> str:
    """The file of an iteration's preview in the commit of iterations ``first``..``last``."""
    return "preview.npy" if first == last else f"preview_{iteration:04d}.npy"


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link (a model of gigabytes shared by every regime's chain costs its space once), or a copy
    where the filesystem has none or ``destination`` lies on another."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def records_to_arrays(records: list[IterationRecord]) -> dict[str, np.ndarray]:
    """Consecutive records as arrays over (iterations,) and (iterations, seeds), one per metric."""
    arrays = {
        "iteration": np.array([r.iteration for r in records], dtype=np.int64),
        "train_size": np.array([r.train_size for r in records], dtype=np.int64),
        "real_fraction": np.stack([r.real_fraction for r in records]).astype(float),
    }
    arrays["seconds"] = np.array([r.seconds for r in records], dtype=float)
    for name in records[0].metrics:
        arrays[_METRIC + name] = np.stack([np.asarray(r.metrics[name], dtype=float) for r in records])
    return arrays


def records_from_arrays(arrays: dict[str, np.ndarray], path: Path, seed_count: int) -> list[IterationRecord]:
    iteration, train_size, real_fraction = (arrays[name] for name in _RECORD_ARRAYS)
    metrics = {name[len(_METRIC) :]: a for name, a in arrays.items() if name.startswith(_METRIC)}
    count = iteration.shape[0] if iteration.ndim == 1 else -1
    seconds = arrays.get("seconds", np.full(max(count, 0), np.nan))  # not kept before the report came
    shapes_ok = (
        count >= 1
        and train_size.shape == (count,)
        and all(a.shape == (count, seed_count) for a in (real_fraction, *metrics.values()))
        and seconds.shape == (count,)
        and all(a.dtype.kind in "iuf" for a in (iteration, train_size, real_fraction, seconds, *metrics.values()))
    )
    if not shapes_ok:
        raise RunDirectoryError(
            f"corrupted file {path}: expected records of {seed_count} values per metric for each iteration"
        )
    return [
        IterationRecord(
            int(iteration[i]),
            int(train_size[i]),
            real_fraction[i].astype(float),
            {name: a[i].astype(float) for name, a in metrics.items()},
            float(seconds[i]),
        )
        for i in range(count)
    ]
