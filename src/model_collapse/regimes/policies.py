"""The data regimes: which data the model of iteration n is fitted on.

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
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..errors import ConfigError


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


def parameter(default: float | None = None, *, low: float = 0.0, high: float | None = None, whole: bool = False) -> Any:
    """A regime's parameter: a dataclass field that ``Regime`` checks when the regime is made, to be a
    finite number within [``low``, ``high``] (no upper bound: None), a whole one if ``whole``."""
    limits = {"low": low, "high": high, "whole": whole}
    if default is None:
        return field(metadata=limits)
    return field(default=default, metadata=limits)


@dataclass(frozen=True, repr=False)
class Regime(ABC):
    """A data policy: a frozen dataclass whose fields, made with ``parameter``, are its parameters (in
    the order its label writes them). Subclasses set ``name`` and implement ``_plan`` for n >= 2."""

    name: ClassVar[str]
    # True when the plan of iteration n can use synthetic batches older than S_n, so they must be kept.
    keeps_history: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for spec in fields(self):
            object.__setattr__(self, spec.name, _checked(self.name, spec, getattr(self, spec.name)))

    @classmethod
    def parameters(cls) -> tuple[str, ...]:
        """The names of the regime's parameters, in the order its label writes them."""
        return tuple(spec.name for spec in fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, float]:
        """The parameters that have a default, with it."""
        return {spec.name: spec.default for spec in fields(cls) if spec.default is not MISSING}

    @classmethod
    def from_values(cls, values: list[float]) -> Regime:
        """The regime with these parameter values (in ``parameters()`` order; those left out take their
        defaults)."""
        if not len(cls.parameters()) - len(cls.defaults()) <= len(values) <= len(cls.parameters()):
            raise ValueError(f"regime {cls.name!r} takes {_parameter_count(cls)}, got {len(values)}")
        return cls(*values)

    @classmethod
    def trains_on_nothing(cls, values: list[float]) -> bool:
        """Whether these parameter values leave no training set (a grid of values leaves them out)."""
        return False

    @property
    def label(self) -> str:
        """The name as written in configs and tables, parameters included: ``keep-real-fraction:0.1``,
        ``real-synthetic:256+2500``."""
        values = [_exact(getattr(self, name)) for name in self.parameters()]
        return f"{self.name}:{'+'.join(values)}" if values else self.name

    @property
    def grid_counts(self) -> tuple[int, int] | None:
        """(real, synthetic) sample counts that place this regime's chains in the follow-up's
        value-of-synthetic-data figure (``plots.py``); None for a regime that is no point of that grid."""
        return None

    def __repr__(self) -> str:
        return f"<regime {self.label}>"

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
        self.check_real_size(sizes[REAL])
        if iteration == 1:
            selections: tuple[Selection, ...] = (Selection((REAL,)),)
        else:
            selections = tuple(s for s in self._plan(sizes, iteration, seed_count, rng) if self._nonempty(s, sizes))
        train_size, real_fraction = _real_fraction(selections, sizes, seed_count)
        return TrainingPlan(selections, train_size, real_fraction)

    def check_real_size(self, real_size: int) -> None:  # noqa: B027 (most regimes take any size)
        """Refuse a real training set the regime cannot draw from (``RegimeMismatch``); asked at every
        plan, so a chain stops at its first iteration, before anything is fitted."""

    @staticmethod
    def _nonempty(selection: Selection, sizes: Mapping[Source, int]) -> bool:
        """Whether a selection takes any row: a batch of zero samples (``mix:0``, ``fresh-real:1``, a
        share that rounds to nothing) is never drawn, so it is absent from ``sizes``, and its part of the
        training set is simply left out."""
        if selection.rows is not None:
            return selection.rows.shape[1] > 0
        return any(sizes.get(s, 0) for s in selection.sources)

    @abstractmethod
    def _plan(
        self, sizes: Mapping[Source, int], iteration: int, seed_count: int, rng: np.random.Generator
    ) -> list[Selection]: ...


def _checked(regime: str, spec: Field, value: Any) -> float:
    """A parameter's value, checked against its limits (``parameter``): a float, or an int if whole."""
    low, high, whole = spec.metadata["low"], spec.metadata["high"], spec.metadata["whole"]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"regime {regime!r}: {spec.name} must be a number, got {value!r}")
    if whole:
        if not (np.isfinite(value) and value >= low and float(value).is_integer()):
            raise ValueError(
                f"regime {regime!r}: {spec.name} must be a whole number of samples >= {low:g}, got {value}"
            )
        return int(value)
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"regime {regime!r}: {spec.name} must be a finite number, got {value}")
    if high is None and not value >= low:
        raise ValueError(f"regime {regime!r}: {spec.name} must be >= {low:g}, got {value}")
    if high is not None and not low <= value <= high:
        raise ValueError(f"regime {regime!r}: {spec.name} must lie in [{low:g}, {high:g}], got {value}")
    return value


@dataclass(frozen=True, repr=False)
class Replace(Regime):
    """S_n only: each model sees nothing but the previous model's T samples."""

    name = "replace"

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((synthetic_source(iteration),))]


@dataclass(frozen=True, repr=False)
class Accumulate(Regime):
    """The real data plus every synthetic batch so far: n*T rows, real fraction 1/n."""

    name = "accumulate"
    keeps_history = True

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((REAL, *(synthetic_source(i) for i in range(2, iteration + 1))))]


@dataclass(frozen=True, repr=False)
class AccumulateSubsample(Regime):
    """A uniform T-subset (per seed, without replacement) of the accumulated pool: fixed compute."""

    name = "accumulate-subsample"
    keeps_history = True

    def _plan(self, sizes, iteration, seed_count, rng):
        sources = (REAL, *(synthetic_source(i) for i in range(2, iteration + 1)))
        population = sum(sizes[s] for s in sources)
        return [Selection(sources, uniform_rows(rng, population, sizes[REAL], seed_count))]


@dataclass(frozen=True, repr=False)
class ReplaceGrown(Regime):
    """n*T fresh synthetic samples from the model of iteration n-1 (the paper's ablation)."""

    name = "replace-grown"

    def synthetic_size(self, iteration, real_size):
        return iteration * real_size

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((synthetic_source(iteration),))]


def _share(fraction: float, real_size: int) -> int:
    return int(round(fraction * real_size))


@dataclass(frozen=True, repr=False)
class KeepRealFraction(Regime):
    """T samples: a fresh uniform subset of round(p*T) original real rows, the rest synthetic (Shumailov et al.)."""

    name = "keep-real-fraction"
    fraction: float = parameter(0.1, high=1.0)

    def synthetic_size(self, iteration, real_size):
        return real_size - _share(self.fraction, real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        kept = uniform_rows(rng, sizes[REAL], _share(self.fraction, sizes[REAL]), seed_count)
        return [Selection((REAL,), kept), Selection((synthetic_source(iteration),))]


@dataclass(frozen=True, repr=False)
class FreshReal(Regime):
    """T samples: round(p*T) never-seen real samples plus synthetic ones (Alemohammad et al.'s fresh-data loop)."""

    name = "fresh-real"
    fraction: float = parameter(0.5, high=1.0)

    def fresh_real_size(self, iteration, real_size):
        return _share(self.fraction, real_size)

    def synthetic_size(self, iteration, real_size):
        return real_size - _share(self.fraction, real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((fresh_real_source(iteration),)), Selection((synthetic_source(iteration),))]


@dataclass(frozen=True, repr=False)
class Mix(Regime):
    """All real data plus round(lambda*T) synthetic samples from the previous model (Bertrand et al.)."""

    name = "mix"
    ratio: float = parameter(0.5)

    def synthetic_size(self, iteration, real_size):
        return _share(self.ratio, real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((REAL,)), Selection((synthetic_source(iteration),))]


@dataclass(frozen=True, repr=False)
class RealSynthetic(Regime):
    """The first r real rows plus s synthetic samples from the previous model (the follow-up's grid)."""

    # At iteration 2 a grid of (r, s) is the follow-up's value-of-synthetic-data experiment; after it,
    # a fixed real set plus a fresh synthetic batch is Alemohammad et al.'s synthetic augmentation loop.

    name = "real-synthetic"
    real: int = parameter(whole=True)
    synthetic: int = parameter(whole=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.real + self.synthetic == 0:
            raise ValueError(f"regime {self.name!r}: real and synthetic are both 0, which leaves nothing to train on")

    @classmethod
    def trains_on_nothing(cls, values: list[float]) -> bool:
        return len(values) == 2 and values[0] == values[1] == 0

    @property
    def grid_counts(self) -> tuple[int, int]:
        return self.real, self.synthetic

    def synthetic_size(self, iteration, real_size):
        return self.synthetic

    def check_real_size(self, real_size: int) -> None:
        if self.real > real_size:
            raise RegimeMismatch(
                f"regime {self.label} trains on the first {self.real} real samples, "
                f"but the real training set holds {real_size}"
            )

    def _plan(self, sizes, iteration, seed_count, rng):
        if self.real == sizes[REAL]:
            real = Selection((REAL,))  # the whole set, its cached statistics too
        else:  # the first rows, nested across a grid's real counts as the follow-up takes them
            real = Selection((REAL,), np.tile(np.arange(self.real, dtype=np.int64), (seed_count, 1)))
        synthetic = [Selection((synthetic_source(iteration),))] if self.synthetic else []
        return [real, *synthetic]


class RegimeMismatch(ConfigError):
    """A regime that cannot draw its training set from the data a setting has (more real samples than
    there are)."""


def _parameter_count(cls: type[Regime]) -> str:
    names = cls.parameters()
    return "no parameter" if not names else f"{len(names)} parameter{'s' * (len(names) > 1)} ({', '.join(names)})"


REGIMES: dict[str, type[Regime]] = {
    cls.name: cls
    for cls in (Replace, Accumulate, AccumulateSubsample, ReplaceGrown, KeepRealFraction, FreshReal, Mix, RealSynthetic)
}
