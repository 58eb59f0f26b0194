"""Discrete distributions: a categorical distribution refitted to its own samples (the follow-up's
``fit_discrete_distributions``; Kazdan et al. 2024, "Collapse or Thrive?").

Real data: n draws per seed from the uniform distribution over K outcomes. A model is the empirical
distribution of its training set (the maximum-likelihood fit); sampling draws n outcomes from it. An
outcome whose probability reaches 0 never comes back, so under replace the distribution collapses onto
one outcome (entropy 0); under accumulate the real draws keep every outcome they contain.

Metrics: ``entropy`` (nats), ``zero_outcomes`` (outcomes of probability 0) and ``simpson_diversity``
(1 - sum p^2, the chance that two draws differ), whose expectation under replace is
(1 - 1/n)^t (1 - 1/K) at iteration t. Each part's outcome counts are its sufficient statistics and are
kept as a running total, so an accumulate iteration costs the same however many parts the pool holds.

This module is also the example of docs/architecture.md: a whole setting, registered by one line in
``settings/registry.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt
from scipy.special import entr

from ..arrayio import load_arrays, save_arrays
from ..errors import RunDirectoryError
from ..randomness import seed_rng
from .arrays import RunningTotal, Samples, check_shape
from .base import Capabilities, Curve, Footprint, Metric, Setting, SettingConfig


class DiscreteConfig(SettingConfig):
    name: Literal["discrete"] = "discrete"
    outcomes: PositiveInt = Field(10, title="K", description="K, the number of outcomes")
    samples: PositiveInt = Field(100, title="n", description="n, draws per seed (real, and synthetic per iteration)")


class Discrete(Setting[DiscreteConfig, Samples]):
    name = "discrete"
    Config = DiscreteConfig
    metrics = {
        "entropy": Metric("entropy of the fitted distribution (nats)"),
        "zero_outcomes": Metric("outcomes of probability 0"),
        "simpson_diversity": Metric("Simpson diversity  1 - sum p^2"),
    }
    capabilities = Capabilities(cheap=True, fresh_real=True, theory=True, scores=("likelihood", "oracle"))

    @classmethod
    def footprint(cls, config: DiscreteConfig) -> Footprint:
        # an outcome, and the uniform draw and index behind it while sampling; probabilities and counts
        return Footprint(rows=config.samples, bytes_per_row=24, fixed_bytes=8 * 4 * config.outcomes)

    @classmethod
    def theory(cls, config: DiscreteConfig, regime_name: str, iterations: int) -> list[Curve]:
        """Under replace each refit keeps a pair of draws distinct with probability 1 - 1/n, so
        E[simpson_diversity] at iteration t is (1 - 1/n)^t (1 - 1/K)."""
        if regime_name != "replace":
            return []
        t = np.arange(1, iterations + 1, dtype=float)
        values = (1 - 1 / config.samples) ** t * (1 - 1 / config.outcomes)
        return [Curve("simpson_diversity", values, "expected")]

    def __init__(self, config: DiscreteConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        self.dtype = np.min_scalar_type(config.outcomes - 1)  # uint8 for K <= 256: small kept batches
        draws = [seed_rng(seed, "real").integers(config.outcomes, size=config.samples) for seed in self.seeds]
        self._real = Samples(x=np.stack(draws).astype(self.dtype))
        self._counts = RunningTotal("outcome counts", self._count, np.add)

    def _count(self, part: Samples) -> np.ndarray:
        """(seeds, K) outcome counts of one part: one bincount over seed-shifted outcomes."""
        K, seeds = self.config.outcomes, self.seed_count
        shifted = part["x"].astype(np.int64) + K * np.arange(seeds)[:, None]
        return np.bincount(shifted.ravel(), minlength=seeds * K).reshape(seeds, K)

    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        return Samples(x=rng.integers(self.config.outcomes, size=(self.seed_count, size)).astype(self.dtype))

    def fit(self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None) -> np.ndarray:
        counts = self._counts(parts)
        return counts / counts.sum(axis=1, keepdims=True)  # (seeds, K) probabilities

    def sample(self, model: np.ndarray, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        # Inverse-CDF draws: outcome k for u in [cdf[k-1], cdf[k]), which is empty when p_k = 0. The cap at
        # the last outcome of positive probability guards against a cdf that rounds to just below 1.
        cdf = np.cumsum(model, axis=1)
        u = rng.random((self.seed_count, size))
        draws = np.stack([np.searchsorted(c, v, side="right") for c, v in zip(cdf, u)])
        last = model.shape[1] - 1 - np.argmax(model[:, ::-1] > 0, axis=1)
        return Samples(x=np.minimum(draws, last[:, None]).astype(self.dtype))

    def evaluate(self, model: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "entropy": entr(model).sum(axis=1),
            "zero_outcomes": (model == 0).sum(axis=1).astype(float),
            "simpson_diversity": 1 - (model**2).sum(axis=1),
        }

    def score(self, name: str, model: np.ndarray, samples: Samples) -> np.ndarray:
        """log p(outcome): ``likelihood`` under the fit that drew it, ``oracle`` under the uniform truth."""
        x = samples["x"].astype(np.int64)
        if name == "oracle":
            return np.full(x.shape, -np.log(self.config.outcomes))
        with np.errstate(divide="ignore"):
            return np.log(np.take_along_axis(model, x, axis=1))

    def save_model(self, model: np.ndarray, directory: Path) -> None:
        save_arrays(directory / "model.npz", {"probabilities": model})

    def load_model(self, directory: Path) -> np.ndarray:
        path = directory / "model.npz"
        probabilities = load_arrays(path, ["probabilities"])["probabilities"]
        check_shape(path, probabilities, (self.seed_count, self.config.outcomes))
        if not (np.isfinite(probabilities).all() and (probabilities >= 0).all()):
            raise RunDirectoryError(f"corrupted file {path}: probabilities must be finite and non-negative")
        return probabilities
