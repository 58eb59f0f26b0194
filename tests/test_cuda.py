"""The device-specific code paths, on the CPU and, where PyTorch sees one, on a GPU (the CUDA variants
are what ``benchmarks/gpu_check.sh`` runs on a GPU machine; without one they skip, saying so):
mixed-precision training, the RNG forked around a fit, and a neural chain resumed on the device."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from helpers import tiny_language_model, tiny_vae

torch = pytest.importorskip("torch")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no GPU on this machine")
    ),
]


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "model_collapse", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize("device", DEVICES)
def test_training_in_each_precision_learns_and_bf16_follows_fp32(device, tmp_path):
    """The loop autocasts on a GPU (bf16; fp16 with a gradient scaler); on the CPU it stays in fp32."""
    from model_collapse.settings.language_model.config import TrainingSection
    from model_collapse.settings.language_model.models import build_model
    from model_collapse.settings.language_model.packing import TokenCorpus, pack
    from model_collapse.settings.language_model.training import train

    rng = np.random.default_rng(0)
    corpus = TokenCorpus.from_documents([list(rng.integers(2, 40, size=rng.integers(5, 30))) for _ in range(200)])
    blocks, validation = pack(corpus, 32, 0, 1), pack(corpus, 32, 0, 1).limited(8)
    curves = {}
    for precision in ("fp32", "bf16", "fp16") if device == "cuda" else ("fp32", "auto"):
        torch.manual_seed(0)
        model = build_model("llama-tiny", vocab_size=40, special_token_id=1)
        options = TrainingSection(batch_size=8, learning_rate=3e-3, evaluations_per_epoch=2, precision=precision)
        curves[precision] = train(model, blocks, validation, options, np.random.default_rng(0), torch.device(device))
        losses = [point["validation_loss"] for point in curves[precision]]
        assert np.isfinite(losses).all() and losses[-1] < losses[0], (precision, losses)
        assert all(p.device.type == device for p in model.parameters())
    final = {precision: curve[-1]["validation_loss"] for precision, curve in curves.items()}
    for loss in final.values():  # reduced precision changes the numbers, not where training goes
        assert abs(loss - final["fp32"]) < 0.05 * final["fp32"], final
    if device == "cpu":
        assert final["auto"] == final["fp32"]  # no autocast on the CPU: the same computation


@pytest.mark.parametrize("device", DEVICES)
def test_a_fit_is_a_function_of_its_rng_and_leaves_the_global_rng_alone(device):
    """Fits draw from their own generators (torch.random.fork_rng covers the device's too): the same rng
    gives the same model, and the caller's random state is untouched."""
    from model_collapse.settings import SETTINGS

    VAE = SETTINGS["vae"]
    setting = VAE(VAE.Config(**{k: v for k, v in tiny_vae(device=device).items() if k != "name"}), [0])
    torch.manual_seed(123)
    if device == "cuda":
        torch.cuda.manual_seed_all(123)
        before_cuda = torch.cuda.get_rng_state()
    before = torch.get_rng_state()
    first = setting.fit([setting.real_train], np.random.default_rng(5))
    second = setting.fit([setting.real_train], np.random.default_rng(5))
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)
    if device == "cuda":
        assert torch.equal(torch.cuda.get_rng_state(), before_cuda)
    samples = setting.sample(first, 6, np.random.default_rng(1))["x"]
    assert np.array_equal(samples, setting.sample(first, 6, np.random.default_rng(1))["x"])


@pytest.mark.parametrize("device", DEVICES[1:])  # on the CPU: tests/test_lm_setting.py
def test_a_language_model_chain_resumed_on_the_device_gives_the_uninterrupted_table(device, tmp_path):
    config = {
        "setting": tiny_language_model(tmp_path / "tokenizers", device=device),
        "regimes": ["accumulate"],
        "iterations": 3,
        "seeds": 1,
        "checkpoints": "all",
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    straight = cli("run", tmp_path / "lm.yaml", "--out", tmp_path / "straight", "-q")
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "straight", run)
    chain = run / "chains" / "base" / "accumulate" / "seed-0"
    shutil.rmtree(chain / "iter_0003")
    (chain / "progress.json").write_text('{"completed": 2}')
    resumed = cli("resume", run, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert cli("table", run).stdout == cli("table", tmp_path / "straight").stdout
