"""Closed forms that figures overlay on simulations, and the ``theory`` command prints.

Each setting that has closed forms states them in its own module (``Setting.theory``: linear
regression, Gaussians, discrete distributions) as ``settings.Curve`` s; this module only asks the
setting, so that adding a setting with theory touches that setting alone.
"""

from __future__ import annotations

from .settings import SETTINGS, Curve, SettingConfig

__all__ = ["Curve", "curves", "has_theory"]


def curves(config: SettingConfig, regime_name: str, iterations: int) -> list[Curve]:
    """The closed forms known for a setting under a regime (empty when there are none)."""
    return SETTINGS.declared(config.name).theory(config, regime_name, iterations)


def has_theory(name: str) -> bool:
    """Whether the setting ``name`` states closed forms (overrides ``Setting.theory``)."""
    return SETTINGS.declared(name).states_theory()
