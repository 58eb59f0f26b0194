"""The public setting API: the protocol every setting implements (``base.py``), the array data type
most settings use (``arrays.py``) and the registry of settings by the name configs use (``registry.py``).

A setting in a package of its own imports what it needs from here (and random streams from
``model_collapse.randomness``, errors from ``model_collapse.errors``), as the built-in ones do.
"""

from __future__ import annotations

from .arrays import MappedSamples, Samples, concatenate, gather
from .base import Capabilities, Curve, Data, Evaluation, Fit, Footprint, Metric, Presentation, Setting
from .configs import CurationConfig, SettingConfig, StrictConfig
from .registry import ENTRY_POINT_GROUP, SETTINGS, Origin, SettingUnavailable, install_hint, is_import_path

__all__ = [
    "ENTRY_POINT_GROUP",
    "SETTINGS",
    "Capabilities",
    "CurationConfig",
    "Curve",
    "Data",
    "Evaluation",
    "Fit",
    "Footprint",
    "MappedSamples",
    "Metric",
    "Origin",
    "Presentation",
    "Samples",
    "Setting",
    "SettingConfig",
    "SettingUnavailable",
    "StrictConfig",
    "concatenate",
    "gather",
    "install_hint",
    "is_import_path",
]
