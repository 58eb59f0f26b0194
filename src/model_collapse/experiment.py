"""What an experiment is, once its config is read: the run's options (``RunConfig``), its chains
(``ChainSpec``: a sweep point, a regime, seeds) and the whole (``Experiment``). ``config.py`` builds
these from YAML; the run directory (``rundir/``), the chain runner and the readers take them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
)

from .curation import metrics_for
from .executors import executor_targets
from .regimes import Regime
from .settings import SETTINGS, Capabilities, Metric, SettingConfig
from .settings.configs import StrictConfig, field_of

# Which models a chain leaves once it is complete (``chain.run_chain``).
Checkpoints = Literal["none", "last", "all"]


class RunConfig(StrictConfig):
    model_config = ConfigDict(frozen=False)

    setting: dict[str, Any]
    sweep: dict[str, Any] = Field(
        default_factory=dict, description="setting keys (dotted for sections) to lists of values to sweep over"
    )
    regimes: list[Any] = Field(min_length=1)
    iterations: PositiveInt
    seeds: PositiveInt = Field(description="how many seeds; the seeds are 0..seeds-1")
    workers: PositiveInt | None = Field(None, description="parallel processes for a sweep (default: CPU count)")
    threads: PositiveInt | None = Field(
        None,
        description="threads each chain computes with, BLAS and PyTorch (default: the cores divided by the chains "
        "running at once; ray, slurm: executor.cpus_per_chain; a cheap setting's chains always use one)",
    )
    checkpoints: Checkpoints = Field(
        "last", description="models left once a chain is complete: none, the last one, or every iteration's"
    )
    executor: dict[str, Any] = Field(
        default_factory=dict,
        description="where the chains run: name (local, ray, slurm or an installed executor) and the options of "
        "each executor (each takes its own: one section serves a laptop and a cluster)",
    )

    @field_validator("executor")
    @classmethod
    def _a_known_executor(cls, section: dict[str, Any]) -> dict[str, Any]:
        name = section.get("name", "local")
        names = executor_targets()
        if name not in names:
            raise ValueError(f"name: choose one of {', '.join(names)}, not {name!r}")
        return section


def dotted_value(data: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


# RUN/first-iterations/<point>/: the first iterations shared by a point's regimes (``ChainSpec.first_iteration``)
FIRST_ITERATIONS = "first-iterations"
_EVERY_REGIME = "iteration 1 of every regime"


@dataclass(frozen=True)
class ChainSpec:
    """One chain of a run: a sweep point, a regime and its seeds (all of them, or one), with what its
    setting declares that the chain's records and names need. A plain value: it asks no registry, so it
    travels to a Ray or Slurm worker as it is."""

    point: SettingConfig
    varying: tuple[str, ...]  # the (dotted) setting keys the sweep varies (they name the chain's directory)
    regime: Regime
    seeds: tuple[int, ...]
    one_seed_per_chain: bool  # the setting's capability: a chain per seed, named by it
    # what the chain records every iteration: its setting's metrics, and curation's if it curates
    metrics: Mapping[str, Metric] = field(compare=False)
    # The first iteration alone, which every regime of this point and these seeds shares (it fits the
    # real data alone, on streams keyed without the regime): computed once into RUN/first-iterations/
    # and adopted by the chains (``runner``).
    shared_first_iteration: bool = False
    sharing: tuple[Regime, ...] = ()  # the regimes whose chains take it (checked before it is computed)

    def first_iteration(self, sharing: tuple[Regime, ...] = ()) -> ChainSpec:
        """The spec of the first iteration this chain shares with the other regimes of its point and seeds."""
        return dataclasses.replace(self, shared_first_iteration=True, sharing=sharing)

    @property
    def point_name(self) -> str:
        return point_name(self.point, self.varying)

    @property
    def point_title(self) -> str:
        """The sweep point in the paper's words, as figure panels name it: ``T = 32``, ``d = 10, T = 100``
        (a field's ``title`` is its symbol; fields without one go by their key); empty without a sweep."""
        values = self.point.model_dump(mode="json")
        return ", ".join(f"{_symbol(type(self.point), key)} = {dotted_value(values, key)}" for key in self.varying)

    @property
    def title(self) -> str:
        """The chain in the paper's words (``T = 32 / replace``, ``replace / seed 0``): reports, trackers."""
        seed = f"seed {self.seeds[0]}" if self.one_seed_per_chain else ""
        return " / ".join(part for part in (self.point_title, self.regime.label, seed) if part)

    @property
    def label(self) -> str:
        seeds = f" / seed {self.seeds[0]}" if self.one_seed_per_chain else ""
        return f"{self.point_name} / {self._regime_text}{seeds}"

    @property
    def _regime_text(self) -> str:
        return _EVERY_REGIME if self.shared_first_iteration else self.regime.label

    @property
    def relative_directory(self) -> Path:
        if self.shared_first_iteration:
            path = Path(FIRST_ITERATIONS) / self.point_name
        else:
            path = Path("chains") / self.point_name / self.regime.label.replace(":", "-")
        if self.one_seed_per_chain:
            path = path / f"seed-{self.seeds[0]}"
        return path

    def description(self) -> dict[str, Any]:
        return {"setting": self.point.model_dump(mode="json"), "regime": self._regime_text, "seeds": list(self.seeds)}

    def defaults(self) -> dict[str, Any]:
        """The description of a chain whose setting holds every default: a chain started before its
        setting gained a field is still this chain if the field holds its default (``rundir.ChainStore``)."""
        return {"setting": type(self.point).model_construct().model_dump(mode="json")}  # type: ignore[call-arg]


def point_name(point: SettingConfig, varying: tuple[str, ...]) -> str:
    """The directory name of a sweep point: the values of the keys the sweep varies (``base`` without a
    sweep), made safe."""
    values = point.model_dump(mode="json")
    return safe_name("_".join(f"{key}-{_token(dotted_value(values, key))}" for key in varying)) or "base"


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _symbol(config_type: type[StrictConfig], dotted: str) -> str:
    """The symbol a (dotted) setting key goes by: its field's ``title`` if it has one, else the key."""
    return field_of(config_type, dotted).title or dotted  # (a sweep key names a field: config.py checks)


def _token(value: Any) -> str:
    """A sweep value as part of a directory name: as written when a plain token, else a slug and a hash.

    ``100``, ``0.5`` and ``scott`` stay; ``../../victim``, a path or text with slashes become a readable
    slug plus a hash of the value, so that none names a directory outside the run and distinct values
    stay distinct."""
    text = str(value)
    if _PLAIN.fullmatch(text) and len(text) <= 40:
        return text
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "-", text)[-40:].strip("-.")  # a path's last parts say most
    return f"{slug}-{_short_hash(text)}" if slug else _short_hash(text)


def safe_name(name: str, limit: int = 120) -> str:
    """``name`` cut to a length every filesystem takes, a hash of the whole keeping it distinct."""
    return name if len(name) <= limit else f"{name[: limit - 9]}-{_short_hash(name)}"


def setting_class(point: SettingConfig):
    """The setting class of a sweep point (imports its model code: PyTorch for neural settings)."""
    return SETTINGS[point.name]


@dataclass(frozen=True)
class Experiment:
    config: RunConfig
    points: tuple[SettingConfig, ...]
    varying: tuple[str, ...]
    regimes: tuple[Regime, ...]

    @property
    def setting_name(self) -> str:
        return self.points[0].name

    @property
    def metrics(self) -> dict[str, Metric]:
        """What the run's chains record (a chain without curation in a run where others curate reads NaN
        for curation's metrics)."""
        declared = SETTINGS.declared(self.setting_name)
        return {name: info for point in self.points for name, info in metrics_for(declared, point).items()}

    @property
    def capabilities(self) -> Capabilities:
        """The setting's capabilities for the first sweep point: how the run's chains run (a sweep may
        vary what depends on the config, such as ``warm_start``, never whether chains are cheap or hold
        one seed each)."""
        return SETTINGS.declared(self.setting_name).capabilities_of(self.points[0])

    def chains(self) -> list[ChainSpec]:
        seeds = tuple(range(self.config.seeds))
        one_each = self.capabilities.one_seed_per_chain
        seed_groups: Sequence[tuple[int, ...]] = [(s,) for s in seeds] if one_each else [seeds]
        declared = SETTINGS.declared(self.setting_name)
        specs = [
            ChainSpec(point, self.varying, regime, group, one_each, metrics_for(declared, point))
            for point in self.points
            for regime in self.regimes
            for group in seed_groups
        ]
        return specs

    def resolved(self) -> dict[str, Any]:
        """The config as plain data, every default filled in (written to the run directory)."""
        data = self.config.model_dump(exclude={"sweep"})
        data["setting"] = self.points[0].model_dump(mode="json")  # a swept key holds its first value
        data["regimes"] = [regime.label for regime in self.regimes]
        sweep: dict[str, list] = {}
        for key in self.varying:
            values = [dotted_value(point.model_dump(mode="json"), key) for point in self.points]
            sweep[key] = [value for i, value in enumerate(values) if value not in values[:i]]
        return {"setting": data.pop("setting"), **({"sweep": sweep} if sweep else {}), **data}
