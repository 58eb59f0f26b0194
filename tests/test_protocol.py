"""The setting protocol's declarations (``Capabilities``, ``Presentation``) and the old protocol they
replace, which keeps working for one release with one warning naming what to write instead."""

from __future__ import annotations

import io
import os
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import BaseModel

from helpers import cli
from model_collapse.deprecation import ModelCollapseDeprecationWarning
from model_collapse.settings import Capabilities, Presentation, Samples, Setting, SettingConfig
from model_collapse.settings.discrete import Discrete
from model_collapse.testing import check_setting

# a damaged file's handle left open is a fault of the conformance suite's, not only noise
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

# One setting twice, as model-collapse 0.1 took it and as it takes it now: a mean and spread refitted to
# their own samples, with fresh real data and text previews.
COMMON = """
import numpy as np
from pydantic import Field, PositiveInt

from model_collapse.randomness import seed_rng
from model_collapse.settings import Capabilities, Metric, Presentation, Samples, Setting, SettingConfig, concatenate


class MeanConfig(SettingConfig):
    name: str = "mean"
    samples: PositiveInt = Field(20, description="draws per seed")


class Base(Setting):
    name = "mean"
    Config = MeanConfig
    metrics = {"error": Metric("squared error of the mean")}

    def __init__(self, config, seeds):
        super().__init__(config, seeds)
        self._real = Samples(x=np.stack([seed_rng(s, "real").normal(size=config.samples) for s in self.seeds]))
        self.test = np.stack([seed_rng(s, "test").normal(size=100) for s in self.seeds])

    @property
    def real_train(self):
        return self._real

    def fit(self, parts, rng, scratch=None):
        x = concatenate(parts)["x"]
        return np.stack([x.mean(axis=1), x.std(axis=1)], axis=1)

    def sample(self, model, size, rng, scratch=None):
        return Samples(x=model[:, :1] + model[:, 1:] * rng.standard_normal((self.seed_count, size)))

    def evaluate(self, model):
        return {"error": (model[:, 0] - self.test.mean(axis=1)) ** 2}

    def preview(self, data):
        return np.array([f"x = {x:.3f}" for x in data["x"][0, :3]])
"""

OLD = """

class OldMean(Base):
    cheap = True
    preview_size = 3

    def fresh_real(self, size, rng):
        return Samples(x=rng.normal(size=(self.seed_count, size)))
"""

NEW = """

class NewMean(Base):
    capabilities = Capabilities(cheap=True, fresh_real=True)
    presentation = Presentation(preview_size=3)

    def fresh_real(self, size, rng):
        return Samples(x=rng.normal(size=(self.seed_count, size)))
"""


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    """``old_protocol`` and ``new_protocol``, importable here and in the subprocesses tests start."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "old_protocol.py").write_text(COMMON + OLD)
    (site / "new_protocol.py").write_text(COMMON + NEW)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    yield site


def _run(tmp_path, target: str, *arguments: str):
    name = target.partition(":")[2]
    raw = {
        "setting": {"name": target, "samples": 10},
        "regimes": ["replace", "accumulate", "fresh-real:0.5"],
        "iterations": 3,
        "seeds": 2,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = cli("run", path, "--out", tmp_path / name, "-q", *arguments)
    assert result.returncode == 0, result.stderr
    table = cli("table", tmp_path / name, "--setting", target)
    return result, pd.read_csv(io.StringIO(table.stdout), dtype=str).drop(columns="setting")


@pytest.mark.slow
def test_an_old_protocol_setting_runs_to_the_new_ones_numbers_with_one_warning(plugin, tmp_path):
    """Its chains run in two worker processes, which import it again and stay silent about it."""
    old, old_table = _run(tmp_path, "old_protocol:OldMean", "-j", "2")
    new, new_table = _run(tmp_path, "new_protocol:NewMean", "-j", "2")
    pd.testing.assert_frame_equal(old_table, new_table)
    warned = [line for line in old.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and len(old.stderr.splitlines()) == 2, old.stderr  # the warning, then "done: ..."
    assert warned[0].startswith("warning: setting class old_protocol:OldMean uses the setting protocol of model-collapse 0.1")
    assert warned[0].endswith(f"({plugin / 'old_protocol.py'}:42)")
    assert (
        "declare capabilities = Capabilities(cheap=True, fresh_real=True) and presentation = "
        "Presentation(preview_size=3) instead" in warned[0]
    )
    assert "warning" not in new.stderr
    assert sorted(p.name for p in (tmp_path / "OldMean").rglob("preview_*.npy")) == sorted(
        p.name for p in (tmp_path / "NewMean").rglob("preview_*.npy")
    )


def test_an_old_protocol_setting_is_given_the_declarations_it_meant_and_passes_the_suite(plugin):
    with pytest.warns(ModelCollapseDeprecationWarning, match="OldMean") as caught:
        import old_protocol
    assert len(caught) == 1 and caught[0].filename.endswith("old_protocol.py")
    import new_protocol

    assert old_protocol.OldMean.capabilities == new_protocol.NewMean.capabilities
    assert old_protocol.OldMean.presentation == new_protocol.NewMean.presentation
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checking it warns no more
        report = check_setting(old_protocol.OldMean, {"samples": 10}, regimes=["replace", "fresh-real:0.5"])
    assert not report.skipped


class _Training(BaseModel):
    warm_start: bool = False


class _WarmConfig(SettingConfig):
    name: str = "old-warm"
    training: _Training = _Training()


def test_an_old_warm_start_is_read_from_the_config_as_the_old_engine_read_it():
    with pytest.warns(ModelCollapseDeprecationWarning, match=r"training\.warm_start read by the engine"):

        class OldWarm(Setting):
            name = "old-warm"
            Config = _WarmConfig

    warm = _WarmConfig(training={"warm_start": True})
    assert OldWarm.capabilities_of(warm).warm_start and not OldWarm.capabilities_of(_WarmConfig()).warm_start


def test_old_and_new_declarations_in_one_class_are_refused():
    with pytest.raises(TypeError, match=re.escape("declares capabilities or presentation and also the old cheap")):

        class Mixed(Discrete):
            capabilities = Capabilities(cheap=True)
            cheap = True


def test_a_subclass_of_a_new_protocol_setting_that_writes_a_method_is_not_taken_for_an_old_one():
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Leaky(Discrete):
            def fresh_real(self, size, rng):
                return Samples(x=np.zeros((self.seed_count, size), dtype=np.int64))

    assert Leaky.capabilities is Discrete.capabilities


@pytest.mark.parametrize(
    "arguments, problem",
    [
        ({"scores": "likelihood"}, "tuple of score names"),
        ({"theory_of_curation": True}, "needs theory=True"),
    ],
)
def test_capabilities_refuse_what_cannot_be_meant(arguments, problem):
    with pytest.raises((TypeError, ValueError), match=problem):
        Capabilities(**arguments)


def test_a_presentation_refuses_a_negative_preview_size():
    with pytest.raises(ValueError, match="preview_size"):
        Presentation(preview_size=-1)
