"""Executors give the local executor's table: a local Ray (one task per chain), also after a Ray worker
is killed mid-chain and its task rerun."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import FAILING_AT_ITERATION_2, SLOW_TWO_CHAINS, completed, failing_at_iteration_2

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("ray", reason="the ray executor's tests need Ray (pip install -e '.[ray]')")


def cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "model_collapse", *map(str, args)], capture_output=True, text=True, **kwargs
    )


def ray_chain_workers() -> list[int]:
    """Ray worker processes running a chain: Ray titles them after the task (ray::_chain_task)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ray::_chain_task" in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.mark.slow
def test_ray_gives_the_local_executors_table(tmp_path):
    overrides = ["seeds=20", "iterations=6", "sweep.samples=[50,100]"]
    config = ROOT / "configs" / "quickstart.yaml"
    local = cli("run", config, *overrides, "--out", tmp_path / "local", "-q")
    with_ray = cli("run", config, *overrides, "--out", tmp_path / "ray", "-q", "--executor", "ray", timeout=300)
    assert local.returncode == 0 and with_ray.returncode == 0, with_ray.stderr
    assert cli("table", tmp_path / "ray").stdout == cli("table", tmp_path / "local").stdout
    status = cli("status", tmp_path / "ray", "--summary").stdout
    assert status.strip() == "6 chains: 6 done; 36 of 36 iterations committed"


@pytest.mark.slow
def test_a_killed_ray_worker_is_rerun_and_the_chain_resumes_to_the_same_table(tmp_path):
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump(SLOW_TWO_CHAINS))
    assert cli("run", config, "--out", tmp_path / "straight", "-q").returncode == 0
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "model_collapse", "run", str(config), "--out", str(run), "-q", "--executor", "ray"],
        stderr=subprocess.PIPE,
        text=True,
    )
    progress = run / "chains" / "base" / "replace" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (completed(progress) >= 2 and ray_chain_workers()):
        time.sleep(0.05)
    workers = ray_chain_workers()
    assert workers and completed(progress) < SLOW_TWO_CHAINS["iterations"], "the chain ended before it was killed"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert cli("table", run).stdout == cli("table", tmp_path / "straight").stdout


def test_bad_executor_choices_get_one_line_before_anything_is_written(tmp_path):
    result = cli("run", ROOT / "configs" / "quickstart.yaml", "--out", tmp_path / "run", "--executor", "slurmm")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --executor 'slurmm': choose one of local, ray, slurm"
    assert not (tmp_path / "run").exists()
    result = cli("run", ROOT / "configs" / "quickstart.yaml", "executor.gpus_per_chain=-1", "--out", tmp_path / "run")
    assert result.returncode == 2 and "executor.gpus_per_chain" in result.stderr


@pytest.mark.slow
def test_an_error_in_a_chain_comes_back_from_its_ray_task_in_one_line(tmp_path):
    run = tmp_path / "run"
    failed = cli("run", failing_at_iteration_2(tmp_path), "--out", run, "-q", "--executor", "ray", timeout=300)
    assert failed.returncode != 0
    message = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and FAILING_AT_ITERATION_2 in message[0], failed.stderr
    assert "Traceback" not in failed.stderr
    assert FAILING_AT_ITERATION_2 in cli("status", run).stdout
