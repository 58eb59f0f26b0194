"""Multivariate Gaussian fitting (Kazdan et al., "Collapse or Thrive?", §(a)).

Real data: T samples from N(0, sigma^2 I_d) per seed. A model is the maximum-likelihood fit: the sample
mean and the *biased* sample covariance. Sampling draws from N(mu_hat, Sigma_hat).

Under replace the covariance collapses: its eigenvalues shrink at different rates, so after a hundred
iterations its condition number can reach 1e15 while it is still of full rank. A covariance formed as a
matrix (X^T X) cannot resolve that (its smallest eigenvalues drown in rounding of the largest), so the
fit never forms one: each part of a training set is summarised by (count, mean, R), the triangular
factor of a QR decomposition of its centred rows (R^T R = the scatter), parts are merged by one QR of
their stacked factors (a square-root form of Chan et al.'s pairwise update), and the model keeps the
square root ``root`` = R / sqrt(n) of its covariance (Sigma_hat = root^T root). Sampling, the
determinant, the NLL and the rank test all work on ``root``, which keeps twice the digits.

A fit on n <= d points (or on samples of such a fit) is singular: the rank test on ``root``'s singular
values (``singular``) reports it, with ``log_det_ratio`` = -inf and an infinite NLL.

Synthetic batches (``GaussianDraws``) are drawn as their sufficient statistics when a fit asks for those
first (replace, accumulate: O(d^2) numbers per seed instead of n d, and no rows held in the pool), and as
rows when a regime selects rows first; either way a batch's rows and statistics agree, and both follow
the law of n independent draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt

from ..arrayio import load_arrays, save_arrays
from ..randomness import seed_rng
from .arrays import RunningTotal, Samples, check_shape
from .base import Capabilities, Curve, Footprint, Metric, Setting, SettingConfig


class GaussianConfig(SettingConfig):
    name: Literal["gaussian"] = "gaussian"
    dim: PositiveInt = Field(1, title="d", description="d, the dimension")
    samples: PositiveInt = Field(100, title="T", description="T, real samples per seed")
    variance: PositiveFloat = Field(1.0, title="σ²", description="sigma^2: the real data are N(0, sigma^2 I_d)")


class GaussianModel:
    """N(mean, root^T root) per seed: ``mean`` (B, d), ``root`` (B, d, d) upper triangular."""

    def __init__(self, mean: np.ndarray, root: np.ndarray):
        self.mean = mean
        self.root = root

    @classmethod
    def from_covariance(cls, mean: np.ndarray, covariance: np.ndarray) -> GaussianModel:
        """A model of given positive-definite covariances (through their Cholesky factors)."""
        return cls(mean, np.linalg.cholesky(covariance).transpose(0, 2, 1))

    @property
    def covariance(self) -> np.ndarray:
        return self.root.transpose(0, 2, 1) @ self.root


def _triangle(stacked: np.ndarray) -> np.ndarray:
    """The (B, d, d) factor R of a QR decomposition of (B, m, d) rows, zero-padded when m < d."""
    r: np.ndarray = np.linalg.qr(stacked, mode="r")  # type: ignore[assignment]  # (mode "r": R alone)
    d = stacked.shape[2]
    if r.shape[1] < d:
        r = np.concatenate([r, np.zeros((r.shape[0], d - r.shape[1], d))], axis=1)
    return r


def _summary(part: Samples) -> tuple[int, np.ndarray, np.ndarray]:
    if isinstance(part, GaussianDraws):
        return part.summary()
    x = part["x"]
    mean = x.mean(axis=1)
    return x.shape[1], mean, _triangle(x - mean[:, None, :])


def _merge(a, b):
    (n_a, mean_a, r_a), (n_b, mean_b, r_b) = a, b
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    between = np.sqrt(n_a * n_b / n) * delta[:, None, :]  # the scatter's rank-one term, as a row
    return n, mean, _triangle(np.concatenate([r_a, r_b, between], axis=1))


class GaussianDraws(Samples):
    """``size`` draws per seed from ``model``, made only as far as they are looked at.

    ``summary()`` asked first draws the statistics a fit needs directly, by the laws of n independent
    rows Z root + mean (Z standard normal): the sample mean is mean + zbar root with zbar ~ N(0, I/n),
    and the centred rows are Q R_z root, where R_z, the triangular factor of the centred Z, follows
    Bartlett's decomposition (diagonal sqrt(chi^2_{n-1-i}), standard normals above it; n - 1 rows when
    n - 1 < d) and Q, its orthonormal factor, is uniform (Haar) on the n x k frames orthogonal to the
    ones vector and independent of R_z and zbar. The scatter's square root is then R_z root, upper
    triangular as a product of upper triangular factors. Rows asked for afterwards are mean + Q R with a
    fresh Haar Q, so they have exactly these statistics. Rows asked for first are drawn as rows.
    All of it comes from ``rng``, which this batch owns, so the same requests give the same numbers.
    """

    def __init__(self, model: GaussianModel, size: int, rng: np.random.Generator):
        self._model, self._size, self._rng = model, size, rng
        self._fields: dict[str, np.ndarray] | None = None
        self._summary: tuple[int, np.ndarray, np.ndarray] | None = None
        self.cache = {}

    @property
    def fields(self) -> dict[str, np.ndarray]:
        if self._fields is None:
            self._fields = {"x": self._rows_from_summary() if self._summary is not None else self._rows()}
        return self._fields

    @fields.setter
    def fields(self, fields: dict[str, np.ndarray]) -> None:
        self._fields = fields

    @property
    def seed_count(self) -> int:
        return self._model.mean.shape[0]

    def __len__(self) -> int:
        return self._size

    def _rows(self) -> np.ndarray:
        model = self._model
        z = self._rng.standard_normal((self.seed_count, self._size, model.mean.shape[1]))
        return model.mean[:, None, :] + z @ model.root  # rows z^T root have covariance root^T root

    def _rows_from_summary(self) -> np.ndarray:
        assert self._summary is not None
        n, mean, r = self._summary
        k = min(n - 1, mean.shape[1])
        g = self._rng.standard_normal((self.seed_count, n, k))
        q, t = np.linalg.qr(g - g.mean(axis=1, keepdims=True))  # an orthonormal frame orthogonal to ones
        q *= np.sign(np.diagonal(t, axis1=1, axis2=2))[:, None, :]  # signs fixed: Haar, not QR's convention
        return mean[:, None, :] + q @ r[:, :k, :]

    def summary(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(count, mean, R) with R^T R the scatter of the centred rows, as ``_summary`` of the rows."""
        if self._summary is None:
            self._summary = _summary(Samples(x=self._fields["x"])) if self._fields is not None else self._drawn()
        return self._summary

    def _drawn(self) -> tuple[int, np.ndarray, np.ndarray]:
        model, n, rng, seeds = self._model, self._size, self._rng, self.seed_count
        d = model.mean.shape[1]
        k = min(n - 1, d)
        mean = model.mean + ((rng.standard_normal((seeds, 1, d)) / np.sqrt(n)) @ model.root)[:, 0]
        bartlett = np.zeros((seeds, d, d))
        upper = np.triu_indices(d, 1)
        above = upper[0] < k
        bartlett[:, upper[0][above], upper[1][above]] = rng.standard_normal((seeds, int(above.sum())))
        diagonal = np.arange(k)
        bartlett[:, diagonal, diagonal] = np.sqrt(rng.chisquare(n - 1 - diagonal, size=(seeds, k)))
        return n, mean, bartlett @ model.root


def singular(mean: np.ndarray, root: np.ndarray, inverse: np.ndarray | None = None) -> np.ndarray:
    """Per seed, whether N(mean, root^T root) is singular as far as float64 can tell: a singular value
    of ``root`` (a standard deviation along some direction) at or below d x machine epsilon x (the
    largest one + |mean|), numpy's ``matrix_rank`` tolerance widened by the mean's norm: samples are
    mean + offset, so their rounding is relative to the mean, which a collapsed fit leaves far from 0.

    ``inverse`` (root^-T, where known) spares the SVD of the seeds it shows to be far from singular: the
    smallest singular value is at least 1 / ||root^-1||_F and the largest at most ||root||_F, so a seed
    whose bound clears the tolerance a thousandfold is decided as the SVD would decide it."""
    tolerance = root.shape[-1] * np.finfo(root.dtype).eps
    mean_norm = np.linalg.norm(mean, axis=1)
    uncertain = np.ones(len(root), dtype=bool)
    if inverse is not None:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            lowest = 1.0 / np.sqrt(np.sum(inverse**2, axis=(1, 2)))
            largest = np.sqrt(np.sum(root**2, axis=(1, 2)))
            uncertain = ~(lowest > 1000 * (largest + mean_norm) * tolerance)
    result = np.zeros(len(root), dtype=bool)
    if uncertain.any():
        values = np.linalg.svd(root[uncertain], compute_uv=False)
        result[uncertain] = values[:, -1] <= (values[:, 0] + mean_norm[uncertain]) * tolerance
    return result


def log_density(x: np.ndarray, mean: np.ndarray, root: np.ndarray) -> np.ndarray:
    """log N(x; mean, root^T root) of rows x (seeds, n, d): (seeds, n). A singular fit's density is taken on
    its support (through the pseudo-inverse and pseudo-determinant of ``root``), so that its samples still
    rank by their distance from the mean."""
    _, values, right = np.linalg.svd(
        root
    )  # root = U diag(values) V^T, so x - mean = z root gives |z| = |(x - mean) V / values|
    support = values > values[:, :1] * root.shape[-1] * np.finfo(root.dtype).eps
    with np.errstate(divide="ignore"):
        inverse = np.where(support, 1 / values, 0.0)
    standardised = ((x - mean[:, None, :]) @ right.transpose(0, 2, 1)) * inverse[:, None, :]
    log_pseudo_det = 2 * np.log(np.where(support, values, 1.0)).sum(axis=1)
    constant = support.sum(axis=1) * np.log(2 * np.pi) + log_pseudo_det
    return -0.5 * (np.sum(standardised**2, axis=-1) + constant[:, None])


def _solve_each(transposed_roots: np.ndarray, errors: np.ndarray, d: int) -> np.ndarray | None:
    """root^-T [I | e] per seed, or None when some root is exactly singular (LAPACK refuses the batch)."""
    rhs = np.concatenate([np.broadcast_to(np.eye(d), (len(errors), d, d)), errors[:, :, None]], axis=2)
    try:
        return np.linalg.solve(transposed_roots, rhs)
    except np.linalg.LinAlgError:
        return None


def expected_log_det_step(dim: int, samples: int) -> float:
    """E log det(Sigma_hat / Sigma) for one MLE fit on T samples: the covariance of T samples is
    Sigma^(1/2) (W / T) Sigma^(1/2) with W ~ Wishart_d(T - 1, I), and
    E log det W = sum_{i=1..d} psi((T - i) / 2) + d log 2."""
    from scipy.special import digamma  # (for the closed forms alone: scipy.special takes 0.3 s to import)

    i = np.arange(1, dim + 1)
    return float(np.sum(digamma((samples - i) / 2)) + dim * np.log(2) - dim * np.log(samples))


def central_variance_factor(dim: int, samples: int, candidates: int) -> float:
    """E[v]: the factor by which keeping the T likeliest of m T draws of N(0, I_d) shrinks their second
    moment, against T plain draws.

    The likeliest are those of smallest |z|^2. Given the (T+1)-th smallest value r^2, the T kept are
    independent draws of N(0, I_d) restricted to |z|^2 < r^2, whose covariance is v(r) I with
    v(r) = P(chi2_{d+2} < r^2) / P(chi2_d < r^2) (as x f_d(x) = d f_{d+2}(x)); and u = P(chi2_d < r^2), the
    CDF at an order statistic, follows Beta(T + 1, m T - T). Since Beta(T + 1, N - T)'s density over u is
    N / T times Beta(T, N - T)'s, E[v] = (N / T) E[P(chi2_{d+2} < F_d^-1(u))] with u ~ Beta(T, N - T),
    which Gauss-Legendre quadrature over u's quantiles computes to about 1e-10."""
    if candidates == 1:
        return 1.0
    from scipy import stats

    total = candidates * samples
    nodes, weights = np.polynomial.legendre.leggauss(400)
    quantiles = stats.beta.ppf((nodes + 1) / 2, samples, total - samples)
    inner = stats.chi2.cdf(stats.chi2.ppf(quantiles, dim), dim + 2)
    return float(total / samples * np.sum(weights * inner) / 2)


class Gaussian(Setting[GaussianConfig, Samples]):
    name = "gaussian"
    Config = GaussianConfig
    metrics = {
        "mean_sq_error": Metric("||mu_hat - mu_0||^2", log_scale=True),
        "trace_ratio": Metric("tr(Sigma_hat) / tr(Sigma_0)"),
        "det_ratio": Metric("det(Sigma_hat) / det(Sigma_0)", log_scale=True),
        "log_det_ratio": Metric("log det(Sigma_hat) - log det(Sigma_0)"),
        "test_nll": Metric("test NLL on real data (nats)"),
    }
    capabilities = Capabilities(
        cheap=True, fresh_real=True, theory=True, theory_of_curation=True, scores=("likelihood", "oracle")
    )

    @classmethod
    def footprint(cls, config: GaussianConfig) -> Footprint:
        d = config.dim
        # samples, the normal draws and centred copies behind them; covariance, scatter, eigenvectors, solves
        return Footprint(rows=config.samples, bytes_per_row=24 * d, fixed_bytes=8 * 6 * d * d)

    @classmethod
    def theory(cls, config: GaussianConfig, regime_name: str, iterations: int) -> list[Curve]:
        """Without curation (or with one candidate per sample), under replace, with T samples of
        N(mu_0, Sigma_0) per fit (MLE mean, biased covariance): E tr(Sigma_t)/tr(Sigma_0) = ((T-1)/T)^t,
        E det(Sigma_t)/det(Sigma_0) = (prod_{i<=d} (T-i)/T)^t,
        E log(det(Sigma_t)/det(Sigma_0)) = t (sum_{i<=d} psi((T-i)/2) + d log 2 - d log T) (each fit
        multiplies the determinant by an independent det(W/T), see ``expected_log_det_step``) and
        E ||mu_t - mu_0||^2 = tr(Sigma_0) (1 - ((T-1)/T)^t); under accumulate
        E ||mu_t - mu_0||^2 <= (pi^2/6) tr(Sigma_0) / T (Kazdan et al. 2024, Collapse or Thrive?).

        Under replace with curation that keeps the likeliest T of m T samples (``score: likelihood``,
        ``keep: top``, no noise), see ``_curated_theory``."""
        curation = config.curation
        if curation is not None and curation.candidates > 1:
            return cls._curated_theory(config, regime_name, iterations)
        n = np.arange(1, iterations + 1, dtype=float)
        T, d, trace0 = config.samples, config.dim, config.dim * config.variance
        shrink = (T - 1) / T
        if regime_name == "replace":
            result = [
                Curve("trace_ratio", shrink**n, "expected"),
                Curve("mean_sq_error", trace0 * (1 - shrink**n), "expected"),
            ]
            if d < T:
                result.append(Curve("det_ratio", np.prod((T - np.arange(1, d + 1)) / T) ** n, "expected"))
                result.append(Curve("log_det_ratio", expected_log_det_step(d, T) * n, "expected"))
            return result
        if regime_name == "accumulate":
            return [Curve("mean_sq_error", np.full(iterations, np.pi**2 / 6 * trace0 / T), "bound")]
        return []

    @classmethod
    def _curated_theory(cls, config: GaussianConfig, regime_name: str, iterations: int) -> list[Curve]:
        """Replace, keeping the T likeliest of m T draws: each kept batch is mean + z root with z the T
        smallest of m T standard normals (``central_variance_factor``: E[z z^T] = v I), so each synthetic
        fit multiplies the covariance by the independent S_z, E S_z = (1 - 1/T) E[v] I, and moves the mean
        by zbar root, E[zbar zbar^T] = E[v] / T I. Hence E tr(Sigma_n) / tr(Sigma_0) = s (s E[v])^(n-1)
        with s = (T-1)/T, and E ||mu_n - mu_0||^2 = tr(Sigma_0) / T + (E[v] / T) sum_{k<n} E tr(Sigma_k)."""
        curation = config.curation
        assert curation is not None
        if regime_name != "replace" or (curation.scored_by, curation.keep, curation.noise) != ("likelihood", "top", 0):
            return []
        T, d, trace0 = config.samples, config.dim, config.dim * config.variance
        shrink, factor = (T - 1) / T, central_variance_factor(d, T, curation.candidates)
        trace = shrink * (shrink * factor) ** np.arange(iterations, dtype=float)
        mean_sq_error = trace0 / T + trace0 * factor / T * np.concatenate([[0.0], np.cumsum(trace[:-1])])
        return [Curve("trace_ratio", trace, "expected"), Curve("mean_sq_error", mean_sq_error, "expected")]

    def __init__(self, config: GaussianConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        d = config.dim
        self.true_mean = np.zeros(d)
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
        n, mean, r = self._total(parts)
        return GaussianModel(mean, r / np.sqrt(n))

    def sample(self, model: GaussianModel, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        return GaussianDraws(model, size, rng)

    def evaluate(self, model: GaussianModel) -> dict[str, np.ndarray]:
        d, variance = self.config.dim, self.config.variance
        error = model.mean - self.true_mean
        root = model.root
        # root^-T [I | e] for every seed at once: tr(Sigma_hat^-1 Sigma_0) = variance ||root^-T||_F^2 and
        # e^T Sigma_hat^-1 e = ||root^-T e||^2; None where some root is exactly singular (LAPACK refuses)
        solved = _solve_each(root.transpose(0, 2, 1), error, d)
        collapsed = singular(model.mean, root, solved[:, :, :d] if solved is not None else None)
        with np.errstate(divide="ignore"):
            log_det = 2 * np.log(np.abs(np.diagonal(root, axis1=1, axis2=2))).sum(axis=1)
        log_det_ratio = np.where(collapsed, -np.inf, log_det - d * np.log(variance))
        nll = np.full(self.seed_count, np.inf)
        full = ~collapsed
        if full.any():
            # Exact expected negative log-likelihood of a fresh real sample, through root^-T.
            if solved is None:
                solved = _solve_each(root[full].transpose(0, 2, 1), error[full], d)
                assert solved is not None  # the roots singular() passed are invertible
            else:
                solved = solved[full]
            trace_term = variance * np.sum(solved[:, :, :d] ** 2, axis=(1, 2))
            mahalanobis = np.sum(solved[:, :, d] ** 2, axis=1)
            nll[full] = 0.5 * (d * np.log(2 * np.pi) + log_det[full] + trace_term + mahalanobis)
        return {
            "mean_sq_error": np.sum(error**2, axis=1),
            "trace_ratio": np.sum(root**2, axis=(1, 2)) / (d * variance),
            "det_ratio": np.exp(log_det_ratio),
            "log_det_ratio": log_det_ratio,
            "test_nll": nll,
        }

    def score(self, name: str, model: GaussianModel, samples: Samples) -> np.ndarray:
        """``likelihood``: log density under the fit that drew the samples; ``oracle``: under N(0, sigma^2 I)."""
        x = samples["x"]
        if name == "likelihood":
            return log_density(x, model.mean, model.root)
        d, variance = self.config.dim, self.config.variance
        return -0.5 * (np.sum(x**2, axis=-1) / variance + d * np.log(2 * np.pi * variance))

    def save_model(self, model: GaussianModel, directory: Path) -> None:
        save_arrays(directory / "model.npz", {"mean": model.mean, "root": model.root})  # Sigma_hat = root^T root

    def load_model(self, directory: Path) -> GaussianModel:
        path = directory / "model.npz"
        arrays = load_arrays(path, ["mean", "root"])
        d = self.config.dim
        return GaussianModel(
            check_shape(path, arrays["mean"], (self.seed_count, d)),
            check_shape(path, arrays["root"], (self.seed_count, d, d)),
        )
