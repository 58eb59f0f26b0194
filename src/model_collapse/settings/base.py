"""The protocol every setting implements, and the contract of the data it produces.

A setting is ``Setting[Config, Data]``: its config type and the type of its data (for mypy). What a
setting author writes, for data of rows per seed (``Samples``), is the compute contract:

* ``name``, ``Config`` (a ``SettingConfig``) and ``metrics`` (a ``Metric`` per name);
* ``__init__(config, seeds)`` drawing the real data of those seeds, and ``real_train`` returning them;
* ``fit(parts, rng, scratch)``: one fresh model per seed on the union of ``parts``;
* ``sample(model, size, rng, scratch)``: ``size`` synthetic samples per seed;
* ``evaluate(model)``: one array of shape (seeds,) per metric, on held-out real data (or an
  ``Evaluation`` that also keeps details beside them, as ``fit`` may return a ``Fit``);
* ``save_model``/``load_model``, whose defaults keep numpy arrays (an array or a mapping of named
  arrays) or a torch module's weights (with ``new_model``);
* optionally ``fresh_real`` (the ``fresh-real`` regime), ``score`` (a config's ``curation``) and
  ``theory`` (closed forms);

and two declarations, values the engine reads instead of looking at the class (scikit-learn's tags):
``capabilities`` (a ``Capabilities``: which optional members it wrote, how its chains run) and
``presentation`` (a ``Presentation``: what figures and the report show of it, with ``preview``). What
``fit``, ``sample``, ``fresh_real`` and ``evaluate`` return is checked before it is committed
(``contract.py``); ``footprint`` and ``check_inputs`` are checks made before a run, with defaults.

A setting is bound to the seeds of one chain when it is constructed. Cheap settings run all seeds of a
chain at once and vectorise over them; costly ones declare ``one_seed_per_chain`` and get one seed per
chain. A setting knows nothing about regimes: it is handed a list of data *parts* to fit on (whole
sources it produced earlier, or rows taken from several of them). The data are of a type that follows
``Data`` below (``Samples`` in ``arrays.py``, ``TokenCorpus``, ``Conformers``); the chain only calls
that contract, so a setting may bring a data type of its own. Every random number comes from the
generator a method is handed, or from ``randomness.seed_rng(seed, purpose)`` with a purpose of the
setting's choice.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, runtime_checkable

import numpy as np
from typing_extensions import TypeVar

from .configs import SettingConfig
from .legacy import adopt_old_declarations

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
# The type of a setting's data (``Samples``, ``TokenCorpus``, ``Conformers``), for type checkers:
# ``class Gaussian(Setting[GaussianConfig, Samples])`` has mypy check that ``fit``, ``sample``,
# ``real_train`` and ``fresh_real`` agree on it. Left out (``Setting[GaussianConfig]``), it is ``Any``.
DataType = TypeVar("DataType", default=Any)

Axes = tuple[str, str, str, str]  # (x key, x label, y key, y label) of a recorded curve


@dataclass(frozen=True)
class Capabilities:
    """What a setting can do and how its chains run, declared once as a value (scikit-learn's tags):
    the engine reads these and nothing else about a setting's abilities. A setting declares
    ``capabilities = Capabilities(...)``; one whose capabilities depend on its config (``warm_start``,
    from the neural settings' ``training.warm_start``) also overrides ``capabilities_of``."""

    # Iterations of milliseconds, computed the same way every time: the chain commits them in groups,
    # computes on one thread and, on resume, recomputes them rather than keeping models and samples.
    cheap: bool = False
    # A neural network per seed: chains of one seed each (``seeds`` has one element).
    one_seed_per_chain: bool = False
    # ``fresh_real`` draws never-seen real data, which the ``fresh-real`` regime needs; a config that
    # asks for that regime with a setting without it is refused.
    fresh_real: bool = False
    # ``fit`` continues from the previous iteration's model: it is called with ``previous=`` (None at
    # iteration 1).
    warm_start: bool = False
    # ``theory`` states closed forms of the metrics, which figures overlay on the simulation.
    theory: bool = False
    # ``theory`` reads a config's ``curation`` and returns only what holds under it; without it, a
    # curated config (candidates > 1) has no closed forms.
    theory_of_curation: bool = False
    # The scores ``score`` computes for a batch of samples, which a config's ``curation.score`` may name:
    # ``likelihood`` (under the model that drew them), ``oracle`` (under the real data's distribution),
    # or scores of the setting's own. Higher is better.
    scores: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.scores, str) or not all(isinstance(name, str) for name in self.scores):
            raise TypeError(f"Capabilities.scores is a tuple of score names, not {self.scores!r}")
        object.__setattr__(self, "scores", tuple(self.scores))
        if self.theory_of_curation and not self.theory:
            raise ValueError("Capabilities(theory_of_curation=True) needs theory=True")


@dataclass(frozen=True)
class Presentation:
    """How figures and the report show a setting's results; nothing here changes a number. A setting
    declares ``presentation = Presentation(...)`` (the default shows metrics only)."""

    # Settings whose samples a person looks at keep this many of the real data and of every iteration's
    # model as a preview (``Setting.preview`` makes them): images, texts, or anything ``depict`` draws.
    preview_size: int = 0
    # Fits that record a learning curve (``Fit.diagnostics["learning_curve"]``, a list of dicts): the
    # keys and labels of its axes.
    learning_curve_axes: Axes = ("epoch", "epoch", "validation_loss", "validation loss (nats / token)")
    # Curves an evaluation or a fit records beyond the learning curve (``diagnostics[key]``, a list of
    # dicts), by key, with their axes: drawn as the learning curves are, a line per iteration and a panel
    # per regime (``<key>_<point>``).
    curves: Mapping[str, Axes] = field(default_factory=dict)
    # Distributions a fit records, one value per sample (``Fit.diagnostics[key]``, a list of numbers), by
    # key, with the label of their axis: a histogram per iteration, a panel per regime
    # (``distribution_<key>_<point>``; Shumailov et al.'s perplexity histograms).
    distributions: Mapping[str, str] = field(default_factory=dict)
    # Pictures (N, H, W, 3) uint8 of previews that are neither images nor texts (mol blocks, say); None:
    # previews are shown as they are.
    depict: Callable[[np.ndarray], np.ndarray] | None = None
    # One file of previews for another tool, from (title, previews) sections (the real data, then every
    # iteration of every regime): (file suffix, text), or None for no file.
    export_previews: Callable[[list[tuple[str, np.ndarray]]], tuple[str, str] | None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.preview_size, int) or self.preview_size < 0:
            raise ValueError(f"Presentation.preview_size is a count of samples, not {self.preview_size!r}")


class Declaration(Generic[C]):
    """What a setting is, readable without its model code: config type, metrics, capabilities and
    presentation. Every setting class is one; the VAE and language models also have a light one of their
    own (see ``settings/registry.py``) that their setting class inherits. ``C``, the type of its
    ``Config``, is for type checkers."""

    name: ClassVar[str]
    Config: ClassVar[type[SettingConfig]]
    metrics: ClassVar[dict[str, Metric]]
    capabilities: ClassVar[Capabilities] = Capabilities()
    presentation: ClassVar[Presentation] = Presentation()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        protocol = tuple(k for k in (Declaration, globals().get("Setting")) if isinstance(k, type))
        if cls not in protocol and cls.__module__ != __name__:
            adopt_old_declarations(cls, protocol)  # the old protocol, kept for one release

    @classmethod
    def capabilities_of(cls, config: C) -> Capabilities:
        """The capabilities of a chain of ``config``: ``capabilities``, unless a setting's depend on its
        config (the neural settings' ``warm_start`` reads ``training.warm_start``)."""
        return cls.capabilities

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
        """Closed forms of the metrics under a regime, as ``Curve`` s over iterations 1..N, for a setting
        that declares ``Capabilities(theory=True)`` (none by default)."""
        return []


class Setting(Declaration[C], Generic[C, DataType], ABC):
    """A setting: its declarations (``Declaration``) and its compute contract, the members below."""

    # A directory of the run that all its chains share, for what a setting makes once per run and keeps
    # (a pretrained model): the engine sets it after constructing the setting, before any other call;
    # None outside a run directory. Chains run in parallel: write into it by renaming a finished
    # directory into place.
    shared: Path | None = None

    def __init__(self, config: C, seeds: Sequence[int]):
        self.config: C = config
        self.seeds = tuple(int(s) for s in seeds)
        if self.capabilities_of(config).one_seed_per_chain and len(self.seeds) != 1:
            raise ValueError(f"the {self.name} setting runs one seed per chain, got {len(self.seeds)}")

    @property
    def seed_count(self) -> int:
        return len(self.seeds)

    @property
    @abstractmethod
    def real_train(self) -> DataType:
        """The real training data of every seed (iteration 1 fits on it); its type, which follows
        ``Data``, is the type of every part this setting produces and fits on."""

    def fresh_real(self, size: int, rng: np.random.Generator) -> DataType:
        """``size`` new real training samples per seed, never seen before, for a setting that declares
        ``Capabilities(fresh_real=True)`` (only the regimes that draw fresh real data call it)."""
        raise NotImplementedError(f"setting {self.name!r} draws no fresh real data")

    @abstractmethod
    def fit(self, parts: Sequence[DataType], rng: np.random.Generator, scratch: Path | None = None) -> Any:
        """A fresh model per seed fitted on the union of ``parts``, or a ``Fit`` with details to keep.

        ``scratch`` (with a run directory) is a directory, not yet created, where a long fit may save
        progress: an interrupted fit is run again with the same parts, ``rng`` and ``scratch`` and may
        continue from there. It goes once the iteration is committed; quick fits ignore it.

        A setting whose capabilities say ``warm_start`` is called with ``previous=``: the last iteration's model
        (None at iteration 1), to continue from; ``fit`` leaves it as it is (copy it)."""

    @abstractmethod
    def sample(self, model: Any, size: int, rng: np.random.Generator, scratch: Path | None = None) -> DataType:
        """``size`` synthetic samples per seed from ``model``.

        ``scratch`` is ``fit``'s (the iteration's), for a long sampling run to save what it has done."""

    @abstractmethod
    def evaluate(self, model: Any) -> dict[str, np.ndarray] | Evaluation:
        """Metrics on held-out real data: one array of shape (seeds,) per name in ``metrics``; or an
        ``Evaluation`` of those and details to keep beside them."""

    def score(self, name: str, model: Any, samples: DataType) -> np.ndarray:
        """The score ``name`` (one of ``capabilities.scores``) of every sample: an array (seeds, len(samples)), higher
        is better, -inf for a sample the score rules out. ``model`` drew ``samples``."""
        raise NotImplementedError(f"setting {self.name!r} computes no score {name!r}")

    def preview(self, data: DataType) -> np.ndarray:
        """At most ``presentation.preview_size`` samples of the first seed of ``data``, for a setting that
        keeps previews: uint8 images (N, H, W, C), strings (N,), or any array its
        ``presentation.depict`` draws (mol blocks)."""
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
