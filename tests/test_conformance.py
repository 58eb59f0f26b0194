"""Every shipped setting passes the conformance suite (``model_collapse.testing.check_setting``) on its
row of the one table of tiny configs; and the suite catches what it promises to catch."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import NEURAL, tiny_settings
from model_collapse.settings import SETTINGS, Evaluation, Samples, Setting, SettingUnavailable, registry
from model_collapse.settings.discrete import Discrete
from model_collapse.settings.gaussian import Gaussian
from model_collapse.testing import CHECKS, REGIMES, SettingCheckFailed, check_setting, setting_checks

TINY = tiny_settings()


def test_the_table_has_a_row_for_every_built_in_setting():
    assert set(TINY) == set(registry._BUILT_IN)


def _shipped_checks() -> list:
    """Every check of every shipped setting on its tiny config, a test item each (the neural ones in the
    slow lane); a setting whose extra is not installed is one skipped item saying which."""
    params = []
    for name in TINY:
        marks = [pytest.mark.slow] if name in NEURAL else []
        try:
            setting_class = SETTINGS[name]
        except SettingUnavailable as missing:
            params.append(pytest.param(None, id=name, marks=[*marks, pytest.mark.skip(reason=str(missing))]))
            continue
        params += [pytest.param(c, id=c.id, marks=marks) for c in setting_checks(setting_class, TINY[name])]
    return params


@pytest.mark.parametrize("check", _shipped_checks())
def test_every_shipped_setting_conforms(check):
    assert check.run() is None, f"{check.id} is skipped for a shipped setting"  # every check applies to them


def test_the_checks_of_a_setting_are_check_settings_one_by_one():
    """One item per check and regime: the checks of pieces once, repeatable_on_threads on one chain,
    repeatable and resume per regime; check_setting runs exactly these."""
    found = setting_checks(SETTINGS["discrete"], TINY["discrete"])
    assert len(found) == len(CHECKS) - 3 + 1 + 2 * len(REGIMES)
    assert [c.id for c in found[:3]] == ["discrete:declarations", "discrete:deterministic", "discrete:metrics"]
    assert "discrete:resume[accumulate]" in {c.id for c in found}
    report = check_setting(SETTINGS["discrete"], TINY["discrete"])
    assert report.passed == [c.label for c in found] and not report.skipped
    without = setting_checks(Discrete, TINY["discrete"], checks=["resume"], regimes=["fresh-real:0.5"])
    assert [c.run() for c in without] == [None]  # discrete has fresh_real


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

    capabilities = replace(Discrete.capabilities, cheap=False)
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
        capabilities = replace(Discrete.capabilities, fresh_real=False)
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


def test_a_check_a_setting_skips_on_purpose_is_reported_with_its_declared_reason():
    """As scikit-learn's expected_failed_checks: the author's reason, in the report and the test item."""
    reason = "its evaluation draws from a clock"
    report = check_setting(
        GlobalRandomSample, TINY["gaussian"], regimes=["replace"], checks=["deterministic", "metrics"],
        skip={"deterministic": reason},
    )  # fmt: skip
    assert report.passed == ["metrics"] and report.skipped == [
        f"deterministic: skipped by the setting's author: {reason}"
    ]
    (item,) = setting_checks(
        GlobalRandomSample, TINY["gaussian"], checks=["deterministic"], skip={"deterministic": reason}
    )
    assert item.run() == f"skipped by the setting's author: {reason}"
    with pytest.raises(ValueError, match="skip names unknown checks"):
        check_setting(Discrete, TINY["discrete"], skip={"determinism": reason})
    with pytest.raises(ValueError, match="give the reason"):
        check_setting(Discrete, TINY["discrete"], skip={"deterministic": ""})
