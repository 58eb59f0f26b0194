"""Settings from outside the package: by import path and by an installed distribution's entry point;
where they come from in `list` and run.json; what a run directory may (not) make the tool import; the
Python API over such a run."""

import io
import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import model_collapse
from helpers import MEAN_PLUGIN_BASE, cli
from model_collapse.config import build_experiment
from model_collapse.errors import ConfigError
from model_collapse.settings import SETTINGS
from model_collapse.settings.discrete import Discrete, DiscreteConfig

# The mean plugin (helpers.MEAN_PLUGIN_BASE), cheap, with no fresh_real.
PLUGIN = (
    MEAN_PLUGIN_BASE
    + """

class MeanSetting(MeanBase):
    capabilities = Capabilities(cheap=True)
"""
)

MARKER = "imported.txt"


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    """``mean_plugin`` importable from a site directory, and the distribution ``mean-plugin`` 1.2.3
    installed there as pip installs one (a .dist-info with its entry point), for this process and for
    the subprocesses tests start (PYTHONPATH)."""
    site = tmp_path / "site"
    (site / "mean_plugin").mkdir(parents=True)
    (site / "mean_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "mean_plugin-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mean-plugin\nVersion: 1.2.3\n")
    (info / "top_level.txt").write_text("mean_plugin\n")
    (info / "RECORD").write_text("")
    (info / "entry_points.txt").write_text("[model_collapse.settings]\nmean = mean_plugin:MeanSetting\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    sys.modules.pop("mean_plugin", None)  # an earlier test's, from its own site directory
    SETTINGS.refresh()
    yield site
    sys.modules.pop("mean_plugin", None)
    SETTINGS.refresh()


def config(tmp_path: Path, name: str, **changes) -> Path:
    raw = {"setting": {"name": name, "samples": 10}, "regimes": ["replace", "accumulate"], "iterations": 5, "seeds": 3}
    path = tmp_path / f"{name.replace(':', '-')}.yaml"
    path.write_text(yaml.safe_dump({**raw, **changes}))
    return path


def test_a_registered_setting_and_its_import_path_run_to_the_same_numbers(plugin, tmp_path):
    for name, out in (("mean", "by-name"), ("mean_plugin:MeanSetting", "by-path")):
        result = cli("run", config(tmp_path, name), "--out", tmp_path / out, "-q", "-j", "1")
        assert result.returncode == 0, result.stderr
    tables = {}
    for out in ("by-name", "by-path"):
        result = cli("table", tmp_path / out)
        assert result.returncode == 0, result.stderr
        tables[out] = pd.read_csv(io.StringIO(result.stdout), dtype=str)
    assert set(tables["by-name"]["setting"]) == {"mean"}
    assert set(tables["by-path"]["setting"]) == {"mean_plugin:MeanSetting"}
    pd.testing.assert_frame_equal(tables["by-name"].drop(columns="setting"), tables["by-path"].drop(columns="setting"))
    marker = json.loads((tmp_path / "by-name" / "run.json").read_text())["setting"]
    assert marker == {
        "name": "mean",
        "origin": {
            "kind": "entry point",
            "target": "mean_plugin:MeanSetting",
            "distribution": "mean-plugin",
            "version": "1.2.3",
        },
    }
    marker = json.loads((tmp_path / "by-path" / "run.json").read_text())["setting"]
    assert marker["origin"]["kind"] == "import path" and marker["origin"]["distribution"] == "mean-plugin"


@pytest.mark.slow
def test_list_says_where_every_setting_comes_from(plugin):
    result = cli("list", "--format", "table", env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "built in" in lines["gaussian"]
    assert "mean-plugin 1.2.3 (entry point mean_plugin:MeanSetting)" in lines["mean"]


@pytest.mark.slow
def test_a_run_directory_never_makes_the_tool_import_a_path(tmp_path, monkeypatch):
    # a module that, imported, leaves a file: named in a run directory's config, it must stay unimported
    (tmp_path / "payload.py").write_text(f"open({str(tmp_path / MARKER)!r}, 'w').close()\nclass S: pass\n")
    result = cli(
        "run", config(tmp_path, "gaussian", setting={"name": "gaussian", "dim": 2}), "--out", tmp_path / "run", "-q"
    )
    assert result.returncode == 0, result.stderr
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    recorded["setting"]["name"] = "payload:S"
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(recorded))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for command in ("table", "plot", "report", "status", "resume"):
        result = cli(command, tmp_path / "run", env=env, cwd=tmp_path)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "cannot make model-collapse import code" in result.stderr
        assert "--allow-import payload:S" in result.stderr
    assert not (tmp_path / MARKER).exists()
    # named by the user, it is imported (and refused: it is no setting)
    result = cli("table", tmp_path / "run", "--setting", "payload:S", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "payload:S is not a model_collapse Setting subclass" in result.stderr
    assert (tmp_path / MARKER).exists()


def test_a_run_by_import_path_reads_back_when_the_user_names_the_path(plugin, tmp_path):
    result = cli("run", config(tmp_path, "mean_plugin:MeanSetting"), "--out", tmp_path / "run", "-q")
    assert result.returncode == 0, result.stderr
    # an installed entry point names this path: the run reads back without --setting
    assert cli("table", tmp_path / "run").returncode == 0
    # without the entry point, only when the user names it
    (plugin / "mean_plugin-1.2.3.dist-info" / "entry_points.txt").unlink()
    refused = cli("table", tmp_path / "run")
    assert refused.returncode == 2 and "--allow-import mean_plugin:MeanSetting" in refused.stderr
    for flag in ("--allow-import", "--setting"):  # (--setting: the flag's earlier name)
        named = cli("table", tmp_path / "run", flag, "mean_plugin:MeanSetting")
        assert named.returncode == 0 and named.stdout.count("\n") == 1 + 2 * 3 * 5


def test_a_run_whose_package_is_gone_names_the_package_to_install(plugin, tmp_path):
    result = cli("run", config(tmp_path, "mean"), "--out", tmp_path / "run", "-q")
    assert result.returncode == 0, result.stderr
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    for command in ("table", "resume", "plot", "report"):
        result = cli(command, tmp_path / "run", env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "unknown setting 'mean'" in result.stderr
        assert "the run was made with mean-plugin==1.2.3: pip install 'mean-plugin==1.2.3'" in result.stderr


# A package that registers a regime and a curation function (docs/extending.md).
EXTRAS = """
import dataclasses

import numpy as np

from model_collapse.regimes import REAL, Regime, Selection, parameter, synthetic_source


@dataclasses.dataclass(frozen=True, repr=False)
class HalfAndHalf(Regime):
    '''All real data, plus a share of the newest synthetic batch.'''

    name = "half-and-half"
    share: float = parameter(0.5, high=1.0)

    def synthetic_size(self, iteration, real_size):
        return round(self.share * real_size)

    def _plan(self, sizes, iteration, seed_count, rng):
        return [Selection((REAL,)), Selection((synthetic_source(iteration),))]


def near_zero(samples):
    return -np.abs(np.asarray(samples["x"], dtype=float))
"""


def test_an_installed_regime_and_curation_function_are_named_as_the_shipped_ones_are(plugin, tmp_path):
    info = plugin / "extras_plugin-1.0.dist-info"
    info.mkdir()
    (plugin / "extras_plugin.py").write_text(EXTRAS)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extras-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[model_collapse.regimes]\nhalf-and-half = extras_plugin:HalfAndHalf\n\n"
        "[model_collapse.curation_functions]\nnear-zero = extras_plugin:near_zero\n"
    )
    listed = json.loads(cli("list", "--format", "json").stdout)["regimes"]
    trains_on = "All real data, plus a share of the newest synthetic batch."
    assert {"regime": "half-and-half", "parameters": "share=0.5", "trains_on": trains_on} in listed
    curated = {"name": "mean", "samples": 10, "curation": {"candidates": 2, "reward": "near-zero"}}
    path = config(tmp_path, "mean", regimes=["half-and-half:0.3", "replace"], setting=curated)
    result = cli("run", path, "--out", tmp_path / "run", "-q")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(cli("table", tmp_path / "run").stdout))
    assert set(frame["regime"]) == {"half-and-half:0.3", "replace"}
    assert set(frame[frame["regime"] == "half-and-half:0.3"]["train_size"]) == {10, 10 + 3}  # round(0.3 * 10)
    # registered by an installed package: resuming needs no --allow-import
    assert cli("resume", tmp_path / "run", "-q").returncode == 0
    unknown = cli("run", config(tmp_path, "mean", regimes=["half-and-whole"]), "--out", tmp_path / "other")
    assert unknown.returncode == 2 and "half-and-half" in unknown.stderr  # the known ones, installed included


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_such_package.module:Setting", "cannot import no_such_package.module (no_such_package is not installed)"),
        (
            "model_collapse.settings.gaussian:NoSuchClass",
            f"model_collapse.settings.gaussian ({Path(model_collapse.__file__).parent / 'settings' / 'gaussian.py'}) "
            "has no NoSuchClass",
        ),
        ("model_collapse.settings.arrays:Samples", "is not a model_collapse Setting subclass"),
        ("not a path", "unknown setting 'not a path'"),
    ],
)
def test_bad_setting_names_get_one_line(tmp_path, name, message):
    result = cli("run", config(tmp_path, name), "--out", tmp_path / "run")
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_a_regime_that_draws_fresh_real_data_needs_a_setting_that_has_them(plugin):
    raw = {"setting": {"name": "mean"}, "regimes": ["replace", "fresh-real:0.5"], "iterations": 3, "seeds": 2}
    with pytest.raises(
        ConfigError,
        match=r"regimes: fresh-real:0.5 draws fresh real data every iteration, "
        "which the setting 'mean' does not provide",
    ):
        build_experiment(raw)


def test_the_python_api_runs_reads_and_resumes(plugin, tmp_path):
    raw = {"setting": {"name": "mean", "samples": 10}, "regimes": ["replace"], "iterations": 4, "seeds": 3}
    run = model_collapse.run(raw, out=tmp_path / "run", workers=1)
    frame = run.table()
    assert len(frame) == 3 * 4 and list(frame["iteration"].unique()) == [1, 2, 3, 4]
    printed = cli("table", tmp_path / "run")
    assert frame.equals(pd.read_csv(io.StringIO(printed.stdout)))
    assert run.table_csv() == printed.stdout
    assert str(run.status()).endswith("1 chains: 1 done; 4 of 4 iterations committed")
    again = model_collapse.open(tmp_path / "run")
    assert again.table().equals(frame)
    assert model_collapse.resume(tmp_path / "run").table().equals(frame)  # complete: nothing to do
    assert run.report().name == "report.html" and all(p.exists() for p in run.plot())
    with pytest.raises(model_collapse.errors.RunDirectoryError, match="is not a directory"):
        model_collapse.open(tmp_path / "nowhere")


class RenamedConfig(DiscreteConfig):
    name: str = "renamed"


class Renamed(Discrete):
    """A setting defined where it is run (a notebook, a script)."""

    name = "renamed"
    Config = RenamedConfig


def test_the_python_api_runs_a_setting_class_given_in_place_of_its_name(tmp_path):
    raw = {"setting": {"name": Renamed, "samples": 8}, "regimes": ["replace"], "iterations": 3, "seeds": 2}
    frame = model_collapse.run(raw, out=tmp_path / "run", workers=1).table()
    assert set(frame["setting"]) == {f"{__name__}:Renamed"}
    baseline = model_collapse.run({**raw, "setting": {"name": "discrete", "samples": 8}}, out=tmp_path / "base")
    pd.testing.assert_frame_equal(frame.drop(columns="setting"), baseline.table().drop(columns="setting"))


BUGGY_CODE = '''
class BuggySetting(MeanSetting):
    """A plugin with a bug: its fit fails from the second iteration on."""

    def fit(self, parts, rng, scratch=None):
        if len(parts) > 1 or parts[0] is not self.real_train:
            raise ZeroDivisionError("the plugin divided by zero")
        return super().fit(parts, rng, scratch)
'''
BUGGY = PLUGIN + BUGGY_CODE


@pytest.fixture()
def buggy(plugin):
    (plugin / "mean_plugin" / "__init__.py").write_text(BUGGY)
    return "mean_plugin:BuggySetting"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_chain_stopped_by_a_bug_is_one_line_naming_the_chain_error_and_traceback(buggy, tmp_path, workers):
    """Wherever the chain ran (this process or a worker): one line with the chain, the error, the file
    that keeps the traceback, and the resume command with the --setting the run needs."""
    out = tmp_path / "run"
    result = cli("run", config(tmp_path, buggy, regimes=["replace"]), "--out", out, "-q", "-j", workers)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    (log,) = (out / "logs").iterdir()
    assert line == (
        f"error: chain base / replace failed: ZeroDivisionError: the plugin divided by zero (its traceback is in "
        f"{log}); finish it with `model-collapse resume {out} --allow-import {buggy}`"
    )
    text = log.read_text()
    assert text.startswith("Traceback") and 'raise ZeroDivisionError("the plugin divided by zero")' in text
    status = cli("status", out, "--setting", buggy)
    assert "failed" in status.stdout and "ZeroDivisionError: the plugin divided by zero" in status.stdout


def test_the_python_api_raises_a_chain_stopped_by_a_bug_as_chain_failed(buggy, tmp_path):
    from model_collapse.errors import ChainFailed

    raw = {"setting": {"name": buggy, "samples": 10}, "regimes": ["replace"], "iterations": 3, "seeds": 2}
    with pytest.raises(ChainFailed, match=r"^chain base / replace failed: ZeroDivisionError") as caught:
        model_collapse.run(raw, out=tmp_path / "run", workers=1)
    assert caught.value.log is not None and caught.value.log.parent == tmp_path / "run" / "logs"
    assert isinstance(caught.value.original, ZeroDivisionError)


THREADS_CODE = """
import torch
from threadpoolctl import threadpool_info


class ThreadsSetting(MeanSetting):
    '''A costly plugin that records the threads its evaluation computes with.'''

    capabilities = Capabilities()
    metrics = {**MeanSetting.metrics, "torch_threads": Metric("torch threads"), "blas_threads": Metric("BLAS threads")}

    def evaluate(self, model):
        blas = max(pool["num_threads"] for pool in threadpool_info())
        counts = {"torch_threads": torch.get_num_threads(), "blas_threads": blas}
        return {**super().evaluate(model), **{k: np.full(self.seed_count, float(v)) for k, v in counts.items()}}
"""


@pytest.mark.parametrize(
    "arguments,changes,chains_at_once",
    [
        (["-j", "1"], {}, 1),  # in this process: every core to the one chain at once
        (["-j", "2"], {"regimes": ["replace"], "sweep": {"samples": [10, 12]}}, 2),  # two workers: half the cores
        (["-j", "2", "--threads", "1"], {"threads": 2}, None),  # the command line's, over the config's
    ],
)
def test_every_chain_computes_within_its_thread_budget(plugin, tmp_path, arguments, changes, chains_at_once):
    """torch's intra-op pool as well as BLAS, in this process or a worker: the cores divided by the chains
    running at once, or what --threads or the config's threads say."""
    from model_collapse.threads import available_cores

    (plugin / "mean_plugin" / "__init__.py").write_text(PLUGIN + THREADS_CODE)
    path = config(tmp_path, "mean_plugin:ThreadsSetting", iterations=2, seeds=1, **changes)
    result = cli("run", path, "--out", tmp_path / "run", "-q", *arguments)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(cli("table", tmp_path / "run", "--setting", "mean_plugin:ThreadsSetting").stdout))
    expected = 1 if chains_at_once is None else max(1, available_cores() // chains_at_once)
    assert set(frame["torch_threads"]) == {expected} and set(frame["blas_threads"]) == {expected}, frame


PREVIEWS_CODE = """

class PreviewSetting(MeanSetting):
    '''A cheap plugin whose previews are texts: a few of its samples, written out.'''

    presentation = Presentation(preview_size=3)

    def preview(self, data):
        return np.array([f"x = {x:.3f}" for x in data["x"][0, : self.presentation.preview_size]])
"""


def test_a_cheap_settings_previews_are_kept_for_every_iteration(plugin, tmp_path):
    """Its chains commit iterations in groups: each iteration's preview goes with its group, and the
    report shows them (it showed an empty "(0)" entry per regime and iteration)."""
    from model_collapse.rundir import ChainStore

    (plugin / "mean_plugin" / "__init__.py").write_text(PLUGIN + PREVIEWS_CODE)
    name = "mean_plugin:PreviewSetting"
    result = cli("run", config(tmp_path, name), "--out", tmp_path / "run", "-q", "-j", "1")
    assert result.returncode == 0, result.stderr
    chain = tmp_path / "run" / "chains" / "base" / "replace"
    (commit,) = [path.name for path in chain.glob("iter_*")]
    assert commit == "iter_0001-0005"  # one group: five iterations within a second
    store = ChainStore(chain, {}, writer=False)
    previews = [store.preview(i) for i in range(1, 6)]
    assert all(p is not None and p.shape == (3,) and p[0].startswith("x = ") for p in previews)
    assert len({tuple(p) for p in previews}) == 5  # each iteration's own model
    assert store.preview(6) is None
    report = cli("report", tmp_path / "run", "--setting", name)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "run" / "report.html").read_text()
    summaries = [line for line in html.splitlines() if line.startswith("<summary>") and "config" not in line]
    assert summaries == [
        "<summary>real data (3)</summary>",
        *(f"<summary>{regime}, iteration {i} (3)</summary>" for regime in ("replace", "accumulate") for i in (1, 5)),
    ]


CONTRACT_CODE = """

class SevenValues(MeanSetting):
    def evaluate(self, model):
        return {"error": np.zeros(7)}


class NoError(MeanSetting):
    def evaluate(self, model):
        return {}


class ShortSamples(MeanSetting):
    def sample(self, model, size, rng, scratch=None):
        return super().sample(model, size - 1, rng, scratch)
"""


@pytest.mark.parametrize(
    "cls,message",
    [
        (
            "SevenValues",
            "error: setting 'mean': evaluate returned error of shape (7,) for 3 seeds, where one value per seed, "
            "shape (3,), is expected",
        ),
        ("NoError", "error: setting 'mean': evaluate left out error, which it declares (its metrics: error)"),
        ("ShortSamples", "error: setting 'mean': sample returned 9 samples per seed where 10 were asked"),
    ],
)
def test_what_a_setting_returns_is_checked_before_anything_is_committed(plugin, tmp_path, cls, message):
    """Committed, a wrong shape made table call the record corrupted, and --recompute-damaged computed the
    same again; now the run stops at once with one line, and check_setting names the same fault."""
    from model_collapse.testing import SettingCheckFailed, check_setting

    (plugin / "mean_plugin" / "__init__.py").write_text(PLUGIN + CONTRACT_CODE)
    name = f"mean_plugin:{cls}"
    result = cli("run", config(tmp_path, name, regimes=["replace"]), "--out", tmp_path / "run", "-q", "-j", "1")
    line = message.replace("error: ", "error: chain base / replace: ", 1)
    assert result.returncode == 2 and result.stderr == f"{line}\n", result.stderr
    assert not list((tmp_path / "run" / "chains").rglob("iter_*"))
    status = cli("status", tmp_path / "run", "--setting", name)
    assert "failed" in status.stdout and message.removeprefix("error: ") in status.stdout
    with pytest.raises(SettingCheckFailed, match=re.escape(message.removeprefix("error: "))):
        check_setting(SETTINGS.allow(name) and SETTINGS[name], {"samples": 10}, seeds=(0, 1, 2))


def test_a_directory_named_like_an_installed_plugin_is_never_imported_in_its_place(tmp_path):
    """The example plugin installed editable (as docs/plugins.md shows): a run directory named after its
    module, in the directory the command runs from, was imported as the plugin (its __init__.py run)."""
    gmm = Path(__file__).resolve().parents[1] / "examples" / "gaussian-mixture" / "gmm.yaml"
    runs = tmp_path / "runs"
    result = cli("run", gmm, "--out", runs / "collapse_gmm", "-q", "iterations=2", "seeds=1", "regimes=[replace]")
    assert result.returncode == 0, result.stderr
    (runs / "collapse_gmm" / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    for command in (["status", "collapse_gmm"], ["resume", "collapse_gmm"]):
        result = cli(*command, cwd=runs)  # python -m: the working directory is first on sys.path
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "ran").exists()


def test_a_module_inside_a_run_directory_is_refused_naming_its_file(plugin, tmp_path):
    """An import path the user writes may name a module of the working directory, but never one that lies
    inside a run directory; an import that fails names the file it imported."""
    result = cli("run", config(tmp_path, "mean"), "--out", tmp_path / "run", "-q")
    assert result.returncode == 0, result.stderr
    (tmp_path / "run" / "planted.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    result = cli("run", config(tmp_path, "planted:Setting"), "--out", tmp_path / "other", cwd=tmp_path / "run")
    assert result.returncode == 2 and not (tmp_path / "ran").exists()
    assert result.stderr == (
        f"error: setting 'planted:Setting': planted would be imported from {tmp_path / 'run' / 'planted.py'}, "
        f"inside the run directory {tmp_path / 'run'}: a run directory never holds code that model-collapse runs "
        "(run from another directory, or install the package)\n"
    )
    (tmp_path / "broken.py").write_text("raise RuntimeError('no GPU here')\n")
    result = cli("run", config(tmp_path, "broken:Setting"), "--out", tmp_path / "other", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == (
        f"error: setting 'broken:Setting': importing broken ({tmp_path / 'broken.py'}) failed: "
        "RuntimeError: no GPU here\n"
    )


def test_a_plugin_whose_construction_raises_is_one_line(plugin, tmp_path):
    (plugin / "mean_plugin" / "__init__.py").write_text(
        PLUGIN + "\n\nclass Unready(MeanSetting):\n    def __init__(self, config, seeds):\n"
        "        raise FileNotFoundError('the data are not mounted')\n"
    )
    result = cli("run", config(tmp_path, "mean_plugin:Unready", regimes=["replace"]), "--out", tmp_path / "run", "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "error: chain base / replace failed: FileNotFoundError: the data are not mounted (its traceback is in "
    )
