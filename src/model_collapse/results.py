"""Reading a run directory back: per-chain results and the tidy table."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import ChainSpec, Experiment, build_experiment
from .errors import ConfigError, RunDirectoryError
from .rundir import ChainStore, open_run
from .settings import SETTINGS


@dataclass
class ChainResult:
    spec: ChainSpec
    iterations: np.ndarray  # (I,)
    train_size: np.ndarray  # (I,)
    real_fraction: np.ndarray  # (I, batch)
    metrics: dict[str, np.ndarray]  # name -> (I, batch)


def load_run(run_directory: Path) -> tuple[Experiment, list[ChainResult]]:
    raw = open_run(run_directory)
    try:
        experiment = build_experiment(raw)
    except ConfigError as error:
        raise RunDirectoryError(f"{run_directory / 'config.yaml'} is not a valid config: {error}") from None
    metrics = list(SETTINGS.declared(experiment.setting_name).metrics)
    results = []
    for spec in experiment.chains():
        store = ChainStore.at(run_directory, spec.relative_directory, spec.description(), writer=False)
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
        spec = ChainSpec(
            first.spec.point, first.spec.varying, first.spec.regime, tuple(s for r in group for s in r.spec.seeds)
        )
        merged.append(
            ChainResult(
                spec,
                first.iterations[:n],
                first.train_size[:n],
                np.concatenate([r.real_fraction[:n] for r in group], axis=1),
                {m: np.concatenate([r.metrics[m][:n] for r in group], axis=1) for m in first.metrics},
            )
        )
    return merged


def _format(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


def table(run_directory: Path) -> str:
    """Tidy CSV: one row per (sweep point, regime, seed, iteration), one column per metric."""
    experiment, results = load_run(run_directory)
    fields = list(experiment.points[0].model_dump())
    fields.remove("name")
    metric_names = list(dict.fromkeys(name for r in results for name in r.metrics))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["setting", "regime", *fields, "seed", "iteration", "train_size", "real_fraction", *metric_names])
    for result in results:
        point = result.spec.point.model_dump()
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
