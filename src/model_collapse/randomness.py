"""Where every random number of a run comes from.

Two kinds of stream, both derived from numpy's SeedSequence so that they are independent of each other
and reproducible from their key alone (no generator state has to be checkpointed):

* ``seed_rng(seed, purpose)``: one stream per seed, used for the real data. The real data of seed s is
  therefore identical in every regime, every sweep point with the same setting fields, and every batch
  size: regimes are compared on the same real data.
* ``chain_rng(seeds, iteration, purpose)``: one stream per batch of seeds and iteration, used for
  sampling, fitting and the regime's own choices. Cheap settings draw all seeds of a batch from it at
  once (one call instead of a Python loop per seed), so a seed's numbers depend on which seeds share its
  batch. The regime is not part of the key: all regimes of a run see common random numbers, which makes
  their comparison paired, and iteration 1 (identical in every regime by definition) gives identical
  results in every regime.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numpy as np

# Bumped only if the derivation below changes, so old and new numbers are never silently mixed.
_STREAM_VERSION = 1

_PURPOSES = {
    "real": 1,
    "sample": 2,
    "fresh-real": 3,
    "regime": 4,
    "fit": 5,
    "evaluate": 6,
    "preview": 7,
    "real-parameters": 8,  # parameters of a seed's real distribution (KDE blob centres)
}


def _purpose_code(purpose: str) -> int:
    try:
        return _PURPOSES[purpose]
    except KeyError:
        raise ValueError(f"unknown random stream purpose {purpose!r}") from None


def seed_rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator that depends only on one seed and a purpose."""
    return np.random.default_rng(np.random.SeedSequence([_STREAM_VERSION, _purpose_code(purpose), int(seed)]))


@functools.lru_cache(maxsize=64)
def _seeds_key(seeds: tuple[int, ...]) -> int:
    return zlib.crc32(",".join(str(int(s)) for s in seeds).encode())


def chain_rng(seeds: Sequence[int], iteration: int, purpose: str) -> np.random.Generator:
    """A generator for one iteration of one batch of seeds."""
    key = [_STREAM_VERSION, _purpose_code(purpose), _seeds_key(tuple(seeds)), len(seeds), int(iteration)]
    return np.random.default_rng(np.random.SeedSequence(key))
