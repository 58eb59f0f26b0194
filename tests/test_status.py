"""`model-collapse status`: every chain's state read from the run directory; and runs started before a
setting gained a field or a metric stay readable."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from helpers import invoke
from model_collapse.cli import app
from model_collapse.config import load_experiment
from model_collapse.outcome import run_spec
from model_collapse.rundir import ChainStore, create_run, lock_run

ROOT = Path(__file__).resolve().parents[1]


def stopped_run(tmp_path: Path) -> Path:
    """A run whose first chain stopped after 2 of 4 iterations and whose others never started."""
    experiment = load_experiment(ROOT / "configs" / "quickstart.yaml", ["seeds=3", "iterations=4"])
    create_run(tmp_path / "run", experiment.resolved()).release()
    run_spec(tmp_path / "run", experiment.chains()[0], 2, "last")
    return tmp_path / "run"


def test_status_of_a_stopped_run_then_of_one_in_progress_then_done(tmp_path):
    run = stopped_run(tmp_path)
    result = invoke("status", run)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "chain                        state        iterations  reason",
        "base / replace               stopped      2/4",
        "base / accumulate            not started  0/4",
        "base / accumulate-subsample  not started  0/4",
        "3 chains: 1 stopped, 2 not started; 2 of 12 iterations committed",
    ]
    lock = lock_run(run)  # what a `resume` going on holds
    try:
        lines = invoke("status", run, "--summary").output.splitlines()
        assert lines[0].startswith("3 chains: 1 running, 2 waiting; 2 of 12 iterations committed; in use by process")
    finally:
        lock.release()
    assert invoke("resume", run, "-q").exit_code == 0
    assert invoke("status", run, "--summary").output == "3 chains: 3 done; 12 of 12 iterations committed\n"


def test_a_chain_that_fails_says_why_in_status_until_it_runs_again(tmp_path):
    run = stopped_run(tmp_path)
    experiment = load_experiment(run / "config.yaml")
    spec = experiment.chains()[0]
    ChainStore.of(run, spec).record_failure("chain base / replace: no space left on device")
    lines = invoke("status", run).output.splitlines()
    assert (
        lines[1]
        == "base / replace               failed       2/4         chain base / replace: no space left on device"
    )
    assert "1 failed" in lines[-1]
    assert invoke("resume", run, "-q").exit_code == 0  # the chain runs again: its old failure is history
    assert not (ChainStore.of(run, spec).directory / "failure.json").exists()


def test_a_run_from_before_a_setting_gained_a_field_and_a_metric_stays_readable(tmp_path):
    """A chain.json without a field added since (at its default) is the same chain; records without a
    metric added since read as NaN there. A field at another value is another chain: refused."""
    result = invoke(
        "run", ROOT / "configs" / "quickstart.yaml", "seeds=3", "iterations=2", "--out", tmp_path / "run", "-q"
    )
    assert result.exit_code == 0
    chain = tmp_path / "run" / "chains" / "base" / "replace"
    description = json.loads((chain / "chain.json").read_text())
    del description["setting"]["noise_variance"]  # as if the field were added after the run (default 1.0)
    (chain / "chain.json").write_text(json.dumps(description))
    records = next(chain.glob("iter_*/metrics.npz"))
    arrays = dict(np.load(records))
    arrays["metric.older_name"] = arrays.pop("metric.test_error")  # as if test_error were added since
    np.savez(records, **arrays)
    (records.parent / "metrics.npz").rename(records)
    table = invoke("table", tmp_path / "run")
    assert table.exit_code == 2 and "it records the metrics older_name" in table.output  # a foreign metric: refused
    del arrays["metric.older_name"]
    np.savez(records, **arrays)
    table = invoke("table", tmp_path / "run")
    assert table.exit_code == 0, table.output
    replace_rows = [row for row in table.output.splitlines() if ",replace," in row]
    assert replace_rows and all(row.endswith(",nan") for row in replace_rows)

    description["setting"]["dim"] = 11  # a field at another value than the run's: not this chain
    (chain / "chain.json").write_text(json.dumps(description))
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 2 and "describes another chain than the run's config.yaml" in result.output


def test_status_reads_the_records_and_names_a_damaged_one(tmp_path):
    run = stopped_run(tmp_path)
    commit = sorted((run / "chains" / "base" / "replace").glob("iter_*"))[-1]
    (commit / "metrics.npz").write_bytes(b"not an archive")
    result = invoke("status", run)
    assert result.exit_code == 2, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("base / replace "))
    assert "damaged" in line and f"corrupted file {commit / 'metrics.npz'}" in line
    assert "1 damaged" in result.output.splitlines()[-1]


def test_table_names_the_chains_it_has_no_rows_for_and_complete_refuses_them(tmp_path):
    run = stopped_run(tmp_path)
    result = CliRunner().invoke(app, ["table", str(run)])
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1 + 3 * 2  # header, 3 seeds x 2 iterations of the one chain
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: chain base / replace: rows of 2 of 4 iterations (stopped)",
        "note: chain base / accumulate: no rows (not started, or its directory is missing)",
        "note: chain base / accumulate-subsample: no rows (not started, or its directory is missing)",
    ]
    refused = CliRunner().invoke(app, ["table", str(run), "--complete"])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert f"{run} is incomplete: 3 of 3 chains have not finished (model-collapse status {run})" in refused.stderr


def test_resume_recompute_damaged_sets_the_damaged_commit_and_later_ones_aside_and_redoes_them(tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    command = [sys.executable, "-m", "model_collapse", "run", ROOT / "configs" / "quickstart.yaml", "--out", run]
    every_iteration = {**os.environ, "MODEL_COLLAPSE_COMMIT_INTERVAL_S": "0"}  # a commit per iteration
    subprocess.run([*command, "-q", "seeds=3", "iterations=6"], env=every_iteration, check=True, timeout=120)
    table = invoke("table", run).output
    chain = run / "chains" / "base" / "replace"
    damaged = chain / "iter_0004" / "metrics.npz"
    damaged.write_bytes(b"not an archive")
    # the refusal names the way forward
    refused = invoke("resume", run, "-q")
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert f"corrupted file {damaged}" in refused.output and "--recompute-damaged" in refused.output
    result = invoke("resume", run, "-q", "--recompute-damaged")
    assert result.exit_code == 0, result.output
    (aside,) = (run / "damaged").iterdir()
    moved = aside / "chains" / "base" / "replace"
    assert sorted(p.name for p in moved.iterdir()) == ["iter_0004", "iter_0005", "iter_0006"]
    assert (moved / "iter_0004" / "metrics.npz").read_bytes() == b"not an archive"  # nothing is deleted
    assert "base / replace: iterations 4-6 moved to" in result.output
    assert invoke("table", run).output == table  # computed again, to the same numbers
    assert invoke("status", run).exit_code == 0
    # a healthy run has nothing to set aside
    again = invoke("resume", run, "-q", "--recompute-damaged")
    assert again.exit_code == 0 and "moved" not in again.output and len(list((run / "damaged").iterdir())) == 1


def test_a_costly_chain_recomputes_from_the_last_commit_that_still_holds_its_model(tmp_path):
    from helpers import tiny_vae, write_config

    config = write_config(
        tmp_path / "vae.yaml", {"setting": tiny_vae(), "regimes": ["replace"], "iterations": 4, "seeds": 1}
    )
    run = tmp_path / "run"
    assert invoke("run", config, "--out", run, "-q", "--workers", "1").exit_code == 0
    table = invoke("table", run).output
    chain = run / "chains" / "base" / "replace" / "seed-0"
    assert [p.name for p in chain.glob("iter_*/model")] == ["model"]  # the last iteration's, only
    (chain / "iter_0003" / "metrics.npz").write_bytes(b"damaged")
    result = invoke("resume", run, "-q", "--recompute-damaged")
    assert result.exit_code == 0, result.output
    # iteration 2, before the damage, kept no model to go on from: the chain starts again
    assert "iterations 1-4 moved to" in result.output
    assert invoke("table", run).output == table


def test_a_damaged_model_or_kept_batch_of_a_stopped_costly_chain_has_the_same_way_forward(tmp_path):
    from helpers import tiny_vae, write_config

    config = write_config(
        tmp_path / "vae.yaml", {"setting": tiny_vae(), "regimes": ["accumulate"], "iterations": 3, "seeds": 1}
    )
    assert invoke("run", config, "--out", tmp_path / "whole", "-q", "--workers", "1").exit_code == 0
    table = invoke("table", tmp_path / "whole").output
    experiment = load_experiment(config, [])
    for damaged_file in ("model", "synthetic"):
        run = tmp_path / damaged_file
        create_run(run, experiment.resolved()).release()
        run_spec(run, experiment.chains()[0], 2, "last")  # stopped after 2 of 3 iterations
        chain = run / "chains" / "base" / "accumulate" / "seed-0"
        for path in (chain / "iter_0002" / damaged_file).iterdir():
            path.write_bytes(b"damaged")
        refused = invoke("resume", run, "-q")
        assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output
        assert str(chain / "iter_0002" / damaged_file) in refused.output and "--recompute-damaged" in refused.output
        result = invoke("resume", run, "-q", "--recompute-damaged")
        assert result.exit_code == 0, result.output
        # iteration 1 kept no model to go on from once iteration 2's is set aside: the chain starts again
        assert "base / accumulate / seed 0: iterations 1-2 moved to" in result.output
        assert invoke("table", run).output == table, damaged_file


def test_a_damaged_chain_counts_the_iterations_it_holds_whole(tmp_path):
    """A run whose last commit is missing said `damaged 30/30` and summed every iteration as committed."""
    path = tmp_path / "config.yaml"
    raw = {"setting": {"name": "gaussian", "dim": 1, "samples": 10}, "regimes": ["replace", "accumulate"]}
    path.write_text(yaml.safe_dump({**raw, "iterations": 30, "seeds": 2}))
    assert invoke("run", path, "--out", tmp_path / "run", "-q").exit_code == 0
    chain = tmp_path / "run" / "chains" / "base" / "replace"
    last = sorted(chain.glob("iter_*"))[-1]
    shutil.rmtree(last)
    kept = int(last.name.removeprefix("iter_").split("-")[0]) - 1
    result = invoke("status", tmp_path / "run")
    assert result.exit_code == 2, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("base / replace "))
    assert re.match(rf"base / replace\s+damaged\s+{kept}/30\s", line), line
    assert result.output.splitlines()[-1] == f"2 chains: 1 done, 1 damaged; {30 + kept} of 60 iterations committed"
