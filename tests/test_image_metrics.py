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


def fid_weights(path):
    """A file in the layout of pytorch-fid's pt_inception weights (torchvision's names, no
    num_batches_tracked), with random values: the real file is not bundled and nothing is downloaded."""
    import torch

    from model_collapse.settings.inception import FIDInception

    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, value in FIDInception().state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        positive = name.endswith(("running_var", "bn.weight"))
        draw = torch.rand if positive else torch.randn
        state[name] = (
            draw(value.shape, generator=generator) + 0.5 if positive else draw(value.shape, generator=generator) * 0.05
        )
    torch.save(state, path)
    return path


def test_inception_features_give_no_distance_between_a_set_and_itself_and_see_a_difference(tmp_path):
    import torch

    from model_collapse.settings.inception import inception_features, load_inception

    network = load_inception(fid_weights(tmp_path / "pt_inception.pth"), torch.device("cpu"))
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(6, 1, 16, 16), dtype=np.uint8)
    features = inception_features(network, grey, torch.device("cpu"))
    assert features.shape == (6, 2048) and features.dtype == np.float64
    # a grey image is the colour image of three equal channels
    colour = inception_features(network, np.repeat(grey, 3, axis=1), torch.device("cpu"))
    np.testing.assert_array_equal(features, colour)
    same = gaussian_statistics(features)
    scale = np.trace(same[1])  # 6 points in 2,048 dimensions: a singular covariance, square-rooted to rounding
    assert abs(frechet_distance(same, same)) < 1e-5 * scale
    other = inception_features(network, 255 - grey, torch.device("cpu"))
    assert frechet_distance(same, gaussian_statistics(other)) > 1e-3 * scale


def test_a_file_that_is_not_the_fid_inception_weights_is_refused_in_one_line(tmp_path):
    import torch

    from model_collapse.errors import ConfigError
    from model_collapse.settings.inception import load_inception

    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="inception_weights: .*nothing.pth does not exist"):
        load_inception(tmp_path / "nothing.pth", cpu)
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ConfigError, match="text.pth is not a PyTorch weight file"):
        load_inception(tmp_path / "text.pth", cpu)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="other.pth does not hold the FID Inception weights .*: missing Conv2d_1a"):
        load_inception(tmp_path / "other.pth", cpu)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled object: never unpickled
    with pytest.raises(ConfigError, match="module.pth is not a PyTorch weight file"):
        load_inception(tmp_path / "module.pth", cpu)


@pytest.mark.slow
def test_the_vae_measures_inception_fid_only_when_it_is_given_the_weights(tmp_path):
    from helpers import tiny_vae
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime
    from model_collapse.settings.vae import VAE, VAEConfig

    plain = VAEConfig(**tiny_vae(test_samples=12, evaluation_samples=12))
    assert "inception_fid" not in VAE.metrics_of(plain)
    measured = plain.model_copy(update={"inception_weights": str(fid_weights(tmp_path / "pt_inception.pth"))})
    assert "inception_fid" in VAE.metrics_of(measured)
    records = run_chain(VAE(measured, (0,)), parse_regime("replace"), 1)
    assert np.isfinite(records[0].metrics["inception_fid"]).all() and records[0].metrics["inception_fid"][0] > 0
    # everything else is measured as without it
    again = run_chain(VAE(plain, (0,)), parse_regime("replace"), 1)
    for record, other in zip(records, again):
        assert set(record.metrics) - set(other.metrics) == {"inception_fid"}
        for name, values in other.metrics.items():
            np.testing.assert_array_equal(record.metrics[name], values, err_msg=name)
