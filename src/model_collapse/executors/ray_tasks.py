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
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import ChainSpec, ExecutorConfig
from ..errors import ConfigError
from . import POLL_INTERVAL_S, STOP_GRACE_S


def _chain_task(run_directory: str, spec: ChainSpec, iterations: int, checkpoints: str) -> None:
    """One chain, in a Ray worker, as a local worker runs it (so with the same numbers)."""
    from ..sweep import run_spec_alone

    run_spec_alone(Path(run_directory), spec, iterations, checkpoints)


def run_with_ray(
    run_directory: Path,
    specs: Sequence[ChainSpec],
    todo: list[int],
    iterations: int,
    checkpoints: str,
    options: ExecutorConfig,
    advance: Callable[[int, int], None],
) -> None:
    try:
        import ray
        from ray import exceptions as ray_errors
    except ImportError:
        raise ConfigError("executor ray needs Ray: pip install 'model-collapse[ray]'") from None
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
    running = {task.remote(str(run_directory.resolve()), specs[i], iterations, checkpoints): i for i in todo}
    stores = {i: specs[i].store(run_directory, writer=False) for i in todo}
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_INTERVAL_S)
            for index in running.values():
                advance(index, min(stores[index].progress(), iterations))
            for ref in ready:
                index = running.pop(ref)
                _collect(ray, ray_errors, ref, run_directory, specs[index], options)
                advance(index, iterations)
    finally:
        if running:
            _stop(ray, list(running))
        if started_here:
            ray.shutdown()


def _collect(ray, ray_errors, ref, run_directory: Path, spec: ChainSpec, options: ExecutorConfig) -> None:
    """The end of a chain's task: nothing when it finished, else its error in one line."""
    from ..sweep import chain_crash, chain_error, describe_fault

    try:
        ray.get(ref)
    except ray_errors.RayTaskError as error:
        cause = error.cause
        fault = describe_fault(cause, run_directory) if cause is not None else None
        if fault is not None:
            raise chain_error(run_directory, spec, type(fault).__name__, str(fault)) from None
        text = "".join(traceback.format_exception(cause)) if cause else str(error)
        raise chain_crash(run_directory, spec, text) from None
    except ray_errors.RayError as error:  # the worker or its node died, max_retries + 1 times
        retries = f"executor.max_retries: {options.max_retries}"
        reason = f"its Ray worker died with no reruns left ({retries}; {type(error).__name__})"
        raise chain_error(run_directory, spec, "ResourceError", reason) from None


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
