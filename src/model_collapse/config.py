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
import itertools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import ValidationError

from .curation import check_curation
from .deprecation import deprecated
from .errors import ConfigError
from .experiment import Experiment, RunConfig, point_name
from .regimes import Regime, parse_regimes
from .settings import SETTINGS, SettingConfig
from .settings.configs import field_of, renamed_keys
from .validation import validation_error
from .yaml_text import YamlProblem, load_yaml


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


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for i, part in enumerate(parents):
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(f"setting.{'.'.join(parents[: i + 1])}: a section, expected a mapping")
    data[leaf] = value


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
    if not isinstance(setting, dict) or not isinstance(name, str) or not isinstance(sweep, dict):
        return result  # build_experiment names the problem
    if not SETTINGS.known(name):
        return result
    sweep = flatten(sweep)
    config_type = SETTINGS.declared(name).Config
    for key, value in applied.items():
        if not key.startswith("setting."):
            continue
        key = key.removeprefix("setting.")
        field = field_of(config_type, key)
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


# Sweep points one run may hold: a run tracks every chain in one process, and a sweep this large is
# better split (a typo such as a range of a million values is refused at once, not after minutes).
MAX_SWEEP_POINTS = 10_000


def _first_repeat(values: list) -> tuple[Any] | None:
    """The first value equal to an earlier one (as ``==`` says, so 1 and 1.0 are one), or None."""
    try:
        seen: set = set()
        for value in values:
            if value in seen:
                return (value,)
            seen.add(value)
        return None
    except TypeError:  # unhashable values (lists swept as values): compare pairwise
        return next(((value,) for i, value in enumerate(values) if value in values[:i]), None)


def _sweep_axes(config: RunConfig, config_type: type[SettingConfig]) -> dict[str, list]:
    """The sweep as dotted setting keys to their values, checked.

    Every key must name a field and every list be non-empty without repeats; a list left inside the
    setting for a field that takes one value is named with its place in ``sweep:``."""
    problems = []
    for key, value in flatten(config.setting).items():
        field = field_of(config_type, key)
        if isinstance(value, list) and field is not None and not _takes_a_list(field):
            problems.append(f"setting.{key}: a list of values is a sweep; write it as sweep: {{{key}: {value}}}")
    axes = {_renamed(config_type, key): values for key, values in flatten(config.sweep).items()}
    sizes = {key: len(values) for key, values in axes.items() if isinstance(values, list)}
    points = math.prod(sizes.values())
    if points > MAX_SWEEP_POINTS:  # counted before anything is expanded, validated or compared
        shape = " x ".join(f"{key}: {size:,}" for key, size in sizes.items())
        raise ConfigError(
            f"sweep: {points:,} sweep points ({shape}), more than the {MAX_SWEEP_POINTS:,} one run holds; "
            "split the sweep into several runs"
        )
    for key, values in axes.items():
        if key == "name":
            problems.append("sweep.name: a run has one setting")
        elif field_of(config_type, key) is None:
            if key in config_type.moved:
                problems.append(f"sweep.{key}: moved to sweep.{config_type.moved[key]}")
            else:
                problems.append(f"sweep.{key}: not a field of the {config.setting.get('name')} setting")
        elif not isinstance(values, list):
            problems.append(f"sweep.{key}: expected a list of values, got {values!r}")
        elif not values:
            problems.append(f"sweep.{key}: an empty list sweeps over nothing")
        else:
            repeated = _first_repeat(values)
            if repeated is not None:
                problems.append(f"sweep.{key}: the value {repeated[0]!r} is listed twice")
    if problems:
        raise ConfigError("; ".join(problems))
    return axes


def _renamed(config_type: type[SettingConfig], key: str) -> str:
    """A sweep key under its name now, with a deprecation warning if the config used an earlier one."""
    if key not in config_type.renamed:
        return key
    deprecated(
        f"sweep.{key} is now sweep.{config_type.renamed[key]}: write that (the old name goes in the next release)"
    )
    return config_type.renamed[key]


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


def _regimes(specs: list[Any]) -> list[Regime]:
    regimes = []
    for index, spec in enumerate(specs):
        try:
            regimes.extend(parse_regimes(spec))
        except ValueError as error:
            raise ConfigError(f"regimes[{index}]: {error}") from None
    if len(set(regimes)) != len(regimes):
        raise ConfigError("regimes: a regime is listed twice")
    return regimes


def build_experiment(raw: Mapping[str, Any], import_paths: bool = True) -> Experiment:
    """The experiment a config describes, validated. ``import_paths``: whether a setting named by import
    path may be imported (the user's own config); False for a config read from a run directory."""
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as error:
        raise validation_error(error) from None
    name = config.setting.get("name")
    if name is None:
        raise ConfigError("setting.name: missing")
    if not SETTINGS.known(name):
        raise SETTINGS.unknown(name)
    regimes = _regimes(config.regimes)
    declared = SETTINGS.declared(name, import_paths)
    rows, varying = _expand(config, declared.Config)
    points = []
    for row in rows:
        try:
            points.append(declared.Config.model_validate(row))
        except ValidationError as error:
            raise validation_error(error, ("setting",)) from None
    for regime in regimes:
        if regime.draws_fresh_real and not all(declared.capabilities_of(p).fresh_real for p in points):
            raise ConfigError(
                f"regimes: {regime.label} draws fresh real data every iteration, "
                f"which the setting {name!r} does not provide (its capabilities have no fresh_real)"
            )
    checked: list[Any] = []
    for point in points:  # each curation once, not each sweep point
        if point.curation not in checked:
            check_curation(declared, point, import_functions=import_paths)
            checked.append(point.curation)
    names: dict[str, SettingConfig] = {}
    for point in points:  # distinct values whose directory names would coincide (after cutting long ones)
        name = point_name(point, varying)
        if names.setdefault(name, point) is not point:
            raise ConfigError(
                f"setting: the sweep points {names[name]} and {point} would share the directory chains/{name}"
            )
    return Experiment(config, tuple(points), varying, tuple(regimes))


def upgrade_run_config(raw: dict[str, Any], version: int) -> dict[str, Any]:
    """A run directory's config in today's layout.

    Keys a setting has since renamed (``SettingConfig.renamed``) take their name now, without a warning
    (the user did not write them); a run that swept over one named its chain directories after it and is
    refused. Format 1 (model-collapse 0.1) wrote a sweep as lists inside ``setting``: they become
    ``sweep``, and the run's chains and numbers stay as they are. Settings whose fields have since moved
    into sections recorded their flat layout in every chain as well: those runs are refused."""
    setting = raw.get("setting")
    name = setting.get("name") if isinstance(setting, dict) else None
    if not isinstance(setting, dict) or not isinstance(name, str) or not SETTINGS.known(name):
        return raw
    try:
        config_type = SETTINGS.declared(name, import_paths=False).Config
    except ConfigError:  # named again, with its reason, when the config is read
        return raw
    if config_type.renamed:
        swept = [key for key in flatten(raw.get("sweep") or {}) if key in config_type.renamed]
        if swept:
            raise ConfigError(
                f"its sweep varies setting.{swept[0]}, since renamed setting.{config_type.renamed[swept[0]]}, "
                "which names its chain directories: read it with the model-collapse that wrote it (its run.json "
                "records the version and git commit)"
            )
        try:
            setting = renamed_keys(setting, config_type.renamed, warn=False)
        except ValueError as error:
            raise ConfigError(f"setting.{error}") from None
        raw = {**raw, "setting": setting}
    if version != 1 or name not in SETTINGS:
        return raw
    if config_type.moved:
        raise ConfigError(
            f"written in run format 1, whose {name} config had no sections: read it with the "
            "model-collapse that wrote it (its run.json records the version and git commit)"
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
