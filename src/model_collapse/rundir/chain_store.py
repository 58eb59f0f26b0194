"""One chain's directory (``ChainStore``): its commits, written whole and never deleted; its progress,
rebuilt from the commits when it lags; what a commit keeps (models, synthetic batches, previews,
diagnostics); and the repair of a damaged chain (damaged commits set aside, a gap refused).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import distributed
from ..arrayio import load_array, load_arrays
from ..atomic import (
    fsync_directory,
    write_directory_atomic,
    write_file_atomic,
    write_json,
    write_text_atomic,
)
from ..errors import RunDirectoryError
from ..settings.configs import renamed_keys
from .records import RECORD_ARRAYS, RECORDS, IterationRecord, records_from_arrays, records_to_arrays
from .run import LOGS, inside, read_json

if TYPE_CHECKING:
    from ..experiment import ChainSpec

_COMMIT = re.compile(r"iter_(\d+)(?:-(\d+))?(\.partial|\.scratch)?")

log = logging.getLogger(__name__)


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
        renamed: Mapping[str, str] | None = None,
    ):
        self.directory = directory
        self.writer = writer  # False for the other ranks of a data-parallel run: they read, never write
        self.description = json.loads(json.dumps(dict(description)))  # as it reads back from chain.json
        # the description's values when nothing is set: a field added to a setting since a chain started
        # is missing from its chain.json, which is the same chain if the field holds its default
        self.defaults = json.loads(json.dumps(dict(defaults or {})))
        # setting keys renamed since (``SettingConfig.renamed``): a chain.json of an earlier spelling reads
        # as today's
        self.renamed = dict(renamed or {})

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
        store = cls.at(run_directory, spec.relative_directory, spec.description(), writer, spec.defaults())
        store.renamed = dict(type(spec.point).renamed)
        return store

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
        if self.renamed and isinstance(found, dict) and isinstance(found.get("setting"), dict):
            with contextlib.suppress(ValueError):  # (both spellings: another chain, named below)
                found = {**found, "setting": renamed_keys(found["setting"], self.renamed, warn=False)}
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
            records = records_from_arrays(load_arrays(path, RECORD_ARRAYS), path, seed_count)
        else:
            records = [IterationRecord.from_json(read_json(path), path, seed_count)]
        found = [r.iteration for r in records]
        if found != list(range(commit.first, commit.last + 1)):
            span = commit.first if commit.first == commit.last else f"{commit.first}-{commit.last}"
            raise RunDirectoryError(f"corrupted file {path}: it records iterations {found}, not {span}")
        return records


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
