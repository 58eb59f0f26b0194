"""Random streams: the engine's purposes keep their numbers; a setting may name streams of its own."""

import numpy as np
import pytest

from model_collapse.randomness import chain_rng, seed_rng


def test_the_engines_streams_keep_their_numbers():
    # pinned: every shipped config's numbers derive from these streams
    assert seed_rng(3, "real").integers(1 << 30) == np.random.default_rng(np.random.SeedSequence([1, 1, 3])).integers(
        1 << 30
    )
    assert seed_rng(0, "fit").random() == np.random.default_rng(np.random.SeedSequence([1, 5, 0])).random()


def test_a_setting_may_name_its_own_streams():
    test = seed_rng(0, "test").random(4)
    np.testing.assert_array_equal(test, seed_rng(0, "test").random(4))  # reproducible from the key alone
    for other in ("real", "fit", "sample", "validation"):
        assert not np.array_equal(test, seed_rng(0, other).random(4))
    assert not np.array_equal(chain_rng((0, 1), 2, "curation").random(4), chain_rng((0, 1), 3, "curation").random(4))


@pytest.mark.parametrize("purpose", ["", None, 5])
def test_a_purpose_is_a_non_empty_name(purpose):
    with pytest.raises(ValueError, match="non-empty string"):
        seed_rng(0, purpose)
