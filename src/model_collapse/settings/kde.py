"""Kernel density estimation (Kazdan et al., "Collapse or Thrive?", §(b)).

Real data come from scikit-learn's generators (two moons, circles, blobs, swiss roll), with the same
generating parameters for a seed's training, fresh real and held-out test data. A model is the kernel
density of its training set, exactly as scikit-learn's ``KernelDensity`` defines it; the metric is the
mean negative log-likelihood of the seed's test points.

Evaluation is exact (no tree, no tolerance) and costs one pass over the *new* training data per
iteration: the kernel sums of every part of a training set at the fixed test points are kept as
log-sum-exp values per part, and a training set's sums combine those of its parts. Under accumulate,
iteration n then evaluates only its new batch; subsample regimes evaluate the T points they drew. This
holds for a numeric bandwidth; the ``scott`` and ``silverman`` rules change the bandwidth with the size
of the training set, so every iteration evaluates its whole training set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator
from scipy.special import gammaln, logsumexp

from ..arrayio import load_arrays, save_arrays
from ..errors import RunDirectoryError
from ..randomness import seed_rng
from .arrays import RunningTotal, Samples, check_shape, concatenate, gather
from .base import Capabilities, Footprint, Metric, Setting, SettingConfig

DIMENSIONS = {"moons": 2, "circles": 2, "blobs": 2, "swiss-roll": 3}
BLOB_BOX = (-10.0, 10.0)  # make_blobs' default box for random centres, as the follow-up drew them
# Kernel evaluations per chunk of the (seeds, test points, training points) grid: about 32 MB of float64.
CHUNK_ELEMENTS = 2**22


def draw_real(config: KDEConfig, size: int, random_state: int, centres: np.ndarray | None = None) -> np.ndarray:
    """``size`` points of the configured scikit-learn toy distribution (``centres``: the blobs')."""
    from sklearn import datasets  # (here: scikit-learn takes most of a second to import)

    if config.dataset == "moons":
        return datasets.make_moons(size, noise=config.noise, random_state=random_state)[0]
    if config.dataset == "circles":
        return datasets.make_circles(size, noise=config.noise, factor=config.factor, random_state=random_state)[0]
    if config.dataset == "blobs":
        return datasets.make_blobs(size, centers=centres, cluster_std=1.0, random_state=random_state)[0]
    return datasets.make_swiss_roll(size, noise=config.noise, random_state=random_state)[0]


class KDEConfig(SettingConfig):
    name: Literal["kde"] = "kde"
    dataset: Literal["moons", "circles", "blobs", "swiss-roll"] = Field(
        "moons", description="the real data: scikit-learn's make_moons, make_circles, make_blobs or make_swiss_roll"
    )
    samples: PositiveInt = Field(100, title="T", description="T, real training samples per seed")
    bandwidth: PositiveFloat | Literal["scott", "silverman"] = Field(
        0.1, title="h", description="h, the kernel width: a number, or scott / silverman (from each fit's data)"
    )
    kernel: Literal["gaussian", "tophat"] = Field("gaussian", description="the KDE's kernel")
    noise: float = Field(0.05, ge=0, description="noise of moons, circles and swiss-roll")
    factor: float = Field(0.8, gt=0, lt=1, description="inner over outer radius of circles (scikit-learn's default)")
    centres: list[tuple[float, float]] | None = Field(
        None, min_length=1, description="blob centres (null: three per seed, uniform in [-10, 10]^2)"
    )
    test_samples: PositiveInt = Field(500, description="fresh real samples the test NLL is measured on")

    @model_validator(mode="after")
    def _oracle_has_a_density(self) -> KDEConfig:
        if self.curation is not None and self.curation.score == "oracle" and self.dataset != "blobs" and not self.noise:
            raise ValueError(f"curation.score: oracle needs noise > 0: without it {self.dataset} has no density")
        return self

    @field_validator("centres")
    @classmethod
    def _finite(cls, centres):
        if centres is not None and not np.isfinite(centres).all():
            raise ValueError("centres must be finite")
        return centres


def bandwidth_for(rule: float | str, points: int, dim: int) -> float:
    """The bandwidth of a training set of ``points`` points: a number as given, or scikit-learn's rule."""
    if rule == "scott":
        return points ** (-1 / (dim + 4))
    if rule == "silverman":
        return (points * (dim + 2) / 4) ** (-1 / (dim + 4))
    return float(rule)


def log_kernel_sums(points: np.ndarray, test: np.ndarray, bandwidth: float, kernel: str) -> np.ndarray:
    """log sum_j k((t - x_j) / h) for every seed and test point: (seeds, test points).

    ``points`` is (seeds, m, dim), ``test`` (seeds, t, dim); k is the unnormalised kernel (exp(-u^2/2),
    or 1 strictly inside the unit ball). Exact up to rounding (about 1e-10 relative): no tree and no
    tolerance. Squared distances come from one batched matrix product per chunk of training points,
    in coordinates centred on the test points (which keeps |a|^2 + |b|^2 - 2ab accurate); a sum that
    would underflow (a test point far from every training point) is taken in log space instead."""
    seeds, m, _ = points.shape
    centre = test.mean(axis=1, keepdims=True)
    test, points = test - centre, points - centre
    test_norms, point_norms = np.square(test).sum(-1)[:, :, None], np.square(points).sum(-1)[:, None, :]
    total = np.full(test.shape[:2], -np.inf)
    chunk = max(1, CHUNK_ELEMENTS // max(1, seeds * test.shape[1]))
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        squared = np.matmul(test, points[:, start:stop].transpose(0, 2, 1))
        squared *= -2
        squared += test_norms
        squared += point_norms[:, :, start:stop]
        np.maximum(squared, 0, out=squared)  # rounding may leave -1e-16 for coinciding points
        with np.errstate(divide="ignore"):  # log 0: no training point inside any test point's ball
            if kernel == "tophat":
                total = np.logaddexp(total, np.log((squared < bandwidth**2).sum(-1)))
                continue
            squared *= -0.5 / bandwidth**2  # now the log-kernel
            sums = np.exp(squared).sum(-1)
            logs = np.log(sums)
        far = sums < 1e-200  # these would lose digits or underflow: sum them shifted by their maximum
        if far.any():
            logs[far] = logsumexp(squared[far], axis=-1)
        total = np.logaddexp(total, logs)
    return total


def log_normaliser(kernel: str, bandwidth: float, dim: int) -> float:
    """log of the integral of the unnormalised kernel at ``bandwidth`` (scikit-learn's normalisation)."""
    if kernel == "gaussian":
        return 0.5 * dim * np.log(2 * np.pi) + dim * np.log(bandwidth)
    return 0.5 * dim * np.log(np.pi) - gammaln(0.5 * dim + 1) + dim * np.log(bandwidth)  # a d-ball's volume


def _curve_points(config: KDEConfig, count: int) -> np.ndarray:
    """``count`` evenly spaced points of each noiseless curve of moons or circles, as the generator spaces
    them (two curves, half the samples each), or the swiss roll's spiral in its (x, z) plane."""
    if config.dataset == "moons":
        t = (np.arange(count) + 0.5) * np.pi / count
        return np.concatenate([np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)])
    if config.dataset == "circles":
        t = np.arange(count) * 2 * np.pi / count
        outer = np.stack([np.cos(t), np.sin(t)], 1)
        return np.concatenate([outer, config.factor * outer])
    t = 1.5 * np.pi * (1 + 2 * (np.arange(count) + 0.5) / count)  # swiss roll: t uniform on [1.5 pi, 4.5 pi]
    return np.stack([t * np.cos(t), t * np.sin(t)], 1)


def true_log_density(config: KDEConfig, x: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """log p(x) under the distribution the real data are drawn from (rows x of one seed: (n, d)).

    Blobs: an equal mixture of N(c, I) over the centres. Moons, circles and the swiss roll: a curve (or a
    surface) with its parameter uniform, plus N(0, noise^2 I): the curve's Gaussian mixture, integrated
    by the midpoint rule on points ``noise / 8`` apart at most (the generators space their points evenly,
    so this is their limit); the swiss roll's height, uniform on [0, 21], integrates in closed form."""
    from scipy.special import log_ndtr

    if config.dataset == "blobs":
        assert centres is not None
        sums = log_kernel_sums(centres[None], x[None], 1.0, "gaussian")[0]
        return sums - np.log(len(centres)) - log_normaliser("gaussian", 1.0, x.shape[-1])
    sigma = config.noise
    length = {"moons": np.pi, "circles": 2 * np.pi, "swiss-roll": 100.0}[config.dataset]  # the longest curve
    curve = _curve_points(config, max(512, int(np.ceil(8 * length / sigma))))
    plane = x if config.dataset != "swiss-roll" else x[:, [0, 2]]
    sums = log_kernel_sums(curve[None], plane[None], sigma, "gaussian")[0]
    log_plane = sums - np.log(len(curve)) - log_normaliser("gaussian", sigma, 2)
    if config.dataset != "swiss-roll":
        return log_plane
    y = x[:, 1]
    # P(height + noise lands at y) / 21 = (Phi((21 - y) / sigma) - Phi(-y / sigma)) / 21, in logs
    upper, lower = log_ndtr((21 - y) / sigma), log_ndtr(-y / sigma)
    with np.errstate(divide="ignore"):
        log_height = upper + np.log1p(-np.exp(np.minimum(lower - upper, 0.0))) - np.log(21.0)
    return log_plane + log_height


class KDEModel:
    """The kernel density of a training set, per seed: the training set (kept as its parts, so that
    their kernel sums are reused), the bandwidth and the kernel."""

    def __init__(self, parts: Sequence[Samples], bandwidth: float, kernel: str):
        self.parts, self.bandwidth, self.kernel = list(parts), float(bandwidth), kernel

    @property
    def points(self) -> np.ndarray:
        return concatenate(self.parts)["x"]

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)


class KDE(Setting[KDEConfig, Samples]):
    name = "kde"
    Config = KDEConfig
    metrics = {"test_nll": Metric("test NLL on real data (nats)", log_scale=True)}
    capabilities = Capabilities(cheap=True, fresh_real=True, scores=("likelihood", "oracle"))

    @classmethod
    def footprint(cls, config: KDEConfig) -> Footprint:
        d = DIMENSIONS[config.dataset]
        # per pool row: the point, its copy when the model is saved, and its batch's kernel sums at the
        # test points (one float per test point per batch of ``samples`` rows); fixed: the test points
        sums_per_row = -(-8 * config.test_samples // config.samples)
        return Footprint(
            rows=config.samples, bytes_per_row=16 * d + sums_per_row, fixed_bytes=8 * d * config.test_samples
        )

    def __init__(self, config: KDEConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        self.centres = [self._centres(seed) for seed in self.seeds]
        train, test = [], []
        for seed, centres in zip(self.seeds, self.centres):
            states = seed_rng(seed, "real").integers(2**31, size=2)
            train.append(draw_real(config, config.samples, int(states[0]), centres))
            test.append(draw_real(config, config.test_samples, int(states[1]), centres))
        self._real = Samples(x=np.stack(train))
        self.test = np.stack(test)
        # kernel sums at the test points, per part and in total, for the (numeric) bandwidth
        self._sums = RunningTotal(
            "kde-log-kernel-sums",
            lambda part: log_kernel_sums(part["x"], self.test, float(config.bandwidth), config.kernel),
            np.logaddexp,
        )

    def _centres(self, seed: int) -> np.ndarray | None:
        """The blob centres of a seed: the configured ones, else three drawn once for the seed."""
        if self.config.dataset != "blobs":
            return None
        if self.config.centres is not None:
            return np.array(self.config.centres, dtype=float)
        return seed_rng(seed, "real-parameters").uniform(*BLOB_BOX, size=(3, 2))

    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        states = rng.integers(2**31, size=self.seed_count)
        return Samples(x=np.stack([draw_real(self.config, size, int(s), c) for s, c in zip(states, self.centres)]))

    def fit(self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None) -> KDEModel:
        size = sum(len(part) for part in parts)
        bandwidth = bandwidth_for(self.config.bandwidth, size, DIMENSIONS[self.config.dataset])
        return KDEModel(parts, bandwidth, self.config.kernel)

    def sample(self, model: KDEModel, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        """A training point per sample, picked uniformly, plus the kernel's noise (as scikit-learn samples)."""
        picked = gather(model.parts, rng.integers(model.size, size=(self.seed_count, size)))["x"]
        noise = rng.standard_normal(picked.shape)
        if model.kernel == "tophat":  # uniform in the ball: a uniform direction, radius h u^(1/d)
            radius = rng.uniform(size=picked.shape[:2] + (1,)) ** (1 / picked.shape[-1])
            noise *= radius / np.linalg.norm(noise, axis=-1, keepdims=True)
        return Samples(x=picked + model.bandwidth * noise)

    def evaluate(self, model: KDEModel) -> dict[str, np.ndarray]:
        if isinstance(self.config.bandwidth, str):  # the bandwidth follows the pool's size: no reuse
            sums = log_kernel_sums(model.points, self.test, model.bandwidth, model.kernel)
        else:
            sums = self._sums(model.parts)
        dim = self.test.shape[-1]
        log_density = sums - np.log(model.size) - log_normaliser(model.kernel, model.bandwidth, dim)
        return {"test_nll": -log_density.mean(axis=1)}

    def score(self, name: str, model: KDEModel, samples: Samples) -> np.ndarray:
        """``likelihood``: log density under the KDE that drew the samples; ``oracle``: under the real
        data's distribution (``true_log_density``)."""
        x = samples["x"]
        if name == "likelihood":
            sums = log_kernel_sums(model.points, x, model.bandwidth, model.kernel)
            return sums - np.log(model.size) - log_normaliser(model.kernel, model.bandwidth, x.shape[-1])
        return np.stack([true_log_density(self.config, rows, c) for rows, c in zip(x, self.centres)])

    def save_model(self, model: KDEModel, directory: Path) -> None:
        bandwidth = np.full(self.seed_count, model.bandwidth)
        save_arrays(directory / "model.npz", {"points": model.points, "bandwidth": bandwidth})

    def load_model(self, directory: Path) -> KDEModel:
        path = directory / "model.npz"
        arrays = load_arrays(path, ["points", "bandwidth"])
        points = check_shape(path, arrays["points"], (self.seed_count, None, DIMENSIONS[self.config.dataset]))
        bandwidth = check_shape(path, arrays["bandwidth"], (self.seed_count,))
        if not (np.isfinite(bandwidth) & (bandwidth > 0)).all() or len(set(bandwidth.tolist())) != 1:
            found = bandwidth.tolist()
            raise RunDirectoryError(f"corrupted file {path}: bandwidths must be one positive number, got {found}")
        return KDEModel([Samples(x=points)], bandwidth[0], self.config.kernel)
