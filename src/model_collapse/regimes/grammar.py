"""How configs write regimes: a label (``accumulate``, ``mix:0.25``, ``real-synthetic:256+2500``) or a
mapping (``{name: mix, ratio: 0.25}``), whose parameters may be lists that stand for a grid of regimes.
The regimes themselves (``policies.py``) know nothing of this syntax but their label.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from ..errors import ConfigError
from .policies import REGIMES, Regime

# Installed packages add regimes here (``[project.entry-points."model_collapse.regimes"]``); a built-in
# name always wins.
ENTRY_POINT_GROUP = "model_collapse.regimes"


def regime_names() -> list[str]:
    """Every regime's name: the built-in ones, then those installed packages register."""
    installed = sorted({entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)} - set(REGIMES))
    return [*REGIMES, *installed]


def regime_class(name: str) -> type[Regime] | None:
    """The regime class ``name`` names (an installed one is imported now), or None for no regime."""
    if name in REGIMES:
        return REGIMES[name]
    entries = [entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP) if entry.name == name]
    if not entries:
        return None
    try:
        cls = entries[0].load()
    except Exception as error:  # the package's own code failed while importing
        failure = f"{type(error).__name__}: {error}"
        raise ConfigError(f"regime {name!r}: importing {entries[0].value} failed: {failure}") from None
    if not (isinstance(cls, type) and issubclass(cls, Regime) and getattr(cls, "name", None) == name):
        raise ConfigError(f"regime {name!r}: {entries[0].value} is not a Regime subclass named {name!r}")
    return cls


def parse_regime(spec: Any) -> Regime:
    """A regime from a config entry: ``"accumulate"``, ``"mix:0.25"``, ``"real-synthetic:256+2500"`` or a
    mapping, ``{name: mix, ratio: 0.25}``."""
    (regime,) = _parse(spec, expand=False)
    return regime


def parse_regimes(spec: Any) -> list[Regime]:
    """The regimes of one config entry: as ``parse_regime``, but a mapping's parameter may be a list, and
    the entry stands for every combination of the values listed: ``{name: real-synthetic, real: [256,
    2500], synthetic: [0, 256]}`` is four regimes (a grid, in the order of the lists, the last fastest;
    a cell that trains on nothing, real = synthetic = 0, is left out)."""
    return _parse(spec, expand=True)


def _parse(spec: Any, expand: bool) -> list[Regime]:
    if isinstance(spec, Regime):
        return [spec]
    if isinstance(spec, str):
        name, _, text = spec.strip().partition(":")
        found = regime_class(name)
        several = found is not None and len(found.parameters()) > 1  # "256+2500" (a "," would split a YAML list)
        parts = text.split("+") if several else [text]
        axes: list[list[Any]] = [[part.strip()] for part in parts] if text.strip() else []
    elif isinstance(spec, Mapping):
        spec = dict(spec)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError(f"a regime given as a mapping needs a 'name', got {spec!r}")
        found = regime_class(name)
        names = found.parameters() if found is not None else ()
        missing = [p for p in names if p not in spec and found is not None and p not in found.defaults()]
        if missing:  # (as from_values: only a default stands in)
            raise ValueError(f"regime {name!r}: {missing[0]} is missing")
        axes = [_values(name, p, spec.pop(p), expand) for p in names if p in spec]
        if spec:
            raise ValueError(f"regime {name!r}: unknown field(s) {', '.join(map(str, spec))}")
    else:
        raise ValueError(f"a regime must be a name or a mapping, got {spec!r}")
    cls = regime_class(name)
    if cls is None:
        raise ValueError(f"unknown regime {name!r} (known: {', '.join(regime_names())})")
    combinations = [[_number(name, v) for v in values] for values in itertools.product(*axes)]
    if len(combinations) > 1:  # a grid leaves out its cell that trains on nothing (real = synthetic = 0)
        combinations = [values for values in combinations if not cls.trains_on_nothing(values)]
    return [cls.from_values(values) for values in combinations]


def _values(name: str, parameter: str, value: Any, expand: bool) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    if not expand:
        raise ValueError(f"regime {name!r}: {parameter} must be one number, got a list")
    if not value:
        raise ValueError(f"regime {name!r}: {parameter} lists no value")
    return value


def _number(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"regime {name!r}: parameter must be a number, got {value!r}") from None
