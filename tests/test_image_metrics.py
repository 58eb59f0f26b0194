"""The image papers' metrics (``settings/image_metrics.py``) against direct computations on small arrays,
and the VAE's judge, metrics and curation score."""

import numpy as np
import pytest
from scipy import linalg

from model_collapse.settings.image_metrics import (
    frechet_distance,
    gaussian_statistics,
    precision_recall_density_coverage,
)


def direct_prdc(real, fake, k=5):
    """The definitions, one sample at a time (Naeem et al. 2020)."""

    def radius(points, i):
        others = sorted(np.linalg.norm(points[j] - points[i]) for j in range(len(points)) if j != i)
        return others[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, j) for j in range(len(fake))]
    d = lambda a, b: np.linalg.norm(a - b)  # noqa: E731
    precision = np.mean([any(d(f, r) <= real_r[i] for i, r in enumerate(real)) for f in fake])
    recall = np.mean([any(d(r, f) <= fake_r[j] for j, f in enumerate(fake)) for r in real])
    density = sum(d(f, r) <= real_r[i] for f in fake for i, r in enumerate(real)) / (k * len(fake))
    coverage = np.mean([min(d(r, f) for f in fake) <= real_r[i] for i, r in enumerate(real)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_prdc_matches_the_definitions_one_sample_at_a_time():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((40, 3)), 0.5 + 1.5 * rng.standard_normal((30, 3))
    got = precision_recall_density_coverage(real, fake)
    expected = direct_prdc(real, fake)
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0 < got["precision"] < 1 and 0 < got["density"] < 1


def test_identical_sets_have_precision_recall_and_coverage_one_and_no_frechet_distance():
    features = np.random.default_rng(1).standard_normal((50, 4))
    metrics = precision_recall_density_coverage(features, features.copy())
    assert metrics["precision"] == metrics["recall"] == metrics["coverage"] == 1.0
    statistics = gaussian_statistics(features)
    assert abs(frechet_distance(statistics, statistics)) < 1e-9


def test_a_collapsed_sample_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((200, 2))
    collapsed = 0.05 * rng.standard_normal((200, 2))  # all at the centre of the real data
    metrics = precision_recall_density_coverage(real, collapsed)
    assert metrics["precision"] > 0.9 and metrics["recall"] < 0.1 and metrics["coverage"] < 0.2


def test_frechet_distance_matches_scipys_matrix_square_root():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((100, 5)), rng.standard_normal((80, 5)) @ rng.standard_normal((5, 5)) + 1
    (mean_a, cov_a), (mean_b, cov_b) = gaussian_statistics(a), gaussian_statistics(b)
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance((mean_a, cov_a), (mean_b, cov_b)) == pytest.approx(expected, rel=1e-8)


def test_too_few_samples_for_the_k_nn_balls_are_refused():
    with pytest.raises(ValueError, match="more than k = 5"):
        precision_recall_density_coverage(np.zeros((5, 2)), np.zeros((10, 2)))


@pytest.mark.slow
def test_the_vae_reports_the_image_metrics_and_curates_by_its_judges_confidence():
    from helpers import tiny_vae
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime
    from model_collapse.settings.vae import VAE, VAEConfig

    curated = tiny_vae(
        samples=64, test_samples=100, evaluation_samples=100, curation={"candidates": 4, "score": "confidence"}
    )
    records = run_chain(VAE(VAEConfig(**curated), (0,)), parse_regime("replace"), 2)
    for name in ("frechet_distance", "precision", "recall", "density", "coverage"):
        assert all(np.isfinite(r.metrics[name]).all() for r in records), name
    assert records[1].metrics["kept_score_mean"][0] > records[1].metrics["candidate_score_mean"][0]
    assert 0 < records[1].metrics["kept_score_mean"][0] <= 1


def test_confidence_needs_labelled_images():
    from model_collapse.config import build_experiment
    from model_collapse.errors import ConfigError

    raw = {
        "setting": {"name": "vae", "dataset": "celeba", "data_dir": "/nowhere", "curation": {"score": "confidence"}},
        "regimes": ["replace"],
        "iterations": 2,
        "seeds": 1,
    }
    with pytest.raises(ConfigError, match="confidence needs a labelled data set"):
        build_experiment(raw)
