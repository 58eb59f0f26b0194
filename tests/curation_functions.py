"""Rewards and verifiers as a user writes them (``setting.curation.reward: curation_functions:...``), and
broken ones, for tests/test_curation.py."""

import numpy as np


def closeness(samples, target=0.0):
    """Minus the squared distance of each sample from ``target``."""
    return -np.sum((samples["x"] - np.asarray(target)) ** 2, axis=-1)


def positive_first_coordinate(samples):
    """A verifier: 1 for a sample whose first coordinate is positive, else 0."""
    return (samples["x"][..., 0] > 0).astype(float)


def raises(samples):
    raise ValueError("the reward model is not loaded\nsecond line")


def gives_nan(samples):
    scores = closeness(samples)
    scores[0, 1] = np.nan
    return scores


def one_too_few(samples):
    return closeness(samples)[:, :-1]


def gives_text(samples):
    return "good"


NOT_A_FUNCTION = 3


def above_one(samples):
    """A verifier that rules out (-inf) every sample whose first coordinate is not above 1: few pass."""
    x = samples["x"][..., 0]
    return np.where(x > 1.0, x, -np.inf)


def slow(samples, seconds=2.5):
    """A reward model that takes its time."""
    import time

    time.sleep(seconds)
    return closeness(samples)
