"""Linear regression with a fixed Gaussian design, the paper's analytically tractable setting (§3).

Per seed: one design X in R^{T x d} with x ~ N(0, I_d), a true weight w* ~ N(0, I_d) and real labels
y = X w* + e, e ~ N(0, sigma^2 I). A model is the ordinary-least-squares weight w_hat. Sampling from a
model relabels the *same* design with fresh noise, y = X w_hat + e, so a batch of m synthetic samples is
m labels on design rows 0, 1, ..., T-1, 0, 1, ... (the design repeated).

Fitting uses sufficient statistics (X^T X and X^T y per part, cached on the part), so accumulating
n batches costs a sum of n small (d,) vectors instead of a least-squares solve on an n*T-row stack.
The metric is the exact population test error ||w_hat - w*||^2_Sigma with Sigma = I (noise floor removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator

from ..errors import RunDirectoryError
from ..randomness import seed_rng
from .arrays import ArraySetting, RunningTotal, Samples, check_shape, load_arrays, save_arrays
from .base import Footprint, Metric, SettingConfig


class LinearRegressionConfig(SettingConfig):
    name: Literal["linear-regression"] = "linear-regression"
    dim: PositiveInt = Field(10, description="d, the number of features")
    samples: PositiveInt = Field(100, description="T, the number of rows of the fixed design")
    noise_variance: PositiveFloat = Field(1.0, description="sigma^2, the label noise variance")

    @field_validator("samples")
    @classmethod
    def _well_posed(cls, samples: int, info: ValidationInfo) -> int:
        dim = info.data.get("dim")
        if dim is not None and samples <= dim + 1:
            raise ValueError(
                f"must exceed dim + 1 = {dim + 1} (got {samples}): with T <= d + 1 the least-squares "
                "error has no finite expectation"
            )
        return samples


class LinearRegression(ArraySetting):
    name = "linear-regression"
    Config = LinearRegressionConfig
    metrics = {"test_error": Metric("test error  ||w_hat - w*||^2", log_scale=True)}
    data_fields = ("y",)

    @classmethod
    def footprint(cls, config: LinearRegressionConfig) -> Footprint:
        T, d = config.samples, config.dim
        # the design and its transpose, Gram matrix and inverse; labels, design rows and a sampling temporary
        return Footprint(rows=T, bytes_per_row=32, fixed_bytes=8 * (2 * T * d + 3 * d * d + T))

    def __init__(self, config: LinearRegressionConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        T, d = config.samples, config.dim
        self.sigma = float(np.sqrt(config.noise_variance))
        design, truth, noise = [], [], []
        for seed in self.seeds:
            rng = seed_rng(seed, "real")
            design.append(rng.standard_normal((T, d)))
            truth.append(rng.standard_normal(d))
            noise.append(rng.standard_normal(T))
        self.design = np.stack(design)  # (B, T, d)
        self.design_t = np.ascontiguousarray(self.design.transpose(0, 2, 1))  # (B, d, T)
        self.true_weight = np.stack(truth)  # (B, d)
        self.gram = self.design_t @ self.design  # (B, d, d)
        self.gram_inverse = np.linalg.inv(self.gram)
        self._real = self._labels(self._predict(self.true_weight) + self.sigma * np.stack(noise))
        self._total = RunningTotal("least-squares statistics", self._statistics, self._combine)

    # -- data -------------------------------------------------------------------------------------
    def _predict(self, weight: np.ndarray) -> np.ndarray:
        return (self.design @ weight[:, :, None])[:, :, 0]  # (B, T)

    def _labels(self, y: np.ndarray) -> Samples:
        """Labels on the repeated design: row j of the batch belongs to design row j mod T."""
        T = self.config.samples
        rows = np.broadcast_to(np.arange(y.shape[1]) % T, y.shape)
        data = Samples(y=y, row=rows)
        data.cache["repeated"] = True
        return data

    def _relabel(self, weight: np.ndarray, size: int, rng: np.random.Generator) -> Samples:
        mean = self._predict(weight)
        T = self.config.samples
        if size != T:
            mean = np.take(mean, np.arange(size) % T, axis=1)
        return self._labels(mean + self.sigma * rng.standard_normal((self.batch, size)))

    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        return self._relabel(self.true_weight, size, rng)

    def sample(self, model: np.ndarray, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        return self._relabel(model, size, rng)

    # -- fitting ----------------------------------------------------------------------------------
    def _statistics(self, part: Samples) -> tuple[float, np.ndarray | None, np.ndarray]:
        """(copies of X^T X, extra gram or None, X^T y) of one part."""
        y = part["y"]
        T = self.config.samples
        if part.cache.get("repeated"):
            copies, tail = divmod(y.shape[1], T)
            summed = (
                y[:, : copies * T].reshape(self.batch, copies, T).sum(axis=1) if copies else np.zeros((self.batch, T))
            )
            summed[:, :tail] += y[:, copies * T :]
            xty = (self.design_t @ summed[:, :, None])[:, :, 0]
            extra = self.design_t[:, :, :tail] @ self.design[:, :tail] if tail else None
            return float(copies), extra, xty
        rows = self.design[np.arange(self.batch)[:, None], part["row"]]  # (B, k, d)
        rows_t = rows.transpose(0, 2, 1)
        return 0.0, rows_t @ rows, (rows_t @ y[:, :, None])[:, :, 0]

    @staticmethod
    def _combine(a, b):
        extra = b[1] if a[1] is None else a[1] if b[1] is None else a[1] + b[1]
        return a[0] + b[0], extra, a[2] + b[2]

    def fit(self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None) -> np.ndarray:
        copies, extra, xty = self._total(parts)
        if extra is None:
            return (self.gram_inverse @ xty[:, :, None])[:, :, 0] / copies
        gram = copies * self.gram + extra
        try:
            return np.linalg.solve(gram, xty[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            # A subset that repeats design rows can be rank deficient: minimum-norm least squares.
            return (np.linalg.pinv(gram, hermitian=True) @ xty[:, :, None])[:, :, 0]

    def evaluate(self, model: np.ndarray) -> dict[str, np.ndarray]:
        return {"test_error": np.sum((model - self.true_weight) ** 2, axis=1)}

    # -- storage ----------------------------------------------------------------------------------
    def save_model(self, model: np.ndarray, directory: Path) -> None:
        save_arrays(directory / "model.npz", {"weight": model})

    def load_model(self, directory: Path) -> np.ndarray:
        weight = load_arrays(directory / "model.npz", ["weight"])["weight"]
        return check_shape(directory / "model.npz", weight, (self.batch, self.config.dim))

    def save_data(self, data: Samples, directory: Path) -> None:
        arrays = {"y": data["y"]}
        if not data.cache.get("repeated"):
            arrays["row"] = data["row"]
        save_arrays(directory / "samples.npz", arrays)

    def load_data(self, directory: Path) -> Samples:
        path = directory / "samples.npz"
        arrays = load_arrays(path, ["y"])
        y = check_shape(path, arrays["y"], (self.batch, arrays["y"].shape[-1] if arrays["y"].ndim == 2 else -1))
        if "row" not in arrays:
            return self._labels(y)
        rows = check_shape(path, arrays["row"], y.shape)
        if rows.size and (
            not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or rows.max() >= self.config.samples
        ):
            raise RunDirectoryError(f"corrupted file {path}: design rows outside 0..{self.config.samples - 1}")
        return Samples(y=y, row=rows)
