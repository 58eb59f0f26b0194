"""The `model-collapse` command: run, table, plot, resume, theory, and what it does with bad input."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import helpers
from helpers import completed, invoke
from model_collapse.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


BASE = {
    "setting": {"name": "linear-regression", "dim": 3, "noise_variance": 1.0},
    "sweep": {"samples": [10, 20]},
    "regimes": ["replace", "accumulate"],
    "iterations": 6,
    "seeds": 50,
    "workers": 1,
}


def write_config(path, **changes):
    # a test that gives its own setting sweeps only what it says
    base = {key: value for key, value in BASE.items() if key != "sweep" or "setting" not in changes}
    return helpers.write_config(path, base, **changes)


def read_table(directory):
    result = invoke("table", directory)
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def test_run_table_plot(tmp_path):
    config = write_config(tmp_path / "lr.yaml")
    result = invoke("run", config, "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    frame = read_table(tmp_path / "run")
    assert len(frame) == 2 * 2 * 50 * 6
    for column in [
        "setting",
        "regime",
        "seed",
        "iteration",
        "train_size",
        "real_fraction",
        "test_error",
        "samples",
        "dim",
    ]:
        assert column in frame.columns
    accumulate = frame[(frame.regime == "accumulate") & (frame.samples == 10)]
    assert accumulate.groupby("iteration").train_size.first().tolist() == [10, 20, 30, 40, 50, 60]
    np.testing.assert_allclose(accumulate.groupby("iteration").real_fraction.mean(), 1 / np.arange(1, 7))
    assert sorted(frame.seed.unique()) == list(range(50))
    # replace grows past accumulate
    last = frame[frame.iteration == 6].groupby(["samples", "regime"]).test_error.mean()
    assert (last.xs("replace", level="regime") > 2 * last.xs("accumulate", level="regime")).all()

    result = invoke("plot", tmp_path / "run")
    assert result.exit_code == 0, result.output
    figures = {p.name for p in (tmp_path / "run" / "figures").iterdir()}
    assert {"test_error_by_regime.png", "test_error_by_regime.svg", "test_error.png", "real_fraction.png"} <= figures
    assert (tmp_path / "run" / "figures" / "test_error_by_regime.png").read_bytes()[:4] == b"\x89PNG"


def test_overrides_and_parallel_sweep(tmp_path):
    config = write_config(tmp_path / "g.yaml", setting={"name": "gaussian", "dim": 1, "samples": 10})
    sweep = ["setting.samples=[10,30]", "setting.dim=[1,2]", "regimes=[replace,mix:0.5]", "iterations=3"]
    result = invoke("run", config, *sweep, "--out", tmp_path / "run", "--workers", "2", "-q")
    assert result.exit_code == 0, result.output
    frame = read_table(tmp_path / "run")
    assert set(frame.regime) == {"replace", "mix:0.5"}
    assert set(zip(frame.samples, frame.dim)) == {(10, 1), (10, 2), (30, 1), (30, 2)}
    assert frame.iteration.max() == 3
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["sweep"] == {"samples": [10, 30], "dim": [1, 2]} and resolved["regimes"] == ["replace", "mix:0.5"]
    assert resolved["setting"]["samples"] == 10  # the first sweep point's value
    # the parallel run gives the numbers of a sequential one
    result = invoke("run", config, *sweep, "--out", tmp_path / "sequential", "--workers", "1", "-q")
    assert result.exit_code == 0
    pd.testing.assert_frame_equal(frame, read_table(tmp_path / "sequential"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["setting.samples=0"], "setting.samples"),
        (["setting.samples=[20,0]"], "greater than 0"),
        (["setting.dim=-3"], "setting.dim"),
        (["setting.dim=ten"], "setting.dim"),
        (["setting.colour=red"], "setting.colour: unknown key"),
        (["colour=red"], "colour: unknown key"),
        (["iterations=0"], "iterations"),
        (["seeds=-1"], "seeds"),
        (["regimes=[replace,resample]"], "regimes[1]: unknown regime 'resample'"),
        (["regimes=[]"], "regimes"),
        (["regimes=[replace,replace]"], "listed twice"),
        (["setting.name=glm"], "unknown setting 'glm'"),
        (["setting.samples=[]"], "empty list"),
        (["iterations"], "dotted.key=value"),
        (["setting.dim.x=3"], "setting.dim is not a mapping"),
        (["checkpoints=some"], "checkpoints"),
        (["sweep.colour=[1,2]"], "sweep.colour: not a field of the linear-regression setting"),
        (["sweep.dim=3"], "sweep.dim: expected a list of values"),
        (["sweep.name=[gaussian]"], "sweep.name: a run has one setting"),
    ],
)
def test_bad_configs_fail_with_one_line_exit_2_and_write_nothing(tmp_path, overrides, message):
    config = write_config(tmp_path / "lr.yaml")
    result = invoke("run", config, *overrides, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "run").exists()


def test_a_sweep_is_explicit_and_a_command_line_list_sweeps_a_one_value_field(tmp_path):
    listed = write_config(tmp_path / "listed.yaml", setting={"name": "linear-regression", "samples": [10, 20]})
    result = invoke("run", listed, "--out", tmp_path / "run")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert "setting.samples: a list of values is a sweep; write it as sweep: {samples: [10, 20]}" in result.output
    # a single value on the command line ends the file's sweep of that field; a list starts one
    result = invoke(
        "run",
        write_config(tmp_path / "lr.yaml"),
        "setting.samples=12",
        "setting.dim=[2,3]",
        "--out",
        tmp_path / "run",
        "-q",
    )
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["setting"]["samples"] == 12 and resolved["sweep"] == {"dim": [2, 3]}
    assert sorted(p.name for p in (tmp_path / "run" / "chains").iterdir()) == ["dim-2", "dim-3"]


def test_a_run_of_the_earlier_format_is_read_and_resumed_with_its_numbers(tmp_path):
    """Format 1 wrote sweeps as lists in ``setting``; such a run is read as it was, and resumed."""
    config = write_config(tmp_path / "lr.yaml", iterations=4)
    assert invoke("run", config, "--out", tmp_path / "whole", "-q").exit_code == 0
    assert invoke("run", config, "iterations=2", "--out", tmp_path / "old", "-q").exit_code == 0
    old = tmp_path / "old"
    resolved = yaml.safe_load((old / "config.yaml").read_text())
    resolved["setting"]["samples"] = resolved.pop("sweep")["samples"]
    resolved["iterations"] = 4
    (old / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    marker = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**marker, "format_version": 1}))
    assert invoke("resume", old, "-q").exit_code == 0
    assert invoke("table", old).stdout == invoke("table", tmp_path / "whole").stdout
    # a sectioned setting's format-1 run stored its flat layout in every chain: refused, with what to do
    resolved["setting"] = {"name": "vae", "latent_dim": 2}
    (old / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    result = invoke("table", old)
    assert result.exit_code == 2 and "read it with the model-collapse that wrote it" in result.output


def test_bad_config_files(tmp_path):
    (tmp_path / "broken.yaml").write_text("setting: [unclosed")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for path, message in [
        (tmp_path / "missing.yaml", "not found"),
        (tmp_path / "broken.yaml", "not valid YAML"),
        (tmp_path / "list.yaml", "mapping"),
    ]:
        result = invoke("run", path, "--out", tmp_path / "run")
        assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()


def test_run_refuses_an_existing_run_and_resume_refuses_foreign_directories(tmp_path):
    config = write_config(tmp_path / "lr.yaml", iterations=2, seeds=3)
    assert invoke("run", config, "--out", tmp_path / "run", "-q").exit_code == 0
    before = read_table(tmp_path / "run")
    result = invoke("run", config, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "already holds a run" in result.output
    pd.testing.assert_frame_equal(before, read_table(tmp_path / "run"))

    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    for command in ["resume", "table", "plot"]:
        result = invoke(command, tmp_path / "foreign")
        assert result.exit_code == 2 and "not a model-collapse run directory" in result.output
    (tmp_path / "foreign" / "run.json").write_text('{"format": "something-else"}')
    assert "not a model-collapse run marker" in invoke("resume", tmp_path / "foreign").output

    metrics = next((tmp_path / "run").glob("chains/*/replace/iter_*/metrics.npz"))
    metrics.write_text("{truncated")
    result = invoke("table", tmp_path / "run")
    assert result.exit_code == 2 and "corrupted file" in result.output and "metrics.npz" in result.output


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_numbers_of_an_uninterrupted_run(tmp_path):
    config = write_config(
        tmp_path / "slow.yaml",
        setting={"name": "gaussian", "dim": 20, "samples": 100},
        regimes=["accumulate", "accumulate-subsample"],
        iterations=300,
        seeds=200,
        workers=1,
    )
    command = [sys.executable, "-m", "model_collapse", "run", str(config), "--out", str(tmp_path / "killed"), "-q"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed" / "chains" / "base" / "accumulate" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and completed(progress) < 2:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert progress.exists(), "the run did not get going"
    interrupted = read_table(tmp_path / "killed")
    assert 0 < len(interrupted) < 2 * 300 * 200, "kill the run before it finishes"

    result = invoke("resume", tmp_path / "killed", "-q")
    assert result.exit_code == 0, result.output
    assert invoke("run", config, "--out", tmp_path / "straight", "-q").exit_code == 0
    pd.testing.assert_frame_equal(read_table(tmp_path / "killed"), read_table(tmp_path / "straight"))


def test_theory_command(tmp_path):
    result = invoke("theory", "linear-regression", "setting.dim=10", "setting.samples=100", "iterations=20")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    replace = frame[(frame.regime == "replace") & (frame.kind == "expected")].set_index("iteration").value
    assert len(replace) == 20
    np.testing.assert_allclose(replace.loc[20], 20 * 10 / 89)
    bound = frame[(frame.regime == "accumulate") & (frame.kind == "bound")].value
    np.testing.assert_allclose(bound, 10 / 89 * np.pi**2 / 6)
    assert set(frame.regime) == {"replace", "accumulate", "replace-grown"}

    result = invoke("theory", "gaussian", "setting.samples=[10,100]", "iterations=5")
    frame = pd.read_csv(io.StringIO(result.stdout))
    trace = frame[(frame.metric == "trace_ratio") & (frame.samples == 10)].set_index("iteration").value
    np.testing.assert_allclose(trace, 0.9 ** np.arange(1, 6))

    result = invoke("theory", "kde")
    assert result.exit_code == 2 and "no closed form" in result.output
    result = invoke("theory", "linear-regression", "setting.samples=10")  # T = d: infinite expected error
    assert result.exit_code == 2 and "no closed form" in result.output
    result = invoke("theory", "linear-regression", "setting.samples=0")
    assert result.exit_code == 2 and "setting.samples" in result.output


def test_list_names_every_setting_and_regime(monkeypatch):
    from model_collapse import settings

    # a setting whose optional dependency is missing is listed with the install hint, not a crash
    monkeypatch.setitem(settings.registry._BUILT_IN, "missing-extra", ("no_such_module", "Nothing", "lm", None))
    result = runner.invoke(app, ["list"], env={"COLUMNS": "400"})  # rich wraps cells in a narrow terminal
    assert result.exit_code == 0
    # this checkout is installed editable (the README's command): the hint installs the extra from it
    hint = f"pip install -e '{ROOT}[lm]'"
    assert settings.install_hint("lm") == hint
    assert "missing-extra" in result.output and hint in result.output.replace("\n", "")
    missing = invoke("theory", "missing-extra")  # and its error line keeps the brackets
    assert missing.exit_code == 2 and hint in missing.output
    for name in [
        "linear-regression",
        "gaussian",
        "kde",
        "vae",
        "language-model",
        "replace",
        "accumulate-subsample",
        "keep-real-fraction",
        "fresh-real",
        "mix",
    ]:
        assert name in result.output


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(config):
    from model_collapse.config import load_experiment

    experiment = load_experiment(config)
    assert experiment.chains()


@pytest.mark.slow
def test_ctrl_c_stops_with_a_resume_hint_and_the_run_finishes_later(tmp_path):
    config = write_config(
        tmp_path / "slow.yaml",
        setting={"name": "gaussian", "dim": 20, "samples": 100},
        regimes=["accumulate"],
        iterations=600,
        seeds=200,
        workers=1,
    )
    command = [sys.executable, "-m", "model_collapse", "run", str(config), "--out", str(tmp_path / "run"), "-q"]
    # A shell's background job inherits SIGINT ignored (so may this test); a terminal's Ctrl-C does not.
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "MODEL_COLLAPSE_COMMIT_INTERVAL_S": "1e9"},
    )
    progress = tmp_path / "run" / "chains" / "base" / "accumulate" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and not progress.parent.is_dir():
        time.sleep(0.02)
    time.sleep(1.0)  # some iterations computed, none committed: no commit is due before the end
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert completed(progress) >= 1  # Ctrl-C committed what the chain had computed
    assert "interrupted" in stderr and f"model-collapse resume {tmp_path / 'run'}" in stderr.replace("\n", "")
    assert completed(progress) < 600
    assert invoke("resume", tmp_path / "run", "-q").exit_code == 0
    assert completed(progress) == 600


def test_help_shows_its_examples_verbatim():
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "(lists as [a,b])" in result.output


def test_the_closing_line_is_not_wrapped_when_written_to_a_pipe(tmp_path):
    out = tmp_path / ("a-rather-long-directory-name-" * 3) / "quickstart"
    config = write_config(tmp_path / "lr.yaml", iterations=2, seeds=2)
    result = subprocess.run(
        [sys.executable, "-m", "model_collapse", "run", str(config), "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    assert f"done: {out}  (next: model-collapse report {out}; model-collapse table {out})\n" in result.stderr


def test_the_config_reference_page_is_what_list_markdown_prints():
    from model_collapse.reference import BEGIN, END, curation_markdown, reference_markdown, settings_markdown
    from model_collapse.settings import SETTINGS

    page = (Path(__file__).resolve().parents[1] / "docs" / "configs.md").read_text(encoding="utf-8")
    copied = page[page.index(BEGIN) + len(BEGIN) : page.index(END)].strip()
    built_in = [name for name in SETTINGS if SETTINGS.origin(name).kind == "built in"]
    assert copied == reference_markdown(built_in).strip(), "run `model-collapse list --markdown` and paste it"
    printed = invoke("list", "--markdown")
    assert printed.exit_code == 0 and settings_markdown(built_in).strip() in printed.stdout
    assert printed.stdout.endswith(curation_markdown())  # after every setting, installed ones included


def test_a_sweep_too_large_for_one_run_is_refused_at_once_and_repeats_are_still_found(tmp_path):
    """A million sweep points (two axes of 1,000) are counted, not built: one line, at once, nothing
    written; the check for repeated values stays exact (1 and 1.0 are one value) on a long axis."""
    config = write_config(tmp_path / "lr.yaml")
    thousand = "[" + ",".join(str(i) for i in range(1, 1001)) + "]"
    started = time.monotonic()
    result = invoke("run", config, f"sweep.samples={thousand}", f"sweep.dim={thousand}", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "1,000,000 sweep points (samples: 1,000 x dim: 1,000)" in result.output
    assert time.monotonic() - started < 10 and not (tmp_path / "run").exists()
    repeated = "[" + ",".join(str(i) for i in range(1, 5001)) + ",2500.0]"
    result = invoke("run", config, f"sweep.samples={repeated}", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "sweep.samples: the value 2500.0 is listed twice" in result.output


def test_list_finds_a_settings_missing_extra_from_the_packages_own_extras():
    """``list`` says which extra a setting lacks without importing it, from the extras pyproject.toml
    declares (as the installed metadata lists them); here every extra is installed."""
    tomllib = pytest.importorskip("tomllib")
    from model_collapse.settings import SETTINGS, registry

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    for name, (_, _, extra, _) in registry._BUILT_IN.items():
        assert SETTINGS.unavailable(name) is None
        if extra is not None:
            declared = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in extras["optional-dependencies"][extra]]
            assert registry._extra_distributions(extra) == declared


def test_list_never_cuts_names_piped_or_in_80_columns():
    """Piped: plain lines by default; a terminal of 80 columns: a table whose names fold, never cut."""
    from model_collapse.settings import SETTINGS

    names = list(SETTINGS)
    assert "gaussian-mixture" in names  # the example plugin, installed by the test command
    piped = helpers.cli("list")
    assert piped.returncode == 0, piped.stderr
    assert "…" not in piped.stdout and "┃" not in piped.stdout
    starts = [line.split("  (")[0] for line in piped.stdout.splitlines() if line and not line.startswith(" ")]
    assert set(names) <= set(starts)
    assert "gaussian-mixture  (collapse-gmm 0.1.0 (entry point collapse_gmm:GaussianMixtureSetting))" in piped.stdout
    assert "keep-real-fraction (fraction=0.1): T samples" in piped.stdout
    table = invoke("list", "--format", "table", env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "…" not in table.output
    cells = {line.split("│")[1].strip() for line in table.output.splitlines() if line.startswith("│")}
    assert set(names) <= cells
    listed = json.loads(helpers.cli("list", "--format", "json").stdout)
    assert [entry["setting"] for entry in listed["settings"]] == names
    assert listed["settings"][0]["fields"] == {"dim": 10, "samples": 100, "noise_variance": 1.0}
    for bad in ("xml", ""):
        wrong = helpers.cli("list", "--format", bad)
        assert wrong.returncode == 2 and wrong.stderr == f"error: --format {bad!r}: choose one of table, text, json\n"
