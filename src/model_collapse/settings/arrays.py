"""Numeric samples with a leading seed axis (the data type of the cheap settings and the VAE), and
the storage of array models.

A data type is what the chain moves between the regime and the setting; it knows its size (``len``:
samples per seed), how to take rows out of several parts (``select``), and how to save itself and load
itself back, checked against data of the same chain (``load(directory, like)``). The chain calls these
on the type of the setting's real data, so it never needs to know which type that is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..arrayio import load_array, load_arrays, save_array, save_arrays
from ..errors import RunDirectoryError

SAMPLES_FILE = "samples.npz"


class Samples:
    """Named arrays of shape (seeds, rows, ...) that share the seed and row axes.

    ``cache`` holds what a setting derives from the rows (sufficient statistics), so that a part reused
    at every later iteration (accumulate) is summarised once, not once per iteration.
    """

    # Whether ``load`` memory-maps: a kept batch is then read back from the run directory once committed.
    memory_mapped: ClassVar[bool] = False

    def __init__(self, **fields: np.ndarray):
        if not fields:
            raise ValueError("Samples needs at least one field")
        shapes = {name: a.shape[:2] for name, a in fields.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"fields disagree on (seeds, rows): {shapes}")
        self.fields = fields
        self.cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    @property
    def seed_count(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    def __len__(self) -> int:
        return next(iter(self.fields.values())).shape[1]

    @classmethod
    def select(cls, parts: Sequence[Samples], rows: np.ndarray) -> Samples:
        """The rows ``rows`` (shape (seeds, k)) of the concatenation of ``parts``."""
        return gather(parts, rows)

    def save(self, directory: Path) -> None:
        save_arrays(directory / SAMPLES_FILE, dict(self.fields))

    @classmethod
    def load(cls, directory: Path, like: Samples) -> Samples:
        """Samples saved in ``directory``, refused unless each is shaped like those of ``like`` (the real
        data of the same chain): the same fields, seeds, sample shape and kind of number."""
        path = directory / SAMPLES_FILE
        return cls.checked(path, samples_from(path, load_arrays(path, like.fields)), like)

    @classmethod
    def checked(cls, path: Path, data: Samples, like: Samples) -> Samples:
        """``data`` (read from ``path``) as this type, if shaped like ``like``; else a RunDirectoryError."""
        if data.seed_count != like.seed_count:
            raise RunDirectoryError(f"corrupted file {path}: {data.seed_count} seeds, this chain has {like.seed_count}")
        for name, real in like.fields.items():
            if data[name].shape[2:] != real.shape[2:] or data[name].dtype.kind != real.dtype.kind:
                raise RunDirectoryError(
                    f"corrupted file {path}: {name} holds samples of shape "
                    f"{data[name].shape[2:]} ({data[name].dtype}), this setting's are {real.shape[2:]} ({real.dtype})"
                )
        return data if type(data) is cls else cls(**data.fields)


class MappedSamples(Samples):
    """Samples saved one ``.npy`` file per field and read back memory-mapped: a batch kept for later
    iterations (accumulate) costs no RAM until its rows are read, so a pool of n batches of images does
    not need n batches' worth of memory. Read them a minibatch at a time (``gather``), never
    concatenated whole."""

    memory_mapped: ClassVar[bool] = True

    @classmethod
    def select(cls, parts: Sequence[Samples], rows: np.ndarray) -> MappedSamples:
        return cls(**gather(parts, rows).fields)

    def save(self, directory: Path) -> None:
        for name, array in self.fields.items():
            save_array(directory / f"{name}.npy", array)

    @classmethod
    def load(cls, directory: Path, like: Samples) -> Samples:
        if (
            not any((directory / f"{name}.npy").exists() for name in like.fields)
            and (directory / SAMPLES_FILE).exists()
        ):
            return super().load(directory, like)  # written before batches were mapped: read whole
        arrays = {name: load_array(directory / f"{name}.npy", mapped=True) for name in like.fields}
        path = directory / f"{next(iter(like.fields))}.npy"
        return cls.checked(path, samples_from(path, arrays), like)


def concatenate(parts: Sequence[Samples]) -> Samples:
    if len(parts) == 1:
        return parts[0]
    return Samples(**{name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0].fields})


def gather(parts: Sequence[Samples], rows: np.ndarray) -> Samples:
    """Rows of the concatenation of ``parts`` without building the concatenation.

    The requested rows are grouped by the part they fall into (one stable sort), and each part that
    holds any is indexed once, so the cost is proportional to the rows requested (and the number of
    parts), not to the size of the pool.
    """
    seeds, k = rows.shape
    sizes = np.array([len(part) for part in parts], dtype=np.int64)
    ends = np.cumsum(sizes)
    if rows.size and (rows.min() < 0 or rows.max() >= ends[-1]):
        raise IndexError(f"rows out of range for a pool of {ends[-1]}")
    flat = rows.ravel()
    owner = np.searchsorted(ends, flat, side="right")  # the part each requested row falls into
    order = np.argsort(owner, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(parts)))])
    out = {name: np.empty((seeds * k,) + a.shape[2:], dtype=a.dtype) for name, a in parts[0].fields.items()}
    for index, part in enumerate(parts):
        taken = order[bounds[index] : bounds[index + 1]]  # positions in ``flat`` served by this part
        if taken.size:
            seed, local = taken // k, flat[taken] - (ends[index] - sizes[index])
            for name, target in out.items():
                target[taken] = part[name][seed, local]
    return Samples(**{name: a.reshape((seeds, k) + a.shape[1:]) for name, a in out.items()})


class RunningTotal:
    """Combined statistics of a list of parts that reuses the previous total when the list only grew.

    Under accumulate the parts of iteration n are those of iteration n-1 plus one new batch, so the
    total costs one combine per iteration instead of n. Each part's own statistics are cached on it
    (``part.cache[key]``), which also serves parts reused in other orders (the real data under mix).
    """

    def __init__(self, key: str, summarise: Callable[[Samples], Any], combine: Callable[[Any, Any], Any]):
        self.key, self.summarise, self.combine = key, summarise, combine
        self._parts: list[Samples] = []  # held, so identities below cannot be reused by new objects
        self._total: Any = None

    def _statistics(self, part: Samples) -> Any:
        if self.key not in part.cache:
            part.cache[self.key] = self.summarise(part)
        return part.cache[self.key]

    def __call__(self, parts: Sequence[Samples]) -> Any:
        known = len(self._parts)
        if known and len(parts) >= known and all(a is b for a, b in zip(self._parts, parts)):
            total, new = self._total, parts[known:]
        else:
            total, new = None, parts
        for part in new:
            statistics = self._statistics(part)
            total = statistics if total is None else self.combine(total, statistics)
        self._parts, self._total = list(parts), total
        return total


def samples_from(path: Path, arrays: dict[str, np.ndarray]) -> Samples:
    """``Samples`` of arrays read from ``path``, which must share their (seeds, rows) axes."""
    if any(array.ndim < 2 for array in arrays.values()):
        raise RunDirectoryError(f"corrupted file {path}: samples need a seed axis and a row axis")
    try:
        return Samples(**arrays)
    except ValueError as error:
        raise RunDirectoryError(f"corrupted file {path}: {error}") from None


def check_shape(path: Path, array: np.ndarray, expected: tuple[int | None, ...]) -> np.ndarray:
    """``array`` if its shape is ``expected`` (None: a dimension of any size), else a RunDirectoryError."""
    if len(array.shape) != len(expected) or any(e is not None and n != e for n, e in zip(array.shape, expected)):
        raise RunDirectoryError(
            f"corrupted file {path}: an array of shape {array.shape}, this chain expects {expected}"
        )
    return array
