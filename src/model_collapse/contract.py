"""What a chain checks of what a setting hands back, before anything of it is committed.

A setting's ``evaluate`` that gives seven values for five seeds, or leaves out a metric it declares,
would otherwise be committed and only refused later by ``table`` as a damaged record (with a way
forward, ``--recompute-damaged``, that computes the same thing again). So the chain checks the shapes
of what ``fit``, ``sample``, ``fresh_real`` and ``evaluate`` return (``score`` is checked by the
curation that calls it) and stops at the first that is wrong, with one line naming the setting, the
method, the metric or data, and the shapes. ``testing.check_setting`` holds a setting to the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import SettingError
from .settings.base import Data, Evaluation, Fit, Setting


def _name(setting: Setting) -> str:
    return f"setting {setting.name!r}"


def checked_fit(setting: Setting, result: Any) -> Fit:
    """What ``fit`` returned, as a ``Fit``: a model (anything but None), or a ``Fit`` of one."""
    fitted = result if isinstance(result, Fit) else Fit(result, None)
    if fitted.model is None:
        raise SettingError(f"{_name(setting)}: fit returned no model (None)")
    if fitted.diagnostics is not None and not isinstance(fitted.diagnostics, Mapping):
        raise SettingError(
            f"{_name(setting)}: fit returned a Fit whose diagnostics are a {type(fitted.diagnostics).__name__}, "
            "not a dict"
        )
    return fitted


def checked_data(setting: Setting, method: str, data: Any, size: int) -> Any:
    """What ``sample`` or ``fresh_real`` returned: data of the data contract (``select`` and ``save``
    are what the chain calls), ``size`` samples per seed, with a row of them per seed."""
    if not isinstance(data, type(setting.real_train)) and not isinstance(data, Data):  # (the first: quick)
        raise SettingError(
            f"{_name(setting)}: {method} returned a {type(data).__name__}, not data of the data contract "
            "(settings.base.Data: len, select, save, load)"
        )
    if len(data) != size:
        raise SettingError(f"{_name(setting)}: {method} returned {len(data)} samples per seed where {size} were asked")
    seeds = getattr(data, "seed_count", setting.seed_count)
    if seeds != setting.seed_count:
        raise SettingError(
            f"{_name(setting)}: {method} returned samples of {seeds} seeds for a chain of {setting.seed_count}"
        )
    return data


def checked_evaluation(setting: Setting, result: Any) -> Evaluation:
    """What ``evaluate`` returned, as an ``Evaluation`` of float arrays: every metric the setting
    declares for its config, no other, each one value per seed."""
    if not isinstance(result, Mapping | Evaluation):
        raise SettingError(
            f"{_name(setting)}: evaluate returned a {type(result).__name__}, not a dict of metric names to arrays"
        )
    evaluated = Evaluation.of(result)
    declared = list(type(setting).metrics_of(setting.config))
    missing = [name for name in declared if name not in evaluated.metrics]
    extra = [str(name) for name in evaluated.metrics if name not in declared]
    if missing or extra:
        faults = ([f"left out {', '.join(missing)}, which it declares"] if missing else []) + (
            [f"returned {', '.join(extra)}, which it does not declare"] if extra else []
        )
        raise SettingError(f"{_name(setting)}: evaluate {' and '.join(faults)} (its metrics: {', '.join(declared)})")
    metrics = {}
    for name in declared:
        try:
            values = np.asarray(evaluated.metrics[name], dtype=float)
        except (TypeError, ValueError):
            kind = type(evaluated.metrics[name]).__name__
            raise SettingError(f"{_name(setting)}: evaluate returned {name} as a {kind}, not numbers") from None
        if values.shape != (setting.seed_count,):
            raise SettingError(
                f"{_name(setting)}: evaluate returned {name} of shape {values.shape} for {setting.seed_count} seeds, "
                f"where one value per seed, shape ({setting.seed_count},), is expected"
            )
        metrics[name] = values
    return Evaluation(metrics, evaluated.diagnostics)
