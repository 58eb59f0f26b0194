"""Rewards for curation that the shipped configs name (``setting.curation.reward``), and an example of
what a user's own reward looks like: a function of a batch of candidates (the setting's data type;
``samples["x"]`` of shape (seeds, n, d) for the array settings) and keyword arguments from the config's
``curation.options``, returning one number per candidate, (seeds, n), higher better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def closeness(samples: Any, target: Sequence[float], scale: float = 1.0) -> np.ndarray:
    """-|x - target|^2 / scale^2: a reward with one optimum, ``target`` (Ferbach et al.'s curated
    retraining then moves the model's mass toward it and its diversity collapses)."""
    offset = np.asarray(samples["x"], dtype=float) - np.asarray(target, dtype=float)
    return -np.sum(offset**2, axis=-1) / scale**2
