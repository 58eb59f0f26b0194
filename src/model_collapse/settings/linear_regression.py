"""Linear regression with a fixed Gaussian design, the paper's analytically tractable setting (§3).

Per seed: one design X in R^{T x d} with x ~ N(0, I_d), a true weight w* ~ N(0, I_d) and real labels
y = X w* + e, e ~ N(0, sigma^2 I). A model is the ordinary-least-squares weight w_hat. Sampling from a
model relabels the *same* design with fresh noise, y = X w_hat + e, so a batch of m synthetic samples is
m labels on design rows 0, 1, ..., T-1, 0, 1, ... (the design repeated).

Fitting uses sufficient statistics (X^T X and X^T y per part, cached on the part), so accumulating
n batches costs a sum of n small (d,) vectors instead of a least-squares solve on an n*T-row stack.
The metric is the exact population test error ||w_hat - w*||^2_Sigma with Sigma = I (noise floor removed).

With T <= d + 1 (the follow-up's d = 10 / T = 10 and d = 32, 100 / T <= d runs) the fit is the
minimum-norm least-squares solution X^+ y, as ``numpy.linalg.lstsq`` gives, through the same statistics:
X^+ = (X^T X)^+ X^T. The paper's closed forms need T > d + 1; for T < d - 1 the setting has its own
(``theory``), and for T in [d - 1, d + 1] the expected error is infinite.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt

from ..arrayio import load_arrays, save_arrays
from ..errors import RunDirectoryError
from ..randomness import seed_rng
from .arrays import SAMPLES_FILE, RunningTotal, Samples, check_shape
from .base import Capabilities, Curve, Footprint, Metric, Setting, SettingConfig


class LinearRegressionConfig(SettingConfig):
    name: Literal["linear-regression"] = "linear-regression"
    dim: PositiveInt = Field(10, title="d", description="d, the number of features")
    samples: PositiveInt = Field(100, title="T", description="T, the number of rows of the fixed design")
    noise_variance: PositiveFloat = Field(1.0, title="σ²", description="sigma^2, the label noise variance")


def expected_error_of_real_fit(dim: int, samples: int, noise_variance: float) -> float:
    """c = sigma^2 d / (T - d - 1): the expected test error of OLS on the real data alone (T > d + 1)."""
    return noise_variance * dim / (samples - dim - 1)


def expected_variance_of_min_norm_fit(dim: int, samples: int, noise_variance: float) -> float:
    """c' = sigma^2 T / (d - T - 1) (T < d - 1): E||X^+ e||^2 = sigma^2 E tr((X X^T)^-1), with X X^T
    ~ Wishart_T(d, I), whose inverse has mean I / (d - T - 1)."""
    return noise_variance * samples / (dim - samples - 1)


class DesignLabels(Samples):
    """Labels on the fixed design repeated: sample j of a seed belongs to design row j mod ``period``
    (= T). Saved as the labels alone, since the rows follow from the period; a selection of rows (an
    ``accumulate-subsample`` draw, say) is plain ``Samples`` with its design rows."""

    def __init__(self, y: np.ndarray, period: int):
        super().__init__(y=y, row=np.broadcast_to(np.arange(y.shape[1]) % period, y.shape))
        self.period = period

    def save(self, directory: Path) -> None:
        save_arrays(directory / SAMPLES_FILE, {"y": self["y"]})

    @classmethod
    def load(cls, directory: Path, like: Samples) -> Samples:
        assert isinstance(like, DesignLabels), "labels are loaded like the chain's real labels"
        path = directory / SAMPLES_FILE
        arrays = load_arrays(path, ["y"])
        y = check_shape(path, arrays["y"], (like.seed_count, None))
        if "row" not in arrays:
            return cls(y, like.period)
        row = check_shape(path, arrays["row"], y.shape)
        if row.size and (not np.issubdtype(row.dtype, np.integer) or row.min() < 0 or row.max() >= like.period):
            raise RunDirectoryError(f"corrupted file {path}: design rows outside 0..{like.period - 1}")
        return Samples(y=y, row=row)


class LinearRegression(Setting[LinearRegressionConfig, Samples]):
    name = "linear-regression"
    Config = LinearRegressionConfig
    metrics = {"test_error": Metric("test error  ||w_hat - w*||^2", log_scale=True)}
    capabilities = Capabilities(cheap=True, fresh_real=True, theory=True, scores=("likelihood", "oracle"))

    @classmethod
    def footprint(cls, config: LinearRegressionConfig) -> Footprint:
        T, d = config.samples, config.dim
        # the design and its transpose, Gram matrix and inverse; labels, design rows and a sampling temporary
        return Footprint(rows=T, bytes_per_row=32, fixed_bytes=8 * (2 * T * d + 3 * d * d + T))

    @classmethod
    def theory(cls, config: LinearRegressionConfig, regime_name: str, iterations: int) -> list[Curve]:
        """The paper's closed forms (Gerstgrasser et al. 2024, Theorems 1-2): with c = sigma^2 d / (T - d - 1),
        the expected test error of iteration n is c n under replace, c sum_{i<=n} 1/i^2 (<= c pi^2/6) under
        accumulate, and c H_n under replace-grown.

        With T < d - 1 the minimum-norm fit w_n = X^+ y keeps only the row space of X: the part of w*
        outside it, of expected squared norm d - T, is never learned, and the part inside follows the
        same recursions with c' = sigma^2 T / (d - T - 1) in place of c (same derivation, projected)."""
        n = np.arange(1, iterations + 1, dtype=float)
        T, d = config.samples, config.dim
        if d + 1 < T:
            c, floor = expected_error_of_real_fit(d, T, config.noise_variance), 0.0
        elif d - 1 > T:
            c, floor = expected_variance_of_min_norm_fit(d, T, config.noise_variance), float(d - T)
        else:
            return []  # the expected error is infinite
        if regime_name == "replace":
            return [Curve("test_error", floor + c * n, "expected")]
        if regime_name == "accumulate":
            return [
                Curve("test_error", floor + c * np.cumsum(1.0 / n**2), "expected"),
                Curve("test_error", np.full(iterations, floor + c * np.pi**2 / 6), "bound"),
            ]
        if regime_name == "replace-grown":
            return [Curve("test_error", floor + c * np.cumsum(1.0 / n), "expected")]
        return []

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
        self.design = np.stack(design)  # (S, T, d)
        self.design_t = np.ascontiguousarray(self.design.transpose(0, 2, 1))  # (S, d, T)
        self.true_weight = np.stack(truth)  # (S, d)
        self.gram = self.design_t @ self.design  # (S, d, d)
        # T > d + 1: the paper's setting, X^T X invertible with a finite expected inverse; else minimum-norm
        # fits (see the module's docstring)
        self.well_posed = d + 1 < T
        if self.well_posed:
            self.gram_inverse = np.linalg.inv(self.gram)
        else:
            pseudo = np.linalg.pinv(self.design)  # (S, d, T), through the SVD of X: not squaring its condition
            self.gram_inverse = pseudo @ pseudo.transpose(0, 2, 1)  # (X^T X)^+ = X^+ X^+^T
        self._real = self._labels(self._predict(self.true_weight) + self.sigma * np.stack(noise))
        self._total = RunningTotal("least-squares statistics", self._statistics, self._combine)

    # -- data -------------------------------------------------------------------------------------
    def _predict(self, weight: np.ndarray) -> np.ndarray:
        return (self.design @ weight[:, :, None])[:, :, 0]  # (S, T)

    def _labels(self, y: np.ndarray) -> DesignLabels:
        return DesignLabels(y, self.config.samples)

    def _relabel(self, weight: np.ndarray, size: int, rng: np.random.Generator) -> Samples:
        mean = self._predict(weight)
        T = self.config.samples
        if size != T:
            mean = np.take(mean, np.arange(size) % T, axis=1)
        return self._labels(mean + self.sigma * rng.standard_normal((self.seed_count, size)))

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
        if isinstance(part, DesignLabels):
            copies, tail = divmod(y.shape[1], T)
            summed = (
                y[:, : copies * T].reshape(self.seed_count, copies, T).sum(axis=1)
                if copies
                else np.zeros((self.seed_count, T))
            )
            summed[:, :tail] += y[:, copies * T :]
            xty = (self.design_t @ summed[:, :, None])[:, :, 0]
            extra = self.design_t[:, :, :tail] @ self.design[:, :tail] if tail else None
            return float(copies), extra, xty
        rows = self.design[np.arange(self.seed_count)[:, None], part["row"]]  # (S, k, d)
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
        if self.well_posed:
            try:
                return np.linalg.solve(gram, xty[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                pass  # a subset that repeats design rows can be rank deficient: minimum-norm least squares
        # Rank deficient (T <= d + 1, or a subset of fewer than d distinct rows): X^T X's zero eigenvalues come
        # out at rounding level (~1e-16 of the largest), far below any it has of full rank at these sizes.
        return (np.linalg.pinv(gram, rcond=1e-12, hermitian=True) @ xty[:, :, None])[:, :, 0]

    def evaluate(self, model: np.ndarray) -> dict[str, np.ndarray]:
        return {"test_error": np.sum((model - self.true_weight) ** 2, axis=1)}

    def score(self, name: str, model: np.ndarray, samples: Samples) -> np.ndarray:
        """The log-likelihood of each label on its design row: ``likelihood`` under the fit that drew it
        (y ~ N(x w_hat, sigma^2)), ``oracle`` under the truth (y ~ N(x w*, sigma^2))."""
        weight = model if name == "likelihood" else self.true_weight
        rows = self.design[np.arange(self.seed_count)[:, None], samples["row"]]  # (S, n, d)
        residual = samples["y"] - (rows @ weight[:, :, None])[:, :, 0]
        return -0.5 * ((residual / self.sigma) ** 2 + np.log(2 * np.pi * self.sigma**2))

    # -- storage ----------------------------------------------------------------------------------
    def save_model(self, model: np.ndarray, directory: Path) -> None:
        save_arrays(directory / "model.npz", {"weight": model})

    def load_model(self, directory: Path) -> np.ndarray:
        weight = load_arrays(directory / "model.npz", ["weight"])["weight"]
        return check_shape(directory / "model.npz", weight, (self.seed_count, self.config.dim))
