"""Closed forms that figures overlay on simulations (paper-notes §2.2 and §7.1(a)).

Linear regression, fixed Gaussian design x ~ N(0, I_d), fresh label noise sigma^2, OLS; with
c = sigma^2 d / (T - d - 1), the expected test error of iteration n is
    replace: c n;   accumulate: c sum_{i<=n} 1/i^2  (<= c pi^2/6);   replace-grown: c H_n.
Gaussian fitting, MLE mean and biased covariance from T samples of N(mu_0, Sigma_0), under replace:
    E tr(Sigma_t)/tr(Sigma_0) = ((T-1)/T)^t,
    E det(Sigma_t)/det(Sigma_0) = (prod_{i=1}^{d} (T-i)/T)^t,
    E ||mu_t - mu_0||^2 = tr(Sigma_0) (1 - ((T-1)/T)^t);
under accumulate E ||mu_t - mu_0||^2 <= (pi^2/6) tr(Sigma_0) / T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import SettingConfig


@dataclass(frozen=True)
class Curve:
    metric: str
    values: np.ndarray  # one value per iteration 1..N
    kind: str  # "expected" (the expectation) or "bound" (an upper bound)


def linear_regression_constant(dim: int, samples: int, noise_variance: float) -> float:
    """c = sigma^2 d / (T - d - 1): the expected test error of OLS on the real data alone."""
    return noise_variance * dim / (samples - dim - 1)


def curves(config: SettingConfig, regime_name: str, iterations: int) -> list[Curve]:
    """The closed forms known for a setting under a regime (empty when there are none)."""
    n = np.arange(1, iterations + 1, dtype=float)
    if config.name == "linear-regression":
        c = linear_regression_constant(config.dim, config.samples, config.noise_variance)
        if regime_name == "replace":
            return [Curve("test_error", c * n, "expected")]
        if regime_name == "accumulate":
            return [
                Curve("test_error", c * np.cumsum(1.0 / n**2), "expected"),
                Curve("test_error", np.full(iterations, c * np.pi**2 / 6), "bound"),
            ]
        if regime_name == "replace-grown":
            return [Curve("test_error", c * np.cumsum(1.0 / n), "expected")]
    if config.name == "gaussian":
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
