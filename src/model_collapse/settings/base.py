"""The protocol every setting implements, and the contract of the data it produces.

What a setting author writes, for data of rows per seed (``Samples``):

* ``name``, ``Config`` (a ``SettingConfig``) and ``metrics`` (a ``Metric`` per name);
* ``__init__(config, seeds)`` drawing the real data of those seeds, and ``real_train`` returning them;
* ``fit(parts, rng, scratch)``: one fresh model per seed on the union of ``parts``;
* ``sample(model, size, rng, scratch)``: ``size`` synthetic samples per seed;
* ``evaluate(model)``: one array of shape (seeds,) per metric, on held-out real data (or an
  ``Evaluation`` that also keeps details beside them, as ``fit`` may return a ``Fit``).

Everything else has a default a setting may override: ``save_model``/``load_model`` keep numpy arrays
(an array or a mapping of named arrays) or a torch module's weights (with ``new_model``);
``fresh_real`` is needed only under the regimes that draw fresh real data (``fresh-real``), and a config
that asks for one of them with a setting without it is refused; ``score`` (with ``scores``) only for a
config's ``curation`` to rank samples by the setting's own scores; ``cheap``, ``one_seed_per_chain``,
``preview_size``, ``footprint``, ``check_inputs`` and ``theory`` are declarations with defaults. What
``fit``, ``sample``, ``fresh_real`` and ``evaluate`` return is checked before it is committed
(``contract.py``).

A setting is bound to the seeds of one chain when it is constructed. Cheap settings run all seeds of a
chain at once and vectorise over them; costly ones set ``one_seed_per_chain`` and get one seed per chain.
A setting knows nothing about regimes: it is handed a list of data *parts* to fit on (whole sources it
produced earlier, or rows taken from several of them). The data are of a type that follows ``Data``
below (``Samples`` in ``arrays.py``, ``TokenCorpus``, ``Conformers``); the chain only calls that
contract, so a setting may bring a data type of its own. Every random number comes from the generator a
method is handed, or from ``randomness.seed_rng(seed, purpose)`` with a purpose of the setting's choice.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from .configs import SettingConfig

D = TypeVar("D", bound="Data")


@runtime_checkable
class Data(Protocol):
    """The contract of what a setting produces and fits on: the chain moves data between the regime and
    the setting through these members alone, called on the type of the setting's ``real_train``.

    Every part's first axis is the seed; ``len`` and ``select`` count samples per seed."""

    # Whether ``load`` memory-maps: a batch kept for later iterations is then read back from the run
    # directory once committed, so that an accumulated pool does not grow RAM.
    memory_mapped: ClassVar[bool]

    def __len__(self) -> int:
        """Samples per seed."""
        ...

    @classmethod
    def select(cls: type[D], parts: Sequence[D], rows: np.ndarray) -> D:
        """The rows ``rows`` (shape (seeds, k): one row of indices per seed) of the concatenation of
        ``parts``, in that order: ``len`` of the result is k."""
        ...

    def save(self, directory: Path) -> None:
        """Write the data into ``directory`` (it exists and is empty)."""
        ...

    @classmethod
    def load(cls: type[D], directory: Path, like: D) -> D:
        """Data saved by ``save``, checked against ``like`` (the chain's real data: seeds, fields, sample
        shape); missing, damaged or foreign files are a ``RunDirectoryError`` naming the file."""
        ...


@dataclass(frozen=True)
class Footprint:
    """What one seed of a chain holds in memory, for the check made before a run starts."""

    rows: int  # real training samples per seed (T)
    bytes_per_row: int  # memory per sample of the pool, copies made to fit and sample included
    fixed_bytes: int  # memory per seed that does not grow with the pool (designs, test data, models)
    # a model's activations where they take host memory (``activations_on_host``): counted when the
    # chains run on this machine, not when Slurm or a remote Ray cluster runs them elsewhere
    activation_bytes: int = 0
    # the config fields (dotted, below ``setting.``) that the fixed and activation bytes grow with
    # (``model.widths``, ``lora.rank``): a refusal names them when the model is what does not fit
    fields: tuple[str, ...] = ()


def activations_on_host(device: str) -> bool:
    """Whether a model's activations take this machine's memory, for a footprint: on the CPU, and under
    ``auto`` where no CUDA device is (PyTorch is asked only then; without it, the CPU it is)."""
    if device != "auto":
        return device == "cpu"
    try:
        import torch
    except ImportError:
        return True
    return not torch.cuda.is_available()


@dataclass(frozen=True)
class Fit:
    """What a fit produced, for a setting that keeps details of it beside the metrics (a language
    model's learning curve): its ``fit`` returns this instead of the bare model."""

    model: Any
    diagnostics: dict[str, Any] | None


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation produced, for a setting that keeps details of it beside the metrics (the
    conformer setting's coverage at every RMSD threshold): its ``evaluate`` returns this instead of the
    bare metrics. The details join the fit's in the iteration's ``diagnostics.json``."""

    metrics: dict[str, np.ndarray]
    diagnostics: dict[str, Any]

    @classmethod
    def of(cls, result: Mapping[str, np.ndarray] | Evaluation) -> Evaluation:
        """What ``evaluate`` returned, as an ``Evaluation`` (a bare mapping of metrics keeps no details)."""
        return result if isinstance(result, Evaluation) else cls(dict(result), {})


@dataclass(frozen=True)
class Curve:
    """A closed form of a metric over iterations 1..N, which figures overlay on the simulation."""

    metric: str
    values: np.ndarray  # one value per iteration 1..N
    kind: str  # "expected" (the expectation) or "bound" (an upper bound)


@dataclass(frozen=True)
class Metric:
    label: str  # axis label for figures
    log_scale: bool = False  # figures use a log axis for it, as the paper does


C = TypeVar("C", bound=SettingConfig)


class Declaration(Generic[C]):
    """What a setting is, readable without its model code: config type, metrics, how it runs. Every
    setting class is one; the VAE and language models also have a light one of their own (see
    ``settings/registry.py``) that their setting class inherits. ``C``, the type of its ``Config``, is
    for type checkers (``class Gaussian(Setting[GaussianConfig])``); a plain ``Setting`` works alike."""

    name: ClassVar[str]
    Config: ClassVar[type[SettingConfig]]
    metrics: ClassVar[dict[str, Metric]]
    one_seed_per_chain: ClassVar[bool] = False  # a neural network per seed: chains of one seed each
    # Iterations of milliseconds, computed the same way every time: the chain commits them in groups
    # and, on resume, recomputes them rather than keeping models and synthetic data on disk.
    cheap: ClassVar[bool] = False
    # Settings whose samples a person looks at (images, texts; others through ``depict``) keep this many
    # of the real data and of every iteration's model as a preview, for figures.
    preview_size: ClassVar[int] = 0
    # Fits that record a learning curve (``Fit.diagnostics["learning_curve"]``, a list of dicts): the
    # keys and labels of its axes, (x key, x label, y key, y label).
    # Whether ``theory`` reads a config's ``curation`` (and returns only what holds under it); without
    # it, a curated config (candidates > 1) has no closed forms.
    theory_of_curation: ClassVar[bool] = False
    # The scores ``Setting.score`` computes for a batch of samples, which a config's ``curation.score``
    # may name: ``likelihood`` (under the model that drew them), ``oracle`` (under the real data's
    # distribution), or scores of the setting's own. Higher is better.
    scores: ClassVar[tuple[str, ...]] = ()
    learning_curve_axes: ClassVar[tuple[str, str, str, str]] = (
        "epoch",
        "epoch",
        "validation_loss",
        "validation loss (nats / token)",
    )
    # Curves an evaluation or a fit records beyond the learning curve (``diagnostics[key]``, a list of
    # dicts), by key, with their axes (x key, x label, y key, y label): drawn as the learning curves
    # are, a line per iteration and a panel per regime (``<key>_<point>``).
    curves: ClassVar[dict[str, tuple[str, str, str, str]]] = {}
    # Distributions a fit records, one value per sample (``Fit.diagnostics[key]``, a list of numbers),
    # by key, with the label of their axis: drawn as a histogram per iteration, a panel per regime
    # (``distribution_<key>_<point>``; Shumailov et al.'s perplexity histograms).
    distributions: ClassVar[dict[str, str]] = {}

    @classmethod
    def provides_fresh_real(cls) -> bool:
        """Whether the setting draws never-seen real data (``fresh_real``), which the ``fresh-real``
        regime needs; a config that asks for it with a setting without it is refused."""
        return True

    @classmethod
    def metrics_of(cls, config: C) -> dict[str, Metric]:
        """The metrics a chain of ``config`` records (``metrics``; a setting that measures more when its
        config asks, such as the VAE's ``inception_fid`` with ``inception_weights``, adds them here)."""
        return cls.metrics

    @classmethod
    def footprint(cls, config: C) -> Footprint | None:
        """Memory per seed, for settings whose chains hold their data in RAM (None: not estimated)."""
        return None

    @classmethod
    def check_inputs(cls, config: C) -> None:  # noqa: B027 (most settings read nothing they could check early)
        """Check what ``config`` names on this machine (a data directory, a checkpoint) before anything is
        written, raising a ``ConfigError`` of one line: called for a run whose chains run here, so that
        a wrong path is refused before its run directory exists (nothing, by default)."""

    @classmethod
    def theory(cls, config: C, regime_name: str, iterations: int) -> list[Curve]:
        """Closed forms of the metrics under a regime, as ``Curve`` s over iterations 1..N
        (none by default)."""
        return []

    @classmethod
    def depict(cls, previews: np.ndarray) -> np.ndarray | None:
        """Pictures (N, H, W, 3) uint8 of previews that are neither images nor texts (mol blocks, say), for
        figures and the report; None (the default): previews are shown as they are."""
        return None

    @classmethod
    def states_theory(cls) -> bool:
        """Whether the setting states closed forms (overrides ``theory``)."""
        return _overrides(cls, "theory")

    @classmethod
    def depicts_previews(cls) -> bool:
        """Whether ``depict`` draws this setting's previews (they are then not texts)."""
        return _overrides(cls, "depict")

    @classmethod
    def export_previews(cls, sections: list[tuple[str, np.ndarray]]) -> tuple[str, str] | None:
        """One file of previews for another tool, from (title, previews) sections (the real data, then
        every iteration of every regime): (file suffix, text), or None (the default: no such file)."""
        return None


def _overrides(cls: type, method: str) -> bool:
    """Whether ``cls`` defines its own ``method`` rather than ``Declaration``'s default."""
    return getattr(cls, method).__func__ is not getattr(Declaration, method).__func__


class Setting(Declaration[C], ABC):
    # A directory of the run that all its chains share, for what a setting makes once per run and keeps
    # (a pretrained model): the engine sets it after constructing the setting, before any other call;
    # None outside a run directory. Chains run in parallel: write into it by renaming a finished
    # directory into place.
    shared: Path | None = None

    def __init__(self, config: C, seeds: Sequence[int]):
        self.config: C = config
        self.seeds = tuple(int(s) for s in seeds)
        if self.one_seed_per_chain and len(self.seeds) != 1:
            raise ValueError(f"the {self.name} setting runs one seed per chain, got {len(self.seeds)}")

    @property
    def seed_count(self) -> int:
        return len(self.seeds)

    @property
    @abstractmethod
    def real_train(self) -> Any:
        """The real training data of every seed (iteration 1 fits on it); its type, which follows
        ``Data``, is the type of every part this setting produces and fits on."""

    def fresh_real(self, size: int, rng: np.random.Generator) -> Any:
        """``size`` new real training samples per seed, never seen before (only the regimes that draw
        fresh real data call it)."""
        raise NotImplementedError(f"setting {self.name!r} draws no fresh real data")

    @classmethod
    def provides_fresh_real(cls) -> bool:
        return cls.fresh_real is not Setting.fresh_real

    @property
    def warm_start(self) -> bool:
        """Whether ``fit`` continues from the previous iteration's model rather than starting afresh;
        a setting with a ``training.warm_start`` field (the neural ones) reads it from there."""
        training = getattr(self.config, "training", None)
        return bool(getattr(training, "warm_start", False))

    @abstractmethod
    def fit(self, parts: Sequence[Any], rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """A fresh model per seed fitted on the union of ``parts``, or a ``Fit`` with details to keep.

        ``scratch`` (with a run directory) is a directory, not yet created, where a long fit may save
        progress: an interrupted fit is run again with the same parts, ``rng`` and ``scratch`` and may
        continue from there. It goes once the iteration is committed; quick fits ignore it.

        A setting whose ``warm_start`` is true is called with ``previous=``: the last iteration's model
        (None at iteration 1), to continue from; ``fit`` leaves it as it is (copy it)."""

    @abstractmethod
    def sample(self, model: Any, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """``size`` synthetic samples per seed from ``model``.

        ``scratch`` is ``fit``'s (the iteration's), for a long sampling run to save what it has done."""

    @abstractmethod
    def evaluate(self, model: Any) -> dict[str, np.ndarray] | Evaluation:
        """Metrics on held-out real data: one array of shape (seeds,) per name in ``metrics``; or an
        ``Evaluation`` of those and details to keep beside them."""

    def score(self, name: str, model: Any, samples: Any) -> np.ndarray:
        """The score ``name`` (one of ``scores``) of every sample: an array (seeds, len(samples)), higher
        is better, -inf for a sample the score rules out. ``model`` drew ``samples``."""
        raise NotImplementedError(f"setting {self.name!r} computes no score {name!r}")

    def preview(self, data: Any) -> np.ndarray:
        """A few samples of the first seed of ``data``: uint8 images (N, H, W, C), strings (N,), or any
        array the setting's ``depict`` draws (mol blocks)."""
        raise NotImplementedError(f"setting {self.name!r} has no preview")

    def save_model(self, model: Any, directory: Path) -> None:
        """Keep ``model`` in ``directory`` (it exists and is empty), for ``load_model``.

        By default: a numpy array, or a mapping of names to numpy arrays, as ``model.npz``; a torch module
        as its weights, ``model.pt`` (read back into ``new_model()``)."""
        if _is_torch_module(model):
            from .training_state import save_weights

            save_weights(model, directory)
            return
        from ..arrayio import save_arrays

        save_arrays(directory / MODEL_ARRAYS, _model_arrays(self.name, model))

    def load_model(self, directory: Path) -> Any:
        """The model ``save_model`` kept in ``directory``; a missing, damaged or foreign file is a
        ``RunDirectoryError`` naming it. The default reads what the default ``save_model`` writes."""
        if type(self).new_model is not Setting.new_model:  # a torch module's weights
            from .training_state import load_weights

            device: Any = getattr(self, "device", "cpu")  # where a neural setting keeps its models
            return load_weights(self.new_model(), directory, device)
        from ..arrayio import load_arrays

        arrays = load_arrays(directory / MODEL_ARRAYS, ())
        return arrays[_SINGLE] if set(arrays) == {_SINGLE} else arrays

    def new_model(self) -> Any:
        """A freshly initialised torch module of this setting's architecture, on its ``device``: a setting
        whose model is a torch module writes it, and the default ``load_model`` reads the saved weights
        into one."""
        raise NotImplementedError(
            f"setting {self.name!r} keeps a torch module: give it new_model() for the default load_model"
        )


MODEL_ARRAYS = "model.npz"
_SINGLE = "model"  # the name a bare array is kept under


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")  # a model can be a torch module only once torch is imported
    return torch is not None and isinstance(model, torch.nn.Module)


def _model_arrays(name: str, model: Any) -> dict[str, np.ndarray]:
    """``model`` as named numeric arrays for ``model.npz``, or a TypeError saying what to write instead."""
    arrays = {_SINGLE: model} if isinstance(model, np.ndarray) else model
    if (
        isinstance(arrays, Mapping)
        and arrays
        and all(isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype != object for k, v in arrays.items())
    ):
        return dict(arrays)
    raise TypeError(
        f"setting {name!r}: the default save_model keeps a numpy array, a dict of numpy arrays or a torch "
        f"module, not a {type(model).__name__}: write save_model and load_model for it"
    )
