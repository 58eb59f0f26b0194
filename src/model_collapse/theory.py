"""Closed forms that figures overlay on simulations, and the ``theory`` command prints.

Each setting that has closed forms states them in its own module (``Setting.theory``: linear
regression, Gaussians, discrete distributions) as ``settings.Curve`` s; this module only asks the
setting, so that adding a setting with theory touches that setting alone.
"""

from __future__ import annotations

from .settings import SETTINGS, Curve, SettingConfig

__all__ = ["Curve", "curves", "has_theory"]


def curves(config: SettingConfig, regime_name: str, iterations: int) -> list[Curve]:
    """The closed forms known for a setting under a regime (empty when there are none).

    A curated config (more than one candidate per sample) has only those of a setting whose ``theory``
    reads its curation (``Capabilities.theory_of_curation``): the plain loop's do not hold for it."""
    declared = SETTINGS.declared(config.name)
    capabilities = declared.capabilities_of(config)
    curated = config.curation is not None and config.curation.candidates > 1
    if not capabilities.theory or (curated and not capabilities.theory_of_curation):
        return []
    return declared.theory(config, regime_name, iterations)


def has_theory(name: str) -> bool:
    """Whether the setting ``name`` states closed forms (``Capabilities.theory``)."""
    return SETTINGS.declared(name).capabilities.theory
