"""Data regimes: which data the model of iteration n is fitted on.

A regime never touches data. It sees the *sizes* of the pool (which sources exist and how many rows
each has) and answers with a ``TrainingPlan``: which rows of which sources make up the training set. The chain turns
the plan into data through the setting. This keeps regimes pure, tiny and independent of any setting,
and lets a setting with sufficient statistics reuse whole sources without copying them.

Vocabulary (docs/architecture.md): T = size of the real training set; S_n = synthetic batch sampled from the model
of iteration n-1 for iteration n; iteration 1 always fits on the real data alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np


class Source(NamedTuple):
    """One block of training data: the real set, a synthetic batch, or a batch of fresh real data.

    A NamedTuple rather than a dataclass: accumulate looks up every source of the pool at every
    iteration, and tuple hashing is several times cheaper."""

    kind: str  # "real", "synthetic" or "fresh-real"
    iteration: int  # the iteration the block was made for (1 for the original real data)

    @property
    def is_real(self) -> bool:
        return self.kind in ("real", "fresh-real")


REAL = Source("real", 1)


def synthetic_source(iteration: int) -> Source:
    return Source("synthetic", iteration)


def fresh_real_source(iteration: int) -> Source:
    return Source("fresh-real", iteration)


@dataclass(frozen=True)
class Selection:
    """Rows taken from the concatenation of ``sources`` (in that order).

    ``rows`` is None for "every row of every source", or an integer array of shape (seed_count, k): row
    indices into the concatenation, one row of indices per seed.
    """

    sources: tuple[Source, ...]
    rows: np.ndarray | None = None


@dataclass(frozen=True)
class TrainingPlan:
    selections: tuple[Selection, ...]
    train_size: int
    real_fraction: np.ndarray  # shape (seed_count,): realised real fraction per seed


def _real_fraction(
    selections: tuple[Selection, ...], sizes: Mapping[Source, int], seed_count: int
) -> tuple[int, np.ndarray]:
    total = 0
    real = np.zeros(seed_count)
    for selection in selections:
        counts = [sizes[s] for s in selection.sources]
        if selection.rows is None:
            total += sum(counts)
            real += sum(n for s, n in zip(selection.sources, counts) if s.is_real)
            continue
        total += selection.rows.shape[1]
        start = 0
        for source, n in zip(selection.sources, counts):
            if source.is_real:
                real += ((selection.rows >= start) & (selection.rows < start + n)).sum(axis=1)
            start += n
    return total, real / total


def uniform_rows(rng: np.random.Generator, population: int, k: int, seed_count: int) -> np.ndarray:
    """k distinct row indices out of ``population``, drawn independently for every seed, sorted."""
    if k > population:
        raise ValueError(f"cannot draw {k} distinct rows out of {population}")
    rows = np.empty((seed_count, k), dtype=np.int64)
    for seed in range(seed_count):
        rows[seed] = rng.choice(population, size=k, replace=False)
    rows.sort(axis=1)
    return rows


def _exact(value: float) -> str:
    """The shortest text that reads back as exactly ``value``: ``0.5``, ``1``, ``10000.25`` (never
    rounded, so a resumed run uses the parameter it was started with)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


class Regime(ABC):
    """A data policy. Subclasses set ``name`` and implement ``_plan`` for iterations n >= 2."""

    name: ClassVar[str]
    parameter: ClassVar[str | None] = None  # the name of the one optional parameter, if any
    default: ClassVar[float | None] = None
    # True when the plan of iteration n can use synthetic batches older than S_n, so they must be kept.
    keeps_history: ClassVar[bool] = False

    def __init__(self, value: float | None = None):
        if self.parameter is None:
            if value is not None:
                raise ValueError(f"regime {self.name!r} takes no parameter")
            self.value = None
        else:
            chosen = self.default if value is None else value
            assert chosen is not None, f"regime {self.name!r} has a parameter without a default"
            self.value = float(chosen)
            if not np.isfinite(self.value):
                raise ValueError(f"regime {self.name!r}: {self.parameter} must be a finite number, got {value}")
            self._check(self.value)

    def _check(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"regime {self.name!r}: {self.parameter} must lie in [0, 1], got {value}")

    @property
    def label(self) -> str:
        """The name as written in configs and tables, parameter included: ``keep-real-fraction:0.1``."""
        return self.name if self.value is None else f"{self.name}:{_exact(self.value)}"

    def __repr__(self) -> str:
        return f"<regime {self.label}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regime) and other.label == self.label

    def __hash__(self) -> int:
        return hash(self.label)

    def synthetic_size(self, iteration: int, real_size: int) -> int:
        """How many samples to draw from the model of iteration n-1 for iteration n >= 2."""
        return real_size

    def fresh_real_size(self, iteration: int, real_size: int) -> int:
        """How many never-seen real samples iteration n >= 2 needs."""
        return 0

    @property
    def draws_fresh_real(self) -> bool:
        """Whether the regime asks the setting for never-seen real data (``Setting.fresh_real``)."""
        return type(self).fresh_real_size is not Regime.fresh_real_size

    def plan(
        self, sizes: Mapping[Source, int], iteration: int, seed_count: int, rng: np.random.Generator
    ) -> TrainingPlan:
        """The training set of ``iteration``, given the sources that exist and their sizes."""
        if iteration < 1:
            raise ValueError(f"iterations start at 1, got {iteration}")
        if iteration == 1:
            selections: tuple[Selection, ...] = (Selection((REAL,)),)
        else:
            selections = tuple(s for s in self._plan(sizes, iteration, seed_count, rng) if self._nonempty(s, sizes))
        train_size, real_fraction = _real_fraction(selections, sizes, seed_count)
        return TrainingPlan(selections, train_size, real_fraction)

    @staticmethod
    def _nonempty(selection: Selection, sizes: Mapping[Source, int]) -> bool:
        if selection.rows is not None:
            return selection.rows.shape[1] > 0
        return any(sizes[s] for s in selection.sources)

    @abstractmethod
    def _plan(
        self, sizes: Mapping[Source, int], iteration: int, seed_count: int, rng: np.random.Generator
    ) -> list[Selection]: ...


class Replace(Regime):
    """S_n only: each model sees nothing but the previous model's T samples."""

    name = "replace"

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((synthetic_source(iteration),))]


class Accumulate(Regime):
    """The real data plus every synthetic batch so far: n*T rows, real fraction 1/n."""

    name = "accumulate"
    keeps_history = True

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((REAL, *(synthetic_source(i) for i in range(2, iteration + 1))))]


class AccumulateSubsample(Regime):
    """A uniform T-subset (per seed, without replacement) of the accumulated pool: fixed compute."""

    name = "accumulate-subsample"
    keeps_history = True

    def _plan(self, sizes, iteration, seed_count, rng):
        sources = (REAL, *(synthetic_source(i) for i in range(2, iteration + 1)))
        population = sum(sizes[s] for s in sources)
        return [Selection(sources, uniform_rows(rng, population, sizes[REAL], seed_count))]


class ReplaceGrown(Regime):
    """n*T fresh synthetic samples from the model of iteration n-1 (the paper's ablation)."""

    name = "replace-grown"

    def synthetic_size(self, iteration, real_size):
        return iteration * real_size

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((synthetic_source(iteration),))]


def _share(fraction: float, real_size: int) -> int:
    return int(round(fraction * real_size))


class KeepRealFraction(Regime):
    """T samples: a fresh uniform subset of round(p*T) original real rows, the rest synthetic (Shumailov et al.)."""

    name = "keep-real-fraction"
    parameter = "fraction"
    default = 0.1

    def synthetic_size(self, iteration, real_size):
        return real_size - _share(self.value, real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        kept = uniform_rows(rng, sizes[REAL], _share(self.value, sizes[REAL]), seed_count)
        return [Selection((REAL,), kept), Selection((synthetic_source(iteration),))]


class FreshReal(Regime):
    """T samples: round(p*T) never-seen real samples plus synthetic ones (Alemohammad et al.'s fresh-data loop)."""

    name = "fresh-real"
    parameter = "fraction"
    default = 0.5

    def fresh_real_size(self, iteration, real_size):
        return _share(self.value, real_size)

    def synthetic_size(self, iteration, real_size):
        return real_size - _share(self.value, real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((fresh_real_source(iteration),)), Selection((synthetic_source(iteration),))]


class Mix(Regime):
    """All real data plus round(lambda*T) synthetic samples from the previous model (Bertrand et al.)."""

    name = "mix"
    parameter = "ratio"
    default = 0.5

    def _check(self, value):
        if not value >= 0.0:
            raise ValueError(f"regime 'mix': ratio must be >= 0, got {value}")

    def synthetic_size(self, iteration, real_size):
        return _share(self.value, real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((REAL,)), Selection((synthetic_source(iteration),))]


REGIMES: dict[str, type[Regime]] = {
    cls.name: cls for cls in (Replace, Accumulate, AccumulateSubsample, ReplaceGrown, KeepRealFraction, FreshReal, Mix)
}


def parse_regime(spec: Any) -> Regime:
    """A regime from a config entry: ``"accumulate"``, ``"mix:0.25"`` or ``{name: mix, ratio: 0.25}``."""
    if isinstance(spec, Regime):
        return spec
    if isinstance(spec, str):
        name, _, value_text = spec.strip().partition(":")
        value: Any = value_text.strip() or None
    elif isinstance(spec, Mapping):
        spec = dict(spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"a regime given as a mapping needs a 'name', got {spec!r}")
        value = spec.pop(REGIMES[name].parameter, None) if name in REGIMES and REGIMES[name].parameter else None
        if spec:
            raise ValueError(f"regime {name!r}: unknown field(s) {', '.join(map(str, spec))}")
    else:
        raise ValueError(f"a regime must be a name or a mapping, got {spec!r}")
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r} (known: {', '.join(REGIMES)})")
    if value is not None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"regime {name!r}: parameter must be a number, got {value!r}") from None
    return REGIMES[name](value)
