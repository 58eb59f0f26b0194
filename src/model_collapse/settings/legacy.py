"""The setting protocol of model-collapse 0.1, kept working for one release: class flags (``cheap``,
``one_seed_per_chain``, ``scores``, ``theory_of_curation``), presentation attributes (``preview_size``,
``learning_curve_axes``, ``curves``, ``distributions``, ``depict``, ``export_previews``), capabilities
found by looking for overridden methods (``fresh_real``, ``theory``) and a warm start read from a
config's ``training.warm_start``. A class written so is given the ``Capabilities`` and ``Presentation``
they mean, with one warning that names the declarations to write instead (CHANGELOG.md, "Unreleased").
"""

from __future__ import annotations

import sys
from dataclasses import fields, replace
from types import FrameType
from typing import Any

from ..deprecation import deprecated

OLD_CAPABILITIES = ("cheap", "one_seed_per_chain", "theory_of_curation", "scores")
OLD_PRESENTATION = ("preview_size", "learning_curve_axes", "curves", "distributions", "depict", "export_previews")
# methods whose override declared a capability
SNIFFED = {"fresh_real": "fresh_real", "theory": "theory"}


def adopt_old_declarations(cls: Any, protocol: tuple[type, ...]) -> None:
    """Give ``cls`` the capabilities and presentation its old-protocol members mean, warning once;
    ``protocol``: the protocol's own classes (``Declaration``, ``Setting``), whose defaults are no
    declaration of ``cls``'s."""
    own = vars(cls)
    old_capabilities = {name: own[name] for name in OLD_CAPABILITIES if name in own}
    old_presentation = {name: getattr(cls, name) for name in OLD_PRESENTATION if name in own}
    if ("capabilities" in own and old_capabilities) or ("presentation" in own and old_presentation):
        mixed = ", ".join([*old_capabilities, *old_presentation])
        raise TypeError(f"{_where(cls)} declares capabilities or presentation and also the old {mixed}: keep one")
    declared = _declares_capabilities(cls, protocol)
    said: list[str] = [f"{name} = {value!r}" for name, value in old_capabilities.items()]
    if not declared:
        for method, capability in SNIFFED.items():
            if method in own and not getattr(cls.capabilities, capability):
                old_capabilities[capability] = True
                said.append(f"{method} overridden without a declaration")
        if _reads_warm_start(cls):
            old_capabilities["warm_start"] = True  # stands for "as training.warm_start says", below
            said.append("training.warm_start read by the engine")
    said += [name for name in old_presentation]
    if not said:
        return
    if old_capabilities:
        warm_from_config = old_capabilities.pop("warm_start", False)
        cls.capabilities = replace(cls.capabilities, **old_capabilities)
        if warm_from_config:
            cls.capabilities_of = classmethod(_warm_start_from_config)
    if old_presentation:
        cls.presentation = replace(cls.presentation, **old_presentation)
    deprecated(
        f"{_where(cls)} uses the setting protocol of model-collapse 0.1 ({'; '.join(said)}), which the next "
        f"release drops: declare {_suggestion(cls)} instead (from model_collapse.settings)",
        stacklevel=_class_statement(cls),
    )


def _class_statement(cls: type) -> int:
    """How many frames above ``deprecated``'s caller the class statement of ``cls`` runs (past the
    protocol's ``__init_subclass__`` and ``ABCMeta``), so that the warning names its file and line."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__") != cls.__module__:
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


def _declares_capabilities(cls: type, protocol: tuple[type, ...]) -> bool:
    """Whether ``cls`` or a class it inherits from (below the protocol's own) declares capabilities."""
    return any(
        "capabilities" in vars(k) or "capabilities_of" in vars(k) for k in cls.__mro__ if k not in (*protocol, object)
    )


def _reads_warm_start(cls: type) -> bool:
    """Whether the old engine would have read ``training.warm_start`` from this setting's config."""
    config = getattr(cls, "Config", None)
    training = getattr(config, "model_fields", {}).get("training")
    section = getattr(training, "annotation", None)
    return "warm_start" in getattr(section, "model_fields", {})


def _warm_start_from_config(cls: Any, config: Any) -> Any:
    return replace(cls.capabilities, warm_start=bool(config.training.warm_start))


def _suggestion(cls: Any) -> str:
    """The declarations that say what the old members said."""
    parts = []
    for name in ("capabilities", "presentation"):
        value = getattr(cls, name)
        default = type(value)()
        changed = [
            f"{f.name}={_shown(getattr(value, f.name))}"
            for f in fields(value)
            if getattr(value, f.name) != getattr(default, f.name)
        ]
        if changed:
            parts.append(f"{name} = {type(value).__name__}({', '.join(changed)})")
    if cls.capabilities_of.__func__ is _warm_start_from_config:
        parts.append("capabilities_of(config) returning warm_start=config.training.warm_start")
    return " and ".join(parts) or "nothing: the defaults say it"


def _shown(value: Any) -> str:
    return getattr(value, "__name__", None) or repr(value)


def _where(cls: type) -> str:
    return f"setting class {cls.__module__}:{cls.__qualname__}"
