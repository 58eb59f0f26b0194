"""The one protocol every setting implements.

A setting is bound to one batch of seeds when it is constructed: it draws the real training and test
data of those seeds and then fits, samples and evaluates models for that batch. Cheap settings hold all
seeds of a chain in one batch and vectorise over it; costly ones set ``batches_seeds = False`` and get a
batch of one seed per chain.

A setting knows nothing about regimes: it is handed a list of data *parts* to fit on (whole sources it
produced earlier, or rows gathered from several of them by ``select``) and fits one model per seed.
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
    numbers, and booleans where a number is expected (``iterations: true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
    """Base of every setting's typed config. Unknown keys are errors, never ignored."""

    name: str


@dataclass(frozen=True)
class Footprint:
    """What one seed of a chain holds in memory, for the check made before a run starts."""

    rows: int  # real training samples per seed (T)
    bytes_per_row: int  # memory per sample of the pool, copies made to fit and sample included
    fixed_bytes: int  # memory per seed that does not grow with the pool (designs, test data, models)


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
    batches_seeds: ClassVar[bool] = True
    # Settings whose samples a person looks at (images, texts) keep this many of the real data and of
    # every iteration's model as a preview, for figures.
    preview_size: ClassVar[int] = 0

    @classmethod
    def footprint(cls, config: SettingConfig) -> Footprint | None:
        """Memory per seed, for settings whose chains hold their data in RAM (None: not estimated)."""
        return None


class Setting(Declaration, ABC):
    # True when load_data memory-maps: a synthetic batch kept for later iterations is then read back
    # from the run directory once it is committed, so the accumulated pool does not grow RAM.
    data_on_disk: ClassVar[bool] = False

    def __init__(self, config: SettingConfig, seeds: Sequence[int]):
        self.config = config
        self.seeds = tuple(int(s) for s in seeds)
        if not self.batches_seeds and len(self.seeds) != 1:
            raise ValueError(f"the {self.name} setting runs one seed per chain, got {len(self.seeds)}")

    @property
    def batch(self) -> int:
        return len(self.seeds)

    @property
    @abstractmethod
    def real_train(self) -> Any:
        """The real training data of every seed of the batch (iteration 1 fits on it)."""

    @abstractmethod
    def fresh_real(self, size: int, rng: np.random.Generator) -> Any:
        """``size`` new real training samples per seed, never seen before."""

    @abstractmethod
    def fit(self, parts: Sequence[Any], rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """A freshly initialised model per seed, fitted on the union of ``parts``.

        ``scratch`` (with a run directory) is a directory, not yet created, where a long fit may save
        its progress. If the run is interrupted, the same fit - same parts, same ``rng`` - is run again
        with the same ``scratch`` and may continue from there; the directory goes once the iteration
        is committed. Quick fits ignore it."""

    @abstractmethod
    def sample(self, model: Any, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """``size`` synthetic samples per seed from ``model``. ``scratch`` is as for ``fit`` (the same
        directory: the iteration's), for a long sampling run that saves what it has done so far."""

    @abstractmethod
    def evaluate(self, model: Any) -> dict[str, np.ndarray]:
        """Metrics on held-out real data: one array of shape (batch,) per name in ``metrics``."""

    @abstractmethod
    def size(self, data: Any) -> int:
        """The number of samples per seed in ``data``."""

    @abstractmethod
    def select(self, parts: Sequence[Any], rows: np.ndarray) -> Any:
        """The rows ``rows`` (shape (batch, k)) of the concatenation of ``parts``."""

    def preview(self, data: Any) -> np.ndarray:
        """A few samples of the first seed of ``data``, for settings with ``preview_size``: images as
        uint8 (N, H, W, C), or texts as an array of strings (N,)."""
        raise NotImplementedError(f"setting {self.name!r} has no preview")

    def diagnostics(self, model: Any) -> dict[str, Any] | None:
        """JSON-ready details of a fit worth keeping beside the metrics (e.g. a learning curve)."""
        return None

    @abstractmethod
    def save_model(self, model: Any, directory: Path) -> None: ...

    @abstractmethod
    def load_model(self, directory: Path) -> Any: ...

    @abstractmethod
    def save_data(self, data: Any, directory: Path) -> None: ...

    @abstractmethod
    def load_data(self, directory: Path) -> Any: ...
