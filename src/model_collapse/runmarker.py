"""What makes a directory a run directory: its marker file, ``run.json``, of our format.

Kept apart from ``rundir/`` so that the lowest floors can ask it: the setting registry refuses to
import a module that lies inside a run directory (a run directory never holds code model-collapse runs).
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "run.json"
FORMAT = "model-collapse-run"


def is_run_directory(directory: Path) -> bool:
    """Whether ``directory`` holds a run marker of our format (read, not trusted: a foreign file is not one)."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == FORMAT


def enclosing_run_directory(path: Path) -> Path | None:
    """The run directory ``path`` lies in (``path`` itself included), or None."""
    path = path.resolve()
    return next((directory for directory in (path, *path.parents) if is_run_directory(directory)), None)
