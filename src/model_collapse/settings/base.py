"""The one protocol every setting implements: seven members.

A setting is bound to the seeds of one chain when it is constructed: it draws the real training and
test data of those seeds (``real_train``) and then fits, samples and evaluates models for them. Cheap
settings run all seeds of a chain at once and vectorise over them; costly ones set
``one_seed_per_chain`` and get one seed per chain.

A setting knows nothing about regimes: it is handed a list of data *parts* to fit on (whole sources it
produced earlier, or rows taken from several of them) and fits one model per seed. The data themselves
are of a type that knows its size, how to select rows and how to save and load itself (``Samples`` in
``arrays.py``, ``TokenCorpus`` for language models); the setting only produces and consumes them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return any(_admits_bool(argument) for argument in get_args(annotation))


class StrictConfig(BaseModel):
    """A config model that refuses what pydantic would quietly coerce: unknown keys, infinite or NaN
    numbers, and booleans where a number is expected (``iterations: true`` is not 1).

    ``moved`` maps keys of an earlier config layout to their place now (``learning_rate`` ->
    ``training.learning_rate``): such a key is refused with a message naming where it went."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    moved: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _no_moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # keys of the earlier layout (also a key that is now a section, ``model``, holding a plain value)
            moves = [
                (key, cls.moved[key])
                for key, value in data.items()
                if key in cls.moved and (key not in cls.model_fields or not isinstance(value, dict))
            ]
            if moves:
                raise PydanticCustomError("moved", "keys moved: {moves}", {"moves": moves})
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
                    raise PydanticCustomError(
                        "boolean_for_number",
                        "expected {kind}, got the boolean {value}",
                        {"key": key, "kind": _kind(field.annotation), "value": str(value).lower()},
                    )
        return data


def _kind(annotation: Any) -> str:
    """What a field takes, in words, for the message refusing a boolean in it."""
    text = str(annotation)
    if "int" in text or "float" in text:
        return "a number"
    return "a string" if "str" in text else "a value that is not a boolean"


class SettingConfig(StrictConfig):
    """Base of every setting's typed config. Unknown keys are errors, never ignored.

    Data fields sit at the top; a setting with many options groups the rest into sections (``model``,
    ``training``, ``sampling``), each a ``StrictConfig`` of its own that the code receives as is."""

    name: str


def section_of(annotation: Any) -> type[StrictConfig] | None:
    """The section type a field holds, or None for a plain field."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, StrictConfig) else None


@dataclass(frozen=True)
class Footprint:
    """What one seed of a chain holds in memory, for the check made before a run starts."""

    rows: int  # real training samples per seed (T)
    bytes_per_row: int  # memory per sample of the pool, copies made to fit and sample included
    fixed_bytes: int  # memory per seed that does not grow with the pool (designs, test data, models)


@dataclass(frozen=True)
class Fit:
    """What a fit produced, for a setting that keeps details of it beside the metrics (a language
    model's learning curve): its ``fit`` returns this instead of the bare model."""

    model: Any
    diagnostics: dict[str, Any] | None


@dataclass(frozen=True)
class Metric:
    label: str  # axis label for figures
    log_scale: bool = False  # figures use a log axis for it, as the paper does


class Declaration:
    """What a setting is, readable without its model code: config type, metrics, how it runs. Every
    setting class is one; the VAE and language models also have a light one of their own (see
    ``settings/__init__.py``) that their setting class inherits."""

    name: ClassVar[str]
    Config: ClassVar[type[SettingConfig]]
    metrics: ClassVar[dict[str, Metric]]
    one_seed_per_chain: ClassVar[bool] = False  # a neural network per seed: chains of one seed each
    # Iterations of milliseconds, computed the same way every time: the chain commits them in groups
    # and, on resume, recomputes them rather than keeping models and synthetic data on disk.
    cheap: ClassVar[bool] = False
    # Settings whose samples a person looks at (images, texts) keep this many of the real data and of
    # every iteration's model as a preview, for figures.
    preview_size: ClassVar[int] = 0
    # ... and previews that are molecules (mol blocks) are drawn with ``depict`` and written as SD files.
    previews_molecules: ClassVar[bool] = False
    # Fits that record a learning curve (``Fit.diagnostics["learning_curve"]``, a list of dicts): the
    # keys and labels of its axes, (x key, x label, y key, y label).
    learning_curve_axes: ClassVar[tuple[str, str, str, str]] = (
        "epoch",
        "epoch",
        "validation_loss",
        "validation loss (nats / token)",
    )

    @classmethod
    def footprint(cls, config: SettingConfig) -> Footprint | None:
        """Memory per seed, for settings whose chains hold their data in RAM (None: not estimated)."""
        return None

    @classmethod
    def theory(cls, config: SettingConfig, regime_name: str, iterations: int) -> list:
        """Closed forms of the metrics under a regime, as ``theory.Curve`` s over iterations 1..N
        (none by default)."""
        return []

    @classmethod
    def depict(cls, previews: np.ndarray) -> np.ndarray:
        """Images (N, H, W, 3) uint8 of molecule previews (settings with ``previews_molecules``)."""
        raise NotImplementedError(f"setting {cls.name!r} does not preview molecules")


class Setting(Declaration, ABC):
    def __init__(self, config: SettingConfig, seeds: Sequence[int]):
        self.config = config
        self.seeds = tuple(int(s) for s in seeds)
        if self.one_seed_per_chain and len(self.seeds) != 1:
            raise ValueError(f"the {self.name} setting runs one seed per chain, got {len(self.seeds)}")

    @property
    def seed_count(self) -> int:
        return len(self.seeds)

    @property
    @abstractmethod
    def real_train(self) -> Any:
        """The real training data of every seed (iteration 1 fits on it); its type is the data type of
        every part this setting produces and fits on."""

    @abstractmethod
    def fresh_real(self, size: int, rng: np.random.Generator) -> Any:
        """``size`` new real training samples per seed, never seen before."""

    @abstractmethod
    def fit(self, parts: Sequence[Any], rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """A fresh model per seed fitted on the union of ``parts``, or a ``Fit`` with details to keep.

        ``scratch`` (with a run directory) is a directory, not yet created, where a long fit may save
        progress: an interrupted fit is run again with the same parts, ``rng`` and ``scratch`` and may
        continue from there. It goes once the iteration is committed; quick fits ignore it."""

    @abstractmethod
    def sample(self, model: Any, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """``size`` synthetic samples per seed from ``model``.

        ``scratch`` is ``fit``'s (the iteration's), for a long sampling run to save what it has done."""

    @abstractmethod
    def evaluate(self, model: Any) -> dict[str, np.ndarray]:
        """Metrics on held-out real data: one array of shape (seeds,) per name in ``metrics``."""

    def preview(self, data: Any) -> np.ndarray:
        """A few samples of the first seed of ``data``: uint8 images (N, H, W, C), strings (N,), or mol
        blocks (N,) for settings with ``previews_molecules``."""
        raise NotImplementedError(f"setting {self.name!r} has no preview")

    @abstractmethod
    def save_model(self, model: Any, directory: Path) -> None: ...

    @abstractmethod
    def load_model(self, directory: Path) -> Any: ...
