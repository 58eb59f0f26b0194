"""Sample-quality metrics of image papers, on feature vectors: the Fréchet distance between Gaussians
fitted to real and generated features (FID when the features are Inception-v3's; here they are a small
classifier's, so the name says so), and precision, recall, density and coverage with k-nearest-neighbour
balls (Kynkäänniemi et al. 2019; Naeem et al. 2020, whose ``prdc`` package defines them this way):

* precision: the share of generated samples inside some real sample's k-NN ball (quality);
* recall: the share of real samples inside some generated sample's k-NN ball (diversity);
* density: the mean number of real balls a generated sample falls in, over k (about 1 for matching
  distributions; above 1 where samples crowd the real data's dense regions);
* coverage: the share of real samples whose ball holds at least one generated sample.

A k-NN ball's radius is the distance to the k-th nearest other sample of the same set.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURS = 5  # the prdc package's default k


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _radii(features: np.ndarray, k: int) -> np.ndarray:
    """Each sample's distance to its k-th nearest other sample of ``features``."""
    distances = _distances(features, features)
    return np.partition(distances, k, axis=1)[:, k]  # (column 0 of a sorted row is the sample itself)


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int = NEIGHBOURS) -> dict[str, float]:
    """The four k-NN metrics of ``fake`` (M, D) features against ``real`` (N, D) ones."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"the k-NN metrics need more than k = {k} real and generated samples")
    real_radii, fake_radii = _radii(real, k), _radii(fake, k)
    between = _distances(real, fake)  # (N, M)
    inside_real = between <= real_radii[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((between <= fake_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float((between.min(axis=1) <= real_radii).mean()),
    }


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and (unbiased) covariance of (N, D) features."""
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two Gaussians (mean, covariance).

    (S_a S_b)^(1/2) has the eigenvalues of S_a^(1/2) S_b S_a^(1/2), a symmetric positive semi-definite
    matrix: its trace is the sum of their square roots, without a non-symmetric matrix square root."""
    (mean_a, cov_a), (mean_b, cov_b) = a, b
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
