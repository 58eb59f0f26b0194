"""The ``slurm`` executor (extra ``[slurm]``): one Slurm job per chain, all submitted as one job array.

Submission goes through submitit, which pickles each chain's call into ``RUN/slurm/`` (with the jobs'
logs), writes the sbatch script and runs the call on the node. A job asks for ``executor.cpus_per_chain``
CPUs, ``executor.gpus_per_chain`` GPUs and ``executor.memory_gb_per_chain`` GB for
``executor.time_minutes`` in ``executor.partition``; ``executor.sbatch`` adds any other sbatch option
(account, qos, constraint) and ``executor.setup`` shell lines each job runs first.

* **Time limits and preemption.** Slurm signals a job (USR2) 90 s before its time limit and when it is
  preempted; submitit then requeues it (up to ``executor.max_retries`` times for time limits), and the
  requeued job resumes the chain where its commits end. A job killed outright fails the run, and
  ``resume --executor slurm`` finishes it.
* **Data parallelism.** With ``executor.tasks_per_chain`` > 1 a chain's job runs that many tasks, which
  become the ranks ``distributed.py`` reads (as ``torchrun`` would set them): a neural setting then
  splits its training, sampling and evaluation across them.
* **Watching.** The driver reads progress from the run directory and job states from ``squeue`` (which
  every cluster has, unlike accounting's ``sacct``). Jobs of an earlier driver that still run keep a
  later ``resume`` from starting the same chains twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from .. import activity, distributed
from ..atomic import write_json
from ..errors import ConfigError, RunDirectoryError
from ..experiment import ChainSpec
from ..outcome import Outcome, run_chain_spec
from ..rundir import ChainStore
from .options import ReservedOptions
from .protocol import POLL_INTERVAL_S, Progress, Work

# How often the driver asks slurmctld for the jobs' states (progress is read from files far more often).
SQUEUE_INTERVAL_S = 5.0
# States after which a job runs no more (squeue's long names, and GONE for one slurmctld has forgotten);
# REQUEUED and PENDING jobs come back.
FINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "GONE", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "TIMEOUT",
}  # fmt: skip
# The jobs this run submitted, under RUN/slurm/.
JOBS_FILE = "jobs.json"
# Jobs this process submitted and saw through (a costly run's shared first iterations, then its
# chains): a job slurmctld still shows COMPLETING after its result is written is not an earlier driver's.
_SEEN_THROUGH: set[str] = set()


class ChainJob:
    """One chain as the call of a Slurm job (of each of its tasks under data parallelism).

    It returns the chain's ``Outcome`` (from each task under data parallelism), which submitit pickles
    for the driver. ``checkpoint`` is submitit's hook on a time limit or preemption: the same call,
    resubmitted, resumes the chain."""

    def __init__(self, run_directory: Path, spec: ChainSpec, iterations: int, checkpoints: str, threads: int) -> None:
        self.run_directory, self.spec, self.iterations, self.checkpoints = run_directory, spec, iterations, checkpoints
        self.threads = threads

    def __call__(self) -> Outcome:
        import submitit

        activity.show_messages(quiet=False)  # notices go to the job's log
        if submitit.JobEnvironment().num_tasks > 1:
            # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, from Slurm's task variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            distributed.start()
        outcome = run_chain_spec(self.run_directory, self.spec, self.iterations, self.checkpoints, threads=self.threads)
        if outcome.traceback is not None:
            sys.stderr.write(outcome.traceback)  # into the job's log too
        if outcome.complete:
            distributed.finish()
        return outcome

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmOptions(ReservedOptions):
    """A Slurm job per chain, all in one job array."""

    max_retries: NonNegativeInt = Field(3, description="slurm: requeues of a job at its time limit")
    partition: str | None = Field(None, description="slurm: the partition (default: the cluster's)")
    time_minutes: PositiveInt = Field(
        60, description="slurm: a job's time limit; a chain still running then is requeued and resumes"
    )
    memory_gb_per_chain: PositiveFloat | None = Field(
        None, description="slurm: memory per job (default: the cluster's)"
    )
    tasks_per_chain: PositiveInt = Field(
        1, description="slurm: data-parallel ranks of a neural chain, one task each (elsewhere: one process)"
    )
    max_parallel_chains: PositiveInt | None = Field(None, description="slurm: jobs of the array running at once")
    sbatch: dict[str, str | int] = Field(
        default_factory=dict, description="slurm: further sbatch options (account, qos, constraint, ...)"
    )
    setup: list[str] = Field(
        default_factory=list, description="slurm: shell lines each job runs first (module load, source venv)"
    )

    @property
    def threads_per_chain(self) -> int:
        return max(1, int(self.cpus_per_chain // self.tasks_per_chain))

    def check_whole(self) -> None:
        """What Slurm can reserve: whole CPUs and GPUs, the CPUs split evenly among the tasks (checked
        when Slurm is to run the chains: a Ray config may share GPUs by fractions)."""
        for key in ("cpus_per_chain", "gpus_per_chain"):
            if getattr(self, key) != int(getattr(self, key)):
                raise ConfigError(f"executor: {key}: Slurm reserves whole CPUs and GPUs, not {getattr(self, key)}")
        if self.cpus_per_chain % self.tasks_per_chain:
            raise ConfigError(
                f"executor: cpus_per_chain: {self.cpus_per_chain:g} CPUs do not split evenly among "
                f"tasks_per_chain: {self.tasks_per_chain} tasks"
            )


class SlurmExecutor:
    Options = SlurmOptions

    def __init__(self, options: SlurmOptions) -> None:
        self.options = options

    def check(self) -> None:
        check_submission(self.options)

    def run(self, work: Work, progress: Progress) -> None:
        _run_with_slurm(work, self.options, progress)


def _run_with_slurm(work: Work, options: SlurmOptions, progress: Progress) -> None:
    import submitit

    run_directory, specs, todo, iterations = work.run_directory, work.specs, work.todo, work.iterations
    run = run_directory.resolve()  # as the jobs see it, from wherever they start
    folder = run / "slurm"
    refuse_while_earlier_jobs_run(folder)
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_retries)
    executor.update_parameters(**sbatch_parameters(options, f"model-collapse:{run.name}"))
    try:
        with executor.batch():
            jobs = {
                i: executor.submit(ChainJob(run, specs[i], iterations, work.checkpoints, work.threads)) for i in todo
            }
    except Exception as error:  # submitit wraps sbatch's refusal (a controller down, say) in its own errors
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ConfigError(f"executor slurm: sbatch refused the jobs: {message}") from None
    write_json(folder / JOBS_FILE, [job.job_id for job in jobs.values()])
    stores = {i: ChainStore.of(run_directory, specs[i], writer=False) for i in todo}
    states: dict[str, str] = {}
    asked = float("-inf")
    try:
        while jobs:
            if time.monotonic() - asked >= SQUEUE_INTERVAL_S:
                states = job_states([job.job_id for job in jobs.values()]) or states  # keep the last answer
                asked = time.monotonic()
            for index, job in list(jobs.items()):
                state = states.get(job.job_id, "")
                waiting = state not in ("RUNNING", "COMPLETING", "")
                progress.doing(index, f"Slurm job {job.job_id} {state}" if waiting else "")
                progress.reached(index, min(stores[index].progress(), iterations))
                if job.paths.result_pickle.exists() or state in FINAL_STATES:
                    del jobs[index]
                    _SEEN_THROUGH.add(str(job.job_id))
                    progress.doing(index, "")
                    _outcome(job, state, options).raise_for(run, specs[index])
                    progress.reached(index, iterations)
            time.sleep(POLL_INTERVAL_S)
    finally:
        for job in jobs.values():
            job.cancel(check=False)  # a chain cancelled mid-iteration resumes from its last commit


def sbatch_parameters(options: SlurmOptions, job_name: str) -> dict:
    """submitit's SlurmExecutor parameters for one chain's job."""
    tasks = options.tasks_per_chain
    parameters = {
        "job_name": job_name,
        "time": options.time_minutes,
        "nodes": 1,
        "ntasks_per_node": tasks,
        "cpus_per_task": int(options.cpus_per_chain) // tasks,
        "setup": list(options.setup),
        "additional_parameters": dict(options.sbatch),
        "stderr_to_stdout": True,
    }
    if options.partition is not None:
        parameters["partition"] = options.partition
    if options.gpus_per_chain:
        parameters["gpus_per_node"] = int(options.gpus_per_chain)
    if options.memory_gb_per_chain is not None:
        parameters["mem"] = f"{max(1, round(options.memory_gb_per_chain * 1024))}M"
    if options.max_parallel_chains is not None:
        parameters["array_parallelism"] = options.max_parallel_chains
    return parameters


def check_submission(options: SlurmOptions) -> None:
    """Ask Slurm whether it would take a chain's job (``sbatch --test-only``), before anything is
    written: a wrong partition, account, time or size is refused here in one line."""
    options.check_whole()
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ConfigError("executor slurm needs submitit: pip install 'model-collapse[slurm]'") from None
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise ConfigError("executor slurm: sbatch and squeue are not on PATH (run on a Slurm login node)")
    parameters = sbatch_parameters(options, "model-collapse:check")
    flags = {
        **{k: v for k, v in parameters.items() if k not in NOT_SBATCH_FLAGS},
        **parameters["additional_parameters"],
    }
    command = ["sbatch", "--test-only", *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items())]
    try:
        answer = subprocess.run([*command, "--wrap=true"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError("executor slurm: sbatch --test-only did not answer within 60 s") from None
    if answer.returncode != 0:
        lines = [line.removeprefix("sbatch: error: ") for line in answer.stderr.splitlines() if line.strip()]
        raise ConfigError(f"executor slurm: Slurm would refuse the jobs: {'; '.join(lines[-2:]) or 'no reason'}")


# submitit's parameters that are not sbatch flags of the same name.
NOT_SBATCH_FLAGS = {"setup", "additional_parameters", "stderr_to_stdout", "array_parallelism"}


def job_states(job_ids: list[str]) -> dict[str, str] | None:
    """Slurm's state of each job (array elements as ``123_4``) as slurmctld knows it now, ``GONE`` for
    one it has forgotten (it ended longer ago than MinJobAge); None when squeue cannot answer."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    listed = _squeue(arrays)
    if listed is None:  # squeue refuses the whole list once one id is unknown: ask array by array
        answers = [_squeue([array]) for array in arrays]
        if all(answer is None for answer in answers):
            return None
        listed = {job: state for answer in answers if answer for job, state in answer.items()}
    return {job_id: listed.get(job_id, "GONE") for job_id in job_ids}


def _squeue(arrays: list[str]) -> dict[str, str] | None:
    try:
        listing = subprocess.run(
            # --array: one line per array element, pending ones too (not 123_[0-9])
            ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", "--jobs", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listing.returncode != 0:
        return None
    states = {}
    for line in listing.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state.strip()
    return states


def refuse_while_earlier_jobs_run(folder: Path) -> None:
    """Refuse to submit a run's chains while jobs that an earlier driver submitted still run them."""
    try:
        earlier = json.loads((folder / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return
    others = [str(job_id) for job_id in earlier if str(job_id) not in _SEEN_THROUGH]
    states = (job_states(others) if others else None) or {}
    running = [job_id for job_id, state in states.items() if state not in FINAL_STATES]
    if running:
        shown = ", ".join(running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")
        raise RunDirectoryError(
            f"Slurm jobs {shown} of an earlier run or resume still run this run's chains: "
            f"wait for them or scancel them, then resume"
        )


def _outcome(job, state: str, options: SlurmOptions) -> Outcome:
    """How a chain's job ended: the first outcome among its tasks that is not complete (one task per
    rank of a data-parallel chain), else complete; or why the job left none."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if not _result_written(job):
        ended = f"ended {state or 'unseen'} with no result (log: {job.paths.stdout})"
        return Outcome.died(f"its Slurm job {job.job_id} {ended}")
    try:
        outcomes = job.results()
    except UncompletedJobError:
        limit = f"executor.max_retries: {options.max_retries}"
        return Outcome.died(
            f"its Slurm job {job.job_id} reached its time limit more than {limit} times (raise executor.time_minutes)"
        )
    except FailedJobError as error:  # the job failed outside the chain (its setup, submitit itself)
        return Outcome.crashed(str(error))
    return next((outcome for outcome in outcomes if not outcome.complete), Outcome())


def _result_written(job, wait_s: float = 10.0) -> bool:
    """Whether the job left its result: on a shared file system the file can show up a little after
    slurmctld says the job ended."""
    deadline = time.monotonic() + wait_s
    while True:
        folder = job.paths.folder
        with contextlib.suppress(OSError):
            os.listdir(folder)  # refreshes an NFS client's view of the folder
        if job.paths.result_pickle.exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
