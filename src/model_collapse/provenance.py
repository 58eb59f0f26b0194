"""What a run ran on, recorded in its marker (run.json) when it starts: the tool's version and git
commit, the interpreter, the numerical libraries and the machine. The report shows it."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from ._version import __version__

# The libraries whose versions decide a run's numbers (and speed), where installed.
LIBRARIES = (
    "numpy", "scipy", "scikit-learn", "torch", "transformers", "tokenizers", "datasets", "rdkit", "matplotlib",
)  # fmt: skip


def _git_commit() -> str | None:
    """The commit of the tool's source when it runs from a git checkout (an editable install), with
    ``+dirty`` when that checkout has uncommitted changes; None otherwise."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        changes = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")


def environment() -> dict[str, Any]:
    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):  # not installed here
            versions[name] = metadata.version(name)
    return {
        "tool_version": __version__,
        "tool_commit": _git_commit(),
        "python": platform.python_version(),
        "libraries": versions,
        "machine": {
            "host": platform.node(),
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
    }
