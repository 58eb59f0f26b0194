"""A chain's records: one ``IterationRecord`` per iteration (train size, real fraction, metrics per seed,
seconds), and their codecs: ``metrics.npz`` of a commit of several iterations (run format 3), the JSON
of formats 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunDirectoryError

RECORDS = "metrics.npz"
RECORD_ARRAYS = ("iteration", "train_size", "real_fraction")
_METRIC = "metric."


@dataclass
class IterationRecord:
    iteration: int
    train_size: int
    real_fraction: np.ndarray  # (batch,)
    metrics: dict[str, np.ndarray]  # name -> (batch,)
    seconds: float = float("nan")  # wall-clock time of the iteration (sample, fit, evaluate); NaN: not recorded

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "train_size": self.train_size,
            "real_fraction": self.real_fraction.tolist(),
            "metrics": {name: np.asarray(values, dtype=float).tolist() for name, values in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, value: Any, path: Path, batch: int) -> IterationRecord:
        try:
            record = cls(
                iteration=int(value["iteration"]),
                train_size=int(value["train_size"]),
                real_fraction=np.asarray(value["real_fraction"], dtype=float),
                metrics={k: np.asarray(v, dtype=float) for k, v in value["metrics"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise RunDirectoryError(f"corrupted file {path}: {error!r}") from None
        if any(a.shape != (batch,) for a in (record.real_fraction, *record.metrics.values())):
            raise RunDirectoryError(f"corrupted file {path}: expected {batch} values per metric")
        return record


def records_to_arrays(records: list[IterationRecord]) -> dict[str, np.ndarray]:
    """Consecutive records as arrays over (iterations,) and (iterations, seeds), one per metric."""
    arrays = {
        "iteration": np.array([r.iteration for r in records], dtype=np.int64),
        "train_size": np.array([r.train_size for r in records], dtype=np.int64),
        "real_fraction": np.stack([r.real_fraction for r in records]).astype(float),
    }
    arrays["seconds"] = np.array([r.seconds for r in records], dtype=float)
    for name in records[0].metrics:
        arrays[_METRIC + name] = np.stack([np.asarray(r.metrics[name], dtype=float) for r in records])
    return arrays


def records_from_arrays(arrays: dict[str, np.ndarray], path: Path, seed_count: int) -> list[IterationRecord]:
    iteration, train_size, real_fraction = (arrays[name] for name in RECORD_ARRAYS)
    metrics = {name[len(_METRIC) :]: a for name, a in arrays.items() if name.startswith(_METRIC)}
    count = iteration.shape[0] if iteration.ndim == 1 else -1
    seconds = arrays.get("seconds", np.full(max(count, 0), np.nan))  # not kept before the report came
    shapes_ok = (
        count >= 1
        and train_size.shape == (count,)
        and all(a.shape == (count, seed_count) for a in (real_fraction, *metrics.values()))
        and seconds.shape == (count,)
        and all(a.dtype.kind in "iuf" for a in (iteration, train_size, real_fraction, seconds, *metrics.values()))
    )
    if not shapes_ok:
        raise RunDirectoryError(
            f"corrupted file {path}: expected records of {seed_count} values per metric for each iteration"
        )
    return [
        IterationRecord(
            int(iteration[i]),
            int(train_size[i]),
            real_fraction[i].astype(float),
            {name: a[i].astype(float) for name, a in metrics.items()},
            float(seconds[i]),
        )
        for i in range(count)
    ]
