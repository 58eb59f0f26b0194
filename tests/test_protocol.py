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

from helpers import MEAN_PLUGIN_BASE, cli
from model_collapse.deprecation import ModelCollapseDeprecationWarning
from model_collapse.settings import Capabilities, Presentation, Samples, Setting, SettingConfig
from model_collapse.settings.discrete import Discrete
from model_collapse.testing import check_setting

# a damaged file's handle left open is a fault of the conformance suite's, not only noise
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

# One setting twice, as model-collapse 0.1 took it and as it takes it now: a mean and spread refitted to
# their own samples, with fresh real data and text previews.
COMMON = MEAN_PLUGIN_BASE

OLD = """

class OldMean(MeanBase):
    cheap = True
    preview_size = 3

    def preview(self, data):
        return np.array([f"x = {x:.3f}" for x in data["x"][0, :3]])

    def fresh_real(self, size, rng):
        return Samples(x=rng.normal(size=(self.seed_count, size)))
"""

NEW = """

class NewMean(MeanBase):
    capabilities = Capabilities(cheap=True, fresh_real=True)
    presentation = Presentation(preview_size=3)

    def preview(self, data):
        return np.array([f"x = {x:.3f}" for x in data["x"][0, :3]])

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
    assert warned[0].startswith("warning: setting class old_protocol:OldMean uses the setting protocol of")
    line = (COMMON + OLD).splitlines().index("class OldMean(MeanBase):") + 1
    assert warned[0].endswith(f"({plugin / 'old_protocol.py'}:{line})")  # the class statement
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


# -- one config vocabulary ----------------------------------------------------------------------------

RENAMED = [
    ("language-model", "validation_documents", 7, "test_samples"),
    ("language-model", "corpus", "moby-dick", "dataset"),
    ("fine-tuning", "test_examples", 7, "test_samples"),
    ("fine-tuning", "generation", {"temperature": 0.5}, "sampling"),
    ("conformer-diffusion", "test_molecules", 7, "test_samples"),
    ("conformer-diffusion", "diffusion.steps", 7, "diffusion.timesteps"),
]


def _nested(dotted: str, value):
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


@pytest.mark.parametrize("setting, old, value, new", RENAMED, ids=[f"{s}:{o}" for s, o, _, _ in RENAMED])
def test_an_earlier_key_works_with_one_warning_naming_the_key_now(setting, old, value, new):
    from model_collapse.config import build_experiment

    def experiment(key, **extra):
        return build_experiment(
            {"setting": {"name": setting, **needs, **_nested(key, value)}, "regimes": ["replace"], "iterations": 2}
            | {"seeds": 1, **extra}
        )

    needs = {"model": {"pretrain": {}}} if setting == "fine-tuning" else {}  # (a model to fine-tune)

    with pytest.warns(ModelCollapseDeprecationWarning) as caught:
        earlier = experiment(old)
    assert [str(w.message) for w in caught] == [
        f"setting.{old} is now setting.{new}: write that (the old name goes in the next release)"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        now = experiment(new)
    assert earlier.points == now.points


def test_a_key_given_under_both_names_is_refused_and_a_swept_earlier_key_is_renamed():
    from model_collapse.config import build_experiment
    from model_collapse.errors import ConfigError

    both = {"name": "language-model", "validation_documents": 4, "test_samples": 5}
    with pytest.raises(ConfigError, match="validation_documents: the earlier name of test_samples, which is given too"):
        build_experiment({"setting": both, "regimes": ["replace"], "iterations": 2, "seeds": 1})
    raw = {"setting": {"name": "language-model"}, "sweep": {"validation_documents": [4, 5]}}
    with pytest.warns(ModelCollapseDeprecationWarning, match=r"sweep.validation_documents is now sweep.test_samples"):
        swept = build_experiment({**raw, "regimes": ["replace"], "iterations": 2, "seeds": 1})
    assert swept.varying == ("test_samples",) and [p.test_samples for p in swept.points] == [4, 5]


class _RenamedConfig(Discrete.Config):  # type: ignore[name-defined,misc]
    name: str = "renamed-discrete"
    renamed = {"categories": "outcomes"}


class _Renamed(Discrete):
    """A cheap setting that once called its ``outcomes`` ``categories``."""

    name = "renamed-discrete"
    Config = _RenamedConfig


def test_a_run_directory_written_with_an_earlier_key_reads_as_todays_without_a_warning(tmp_path):
    """Its config.yaml and every chain.json name the key as it was."""
    import json

    import yaml

    import model_collapse
    from model_collapse.results import open_experiment
    from model_collapse.rundir import ChainStore

    run = tmp_path / "run"
    config = {"setting": {"name": _Renamed, "outcomes": 5, "samples": 20}, "regimes": ["replace"], "iterations": 3}
    table = model_collapse.run({**config, "seeds": 2}, out=run).table()
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["setting"]["categories"] = recorded["setting"].pop("outcomes")
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    (chain,) = run.rglob("chain.json")
    description = json.loads(chain.read_text())
    description["setting"]["categories"] = description["setting"].pop("outcomes")
    chain.write_text(json.dumps(description))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment = open_experiment(run)
        assert experiment.points[0].outcomes == 5
        for spec in experiment.chains():
            ChainStore.of(run, spec).prepare()  # chain.json is checked against the config here
        assert model_collapse.open(run).table().equals(table)
