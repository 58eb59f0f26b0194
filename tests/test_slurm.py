"""The slurm executor against a real single-node Slurm (``slurm_cluster.py``): one job array per run, the
local executor's table, a job signalled at its time limit requeued and resumed, a cancelled job and a
dead driver resumed to the same table, and a data-parallel chain as one job of two tasks."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import FAILING_AT_ITERATION_2, SLOW_TWO_CHAINS, completed, failing_at_iteration_2, tiny_language_model
from slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = pytest.mark.slow  # a real single-node cluster, started per module

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("submitit", reason="the slurm executor's tests need submitit (pip install -e '.[slurm]')")


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> tuple[Path, str]:
    """SLOW_TWO_CHAINS's config, and its table from an uninterrupted local run."""
    directory = tmp_path_factory.mktemp("slow")
    config = directory / "slow.yaml"
    config.write_text(yaml.safe_dump(SLOW_TWO_CHAINS))
    assert cli(os.environ, "run", config, "--out", directory / "straight", "-q").returncode == 0
    return config, cli(os.environ, "table", directory / "straight").stdout


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The cluster's environment (SLURM_CONF), for the commands the tests start."""
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        environment = cluster.start()
    except ClusterUnavailable as reason:
        pytest.skip(f"cannot start a single-node Slurm here: {reason}")
    yield {**os.environ, **environment}
    cluster.stop()


def cli(environment, *args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "model_collapse", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        **kwargs,
    )


def slurm_command(environment, *args) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, env=environment, check=True).stdout


def job_ids(run: Path) -> list[str]:
    return json.loads((run / "slurm" / "jobs.json").read_text())


def chain_process(run: Path, job: str) -> int:
    """The Python process of Slurm job ``job`` (an array element, 123_4) that runs a chain of ``run``
    (not the ``srun`` that started it, whose command line names the same module)."""
    array, element = job.split("_")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
            if arguments[0].endswith(b"srun") or b"submitit.core._submit" not in arguments:
                continue
            if str(run / "slurm").encode() not in arguments:  # submitit's folder for this run
                continue
            environment = (cmdline.parent / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"SLURM_ARRAY_JOB_ID={array}".encode() in environment and (
            f"SLURM_ARRAY_TASK_ID={element}".encode() in environment
        ):
            return int(cmdline.parent.name)
    raise AssertionError(f"no process runs Slurm job {job}")


def start_slow_run(environment, config: Path, run: Path, chain: str = "replace") -> subprocess.Popen:
    """A slurm run of SLOW_TWO_CHAINS, returned once ``chain`` has committed a few iterations (and has more to go)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "model_collapse", "run", str(config), "--out", str(run), "-q", "--executor", "slurm"],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    progress = run / "chains" / "base" / chain / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and completed(progress) < 2:
        time.sleep(0.05)
    assert 2 <= completed(progress) < SLOW_TWO_CHAINS["iterations"], "the chain ended before it could be interrupted"
    return process


def test_slurm_runs_one_job_array_and_gives_the_local_executors_table(tmp_path, slurm):
    overrides = ["seeds=20", "iterations=6", "sweep.samples=[50,100]"]
    config = ROOT / "configs" / "quickstart.yaml"
    local = cli(slurm, "run", config, *overrides, "--out", tmp_path / "local", "-q")
    on_slurm = cli(slurm, "run", config, *overrides, "--out", tmp_path / "slurm", "-q", "--executor", "slurm")
    assert local.returncode == 0 and on_slurm.returncode == 0, on_slurm.stderr
    assert cli(slurm, "table", tmp_path / "slurm").stdout == cli(slurm, "table", tmp_path / "local").stdout
    jobs = job_ids(tmp_path / "slurm")
    assert len(jobs) == 6 and len({job.split("_")[0] for job in jobs}) == 1  # six elements of one array
    script = next((tmp_path / "slurm" / "slurm").glob("*_submission.sh")).read_text()
    assert "#SBATCH --array=0-5" in script and "#SBATCH --cpus-per-task=1" in script
    status = cli(slurm, "status", tmp_path / "slurm", "--summary").stdout
    assert status.strip() == "6 chains: 6 done; 36 of 36 iterations committed"


def test_a_costly_run_computes_its_shared_first_iteration_then_its_chains_as_jobs(tmp_path, slurm):
    """Two waves of jobs (the first iteration the regimes share, then the chains), the local table."""
    from helpers import tiny_vae

    config = tmp_path / "vae.yaml"
    config.write_text(yaml.safe_dump({"setting": tiny_vae(), "regimes": ["replace", "accumulate"], "iterations": 2,
                                      "seeds": 1}))  # fmt: skip
    local = cli(slurm, "run", config, "--out", tmp_path / "local", "-q")
    on_slurm = cli(slurm, "run", config, "--out", tmp_path / "slurm", "-q", "--executor", "slurm")
    assert local.returncode == 0 and on_slurm.returncode == 0, on_slurm.stderr
    assert table_without_time(tmp_path / "slurm", slurm) == table_without_time(tmp_path / "local", slurm)
    assert len(job_ids(tmp_path / "slurm")) == 2  # the last wave's: one job per chain
    assert len(list((tmp_path / "slurm" / "slurm").glob("*_submission.sh"))) == 2  # two arrays: two waves
    first = [tmp_path / "slurm" / "chains" / "base" / r / "seed-0" / "iter_0001" / "metrics.npz" for r in
             ("replace", "accumulate")]  # fmt: skip
    assert first[0].samefile(first[1])


def table_without_time(run: Path, environment) -> pd.DataFrame:
    table = pd.read_csv(io.StringIO(cli(environment, "table", run).stdout))
    return table.drop(columns=[c for c in table.columns if "seconds" in c]).to_csv()


def test_a_job_signalled_at_its_time_limit_is_requeued_and_resumes_to_the_same_table(tmp_path, slurm, slow):
    config, straight = slow
    run = tmp_path / "run"
    process = start_slow_run(slurm, config, run)
    job = job_ids(run)[0]  # the replace chain's
    # What Slurm sends 90 s before a job's time limit (and on preemption): the job requeues itself.
    slurm_command(slurm, "scancel", "--signal=USR2", job)
    deadline = time.time() + 60
    while time.time() < deadline and "Restarts=1" not in slurm_command(slurm, "scontrol", "show", "job", job):
        time.sleep(0.2)
    assert "Restarts=1" in slurm_command(slurm, "scontrol", "show", "job", job)
    _, stderr = process.communicate(timeout=300)  # the requeued job starts again once cred_expire has passed
    assert process.returncode == 0, stderr
    assert cli(slurm, "table", run).stdout == straight
    log = (run / "slurm" / f"{job}_0_log.out").read_text()
    assert "Requeued job" in log and log.count("Starting with JobEnvironment") == 2


def test_a_killed_job_stops_the_run_in_one_line_and_resume_finishes_it(tmp_path, slurm, slow):
    config, straight = slow
    run = tmp_path / "run"
    process = start_slow_run(slurm, config, run)
    job = job_ids(run)[0]
    os.kill(chain_process(run, job), signal.SIGKILL)  # as the out-of-memory killer would
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    message = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and f"its Slurm job {job} ended FAILED with no result" in message[0], stderr
    assert f"its Slurm job {job} ended FAILED" in cli(slurm, "status", run).stdout
    resumed = cli(slurm, "resume", run, "-q", "--executor", "slurm", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert cli(slurm, "table", run).stdout == straight


def test_jobs_outlive_a_killed_driver_and_keep_a_resume_from_starting_them_twice(tmp_path, slurm, slow):
    config, straight = slow
    run = tmp_path / "run"
    process = start_slow_run(slurm, config, run)
    process.send_signal(signal.SIGKILL)  # the login node's session drops: the jobs run on
    process.communicate()
    early = cli(slurm, "resume", run, "-q", "--executor", "slurm")
    assert early.returncode != 0
    assert early.stderr.count("\n") == 1 and "still run this run's chains" in early.stderr, early.stderr
    jobs = ",".join(job_ids(run))
    deadline = time.time() + 300
    while time.time() < deadline and slurm_command(slurm, "squeue", "--noheader", "--array", "--jobs", jobs).strip():
        time.sleep(0.5)
    resumed = cli(slurm, "resume", run, "-q", "--executor", "slurm", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert cli(slurm, "table", run).stdout == straight


def test_a_data_parallel_chain_runs_as_one_job_whose_tasks_are_ranks(tmp_path, slurm):
    """Two tasks of one job train, sample and evaluate as two torchrun ranks would: the numbers of one
    process, the synthetic stories sampled in shards and gathered."""
    config = {
        "setting": tiny_language_model(
            tmp_path / "tokenizers",
            samples=24,
            model={"preset": "llama-tiny", "block_size": 32},
            sampling={"max_new_tokens": 12, "batch_size": 1},
        ),
        "regimes": ["accumulate"],
        "iterations": 2,
        "seeds": 1,
        "executor": {"tasks_per_chain": 2, "cpus_per_chain": 2},
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    parallel = cli(
        slurm, "run", tmp_path / "lm.yaml", "--out", tmp_path / "parallel", "-q", "--executor", "slurm", timeout=600
    )
    assert parallel.returncode == 0, parallel.stderr
    single = cli(slurm, "run", tmp_path / "lm.yaml", "--out", tmp_path / "single", "-q", timeout=600)
    assert single.returncode == 0, single.stderr
    job = job_ids(tmp_path / "parallel")[0]
    logs = sorted(p.name for p in (tmp_path / "parallel" / "slurm").glob(f"{job}_*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # one log per task
    assert "global_rank=1(2)" in (tmp_path / "parallel" / "slurm" / f"{job}_1_log.out").read_text()
    tables = {d: pd.read_csv(io.StringIO(cli(slurm, "table", tmp_path / d).stdout)) for d in ("parallel", "single")}
    first = {d: t[t.iteration == 1].test_cross_entropy.to_numpy() for d, t in tables.items()}
    np.testing.assert_allclose(first["parallel"], first["single"], rtol=1e-4)
    from model_collapse.settings.language_model.packing import TokenCorpus

    synthetic = {
        d: TokenCorpus.load(tmp_path / d / "chains" / "base" / "accumulate" / "seed-0" / "iter_0002" / "synthetic")
        for d in ("parallel", "single")
    }
    assert len(synthetic["parallel"]) == 24
    np.testing.assert_array_equal(synthetic["parallel"].tokens, synthetic["single"].tokens)


def test_slurm_options_that_cannot_be_met_get_one_line(tmp_path, slurm):
    config = ROOT / "configs" / "quickstart.yaml"
    half = cli(slurm, "run", config, "executor.gpus_per_chain=0.5", "--out", tmp_path / "half", "--executor", "slurm")
    assert half.returncode != 0 and half.stderr.count("\n") == 1
    assert "executor: gpus_per_chain: Slurm reserves whole CPUs and GPUs" in half.stderr
    assert not (tmp_path / "half").exists()
    nowhere = cli(slurm, "run", config, "executor.partition=nowhere", "--out", tmp_path / "p", "--executor", "slurm")
    assert nowhere.returncode != 0 and nowhere.stderr.count("\n") == 1, nowhere.stderr
    assert "Slurm would refuse the jobs: invalid partition specified: nowhere" in nowhere.stderr
    assert not (tmp_path / "p").exists()


def test_an_error_in_a_chain_comes_back_from_its_job_in_one_line(tmp_path, slurm):
    run = tmp_path / "run"
    failed = cli(slurm, "run", failing_at_iteration_2(tmp_path), "--out", run, "-q", "--executor", "slurm")
    assert failed.returncode != 0
    message = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and FAILING_AT_ITERATION_2 in message[0], failed.stderr
    assert "Traceback" not in failed.stderr
    assert FAILING_AT_ITERATION_2 in cli(slurm, "status", run).stdout
