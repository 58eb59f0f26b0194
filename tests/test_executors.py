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
    result = cli("run", ROOT / "configs" / "quickstart.yaml", "executor.partitions=gpu", "--out", tmp_path / "run")
    assert result.stderr.strip() == "error: executor.partitions: unknown key (no executor takes it)"
    assert result.returncode == 2 and not (tmp_path / "run").exists()


# An executor an installed package registers, owning its options: the local one, saying hello first.
GREETING_EXECUTOR = """
import sys

from pydantic import Field

from model_collapse.executors.local import LocalExecutor, LocalOptions


class GreetingOptions(LocalOptions):
    greeting: str = Field("hello", description="what it says before the chains run")


class GreetingExecutor(LocalExecutor):
    Options = GreetingOptions

    def run(self, work, progress):
        print(f"{self.options.greeting}: {len(work.todo)} chains", file=sys.stderr)
        super().run(work, progress)
"""


def test_an_installed_executor_owns_its_options_and_one_section_serves_every_executor(tmp_path):
    site = tmp_path / "site"
    (site / "greeting_executor-1.0.dist-info").mkdir(parents=True)
    (site / "greeting_executor.py").write_text(GREETING_EXECUTOR)
    info = site / "greeting_executor-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: greeting-executor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[model_collapse.executors]\ngreeting = greeting_executor:GreetingExecutor\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    # a section for a laptop and a cluster: Ray's fraction of a CPU and Slurm's options ride along
    raw["executor"] = {"name": "greeting", "greeting": "hi", "cpus_per_chain": 0.5, "partition": "gpu"}
    config.write_text(yaml.safe_dump(raw))
    greeted = cli("run", config, "--out", tmp_path / "greeted", "-q", "iterations=3", env=env)
    assert greeted.returncode == 0, greeted.stderr
    assert greeted.stderr.startswith("hi: 3 chains\n"), greeted.stderr
    local = cli("run", config, "--out", tmp_path / "local", "-q", "iterations=3", "--executor", "local", env=env)
    assert local.returncode == 0 and "hi:" not in local.stderr, local.stderr
    assert cli("table", tmp_path / "greeted").stdout == cli("table", tmp_path / "local").stdout
    slurm = cli("run", config, "--out", tmp_path / "slurm", "iterations=3", "--executor", "slurm", env=env)
    assert slurm.returncode == 2 and not (tmp_path / "slurm").exists()
    assert "executor: cpus_per_chain: Slurm reserves whole CPUs and GPUs, not 0.5" in slurm.stderr


@pytest.mark.slow
def test_an_error_in_a_chain_comes_back_from_its_ray_task_in_one_line(tmp_path):
    run = tmp_path / "run"
    failed = cli("run", failing_at_iteration_2(tmp_path), "--out", run, "-q", "--executor", "ray", timeout=300)
    assert failed.returncode != 0
    message = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and FAILING_AT_ITERATION_2 in message[0], failed.stderr
    assert "Traceback" not in failed.stderr
    assert FAILING_AT_ITERATION_2 in cli("status", run).stdout
