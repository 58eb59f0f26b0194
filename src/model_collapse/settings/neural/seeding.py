"""Seeding PyTorch from the generator a setting's method is handed (every random number of a fit or a
sampling run comes from it: ``randomness.py``), without touching PyTorch's global random state, which
the conformance suite watches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for PyTorch, drawn from ``rng``."""
    return int(rng.integers(2**63))


@contextlib.contextmanager
def seeded_torch(rng: np.random.Generator, device: torch.device | str = "cpu") -> Iterator[None]:
    """PyTorch's global generators (the CPU's, and ``device``'s if it is a GPU) seeded from ``rng`` for
    the block, and as they were after it: for what draws from them without a generator argument, a
    module's initialisation and dropout."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(draw_seed(rng))
        yield


def generator(rng: np.random.Generator, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``rng``: the draws of a fit or a sampling run."""
    return torch.Generator(device=device).manual_seed(draw_seed(rng))
