"""Deprecations: what a user wrote against an older public surface (the setting protocol, config names)
keeps working for one release, with one warning naming what to write instead.

The warning is a ``FutureWarning``, shown by default, since the person who has to act on it is the one
running the tool (a config's author, a plugin's). It is given once, in the process the user started:
worker processes that model-collapse spawns (``WORKER_ENVIRONMENT`` is set in them) import the same
code again and stay silent about it.
"""

from __future__ import annotations

import os
import warnings

# Set in the environment of the worker processes model-collapse spawns for chains.
WORKER_ENVIRONMENT = "MODEL_COLLAPSE_WORKER"


class ModelCollapseDeprecationWarning(FutureWarning):
    """Something written against an older model-collapse: it works for one more release."""


def deprecated(message: str, stacklevel: int = 2) -> None:
    """Warn that something is deprecated (``message`` says what to write instead), unless this is one of
    model-collapse's worker processes."""
    if os.environ.get(WORKER_ENVIRONMENT):
        return
    warnings.warn(message, ModelCollapseDeprecationWarning, stacklevel=stacklevel + 1)
