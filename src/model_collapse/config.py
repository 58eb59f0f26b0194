"""Run configs: YAML in, typed and validated objects out, one clear line per problem.

A config names a setting, the regimes, the number of iterations and of seeds::

    setting: {name: linear-regression, dim: 10, samples: [32, 100, 316], noise_variance: 1.0}
    regimes: [replace, accumulate]
    iterations: 100
    seeds: 1000

Any field can be overridden as ``dotted.key=value`` (values are read as YAML, so ``[a,b]`` is a list).
A list given for a setting field makes a sweep: the run covers every combination of the listed values.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import ConfigDict, Field, PositiveInt, ValidationError

from .errors import ConfigError, yaml_problem
from .regimes import Regime, parse_regime
from .settings import SETTINGS, SettingConfig
from .settings.base import StrictConfig


class RunConfig(StrictConfig):
    model_config = ConfigDict(frozen=False)

    setting: dict[str, Any]
    regimes: list[Any] = Field(min_length=1)
    iterations: PositiveInt
    seeds: PositiveInt = Field(description="how many seeds; the seeds are 0..seeds-1")
    workers: PositiveInt | None = Field(None, description="parallel processes for a sweep (default: CPU count)")
    checkpoints: Literal["last", "all"] = Field("last", description="keep every iteration's model, or the last")


def _describe(error: dict[str, Any], prefix: tuple = ()) -> str:
    where = (*prefix, *error["loc"])
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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (not UTF-8)") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return raw


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``dotted.key=value`` applied."""
    result: dict[str, Any] = yaml.safe_load(yaml.safe_dump(dict(raw)))  # deep copy of plain data
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {override!r} must look like dotted.key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {override!r}: value is not valid YAML") from None
        *parents, leaf = key.split(".")
        node = result
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(parents[: i + 1])} is not a mapping")
            node = child
        node[leaf] = value
    return result


@dataclass(frozen=True)
class ChainSpec:
    """One chain of a run: a sweep point, a regime and its seeds (all of them, or one)."""

    point: SettingConfig
    varying: tuple[str, ...]  # the setting fields the sweep varies (they name the chain's directory)
    regime: Regime
    seeds: tuple[int, ...]

    @property
    def point_name(self) -> str:
        values = self.point.model_dump(mode="json")
        return safe_name("_".join(f"{key}-{_token(values[key])}" for key in self.varying)) or "base"

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


_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _token(value: Any) -> str:
    """A sweep value as part of a directory name: as written when it is a plain token (``100``, ``0.5``,
    ``scott``), else a readable slug plus a hash of the value, so that no value (``../../victim``, a
    path, text with slashes) can name a directory outside the run, and distinct values stay distinct."""
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
        data = self.config.model_dump()
        data["regimes"] = [regime.label for regime in self.regimes]
        setting = self.points[0].model_dump(mode="json")
        for key in self.varying:
            setting[key] = list(dict.fromkeys(p.model_dump(mode="json")[key] for p in self.points))
        data["setting"] = setting
        return data


def _expand(
    setting: Mapping[str, Any], config_type: type[SettingConfig]
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    # A list is a sweep axis, except for fields whose value is itself a sequence (e.g. vae widths).
    sequence_fields = {
        key for key, field in config_type.model_fields.items() if get_origin(field.annotation) in (list, tuple)
    }
    varying = tuple(key for key, value in setting.items() if isinstance(value, list) and key not in sequence_fields)
    for key in varying:
        if not setting[key]:
            raise ConfigError(f"setting.{key}: an empty list sweeps over nothing")
        repeated = [value for i, value in enumerate(setting[key]) if value in setting[key][:i]]
        if repeated:
            raise ConfigError(f"setting.{key}: the value {repeated[0]!r} is listed twice")
    combinations = itertools.product(*(setting[key] for key in varying))
    return [{**setting, **dict(zip(varying, values))} for values in combinations], varying


def build_experiment(raw: Mapping[str, Any]) -> Experiment:
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as error:
        raise _validation_error(error) from None
    name = config.setting.get("name")
    if name is None:
        raise ConfigError("setting.name: missing")
    if name not in SETTINGS:
        raise ConfigError(f"setting.name: unknown setting {name!r} (known: {', '.join(SETTINGS)})")
    regimes = []
    for index, spec in enumerate(config.regimes):
        try:
            regimes.append(parse_regime(spec))
        except ValueError as error:
            raise ConfigError(f"regimes[{index}]: {error}") from None
    if len(set(regimes)) != len(regimes):
        raise ConfigError("regimes: a regime is listed twice")
    declared = SETTINGS.declared(name)
    rows, varying = _expand(config.setting, declared.Config)
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


def load_experiment(path: Path, overrides: Iterable[str] = ()) -> Experiment:
    return build_experiment(apply_overrides(read_yaml(path), overrides))
