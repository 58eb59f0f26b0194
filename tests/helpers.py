"""Helpers the tests share: config files, tiny neural settings, progress, torchrun."""

import json
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
