"""The settings the engine can run, by the name configs use."""

from .base import Metric, Setting, SettingConfig
from .gaussian import Gaussian
from .kde import KDE
from .linear_regression import LinearRegression

SETTINGS: dict[str, type[Setting]] = {cls.name: cls for cls in (LinearRegression, Gaussian, KDE)}

__all__ = ["SETTINGS", "Metric", "Setting", "SettingConfig"]
