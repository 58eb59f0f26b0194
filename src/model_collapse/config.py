"""Run configs: YAML in, typed and validated objects out, one clear line per problem.

A config names a setting, optionally a sweep over its fields, the regimes, the number of iterations
and of seeds::

    setting: {name: linear-regression, dim: 10, noise_variance: 1.0}
    sweep: {samples: [32, 100, 316]}
    regimes: [replace, accumulate]
    iterations: 100
    seeds: 1000

``sweep`` maps setting keys (dotted for a section's field: ``training.learning_rate``) to lists of
values; the run covers every combination. A sweep is always explicit, so a field whose value is itself a
list (a VAE's ``model.widths``) can be swept like any other.

Any key can be overridden as ``dotted.key=value`` (values are read as YAML, so ``[a,b]`` is a list). On
the command line a list for a setting field that takes one value sweeps it: ``setting.samples=[10,100]``
is ``sweep.samples=[10,100]``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from .errors import ConfigError
from .regimes import Regime, parse_regime
from .rundir import ChainStore
from .settings import SETTINGS, SettingConfig
from .settings.base import StrictConfig, section_of
from .yaml_text import YamlProblem, load_yaml

# Which models a chain leaves once it is complete (``chain.run_chain``).
Checkpoints = Literal["none", "last", "all"]


class ExecutorConfig(StrictConfig):
    """Where the chains run (``executors/``); every executor gives the same table."""

    name: Literal["local", "ray", "slurm"] = Field(
        "local", description="local processes, one Ray task per chain, or one Slurm job per chain (a job array)"
    )
    cpus_per_chain: PositiveFloat = Field(1.0, description="CPUs reserved per chain (slurm: whole, split among tasks)")
    gpus_per_chain: NonNegativeFloat = Field(0.0, description="GPUs per chain (ray: fractions share one)")
    max_retries: NonNegativeInt = Field(
        3, description="ray: reruns of a chain whose worker died; slurm: requeues of a job at its time limit"
    )
    address: str | None = Field(None, description="ray: the cluster to join (default: start a local one)")
    partition: str | None = Field(None, description="slurm: the partition (default: the cluster's)")
    time_minutes: PositiveInt = Field(
        60, description="slurm: a job's time limit; a chain still running then is requeued and resumes"
    )
    memory_gb_per_chain: PositiveFloat | None = Field(
        None, description="slurm: memory per job (default: the cluster's)"
    )
    tasks_per_chain: PositiveInt = Field(
        1, description="slurm: data-parallel ranks of a neural chain, one task each (elsewhere: one process)"
    )
    max_parallel_chains: PositiveInt | None = Field(None, description="slurm: jobs of the array running at once")
    sbatch: dict[str, str | int] = Field(
        default_factory=dict, description="slurm: further sbatch options (account, qos, constraint, ...)"
    )
    setup: list[str] = Field(
        default_factory=list, description="slurm: shell lines each job runs first (module load, source venv)"
    )

    @model_validator(mode="after")
    def _fits_the_executor(self) -> ExecutorConfig:
        if self.name == "slurm":
            for key in ("cpus_per_chain", "gpus_per_chain"):
                if getattr(self, key) != int(getattr(self, key)):
                    raise ValueError(f"{key}: Slurm reserves whole CPUs and GPUs, not {getattr(self, key)}")
            if self.cpus_per_chain % self.tasks_per_chain:
                raise ValueError(
                    f"cpus_per_chain: {self.cpus_per_chain:g} CPUs do not split evenly among "
                    f"tasks_per_chain: {self.tasks_per_chain} tasks"
                )
        return self

    def named(self, name: str) -> ExecutorConfig:
        """These options for the executor ``name`` (``--executor``), checked again for it."""
        try:
            return ExecutorConfig.model_validate({**self.model_dump(), "name": name})
        except ValidationError as error:
            raise _validation_error(error, ("executor",)) from None


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
    checkpoints: Checkpoints = Field(
        "last", description="models left once a chain is complete: none, the last one, or every iteration's"
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)


def _describe(error: dict[str, Any], prefix: tuple = ()) -> str:
    where = (*prefix, *error["loc"])
    if error["type"] == "moved":  # keys of the earlier flat layout: say where each lives now
        at = "".join(f"{part}." for part in where)
        return "; ".join(f"{at}{key}: moved to {at}{place}" for key, place in error["ctx"]["moves"])
    if error["type"] == "boolean_for_number":
        where = (*where, error["ctx"]["key"])
    location = ".".join(str(part) for part in where) or "config"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    if error["type"] == "missing":
        return f"{location}: missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("value_error", "boolean_for_number"):
        return f"{location}: {message}"
    return f"{location}: {message} (got {error['input']!r})"


def _validation_error(error: ValidationError, prefix: tuple = ()) -> ConfigError:
    return ConfigError("; ".join(_describe(e, prefix) for e in error.errors()))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (not UTF-8)") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    except YamlProblem as problem:
        raise ConfigError(f"config file {path}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return raw


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys (``{training: {epochs: 2}}`` -> ``training.epochs``)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _get(data: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for i, part in enumerate(parents):
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"setting.{'.'.join(parents[: i + 1])}: a section, expected a mapping")
    data[leaf] = value


def _field(config_type: type[StrictConfig], dotted: str):
    """The pydantic field a dotted key names inside a config with sections, or None."""
    *sections, leaf = dotted.split(".")
    for part in sections:
        field = config_type.model_fields.get(part)
        config_type = section_of(field.annotation) if field is not None else None
        if config_type is None:
            return None
    return config_type.model_fields.get(leaf)


def _takes_a_list(field) -> bool:
    return get_origin(field.annotation) in (list, tuple)


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` applied.

    A list for a setting field that takes one value sweeps it; a single value ends its sweep."""
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    applied: dict[str, Any] = {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {override!r} must look like dotted.key=value")
        try:
            value = load_yaml(text)
        except YamlProblem as problem:
            raise ConfigError(f"override {key}=...: {problem}") from None
        *parents, leaf = key.split(".")
        node = result
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(parents[: i + 1])} is not a mapping")
            node = child
        node[leaf] = value
        applied[key] = value
    setting, sweep = result.get("setting"), result.get("sweep", {})
    name = setting.get("name") if isinstance(setting, dict) else None
    if not isinstance(sweep, dict) or not SETTINGS.known(name):
        return result  # build_experiment names the problem
    sweep = flatten(sweep)
    config_type = SETTINGS.declared(name).Config
    for key, value in applied.items():
        if not key.startswith("setting."):
            continue
        key = key.removeprefix("setting.")
        field = _field(config_type, key)
        sweep.pop(key, None)
        if isinstance(value, list) and field is not None and not _takes_a_list(field):
            sweep[key] = value
            _delete(setting, key)
    if sweep or "sweep" in result:
        result["sweep"] = sweep
    return result


def _delete(data: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data[part]
    del data[leaf]


@dataclass(frozen=True)
class ChainSpec:
    """One chain of a run: a sweep point, a regime and its seeds (all of them, or one)."""

    point: SettingConfig
    varying: tuple[str, ...]  # the (dotted) setting keys the sweep varies (they name the chain's directory)
    regime: Regime
    seeds: tuple[int, ...]

    @property
    def point_name(self) -> str:
        values = self.point.model_dump(mode="json")
        return safe_name("_".join(f"{key}-{_token(_get(values, key))}" for key in self.varying)) or "base"

    @property
    def point_title(self) -> str:
        """The sweep point in the paper's words, as figure panels name it: ``T = 32``, ``d = 10, T = 100``
        (a field's ``title`` is its symbol; fields without one go by their key); empty without a sweep."""
        values = self.point.model_dump(mode="json")
        return ", ".join(f"{_symbol(type(self.point), key)} = {_get(values, key)}" for key in self.varying)

    @property
    def title(self) -> str:
        """The chain in the paper's words (``T = 32 / replace``, ``replace / seed 0``): reports, trackers."""
        seed = f"seed {self.seeds[0]}" if SETTINGS.declared(self.point.name).one_seed_per_chain else ""
        return " / ".join(part for part in (self.point_title, self.regime.label, seed) if part)

    @property
    def label(self) -> str:
        seeds = f" / seed {self.seeds[0]}" if SETTINGS.declared(self.point.name).one_seed_per_chain else ""
        return f"{self.point_name} / {self.regime.label}{seeds}"

    @property
    def relative_directory(self) -> Path:
        path = Path("chains") / self.point_name / self.regime.label.replace(":", "-")
        if SETTINGS.declared(self.point.name).one_seed_per_chain:
            path = path / f"seed-{self.seeds[0]}"
        return path

    def description(self) -> dict[str, Any]:
        return {"setting": self.point.model_dump(mode="json"), "regime": self.regime.label, "seeds": list(self.seeds)}

    def store(self, run_directory: Path, writer: bool = True) -> ChainStore:
        """The chain's directory in ``run_directory``. A chain started before its setting gained a field
        is still this chain if the field holds its default."""
        defaults = {"setting": type(self.point).model_construct().model_dump(mode="json")}
        return ChainStore.at(run_directory, self.relative_directory, self.description(), writer, defaults)


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _symbol(config_type: type[StrictConfig], dotted: str) -> str:
    """The symbol a (dotted) setting key goes by: its field's ``title`` if it has one, else the key."""
    *sections, leaf = dotted.split(".")
    for section in sections:
        config_type = section_of(config_type.model_fields[section].annotation)
    return config_type.model_fields[leaf].title or dotted


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

    def chains(self) -> list[ChainSpec]:
        seeds = tuple(range(self.config.seeds))
        batches: Sequence[tuple[int, ...]] = (
            [(s,) for s in seeds] if SETTINGS.declared(self.setting_name).one_seed_per_chain else [seeds]
        )
        specs = [
            ChainSpec(point, self.varying, regime, batch)
            for point in self.points
            for regime in self.regimes
            for batch in batches
        ]
        return specs

    def resolved(self) -> dict[str, Any]:
        """The config as plain data, every default filled in (written to the run directory)."""
        data = self.config.model_dump(exclude={"sweep"})
        data["setting"] = self.points[0].model_dump(mode="json")  # a swept key holds its first value
        data["regimes"] = [regime.label for regime in self.regimes]
        sweep: dict[str, list] = {}
        for key in self.varying:
            values = [_get(point.model_dump(mode="json"), key) for point in self.points]
            sweep[key] = [value for i, value in enumerate(values) if value not in values[:i]]
        return {"setting": data.pop("setting"), **({"sweep": sweep} if sweep else {}), **data}


def _sweep_axes(config: RunConfig, config_type: type[SettingConfig]) -> dict[str, list]:
    """The sweep as dotted setting keys to their values, checked.

    Every key must name a field and every list be non-empty without repeats; a list left inside the
    setting for a field that takes one value is named with its place in ``sweep:``."""
    problems = []
    for key, value in flatten(config.setting).items():
        field = _field(config_type, key)
        if isinstance(value, list) and field is not None and not _takes_a_list(field):
            problems.append(f"setting.{key}: a list of values is a sweep; write it as sweep: {{{key}: {value}}}")
    axes = flatten(config.sweep)
    for key, values in axes.items():
        if key == "name":
            problems.append("sweep.name: a run has one setting")
        elif _field(config_type, key) is None:
            if key in config_type.moved:
                problems.append(f"sweep.{key}: moved to sweep.{config_type.moved[key]}")
            else:
                problems.append(f"sweep.{key}: not a field of the {config.setting.get('name')} setting")
        elif not isinstance(values, list):
            problems.append(f"sweep.{key}: expected a list of values, got {values!r}")
        elif not values:
            problems.append(f"sweep.{key}: an empty list sweeps over nothing")
        else:
            repeated = [value for i, value in enumerate(values) if value in values[:i]]
            if repeated:
                problems.append(f"sweep.{key}: the value {repeated[0]!r} is listed twice")
    if problems:
        raise ConfigError("; ".join(problems))
    return axes


def _expand(config: RunConfig, config_type: type[SettingConfig]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """Every combination of the sweep's values, each as the setting mapping of one sweep point."""
    axes = _sweep_axes(config, config_type)
    rows = []
    for values in itertools.product(*axes.values()):
        row = copy.deepcopy(config.setting)
        for key, value in zip(axes, values):
            _set(row, key, value)
        rows.append(row)
    return rows, tuple(axes)


def build_experiment(raw: Mapping[str, Any], import_paths: bool = True) -> Experiment:
    """The experiment a config describes, validated. ``import_paths``: whether a setting named by import
    path may be imported (the user's own config); False for a config read from a run directory."""
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as error:
        raise _validation_error(error) from None
    name = config.setting.get("name")
    if name is None:
        raise ConfigError("setting.name: missing")
    if not SETTINGS.known(name):
        raise SETTINGS.unknown(name)
    regimes = []
    for index, spec in enumerate(config.regimes):
        try:
            regimes.append(parse_regime(spec))
        except ValueError as error:
            raise ConfigError(f"regimes[{index}]: {error}") from None
    if len(set(regimes)) != len(regimes):
        raise ConfigError("regimes: a regime is listed twice")
    declared = SETTINGS.declared(name, import_paths)
    for index, regime in enumerate(regimes):
        if regime.draws_fresh_real and not declared.provides_fresh_real():
            raise ConfigError(
                f"regimes[{index}]: {regime.label} draws fresh real data every iteration, "
                f"which the setting {name!r} does not provide (it has no fresh_real)"
            )
    rows, varying = _expand(config, declared.Config)
    points = []
    for row in rows:
        try:
            points.append(declared.Config.model_validate(row))
        except ValidationError as error:
            raise _validation_error(error, ("setting",)) from None
    names: dict[str, SettingConfig] = {}
    for point in points:  # distinct values whose directory names would coincide (after cutting long ones)
        name = ChainSpec(point, varying, regimes[0], (0,)).point_name
        if names.setdefault(name, point) is not point:
            raise ConfigError(
                f"setting: the sweep points {names[name]} and {point} would share the directory chains/{name}"
            )
    return Experiment(config, tuple(points), varying, tuple(regimes))


def upgrade_run_config(raw: dict[str, Any], version: int) -> dict[str, Any]:
    """A run directory's config in today's layout.

    Format 1 (model-collapse 0.1) wrote a sweep as lists inside ``setting``: they become ``sweep``, and
    the run's chains and numbers stay as they are. Settings whose fields have since moved into sections
    recorded their flat layout in every chain as well: those runs are refused."""
    setting = raw.get("setting")
    name = setting.get("name") if isinstance(setting, dict) else None
    if version != 1 or not isinstance(name, str) or name not in SETTINGS:
        return raw
    config_type = SETTINGS.declared(name).Config
    if config_type.moved:
        raise ConfigError(
            f"written by model-collapse 0.1 (run format 1), whose {name} config had no sections; "
            "read it with that version (pip install model-collapse==0.1.0)"
        )
    sweep = {}
    for key, value in sorted(setting.items()):  # format 1 named chain directories in this order
        field = config_type.model_fields.get(key)
        if isinstance(value, list) and field is not None and not _takes_a_list(field):
            sweep[key] = value
    rest = {key: value for key, value in setting.items() if key not in sweep}
    return {**raw, "setting": rest, **({"sweep": sweep} if sweep else {})}


def load_experiment(path: Path, overrides: Iterable[str] = ()) -> Experiment:
    return build_experiment(apply_overrides(read_yaml(path), overrides))
