"""Data regimes: which data the model of iteration n is fitted on (``policies.py``: the regimes, frozen
dataclasses whose fields are their parameters), and how configs name them (``grammar.py``).

Vocabulary (docs/architecture.md): T = size of the real training set; S_n = synthetic batch sampled from
the model of iteration n-1 for iteration n; iteration 1 always fits on the real data alone.
"""

from __future__ import annotations

from .grammar import parse_regime, parse_regimes
from .policies import (
    REAL,
    REGIMES,
    Accumulate,
    AccumulateSubsample,
    FreshReal,
    KeepRealFraction,
    Mix,
    RealSynthetic,
    Regime,
    RegimeMismatch,
    Replace,
    ReplaceGrown,
    Selection,
    Source,
    TrainingPlan,
    fresh_real_source,
    parameter,
    synthetic_source,
    uniform_rows,
)

__all__ = [
    "REAL",
    "REGIMES",
    "Accumulate",
    "AccumulateSubsample",
    "FreshReal",
    "KeepRealFraction",
    "Mix",
    "RealSynthetic",
    "Regime",
    "RegimeMismatch",
    "Replace",
    "ReplaceGrown",
    "Selection",
    "Source",
    "TrainingPlan",
    "fresh_real_source",
    "parameter",
    "parse_regime",
    "parse_regimes",
    "synthetic_source",
    "uniform_rows",
]
