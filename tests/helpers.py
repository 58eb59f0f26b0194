"""Helpers the tests share: config files, tiny neural settings, progress, torchrun."""

import json
import tempfile
from pathlib import Path

import yaml


def write_config(path: Path, base: dict, **changes) -> Path:
    """Write ``base`` with top-level ``changes`` as a YAML config at ``path``."""
    path.write_text(yaml.safe_dump({**base, **changes}))
    return path


def tiny_vae(**fields) -> dict:
    """A VAE setting that trains in a fraction of a second (8 x 8 digits), with ``fields`` on top."""
    return {
        "name": "vae",
        "samples": 16,
        "test_samples": 20,
        "image_size": 8,
        "evaluation_samples": 20,
        "model": {"widths": [4], "latent_dim": 2},
        "training": {"epochs": 1},
        **fields,
    }


def tiny_language_model(tokenizer_cache: Path | str, **fields) -> dict:
    """A language-model setting (bundled corpus, 300-token vocabulary, 32-token blocks) that trains
    and samples in seconds, with ``fields`` on top."""
    return {
        "name": "language-model",
        "samples": 8,
        "validation_documents": 4,
        "vocab_size": 300,
        "tokenizer_cache": str(tokenizer_cache),
        "model": {"block_size": 32},
        "training": {"batch_size": 4},
        "sampling": {"max_new_tokens": 12},
        **fields,
    }


def tiny_conformers(**fields) -> dict:
    """A conformer-diffusion setting (4 bundled training molecules x 5 conformers, a network of width 8,
    5 diffusion steps) that trains and samples in about a second, with ``fields`` on top."""
    return {
        "name": "conformer-diffusion",
        "samples": 4,
        "test_molecules": 4,
        "device": "cpu",
        "network": {"hidden_dim": 8, "global_convolutions": 1, "local_convolutions": 1},
        "diffusion": {"steps": 5, "beta_end": 0.6},
        "training": {"steps": 4, "batch_size": 8, "evaluate_every": 2, "validation_conformers": 8},
        "sampling": {"batch_size": 8},
        "evaluation": {"molecules": 2},
        **fields,
    }


_TOKENIZERS = tempfile.mkdtemp(prefix="tokenizers-")  # one tokenizer cache for the test process


def tiny_settings() -> dict[str, dict]:
    """The one table of tiny configs of every shipped setting (fields by setting name), which the shared
    suites run: every regime on every setting (test_chain.py) and the conformance checks
    (test_conformance.py). A new setting adds its row here."""
    tokenizer_cache = _TOKENIZERS
    return {
        "linear-regression": {"dim": 2, "samples": 8},
        "gaussian": {"dim": 2, "samples": 8},
        "kde": {"samples": 8, "test_samples": 20},
        "discrete": {"samples": 8, "outcomes": 5},
        "vae": tiny_vae(samples=8),
        "language-model": tiny_language_model(
            tokenizer_cache, sampling={"max_new_tokens": 16}, training={"batch_size": 4, "evaluations_per_epoch": 1}
        ),
        "conformer-diffusion": tiny_conformers(conformers_per_molecule=2),  # 4 molecules x 2 conformers
    }


# Two chains of several seconds each (a cheap chain commits about once a second), long enough to kill or
# signal whatever runs one in the middle of it.
SLOW_TWO_CHAINS = {
    "setting": {"name": "gaussian", "dim": 20, "samples": 100},
    "regimes": ["replace", "accumulate"],
    "iterations": 600,
    "seeds": 200,
}


def failing_at_iteration_2(directory: Path) -> Path:
    """A config whose one chain stops at iteration 2 with a one-line error (fresh-real asks for more
    unused real images than the data set has), written into ``directory``."""
    import yaml

    config = {"setting": tiny_vae(samples=1700), "regimes": ["fresh-real:1.0"], "iterations": 2, "seeds": 1}
    path = directory / "failing.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


FAILING_AT_ITERATION_2 = "fresh-real needs 1700 unused real images per iteration"


def completed(progress: Path) -> int:
    """The iterations a chain's progress.json records (0 before it exists or while it is replaced)."""
    try:
        return json.loads(progress.read_text())["completed"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def torchrun_command(*program: str, processes: int = 2) -> list[str]:
    """``torchrun`` launching ``program`` (a script and its arguments, or ``-m module ...``) on this
    machine's loopback, with a rendezvous port that was free a moment ago."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(port), *program,
    ]  # fmt: skip


def cli(*args, cwd=None, timeout=300, **kwargs):
    """``model-collapse ARGS`` in a process of its own (``python -m``), its output captured as text."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "model_collapse", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        **kwargs,
    )


def invoke(*args, env: dict | None = None):
    """The command in this process (typer's runner): its exit code, stdout and stderr, as a user sees them."""
    from typer.testing import CliRunner

    from model_collapse.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


NEURAL = ("vae", "language-model", "conformer-diffusion")


def setting_params(names) -> list:
    """Setting names as pytest parameters, the neural ones in the slow lane (seconds per chain each)."""
    import pytest

    return [pytest.param(name, marks=pytest.mark.slow) if name in NEURAL else name for name in names]
