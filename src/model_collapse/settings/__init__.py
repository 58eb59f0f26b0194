"""The settings the engine can run, by the name configs use.

Settings are imported on first use, so that running the cheap ones never imports PyTorch. Each
setting also has a *declaration* (its config type, metrics, whether it runs one seed per chain, its
preview size) that ``SETTINGS.declared(name)`` reads without importing the setting's heavy module: for
the VAE and language models it lives in a light module of its own, so that validating a config or
reading a run directory (``table``, ``plot``) works with the base install.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

from ..errors import ConfigError
from .base import Fit, Metric, Setting, SettingConfig

# name -> (module, class, extra it needs or None, (module, class) of a light declaration, or None when
# the setting class itself imports nothing heavy)
_LOCATIONS = {
    "linear-regression": ("linear_regression", "LinearRegression", None, None),
    "gaussian": ("gaussian", "Gaussian", None, None),
    "kde": ("kde", "KDE", None, None),
    "discrete": ("discrete", "Discrete", None, None),
    "vae": ("vae", "VAE", "images", ("vae_config", "VAEDeclaration")),
    "language-model": (
        "language_model.setting",
        "LanguageModel",
        "lm",
        ("language_model.config", "LanguageModelDeclaration"),
    ),
    "conformer-diffusion": (
        "conformer_diffusion.setting",
        "ConformerDiffusion",
        "molecules",
        ("conformer_diffusion.config", "ConformerDeclaration"),
    ),
}


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` to this installation: from the checkout it was installed
    from (editable or not; PEP 610's direct_url.json says which), else by name."""
    try:
        origin = json.loads(metadata.distribution("model-collapse").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        origin = {}
    url = origin.get("url", "") if isinstance(origin, dict) else ""
    if url.startswith("file://"):
        editable = "-e " if origin.get("dir_info", {}).get("editable") else ""
        return f"pip install {editable}'{Path(url.removeprefix('file://'))}[{extra}]'"
    return f"pip install 'model-collapse[{extra}]'"


def _import(module: str, cls: str, name: str, extra: str | None):
    try:
        return getattr(importlib.import_module(f".{module}", __name__), cls)
    except ImportError as error:
        hint = f"; install it with {install_hint(extra)}" if extra else ""
        raise ConfigError(f"setting {name!r} needs {error.name}{hint}") from None


class _Registry(Mapping[str, type[Setting]]):
    def __getitem__(self, name: str) -> type[Setting]:
        module, cls, extra, _ = _LOCATIONS[name]
        return _import(module, cls, name, extra)

    def declared(self, name: str) -> type:
        """What a setting is (``Config``, ``metrics``, ``one_seed_per_chain``, ``preview_size``), without
        importing its model code."""
        module, cls, extra, declaration = _LOCATIONS[name]
        return _import(*(declaration or (module, cls)), name, extra)

    def __contains__(self, name: object) -> bool:  # Mapping's default would import the setting
        return name in _LOCATIONS

    def __iter__(self) -> Iterator[str]:
        return iter(_LOCATIONS)

    def __len__(self) -> int:
        return len(_LOCATIONS)


SETTINGS = _Registry()

__all__ = ["SETTINGS", "Fit", "Metric", "Setting", "SettingConfig", "install_hint"]
