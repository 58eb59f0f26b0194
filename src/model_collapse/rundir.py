"""The run directory: the single record of a run.

    RUN/run.json                      marker: format, version, tool version, creation time
    RUN/config.yaml                   the resolved config (overrides applied)
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

Every file is written to a temporary name, flushed to disk and renamed into place; an iteration is
assembled in ``iter_NNNN.partial`` and renamed as a whole, and only then does progress.json move on.
A crash at any point therefore leaves either the old state or the new one, never a half-written one,
and ``resume`` discards whatever lies beyond progress.json.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import yaml

from . import __version__, distributed
from .errors import RunDirectoryError

FORMAT = "model-collapse-run"
FORMAT_VERSION = 1
MARKER = "run.json"
CONFIG = "config.yaml"


# -- atomic files --------------------------------------------------------------------------------
def _fsync_directory(directory: Path) -> None:
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
        _fsync_directory(Path(root))


def write_file_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace ``path`` with what ``write`` writes to a binary file: all of it or, after a
    crash at any point, the old file untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_atomic(path: Path, text: str) -> None:
    write_file_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_directory_atomic(path: Path, fill: Callable[[Path], None]) -> None:
    """Create or replace the directory ``path`` with what ``fill`` puts into an empty directory,
    assembled beside it as ``<name>.partial`` and renamed as a whole once it is on disk."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fill(partial)
    fsync_tree(partial)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)
    _fsync_directory(path.parent)


def write_json(path: Path, value: Any, compact: bool = False) -> None:
    # Compact output goes through json's C encoder; indented output is pure Python and, for a
    # per-iteration record of thousands of seeds, costs as much as the fsyncs that make it durable.
    write_atomic(path, json.dumps(value, indent=None if compact else 1, allow_nan=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirectoryError(f"corrupted file {path}: {error}") from None


# -- the run ---------------------------------------------------------------------------------------
def create_run(directory: Path, config: Mapping[str, Any]) -> None:
    """Start a run directory; refuses one that already holds anything."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        if (directory / MARKER).exists():
            raise RunDirectoryError(
                f"{directory} already holds a run: continue it with `model-collapse resume {directory}` "
                "or choose another --out"
            )
        raise RunDirectoryError(f"{directory} exists and is not an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / CONFIG, yaml.safe_dump(dict(config), sort_keys=False))
    write_json(
        directory / MARKER,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def open_run(directory: Path) -> dict[str, Any]:
    """The resolved config of an existing run directory, after checking that it is one of ours."""
    if not directory.is_dir():
        raise RunDirectoryError(f"{directory} is not a directory")
    marker_path = directory / MARKER
    if not marker_path.exists():
        raise RunDirectoryError(f"{directory} is not a model-collapse run directory (no {MARKER})")
    marker = read_json(marker_path)
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise RunDirectoryError(f"{marker_path} is not a model-collapse run marker")
    if marker.get("format_version") != FORMAT_VERSION:
        raise RunDirectoryError(
            f"{directory} was written in run format {marker.get('format_version')}, this version reads {FORMAT_VERSION}"
        )
    try:
        config = yaml.safe_load((directory / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {directory / CONFIG}") from None
    except yaml.YAMLError as error:
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: {error}") from None
    if not isinstance(config, dict):
        raise RunDirectoryError(f"corrupted file {directory / CONFIG}: not a mapping")
    return config


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

    def _iteration_directory(self, iteration: int) -> Path:
        return self.directory / f"iter_{iteration:04d}"

    def open(self) -> int:
        """Create or check the chain directory; returns the last completed iteration (0 if none)."""
        if not self.writer:
            return self.completed() if self.directory.exists() else 0
        self.directory.mkdir(parents=True, exist_ok=True)
        description_path = self.directory / "chain.json"
        if description_path.exists():
            found = read_json(description_path)
            if found != self.description:
                raise RunDirectoryError(
                    f"{description_path} describes another chain than the run's config: {found} != {self.description}"
                )
        else:
            write_json(description_path, self.description)
        completed = self.completed()
        # Whatever lies beyond the last completed iteration is the remains of an interrupted one, but
        # for the progress the interrupted iteration saved in its scratch directory, to resume from.
        keep = self.scratch_directory(completed + 1)
        for path in self.directory.glob("iter_*"):
            suffix = path.name[len("iter_") :].split(".")[0]
            stale = path.name.endswith((".partial", ".scratch")) or (suffix.isdigit() and int(suffix) > completed)
            if stale and path != keep:
                shutil.rmtree(path)
        return completed

    def wait_for_commit(self) -> None:
        """Under ``torchrun``, hold every rank until the writer (rank 0) has committed what it was
        committing, so that the others can read it; without ``torchrun``, nothing to wait for."""
        distributed.barrier()

    def scratch_directory(self, iteration: int) -> Path:
        """Where the sampling and the fit of ``iteration`` may keep their progress (created by the
        setting if it wants)."""
        return self.directory / f"iter_{iteration:04d}.scratch"

    def completed(self) -> int:
        path = self.directory / "progress.json"
        if not path.exists():
            return 0
        progress = read_json(path)
        if not isinstance(progress, dict) or not isinstance(progress.get("completed"), int) or progress["completed"] < 0:
            raise RunDirectoryError(f"corrupted file {path}")
        return progress["completed"]

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

        write_directory_atomic(self._iteration_directory(record.iteration), fill)
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
        temporary = path.with_name(".real_preview.tmp.npy")
        with open(temporary, "wb") as handle:
            np.save(handle, preview)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def real_preview(self) -> np.ndarray | None:
        return self._load_preview(self.directory / "real_preview.npy")

    def preview(self, iteration: int) -> np.ndarray | None:
        return self._load_preview(self._iteration_directory(iteration) / "preview.npy")

    @staticmethod
    def _load_preview(path: Path) -> np.ndarray | None:
        if not path.exists():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except Exception as error:  # numpy raises several types for a damaged file
            raise RunDirectoryError(f"corrupted file {path}: {error}") from None

    def diagnostics(self, iteration: int) -> dict[str, Any] | None:
        path = self._iteration_directory(iteration) / "diagnostics.json"
        return read_json(path) if path.exists() else None

    def records(self, batch: int) -> list[IterationRecord]:
        records = []
        for iteration in range(1, self.completed() + 1):
            path = self._iteration_directory(iteration) / "metrics.json"
            record = IterationRecord.from_json(read_json(path), path, batch)
            if record.iteration != iteration:
                raise RunDirectoryError(f"corrupted file {path}: it records iteration {record.iteration}")
            records.append(record)
        return records
