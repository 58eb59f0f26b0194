"""Closed forms that figures overlay on simulations, and the ``theory`` command prints.

Each setting that has closed forms states them in its own module (``Declaration.theory``: linear
regression, Gaussians, discrete distributions); this module only holds the curve type and asks the
setting, so that adding a setting with theory touches that setting alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import SETTINGS, SettingConfig


@dataclass(frozen=True)
class Curve:
    metric: str
    values: np.ndarray  # one value per iteration 1..N
    kind: str  # "expected" (the expectation) or "bound" (an upper bound)


def curves(config: SettingConfig, regime_name: str, iterations: int) -> list[Curve]:
    """The closed forms known for a setting under a regime (empty when there are none)."""
    return SETTINGS.declared(config.name).theory(config, regime_name, iterations)
