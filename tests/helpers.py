"""Helpers the command-line and fault tests share."""

import json
from pathlib import Path

import yaml


def write_config(path: Path, base: dict, **changes) -> Path:
    """Write ``base`` with top-level ``changes`` as a YAML config at ``path``."""
    path.write_text(yaml.safe_dump({**base, **changes}))
    return path


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
