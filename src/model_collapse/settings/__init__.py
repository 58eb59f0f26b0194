"""The settings the engine can run, by the name configs use.

Settings are imported on first use, so that running the cheap ones never imports PyTorch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from ..errors import ConfigError
from .base import Metric, Setting, SettingConfig

_LOCATIONS = {
    "linear-regression": ("linear_regression", "LinearRegression", None),
    "gaussian": ("gaussian", "Gaussian", None),
    "kde": ("kde", "KDE", None),
    "vae": ("vae", "VAE", "images"),
    "language-model": ("language_model.setting", "LanguageModel", "lm"),
}


class _Registry(Mapping[str, type[Setting]]):
    def __getitem__(self, name: str) -> type[Setting]:
        module, cls, extra = _LOCATIONS[name]
        try:
            return getattr(importlib.import_module(f".{module}", __name__), cls)
        except ImportError as error:
            hint = f"; install it with pip install 'model-collapse[{extra}]'" if extra else ""
            raise ConfigError(f"setting {name!r} needs {error.name}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


SETTINGS: Mapping[str, type[Setting]] = _Registry()

__all__ = ["SETTINGS", "Metric", "Setting", "SettingConfig"]
