"""Reading a run directory back: per-chain results and the tidy table."""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import build_experiment, flatten, upgrade_run_config
from .errors import ConfigError, RunDirectoryError
from .experiment import ChainSpec, Experiment
from .rundir import ChainStore, open_run, run_marker
from .settings import SettingUnavailable


@dataclass
class ChainResult:
    """A chain's records, and what else it keeps (previews, diagnostics) read on demand."""

    spec: ChainSpec
    iterations: np.ndarray  # (I,)
    train_size: np.ndarray  # (I,)
    real_fraction: np.ndarray  # (I, seeds)
    metrics: dict[str, np.ndarray]  # name -> (I, seeds)
    seconds: np.ndarray  # (I,) wall-clock time per iteration (summed over merged chains; NaN: not recorded)
    store: ChainStore  # of the first seed's chain, for a result merged over seeds

    def real_preview(self) -> np.ndarray | None:
        """A few real samples (images or texts), for settings with previews."""
        return self.store.real_preview()

    def preview(self, iteration: int) -> np.ndarray | None:
        """A few synthetic samples of the model of ``iteration``."""
        return self.store.preview(iteration)

    def diagnostics(self, iteration: int) -> dict[str, Any] | None:
        """What the fit of ``iteration`` kept beside its metrics (a language model's learning curve)."""
        return self.store.diagnostics(iteration)

    @functools.cached_property
    def references(self) -> dict[str, float]:
        """Real data's values of metrics, where the setting's fits record them (a language model's
        real-text diversity, ``diagnostics["reference"]`` of its first iteration); read once."""
        return (self.diagnostics(int(self.iterations[0])) or {}).get("reference") or {}


def open_experiment(run_directory: Path) -> Experiment:
    """The experiment a run directory records (checked to be a run, its config upgraded if older).

    Nothing in the directory makes this import code: a setting it names by import path is imported only
    if the user allowed that path (``SETTINGS.allow``) or an installed entry point names it. A setting
    that cannot be imported is one line naming the package the run was made with."""
    raw, version = open_run(run_directory)
    try:
        return build_experiment(upgrade_run_config(raw, version), import_paths=False)
    except SettingUnavailable as error:
        origin = (run_marker(run_directory).get("setting") or {}).get("origin")
        raise SettingUnavailable(f"{run_directory}: {error}{_made_with(origin)}") from None
    except ConfigError as error:
        raise RunDirectoryError(f"{run_directory / 'config.yaml'}: {error}") from None


def _made_with(origin: Any) -> str:
    """What the run's marker says its setting came from, as the end of the line refusing it."""
    if not isinstance(origin, dict) or not isinstance(origin.get("distribution"), str):
        return ""
    version = origin.get("version")
    pinned = f"{origin['distribution']}=={version}" if isinstance(version, str) else origin["distribution"]
    return f"; the run was made with {pinned}: pip install '{pinned}'"


def load_run(run_directory: Path) -> tuple[Experiment, list[ChainResult]]:
    experiment = open_experiment(run_directory)
    metrics = list(experiment.metrics)
    results = []
    for spec in experiment.chains():
        store = ChainStore.of(run_directory, spec, writer=False)
        if not store.directory.exists():
            continue
        records = store.records(len(spec.seeds), metrics)
        if not records:
            continue
        names = metrics
        results.append(
            ChainResult(
                spec,
                np.array([r.iteration for r in records]),
                np.array([r.train_size for r in records]),
                np.stack([r.real_fraction for r in records]),
                {name: np.stack([r.metrics[name] for r in records]) for name in names},
                np.array([r.seconds for r in records]),
                store,
            )
        )
    return experiment, results


def merge_seeds(results: list[ChainResult]) -> list[ChainResult]:
    """One result per (sweep point, regime): settings that run one seed per chain are joined along
    the seed axis, over the iterations every seed has completed."""
    groups: dict[tuple[str, str], list[ChainResult]] = {}
    for result in results:
        groups.setdefault((result.spec.point_name, result.spec.regime.label), []).append(result)
    merged = []
    for group in groups.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        n = min(len(r.iterations) for r in group)
        first = group[0]
        spec = dataclasses.replace(first.spec, seeds=tuple(s for r in group for s in r.spec.seeds))
        merged.append(
            ChainResult(
                spec,
                first.iterations[:n],
                first.train_size[:n],
                np.concatenate([r.real_fraction[:n] for r in group], axis=1),
                {m: np.concatenate([r.metrics[m][:n] for r in group], axis=1) for m in first.metrics},
                np.sum([r.seconds[:n] for r in group], axis=0),
                first.store,
            )
        )
    return merged


BAND_LEVEL = 0.95
# Below this many seeds a Student-t band is too wide to inform (with 2 seeds t is 12.7): figures draw
# every seed as a thin line beside the mean instead.
SEEDS_FOR_A_BAND = 5


def band_text(seeds: int) -> str:
    """The band's definition over ``seeds`` seeds, as figures' legends and the report state it."""
    if seeds < 2:
        return "1 seed: no interval"
    if seeds < SEEDS_FOR_A_BAND:
        return f"mean of {seeds} seeds (thick), each seed (thin)"
    return f"mean of {seeds} seeds, {BAND_LEVEL:.0%} CI (Student t)"


@dataclass
class Interval:
    """Per iteration: the mean over the seeds whose value is finite, and the Student-t confidence
    interval of that mean (NaN where fewer than two seeds are finite: no interval from one value)."""

    mean: np.ndarray  # (I,)
    low: np.ndarray
    high: np.ndarray
    finite: np.ndarray  # (I,) how many seeds the mean is over
    seeds: int

    @property
    def band_text(self) -> str:
        return band_text(self.seeds)

    def nonfinite(self, values: np.ndarray, iterations: np.ndarray) -> str | None:
        """How many seeds are left out of the mean where most are, e.g. ``-inf for 40 of 100 seeds at
        iteration 12``; None when every value is finite. An iteration NaN for every seed was not measured
        (curation's at iteration 1, which samples nothing; a metric a setting gained later) and is no fault."""
        measured = ~np.isnan(values).all(axis=1)
        missing = np.where(measured, self.seeds - self.finite, 0)
        if not missing.any():
            return None
        i = int(np.argmax(missing))
        left_out = values[i][~np.isfinite(values[i])]
        kinds = {"+inf": np.isposinf(left_out), "-inf": np.isneginf(left_out), "undefined": np.isnan(left_out)}
        what = " / ".join(name for name, found in kinds.items() if found.any())
        where = "at every iteration" if (missing[measured] == missing[i]).all() else f"at iteration {iterations[i]}"
        return f"{what} for {missing[i]} of {self.seeds} seeds {where}"


def confidence_interval(values: np.ndarray, level: float = BAND_LEVEL) -> Interval:
    """The mean of (I, seeds) ``values`` over finite seeds and its ``level`` Student-t interval:
    mean +- t_{(1+level)/2, k-1} s / sqrt(k) for k finite seeds (with 2 seeds t is 12.7, not 1.96)."""
    from scipy.special import stdtrit  # Student's t quantile, a plain ufunc

    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    count = finite.sum(axis=1)
    kept = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = kept.sum(axis=1) / count
        spread = np.where(finite, kept - mean[:, None], 0.0)
        error = np.sqrt((spread**2).sum(axis=1) / (count - 1) / count)
        half = stdtrit(count - 1, (1 + level) / 2) * error
    half = np.where(count >= 2, half, np.nan)
    return Interval(mean, mean - half, mean + half, count, values.shape[1])


def _format(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


def table(run_directory: Path) -> str:
    """Tidy CSV: one row per (sweep point, regime, seed, iteration), one column per setting field
    (dotted for a section's: ``training.learning_rate``) and per metric."""
    experiment, results = load_run(run_directory)
    fields = list(flatten(experiment.points[0].model_dump()))
    fields.remove("name")
    metric_names = list(dict.fromkeys(name for r in results for name in r.metrics))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "regime", *fields, "seed", "iteration", "train_size", "real_fraction", *metric_names])
    for result in results:
        point = flatten(result.spec.point.model_dump())
        for i, iteration in enumerate(result.iterations):
            for b, seed in enumerate(result.spec.seeds):
                writer.writerow(
                    [
                        experiment.setting_name,
                        result.spec.regime.label,
                        *(point[f] for f in fields),
                        seed,
                        int(iteration),
                        int(result.train_size[i]),
                        _format(result.real_fraction[i, b]),
                        *(_format(result.metrics[m][i, b]) if m in result.metrics else "" for m in metric_names),
                    ]
                )
    return buffer.getvalue()
