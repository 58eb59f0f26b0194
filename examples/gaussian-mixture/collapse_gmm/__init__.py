"""Shumailov et al.'s Gaussian-mixture experiment (*AI models collapse when trained on recursively
generated data*, Nature 2024) as a model-collapse setting: a setting a researcher writes in a package of
their own, against the public setting API alone.

Real data: ``make_blobs`` draws of K Gaussians of standard deviation ``cluster_std`` whose centres are
drawn per seed in [-center_box, center_box]^d (scikit-learn's defaults: 10, 1.0). A model is
scikit-learn's ``GaussianMixture`` (full covariances, tol 1e-5, at most 2,000 EM iterations, as in the
paper's notebook) fitted by EM; sampling is its ``sample``. Metrics, on held-out real data and the true
mixture: the mean test log-likelihood, and the closed-form L2 distance between the fitted and the true
mixture densities (the notebook's metric).

The model is kept as a dict of arrays (weights, means, covariances per seed), so the default
``save_model``/``load_model`` keep it; every random number comes from the generator a method is handed
or from ``seed_rng`` with streams this setting names itself ("centres", "test").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import Field, PositiveFloat, PositiveInt
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

from model_collapse.randomness import seed_rng
from model_collapse.settings import Capabilities, Metric, Samples, Setting, SettingConfig, concatenate

__version__ = "0.1.0"

Model = dict[str, np.ndarray]  # weights (seeds, K), means (seeds, K, d), covariances (seeds, K, d, d)


class GaussianMixtureConfig(SettingConfig):
    name: str = "gaussian-mixture"
    components: PositiveInt = Field(2, title="K", description="K, Gaussians in the real mixture and in every fit")
    dim: PositiveInt = Field(2, title="d", description="d, the dimension")
    samples: PositiveInt = Field(1000, title="N", description="N, real training samples per seed")
    test_samples: PositiveInt = Field(1000, description="held-out real samples per seed")
    cluster_std: PositiveFloat = Field(1.0, description="the real Gaussians' standard deviation")
    center_box: PositiveFloat = Field(10.0, description="real centres are uniform in [-center_box, center_box]^d")


def _seed(rng: np.random.Generator) -> int:
    """A seed for scikit-learn, which takes integers, drawn from the generator the chain hands us."""
    return int(rng.integers(2**31 - 1))


class GaussianMixtureSetting(Setting[GaussianMixtureConfig, Samples]):
    name = "gaussian-mixture"
    Config = GaussianMixtureConfig
    metrics = {
        "test_log_likelihood": Metric("mean log-likelihood of held-out real data"),
        "l2_distance": Metric("L2 distance to the real mixture"),
    }
    # EM on a thousand points takes milliseconds (cheap: resume recomputes rather than storing); draws
    # more real data (fresh_real: the fresh-real regime)
    capabilities = Capabilities(cheap=True, fresh_real=True)

    def __init__(self, config: GaussianMixtureConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        c = config
        box = (-c.center_box, c.center_box)
        self.centres = np.stack([seed_rng(s, "centres").uniform(*box, size=(c.components, c.dim)) for s in self.seeds])
        self.truth: Model = {
            "weights": np.full((self.seed_count, c.components), 1 / c.components),
            "means": self.centres,
            "covariances": np.broadcast_to(c.cluster_std**2 * np.eye(c.dim), (*self.centres.shape, c.dim)).copy(),
        }
        self._real = Samples(x=self._draw(c.samples, [seed_rng(s, "real") for s in self.seeds]))
        self.test = self._draw(c.test_samples, [seed_rng(s, "test") for s in self.seeds])

    def _draw(self, size: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        c = self.config
        return np.stack(
            [
                make_blobs(size, c.dim, centers=centres, cluster_std=c.cluster_std, random_state=_seed(rng))[0]
                for centres, rng in zip(self.centres, rngs)
            ]
        )

    @property
    def real_train(self) -> Samples:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Samples:
        return Samples(x=self._draw(size, [rng] * self.seed_count))

    def fit(self, parts: Sequence[Samples], rng: np.random.Generator, scratch: Path | None = None) -> Model:
        x = concatenate(parts)["x"]
        fits = [
            GaussianMixture(
                self.config.components, covariance_type="full", tol=1e-5, max_iter=2000, random_state=_seed(rng)
            ).fit(rows)
            for rows in x
        ]
        return {name: np.stack([getattr(f, f"{name}_") for f in fits]) for name in ("weights", "means", "covariances")}

    def sample(self, model: Model, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Samples:
        return Samples(x=np.stack([_mixture(model, s, _seed(rng)).sample(size)[0] for s in range(self.seed_count)]))

    def evaluate(self, model: Model) -> dict[str, np.ndarray]:
        seeds = range(self.seed_count)
        return {
            "test_log_likelihood": np.array([_mixture(model, s).score(self.test[s]) for s in seeds]),
            "l2_distance": np.array([_l2_distance(model, self.truth, s) for s in seeds]),
        }


def _mixture(model: Model, seed: int, random_state: int | None = None) -> GaussianMixture:
    """scikit-learn's GaussianMixture with the fitted parameters of one seed, to sample or score with."""
    mixture = GaussianMixture(len(model["weights"][seed]), covariance_type="full", random_state=random_state)
    mixture.weights_, mixture.means_, mixture.covariances_ = (
        model[key][seed] for key in ("weights", "means", "covariances")
    )
    # what fit leaves besides: the Cholesky factors of the precisions
    eye = np.eye(mixture.means_.shape[1])
    mixture.precisions_cholesky_ = np.stack(
        [np.linalg.solve(np.linalg.cholesky(cov), eye).T for cov in mixture.covariances_]
    )
    return mixture


def _overlap(a: Model, b: Model, seed: int) -> float:
    """The integral of the product of two mixture densities: sum_ij a_i b_j N(m_i - n_j; 0, S_i + T_j)."""
    terms = [
        np.log(wa) + np.log(wb) + multivariate_normal.logpdf(ma - mb, cov=sa + sb)
        for wa, ma, sa in zip(a["weights"][seed], a["means"][seed], a["covariances"][seed])
        for wb, mb, sb in zip(b["weights"][seed], b["means"][seed], b["covariances"][seed])
    ]
    return float(np.exp(logsumexp(terms)))


def _l2_distance(fitted: Model, truth: Model, seed: int) -> float:
    squared = _overlap(fitted, fitted, seed) + _overlap(truth, truth, seed) - 2 * _overlap(fitted, truth, seed)
    return float(np.sqrt(max(squared, 0.0)))
