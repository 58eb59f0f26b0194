"""Multivariate Gaussian fitting (Kazdan et al., "Collapse or Thrive?", §(a)).

Real data: T samples from N(0, sigma^2 I_d) per seed. A model is the maximum-likelihood fit: the sample
mean and the *biased* sample covariance. Sampling draws from N(mu_hat, Sigma_hat).

Each part of a training set is summarised once by (count, mean, centred scatter) and parts are merged
with the pairwise update of Chan et al., which stays accurate when the covariance collapses towards
zero (an uncentred second moment would lose it to cancellation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt

from ..randomness import seed_rng
from .arrays import RunningTotal, Samples, check_shape, load_arrays, save_arrays
from .base import Footprint, Metric, Setting, SettingConfig


class GaussianConfig(SettingConfig):
    name: Literal["gaussian"] = "gaussian"
    dim: PositiveInt = Field(1, description="d, the dimension")
    samples: PositiveInt = Field(100, description="T, real samples per seed")
    variance: PositiveFloat = Field(1.0, description="sigma^2: the real data are N(0, sigma^2 I_d)")


class GaussianModel:
    def __init__(self, mean: np.ndarray, covariance: np.ndarray):
        self.mean = mean  # (B, d)
        self.covariance = covariance  # (B, d, d)


def _summary(part: Samples) -> tuple[int, np.ndarray, np.ndarray]:
    x = part["x"]
    mean = x.mean(axis=1)
    centred = x - mean[:, None, :]
    return x.shape[1], mean, centred.transpose(0, 2, 1) @ centred


def _merge(a, b):
    (n_a, mean_a, scatter_a), (n_b, mean_b, scatter_b) = a, b
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    scatter = scatter_a + scatter_b + (delta[:, :, None] * delta[:, None, :]) * (n_a * n_b / n)
    return n, mean, scatter


class Gaussian(Setting):
    name = "gaussian"
    Config = GaussianConfig
    metrics = {
        "mean_sq_error": Metric("||mu_hat - mu_0||^2", log_scale=True),
        "trace_ratio": Metric("tr(Sigma_hat) / tr(Sigma_0)"),
        "det_ratio": Metric("det(Sigma_hat) / det(Sigma_0)", log_scale=True),
        "test_nll": Metric("test NLL on real data (nats)"),
    }

    @classmethod
    def footprint(cls, config: GaussianConfig) -> Footprint:
        d = config.dim
        # samples, the normal draws and centred copies behind them; covariance, scatter, eigenvectors, solves
        return Footprint(rows=config.samples, bytes_per_row=24 * d, fixed_bytes=8 * 6 * d * d)

    @classmethod
    def theory(cls, config: GaussianConfig, regime_name: str, iterations: int) -> list:
        """Under replace, with T samples of N(mu_0, Sigma_0) per fit (MLE mean, biased covariance):
        E tr(Sigma_t)/tr(Sigma_0) = ((T-1)/T)^t, E det(Sigma_t)/det(Sigma_0) = (prod_{i<=d} (T-i)/T)^t and
        E ||mu_t - mu_0||^2 = tr(Sigma_0) (1 - ((T-1)/T)^t); under accumulate
        E ||mu_t - mu_0||^2 <= (pi^2/6) tr(Sigma_0) / T (Kazdan et al. 2024, Collapse or Thrive?)."""
        from ..theory import Curve

        n = np.arange(1, iterations + 1, dtype=float)
        T, d, trace0 = config.samples, config.dim, config.dim * config.variance
        shrink = (T - 1) / T
        if regime_name == "replace":
            result = [
                Curve("trace_ratio", shrink**n, "expected"),
                Curve("mean_sq_error", trace0 * (1 - shrink**n), "expected"),
            ]
            if T > d:
                result.append(Curve("det_ratio", np.prod((T - np.arange(1, d + 1)) / T) ** n, "expected"))
            return result
        if regime_name == "accumulate":
            return [Curve("mean_sq_error", np.full(iterations, np.pi**2 / 6 * trace0 / T), "bound")]
        return []

    def __init__(self, config: GaussianConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        d = config.dim
        self.true_mean = np.zeros(d)
        self.true_covariance = config.variance * np.eye(d)
        self.scale = np.sqrt(config.variance)
        self._real = Samples(
            x=np.stack([self.scale * seed_rng(s, "real").standard_normal((config.samples, d)) for s in self.seeds])
        )
        self._total = RunningTotal("gaussian summary", _summary, _merge)

    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        return Samples(x=self.true_mean + self.scale * rng.standard_normal((self.seed_count, size, self.config.dim)))

    def fit(self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None) -> GaussianModel:
        n, mean, scatter = self._total(parts)
        return GaussianModel(mean, scatter / n)

    def sample(self, model: GaussianModel, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        # A symmetric square root through eigh works for singular (collapsed) covariances, unlike Cholesky.
        values, vectors = np.linalg.eigh(model.covariance)
        root = vectors * np.sqrt(np.clip(values, 0.0, None))[:, None, :]
        z = rng.standard_normal((self.seed_count, size, self.config.dim))
        return Samples(x=model.mean[:, None, :] + z @ root.transpose(0, 2, 1))

    def evaluate(self, model: GaussianModel) -> dict[str, np.ndarray]:
        d = self.config.dim
        error = model.mean - self.true_mean
        sign, logdet = np.linalg.slogdet(model.covariance)
        _, logdet_true = np.linalg.slogdet(self.true_covariance)
        singular = sign <= 0
        nll = np.full(self.seed_count, np.inf)
        if (~singular).any():
            # Exact expected negative log-likelihood of a fresh real sample: no test set to sample.
            cov = model.covariance[~singular]
            solved = np.linalg.solve(
                cov,
                np.concatenate(
                    [np.broadcast_to(self.true_covariance, cov.shape), error[~singular][:, :, None]], axis=2
                ),
            )
            trace_term = np.trace(solved[:, :, :d], axis1=1, axis2=2)
            mahalanobis = np.sum(error[~singular] * solved[:, :, d], axis=1)
            nll[~singular] = 0.5 * (d * np.log(2 * np.pi) + logdet[~singular] + trace_term + mahalanobis)
        return {
            "mean_sq_error": np.sum(error**2, axis=1),
            "trace_ratio": np.trace(model.covariance, axis1=1, axis2=2) / np.trace(self.true_covariance),
            "det_ratio": np.where(singular, 0.0, np.exp(logdet - logdet_true)),
            "test_nll": nll,
        }

    def save_model(self, model: GaussianModel, directory: Path) -> None:
        save_arrays(directory / "model.npz", {"mean": model.mean, "covariance": model.covariance})

    def load_model(self, directory: Path) -> GaussianModel:
        path = directory / "model.npz"
        arrays = load_arrays(path, ["mean", "covariance"])
        d = self.config.dim
        return GaussianModel(
            check_shape(path, arrays["mean"], (self.seed_count, d)),
            check_shape(path, arrays["covariance"], (self.seed_count, d, d)),
        )
