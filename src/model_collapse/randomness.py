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

A purpose is any non-empty name. The engine's own purposes have fixed small codes (below); a setting may
name streams of its own (``seed_rng(seed, "test")``), whose code is derived from the name alone, above
every fixed code, so that adding one moves no number of any other stream.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Sequence

import numpy as np

# Bumped only if the derivation below changes, so old and new numbers are never silently mixed.
_STREAM_VERSION = 1

# The engine's purposes (and the first settings'); these codes never change.
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


@functools.lru_cache(maxsize=256)
def _purpose_code(purpose: str) -> int:
    if not isinstance(purpose, str) or not purpose:
        raise ValueError(f"a random stream's purpose is a non-empty string, got {purpose!r}")
    if purpose in _PURPOSES:
        return _PURPOSES[purpose]
    # 64 bits of the name's hash, offset past 2**64 so that no derived code equals a fixed one
    return (1 << 64) + int.from_bytes(hashlib.sha256(purpose.encode("utf-8")).digest()[:8], "big")


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
