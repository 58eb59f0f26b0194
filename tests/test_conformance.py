"""Every shipped setting passes the conformance suite (``model_collapse.testing.check_setting``) on its
row of the one table of tiny configs; and the suite catches what it promises to catch."""

from pathlib import Path

import numpy as np
import pytest

from helpers import setting_params, tiny_settings
from model_collapse.settings import SETTINGS, Evaluation, Samples, Setting, SettingUnavailable, registry
from model_collapse.settings.discrete import Discrete
from model_collapse.settings.gaussian import Gaussian
from model_collapse.testing import CHECKS, REGIMES, SettingCheckFailed, check_setting

TINY = tiny_settings()


def test_the_table_has_a_row_for_every_built_in_setting():
    assert set(TINY) == set(registry._BUILT_IN)


@pytest.mark.parametrize("name", setting_params(TINY))
def test_every_shipped_setting_conforms(name):
    try:
        setting_class = SETTINGS[name]
    except SettingUnavailable as missing:  # an extra that is not installed: say which
        pytest.skip(str(missing))
    report = check_setting(setting_class, TINY[name])
    # the checks of pieces once, repeatable_on_threads on one chain, repeatable and resume per regime
    assert len(report.passed) == len(CHECKS) - 3 + 1 + 2 * len(REGIMES) and not report.skipped, report


class GlobalRandomSample(Gaussian):
    """Samples from numpy's global random state instead of the generator it is handed."""

    def sample(self, model, size, rng, scratch=None):
        return super().sample(model, size, np.random.default_rng(np.random.randint(2**31)), scratch)


class LeakyFresh(Discrete):
    """'Fresh' real data that are the training data again."""

    def fresh_real(self, size, rng):
        return Samples(x=self.real_train["x"][:, :size])


class FreshGaussian(Gaussian):
    def fresh_real(self, size, rng):
        return Samples(x=self.real_train["x"][:, :size].copy())


class WarmStart(Discrete):
    """A costly setting whose fit leans on the model of its previous fit, kept on the object: a chain
    resumed by a new object (restoring the last model, not this state) fits otherwise."""

    cheap = False
    previous = None

    def fit(self, parts, rng, scratch=None):
        model = super().fit(parts, rng, scratch)
        if self.previous is not None:
            model = 0.5 * (model + self.previous)
        self.previous = model
        return model


class DamagedModelsLoad(Discrete):
    """Reads its model file with numpy and no care: a truncated file raises numpy's own error."""

    def load_model(self, directory):
        return np.load(Path(directory) / "model.npz")["probabilities"]


class WrongMetricShape(Discrete):
    def evaluate(self, model):
        return {name: values[:1] for name, values in super().evaluate(model).items()}


class DetailsNotJson(Discrete):
    """Keeps an array beside its metrics, which the iteration's diagnostics.json cannot hold."""

    def evaluate(self, model):
        return Evaluation(super().evaluate(model), {"histogram": np.zeros(3)})


@pytest.mark.parametrize(
    "broken, check",
    [
        (GlobalRandomSample, "deterministic"),
        (WrongMetricShape, "metrics"),
        (DetailsNotJson, "metrics"),
        (FreshGaussian, "fresh_real_unseen"),
    ],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_a_broken_setting_fails_the_check_that_names_its_fault(broken, check):
    small = TINY["gaussian"] if issubclass(broken, Gaussian) else TINY["discrete"]
    with pytest.raises(SettingCheckFailed) as failure:
        check_setting(broken, small, regimes=["replace", "accumulate"])
    assert failure.value.check == check, failure.value
    assert str(failure.value).startswith(f"{check}: ")


def test_discrete_values_repeat_so_fresh_draws_are_compared_as_data_not_values():
    # the leaky variant's fresh data are the training rows themselves: caught though values repeat
    with pytest.raises(SettingCheckFailed, match="fresh_real_unseen: fresh_real gave the first rows"):
        check_setting(LeakyFresh, TINY["discrete"], checks=["fresh_real_unseen"])


def test_a_damaged_model_must_be_refused_in_one_line():
    with pytest.raises(SettingCheckFailed, match=r"damaged_files: a saved model with model.npz truncated raised"):
        check_setting(DamagedModelsLoad, TINY["discrete"], checks=["damaged_files"])


def test_state_kept_on_the_setting_between_fits_breaks_resume():
    with pytest.raises(SettingCheckFailed, match=r"resume: \[accumulate\] the chain stopped after iteration 2"):
        check_setting(WarmStart, TINY["discrete"], regimes=["accumulate"], checks=["resume"])


def test_a_setting_without_fresh_real_skips_what_needs_it():
    class NoFresh(Discrete):
        fresh_real = Setting.fresh_real  # not provided

    regimes = ["replace", "fresh-real:0.5"]
    report = check_setting(NoFresh, TINY["discrete"], regimes=regimes, checks=["resume", "fresh_real_unseen"])
    assert report.passed == ["resume [replace]"]
    assert report.skipped == [
        "fresh_real_unseen: the setting has no fresh_real",
        "resume [fresh-real:0.5]: the setting has no fresh_real",
    ]


def test_a_fit_that_seeds_torchs_global_random_state_fails_deterministic():
    """torch.manual_seed(0) at the top of fit gives every seed the same initial weights: watched as numpy's
    global state is (it passed every check)."""
    torch = pytest.importorskip("torch")

    class SeedsTorch(Discrete):
        def fit(self, parts, rng, scratch=None):
            torch.manual_seed(0)
            torch.rand(1)
            return super().fit(parts, rng, scratch)

    class SeedsInsideForkRng(Discrete):
        def fit(self, parts, rng, scratch=None):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**63)))
                torch.rand(1)
            return super().fit(parts, rng, scratch)

    with pytest.raises(SettingCheckFailed, match="deterministic: fit draws from or seeds PyTorch's global random"):
        check_setting(SeedsTorch, TINY["discrete"], regimes=["replace"])
    check_setting(SeedsInsideForkRng, TINY["discrete"], regimes=["replace"])
