"""Kernel density estimation (Kazdan et al., "Collapse or Thrive?", §(b)).

Real data come from scikit-learn's generators with *fixed* generating parameters, so that the training
data, fresh real data and the held-out test data of a seed share one distribution. (The follow-up's code
drew separate random blob centres for train and test; here the centres are constants.) A model is a
scikit-learn ``KernelDensity`` per seed; the metric is the mean negative log-likelihood of fresh real
test samples. scikit-learn has no batched KDE, so seeds are looped over inside this setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt
from sklearn import datasets
from sklearn.neighbors import KernelDensity

from ..errors import RunDirectoryError
from ..randomness import seed_rng
from .arrays import Samples, check_shape, concatenate, load_arrays, save_arrays
from .base import Footprint, Metric, Setting, SettingConfig

BLOB_CENTRES = np.array([[-5.0, -5.0], [0.0, 5.0], [5.0, -2.0]])
# Relative tolerance of scikit-learn's tree-based density evaluation: it changes a log-density by at
# most ~1e-8 nats, and lets the tree skip far nodes (2-3x faster than the exact default on large pools).
DENSITY_RTOL = 1e-8
DIMENSIONS = {"moons": 2, "circles": 2, "blobs": 2, "swiss-roll": 3}


def draw_real(dataset: str, size: int, noise: float, random_state: int) -> np.ndarray:
    """``size`` points of a scikit-learn toy distribution with fixed generating parameters."""
    if dataset == "moons":
        return datasets.make_moons(size, noise=noise, random_state=random_state)[0]
    if dataset == "circles":
        return datasets.make_circles(size, noise=noise, factor=0.5, random_state=random_state)[0]
    if dataset == "blobs":
        return datasets.make_blobs(size, centers=BLOB_CENTRES, cluster_std=1.0, random_state=random_state)[0]
    if dataset == "swiss-roll":
        return datasets.make_swiss_roll(size, noise=noise, random_state=random_state)[0]
    raise ValueError(f"unknown data set {dataset!r}")


class KDEConfig(SettingConfig):
    name: Literal["kde"] = "kde"
    dataset: Literal["moons", "circles", "blobs", "swiss-roll"] = "moons"
    samples: PositiveInt = Field(100, description="T, real training samples per seed")
    bandwidth: PositiveFloat | Literal["scott", "silverman"] = 0.1
    kernel: Literal["gaussian", "tophat"] = Field("gaussian", description="kernels scikit-learn can sample from")
    noise: float = Field(0.05, ge=0, description="noise of moons, circles and swiss-roll")
    test_samples: PositiveInt = 500


class KDEModel:
    """One fitted ``KernelDensity`` per seed. ``bandwidth`` may hold a rule name (scott, silverman) per
    seed; the resolved number, which depends on the data, is kept so that a reload is exact."""

    def __init__(self, points: np.ndarray, bandwidth: Sequence[float | str], kernel: str):
        self.points = points  # (B, m, dim): the training set is the model
        self.estimators = [
            KernelDensity(bandwidth=h, kernel=kernel, rtol=DENSITY_RTOL).fit(p) for p, h in zip(points, bandwidth)
        ]
        self.bandwidth = np.array([e.bandwidth_ for e in self.estimators], dtype=float)


class KDE(Setting):
    name = "kde"
    Config = KDEConfig
    metrics = {"test_nll": Metric("test NLL on real data (nats)", log_scale=True)}

    @classmethod
    def footprint(cls, config: KDEConfig) -> Footprint:
        d = DIMENSIONS[config.dataset]
        # points, their concatenated copy and scikit-learn's tree over it (a copy plus indices); test points
        return Footprint(rows=config.samples, bytes_per_row=8 * (3 * d + 2), fixed_bytes=8 * d * config.test_samples)

    def __init__(self, config: KDEConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        train, test = [], []
        for seed in self.seeds:
            states = seed_rng(seed, "real").integers(2**31, size=2)
            train.append(draw_real(config.dataset, config.samples, config.noise, int(states[0])))
            test.append(draw_real(config.dataset, config.test_samples, config.noise, int(states[1])))
        self._real = Samples(x=np.stack(train))
        self.test = np.stack(test)

    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        states = rng.integers(2**31, size=self.seed_count)
        return Samples(x=np.stack([draw_real(self.config.dataset, size, self.config.noise, int(s)) for s in states]))

    def fit(self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None) -> KDEModel:
        return KDEModel(concatenate(parts)["x"], [self.config.bandwidth] * self.seed_count, self.config.kernel)

    def sample(self, model: KDEModel, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        states = rng.integers(2**31, size=self.seed_count)
        return Samples(x=np.stack([e.sample(size, random_state=int(s)) for e, s in zip(model.estimators, states)]))

    def evaluate(self, model: KDEModel) -> dict[str, np.ndarray]:
        return {"test_nll": np.array([-e.score_samples(t).mean() for e, t in zip(model.estimators, self.test)])}

    def save_model(self, model: KDEModel, directory: Path) -> None:
        save_arrays(directory / "model.npz", {"points": model.points, "bandwidth": model.bandwidth})

    def load_model(self, directory: Path) -> KDEModel:
        path = directory / "model.npz"
        arrays = load_arrays(path, ["points", "bandwidth"])
        points = arrays["points"]
        check_shape(path, points, (self.seed_count, None, DIMENSIONS[self.config.dataset]))
        bandwidth = check_shape(path, arrays["bandwidth"], (self.seed_count,))
        if not (np.isfinite(bandwidth) & (bandwidth > 0)).all():
            raise RunDirectoryError(
                f"corrupted file {path}: bandwidths must be positive numbers, got {bandwidth.tolist()}"
            )
        return KDEModel(points, bandwidth, self.config.kernel)
