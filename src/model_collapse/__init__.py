"""model-collapse: chains of generative models fitted on real and synthetic data, under any data regime.

The Python API (``api.py``): ``model_collapse.run(config, out=...)``, ``model_collapse.open(run_dir)`` and
``model_collapse.resume(run_dir)``, each returning a ``Run``. Importing the package imports nothing else:
the API loads what it needs when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["Run", "__version__", "open", "resume", "run"]

if TYPE_CHECKING:
    from .api import Run, open, resume, run


def __getattr__(name: str) -> Any:
    if name in ("Run", "open", "resume", "run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'model_collapse' has no attribute {name!r}")
