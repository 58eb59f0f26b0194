"""The ``ray`` executor (extra ``[ray]``): one Ray task per chain.

Each task reserves ``executor.cpus_per_chain`` CPUs and ``executor.gpus_per_chain`` GPUs (fractions
share a GPU among small models), in the cluster at ``executor.address`` or in a local Ray started for
the run. A task whose worker dies (a killed process, a lost node) is rerun up to ``executor.max_retries``
times and resumes where the chain's commits end; an error in a chain is not retried, and stops the run
as locally.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import Field, NonNegativeInt

from ..errors import ConfigError
from ..experiment import ChainSpec
from ..outcome import Outcome, run_chain_spec
from ..rundir import ChainStore
from .options import ReservedOptions
from .protocol import POLL_INTERVAL_S, STOP_GRACE_S, Progress, Work


def _chain_task(run_directory: str, spec: ChainSpec, iterations: int, checkpoints: str, threads: int) -> Outcome:
    """One chain, in a Ray worker, as a local worker runs it (so with the same numbers)."""
    return run_chain_spec(Path(run_directory), spec, iterations, checkpoints, threads=threads)


class RayOptions(ReservedOptions):
    """A Ray task per chain, on this machine or a cluster."""

    max_retries: NonNegativeInt = Field(3, description="ray: reruns of a chain whose worker died")
    address: str | None = Field(None, description="ray: the cluster to join (default: start a local one)")

    @property
    def runs_here(self) -> bool:
        return self.address is None  # a Ray this run starts


class RayExecutor:
    Options = RayOptions

    def __init__(self, options: RayOptions) -> None:
        self.options = options

    def check(self) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("executor ray needs Ray: pip install 'model-collapse[ray]'") from None

    def run(self, work: Work, progress: Progress) -> None:
        _run_with_ray(work, self.options, progress)


def _run_with_ray(work: Work, options: RayOptions, progress: Progress) -> None:
    import ray
    from ray import exceptions as ray_errors

    run_directory, specs, iterations = work.run_directory, work.specs, work.iterations
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=options.address,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}},
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = options.address or "a local Ray"
            raise ConfigError(f"executor.address: cannot start or join {where}: {error}") from None
    task = ray.remote(_chain_task).options(
        num_cpus=options.cpus_per_chain,
        num_gpus=options.gpus_per_chain,
        max_retries=options.max_retries,
        retry_exceptions=False,
    )
    where = str(run_directory.resolve())
    running = {task.remote(where, specs[i], iterations, work.checkpoints, work.threads): i for i in work.todo}
    stores = {i: ChainStore.of(run_directory, specs[i], writer=False) for i in work.todo}
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_INTERVAL_S)
            for index in running.values():
                progress.reached(index, min(stores[index].progress(), iterations))
            for ref in ready:
                index = running.pop(ref)
                _outcome(ray, ray_errors, ref, options).raise_for(run_directory, specs[index])
                progress.reached(index, iterations)
    finally:
        if running:
            _stop(ray, list(running))
        if started_here:
            ray.shutdown()


def _outcome(ray, ray_errors, ref, options: RayOptions) -> Outcome:
    """How a chain's task ended: as the chain reported it, or its worker's death."""
    try:
        return ray.get(ref)
    except ray_errors.RayError as error:  # the worker or its node died, max_retries + 1 times
        retries = f"executor.max_retries: {options.max_retries}"
        return Outcome.died(f"its Ray worker died with no reruns left ({retries}; {type(error).__name__})")


def _stop(ray, refs: list) -> None:
    """Interrupt running chains (a cheap chain then commits what it has computed), then kill them."""
    for ref in refs:
        ray.cancel(ref, force=False)
    deadline = time.monotonic() + STOP_GRACE_S
    pending = refs
    while pending and time.monotonic() < deadline:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
    for ref in pending:
        ray.cancel(ref, force=True)
