"""The example plugin against model-collapse's conformance suite, and two broken variants of it that the
suite must catch, each by the check it names."""

from collections.abc import Sequence

import numpy as np
import pytest
from collapse_gmm import GaussianMixtureSetting

from model_collapse.settings import Capabilities, Samples, gather
from model_collapse.testing import SettingCheckFailed, check_setting, parametrize_with_checks

TINY = {"components": 2, "dim": 2, "samples": 40, "test_samples": 40}


@parametrize_with_checks([(GaussianMixtureSetting, TINY)])
def test_the_setting_conforms(check):
    """Every check of the conformance suite, a test item each (``-k resume`` picks one)."""
    check()


class GlobalRandomFit(GaussianMixtureSetting):
    """Seeds EM from numpy's global random state instead of the generator it is handed."""

    def fit(self, parts, rng, scratch=None):
        return super().fit(parts, np.random.default_rng(np.random.randint(2**31)), scratch)


class RowsIgnored(Samples):
    """A data type whose select ignores the rows it is asked for and takes the first ones."""

    @classmethod
    def select(cls, parts: Sequence[Samples], rows: np.ndarray) -> Samples:
        first = np.tile(np.arange(rows.shape[1]), (rows.shape[0], 1))
        return cls(**gather(parts, first).fields)


class IgnoringSelect(GaussianMixtureSetting):
    def __init__(self, config, seeds):
        super().__init__(config, seeds)
        self._real = RowsIgnored(**self._real.fields)


class UndeclaredFreshReal(GaussianMixtureSetting):
    """Writes fresh_real but declares no such capability: the engine would never call it."""

    capabilities = Capabilities(cheap=True)


@pytest.mark.parametrize(
    "broken, check",
    [(GlobalRandomFit, "deterministic"), (IgnoringSelect, "data_contract"), (UndeclaredFreshReal, "declarations")],
    ids=["fit-from-global-random-state", "select-ignores-rows", "fresh-real-not-declared"],
)
def test_broken_variants_fail_the_check_that_names_their_fault(broken, check):
    with pytest.raises(SettingCheckFailed) as failure:
        check_setting(broken, TINY)
    assert failure.value.check == check
    assert str(failure.value).startswith(f"{check}: ")


@pytest.mark.slow
def test_replace_loses_the_mixture_and_accumulate_keeps_it():
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime

    config = GaussianMixtureSetting.Config(components=2, dim=1, samples=50, test_samples=200)
    final = {
        regime: run_chain(GaussianMixtureSetting(config, range(8)), parse_regime(regime), 40)[-1]
        for regime in ("replace", "accumulate")
    }
    replace, accumulate = (final[r].metrics["l2_distance"] for r in ("replace", "accumulate"))
    assert np.median(replace) > 2 * np.median(accumulate)
