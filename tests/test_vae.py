"""The VAE setting: the model, its loss, its metrics on known inputs, data loading, and resume."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import tiny_vae
from model_collapse.chain import run_chain
from model_collapse.config import build_experiment
from model_collapse.errors import ConfigError, ModelCollapseError, RunDirectoryError
from model_collapse.regimes import parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings.images import load_images
from model_collapse.settings.vae import VAE, ConvVAE, VAEConfig, negative_elbo

TINY = tiny_vae(samples=64, test_samples=100, evaluation_samples=200, model={"widths": [8], "latent_dim": 2})


def tiny(**fields) -> VAEConfig:
    return VAEConfig.model_validate({**TINY, **fields})


@pytest.mark.parametrize("channels,size,widths", [(1, 28, (32, 64)), (3, 64, (32, 64, 128, 256)), (1, 16, (8,))])
def test_conv_vae_shapes(channels, size, widths):
    model = ConvVAE(channels, size, widths, latent_dim=5)
    x = torch.rand(3, channels, size, size)
    mean, log_variance = model.encode(x)
    assert mean.shape == log_variance.shape == (3, 5)
    assert model.decode(mean).shape == (3, channels, size, size)


def zeroed(model, latent_bias=None):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        if latent_bias is not None:
            model.to_latent.bias.copy_(torch.tensor(latent_bias, dtype=torch.float32))
    return model


def test_negative_elbo_on_known_inputs():
    model = zeroed(ConvVAE(1, 8, (4,), latent_dim=2), latent_bias=[1.0, -1.0, 0.0, np.log(4.0)])
    x = torch.rand(5, 1, 8, 8)
    noise = torch.randn(5, 2)
    reconstruction, kl = negative_elbo(model, x, noise, "bernoulli", 0.1)
    # decoder logits are 0: every pixel costs log 2, whatever its value
    torch.testing.assert_close(reconstruction, torch.full((5,), 64 * np.log(2.0)))
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - log s^2): dims (1, 1) and (-1, 4)
    expected_kl = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (1 + 4 - 1 - np.log(4.0))
    torch.testing.assert_close(kl, torch.full((5,), expected_kl, dtype=torch.float32))

    reconstruction, _ = negative_elbo(model, x, noise, "gaussian", 0.2)
    expected = (0.5 * ((x - 0.5) / 0.2) ** 2 + 0.5 * np.log(2 * np.pi * 0.04)).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction, expected)


def test_sampling_shapes_and_types():
    setting = VAE(tiny(), [0])
    model = setting.fit([setting.real_train], np.random.default_rng(0))
    data = setting.sample(model, 10, np.random.default_rng(1))
    assert data["x"].shape == (1, 10, 1, 8, 8) and data["x"].dtype == np.uint8
    assert setting.preview(data).shape == (10, 8, 8, 1)
    assert setting.real_train["x"].shape == (1, 64, 1, 8, 8)


def test_diversity_metrics_on_known_models():
    setting = VAE(tiny(), [0])
    # the judges see ten balanced classes in real data
    test = setting.test.reshape(len(setting.test), -1) / 255
    counts = np.bincount(setting.classifier.predict(test), minlength=10)
    p = counts / counts.sum()
    assert -(p * np.log(p)).sum() > 2.1  # log 10 = 2.30
    # a model whose every sample is the same image: one class, no spread
    collapsed = zeroed(setting.new_model())
    metrics = setting.evaluate(collapsed)
    assert metrics["class_entropy"][0] == 0.0
    assert metrics["sample_spread"][0] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(metrics["test_kl"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["test_reconstruction"], 64 * np.log(2.0), rtol=1e-5)


def test_training_lowers_the_test_loss_and_evaluation_is_repeatable():
    config = tiny(
        samples=None,
        image_size=16,
        model={"widths": [16, 32], "latent_dim": 8},
        training={"epochs": 5, "learning_rate": 2e-3},
    )
    setting = VAE(config, [0])
    untrained = setting.evaluate(setting.new_model())["test_loss"][0]
    model = setting.fit([setting.real_train], np.random.default_rng(0))
    trained = setting.evaluate(model)
    assert trained["test_loss"][0] < 0.7 * untrained
    # a model trained on real digits draws most classes, spread out like real data
    assert trained["class_entropy"][0] > 1.6
    assert trained["sample_spread"][0] > 0.3
    assert setting.evaluate(model)["test_loss"][0] == trained["test_loss"][0]


def test_checkpoints_round_trip_and_foreign_files_are_refused(tmp_path):
    setting = VAE(tiny(), [0])
    model = setting.fit([setting.real_train], np.random.default_rng(0))
    setting.save_model(model, tmp_path)
    assert setting.evaluate(setting.load_model(tmp_path)) == setting.evaluate(model)
    other = VAE(tiny(model={"widths": [8], "latent_dim": 3}), [0])
    with pytest.raises(RunDirectoryError, match="not a checkpoint of this model"):
        other.load_model(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(RunDirectoryError):
        setting.load_model(tmp_path)


def test_a_committed_iteration_keeps_a_preview_of_its_model(tmp_path):
    # (resuming every regime to the same numbers, fresh real images unseen: test_conformance.py)
    run_chain(VAE(tiny(), [0]), parse_regime("replace"), 2, ChainStore(tmp_path, {}))
    assert ChainStore(tmp_path, {}).preview(2).shape[0] == VAE.presentation.preview_size


def test_fresh_real_images_are_refused_past_the_data_set():
    with pytest.raises(ModelCollapseError, match="lower setting.samples"):
        VAE(tiny(), [0]).fresh_real(10**6, np.random.default_rng(0))


def test_images_from_a_folder(tmp_path):
    train, test = load_images("digits", 8, 100, None, False, 1)
    for i, image in enumerate(np.concatenate([train.images, test.images])[:40]):
        Image.fromarray(image[0]).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    folder_train, folder_test = load_images("folder", 8, 10, str(tmp_path), False, 1)
    assert folder_train.images.shape == (30, 1, 8, 8) and folder_test.images.shape == (10, 1, 8, 8)
    originals = {image.tobytes() for image in train.images[:40]}
    assert {image.tobytes() for image in folder_train.images} <= originals
    rgb_train, _ = load_images("folder", 16, 10, str(tmp_path), False, 3)
    assert rgb_train.images.shape == (30, 3, 16, 16)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"image_size": 12, "model": {"widths": [8, 16, 32]}}, "divisible by 2^len(model.widths)"),
        ({"dataset": "folder"}, "channels must be given"),
        ({"dataset": "celeba", "channels": 1}, "3 channel"),
        ({"model": {"widths": []}}, "setting.model.widths"),
        (
            {"latent_dim": 4, "epochs": 2},
            "setting.latent_dim: moved to setting.model.latent_dim; setting.epochs: moved",
        ),
    ],
)
def test_bad_vae_configs(changes, message):
    raw = {"setting": {"name": "vae", **changes}, "regimes": ["replace"], "iterations": 2, "seeds": 1}
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_experiment(raw)


def test_data_sets_that_need_a_directory_say_so():
    with pytest.raises(ConfigError, match="needs a data directory"):
        VAE(VAEConfig(dataset="mnist"), [0])
    with pytest.raises(ModelCollapseError, match="setting.samples"):
        VAE(VAEConfig(samples=100000), [0])


def test_a_vae_sweep_runs_one_chain_per_seed_and_sweeps_widths_like_any_field():
    raw = {
        "setting": {"name": "vae", "model": {"widths": [8, 16]}},
        "sweep": {"model.latent_dim": [2, 4]},
        "regimes": ["replace"],
        "iterations": 2,
        "seeds": 3,
    }
    experiment = build_experiment(raw)
    assert experiment.varying == ("model.latent_dim",)
    chains = experiment.chains()
    assert len(chains) == 2 * 3 and {c.seeds for c in chains} == {(0,), (1,), (2,)}
    assert all(c.point.model.widths == (8, 16) for c in chains)
    assert chains[0].point_name == "model.latent_dim-2"
    # a list-valued field is swept over lists, written in the sweep (nested or dotted alike)
    widths = build_experiment({**raw, "sweep": {"model": {"widths": [[8], [8, 16]]}}})
    assert [p.model.widths for p in widths.points] == [(8,), (8, 16)]
    assert widths.resolved()["sweep"] == {"model.widths": [[8], [8, 16]]}
    assert build_experiment(widths.resolved()).points == widths.points


def test_a_run_keeps_the_judge_it_trained_and_every_chain_measures_with_it(tmp_path):
    from sklearn.neural_network import MLPClassifier

    from model_collapse.settings.vae import JUDGE_IMAGES

    config = VAEConfig(**tiny_vae())
    first = VAE(config, [0])
    first.shared = tmp_path / "shared"
    judge = first.judge
    (saved,) = (tmp_path / "shared").iterdir()
    assert saved.name.startswith("vae-judge-digits-") and saved.suffix == ".npz"
    # the saved judge is scikit-learn's classifier: the same features and confidence
    train = first._real_images.train
    flat = train.images[:JUDGE_IMAGES].reshape(-1, 64) / 255
    classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier.fit(flat, train.labels[:JUDGE_IMAGES])
    probe = first.test.reshape(len(first.test), -1) / 255
    np.testing.assert_allclose(judge.confidence(probe), classifier.predict_proba(probe).max(axis=1), rtol=1e-12)
    # another chain of the run reads it rather than training its own
    second = VAE(config, [1])
    second.shared = tmp_path / "shared"
    other_weights = [w * 2 for w in judge.weights]
    np.savez(saved, **dict(zip(("hidden_weight", "hidden_bias", "output_weight", "output_bias"), other_weights)))
    np.testing.assert_array_equal(second.judge.weights[0], other_weights[0])
    # a damaged judge is named in one line
    saved.write_bytes(b"damaged")
    third = VAE(config, [2])
    third.shared = tmp_path / "shared"
    with pytest.raises(RunDirectoryError, match=f"corrupted file {re.escape(str(saved))}"):
        third.judge  # noqa: B018
