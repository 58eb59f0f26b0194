"""How varied a set of stories is, in tokens of the run's tokenizer: collapse shows in samples before it
shows in loss (a model that repeats one story can still predict real text passably).

* ``distinct_n``: distinct n-grams over all n-grams of all stories (Li et al. 2016, "A Diversity-Promoting
  Objective Function for Neural Conversation Models"), n = 1..4;
* ``unigram_entropy``: entropy (nats) of the token frequencies over all stories;
* ``mean_length``: tokens per story;
* ``repeated_4grams``: per story, the share of its 4-grams that occurred earlier in the same story
  (loops such as "and then and then"), averaged over the stories that have a 4-gram.

Distinct-n falls as a set of stories grows, so the real-text reference is measured on as many stories as
the samples it is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAMES = ("distinct_1", "distinct_2", "distinct_3", "distinct_4", "unigram_entropy", "mean_length", "repeated_4grams")


def _ngrams(story: np.ndarray, n: int) -> np.ndarray:
    """The story's n-grams as rows of an (len - n + 1, n) array."""
    if len(story) < n:
        return np.empty((0, n), dtype=story.dtype)
    return np.lib.stride_tricks.sliding_window_view(story, n)


def diversity(stories: Sequence[np.ndarray]) -> dict[str, float]:
    """The measures above for token-id stories; NaN where a measure has nothing to count."""
    stories = [np.asarray(s, dtype=np.int64) for s in stories]
    result: dict[str, float] = {}
    for n in range(1, 5):
        grams = [_ngrams(s, n) for s in stories]
        total = sum(len(g) for g in grams)
        distinct = len(np.unique(np.concatenate(grams), axis=0)) if total else 0
        result[f"distinct_{n}"] = distinct / total if total else float("nan")
    tokens = np.concatenate(stories) if stories else np.empty(0, dtype=np.int64)
    if len(tokens):
        p = np.unique(tokens, return_counts=True)[1] / len(tokens)
        result["unigram_entropy"] = float(-(p * np.log(p)).sum())
    else:
        result["unigram_entropy"] = float("nan")
    result["mean_length"] = float(np.mean([len(s) for s in stories])) if stories else float("nan")
    repeated: list[float] = []
    for story in stories:
        four = _ngrams(story, 4)
        if len(four):
            repeated.append(1 - len(np.unique(four, axis=0)) / len(four))
    result["repeated_4grams"] = float(np.mean(repeated)) if repeated else float("nan")
    return result
