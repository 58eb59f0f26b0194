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
