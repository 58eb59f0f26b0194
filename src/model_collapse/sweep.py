"""Running every chain of an experiment into a run directory, in parallel local processes (the local
executor; ``executors/`` has the others).

Each chain is independent and resumable on its own, so a sweep interrupted anywhere is finished by
running the same function again: chains already complete are skipped, others resume where they stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from threadpoolctl import threadpool_limits

from . import activity, distributed
from .chain import run_chain
from .config import ChainSpec, ExecutorConfig, Experiment, setting_class
from .errors import ConfigError, ModelCollapseError, ResourceError, RunDirectoryError, Terminated
from .executors import STOP_GRACE_S
from .rundir import IterationRecord
from .settings import SETTINGS


def run_spec(
    run_directory: Path,
    spec: ChainSpec,
    iterations: int,
    checkpoints: str,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> None:
    setting = setting_class(spec.point)(spec.point, spec.seeds)
    store = spec.store(run_directory, writer=distributed.is_main())
    if store.writer:
        store.open()  # under torchrun, the other ranks read the chain only once rank 0 has prepared it
    distributed.barrier()
    run_chain(setting, spec.regime, iterations, store, checkpoints=checkpoints, on_iteration=on_iteration)


def run_spec_alone(
    run_directory: Path,
    spec: ChainSpec,
    iterations: int,
    checkpoints: str,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> None:
    """``run_spec`` in a process of its own (a local worker, a Ray task): on one BLAS/OpenMP thread, as the
    parallelism is across chains and a cheap chain's numbers must not depend on where it ran. The
    setting's module (and with it PyTorch) is imported first, so that the limit covers its thread pools."""
    setting_class(spec.point)
    with threadpool_limits(limits=1):
        run_spec(run_directory, spec, iterations, checkpoints, on_iteration)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, so that rich's progress display (which
    redirects it) and test runners (which capture it) see the messages."""

    model_collapse = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def show_messages(quiet: bool) -> None:
    """Send the package's log messages (a training run resuming from its checkpoint, say) to stderr:
    notices unless ``quiet``, warnings always. Called in the main process and in every worker."""
    logger = logging.getLogger("model_collapse")
    if not any(getattr(handler, "model_collapse", False) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def describe_fault(error: BaseException, run_directory: Path) -> ModelCollapseError | None:
    """The one-line error for a failure that is the machine's, not the code's: a full disk, memory
    running out. None for anything else."""
    if isinstance(error, ModelCollapseError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = error.filename or run_directory
        return ResourceError(f"no space left on the device while writing {where}")
    if isinstance(error, MemoryError):
        return ResourceError("out of memory (lower seeds, setting sizes or --workers)")
    return None


def _die_with(parent: int) -> None:
    """End this worker when the process that started it ends, however it ends (kill -9 included), so
    that no orphan goes on writing into a run directory that a later ``resume`` also writes."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent dies
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


# A worker reports its progress at most this often: a cheap chain's iterations take a fraction of a millisecond.
_REPORT_INTERVAL_S = 0.1


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the chain commit what it has computed
    raise Terminated()


def _worker(
    connection, parent: int, run_directory: Path, spec: ChainSpec, iterations: int, checkpoints: str, quiet: bool
) -> None:
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent handles it
    signal.signal(signal.SIGTERM, _terminated)  # the parent's way of stopping the chain (see _stop)
    show_messages(quiet)
    reported = 0.0

    def report(record: IterationRecord) -> None:
        nonlocal reported
        now = time.monotonic()
        if now - reported >= _REPORT_INTERVAL_S or record.iteration == iterations:
            connection.send(("iteration", record.iteration))
            reported = now

    try:
        with activity.listening(lambda line: connection.send(("activity", line))):
            run_spec_alone(run_directory, spec, iterations, checkpoints, report)
    except Terminated:
        os._exit(143)  # stopped by the parent, which is already on its way out: nothing to report
    except BaseException as error:
        fault = describe_fault(error, run_directory)
        if fault is not None:
            connection.send(("error", type(fault).__name__, str(fault)))
        else:
            connection.send(("crash", "".join(traceback.format_exception(error))))
        connection.close()
        sys.exit(1)
    connection.send(("done",))
    connection.close()


_ERRORS = {cls.__name__: cls for cls in (ModelCollapseError, ConfigError, RunDirectoryError, ResourceError)}


class ChainFailed(Exception):
    """A chain raised an unexpected error in its worker; its traceback has been printed."""


def chain_error(run_directory: Path, spec: ChainSpec, kind: str, message: str) -> ModelCollapseError:
    """The one-line error that stopped chain ``spec`` wherever it ran (``kind``: the name of its class),
    its reason recorded for ``model-collapse status``."""
    _record_failure(run_directory, spec, message)
    return _ERRORS.get(kind, ModelCollapseError)(f"chain {spec.label}: {message}")


def chain_crash(run_directory: Path, spec: ChainSpec, traceback_text: str) -> ChainFailed:
    """A chain stopped by a bug wherever it ran: its traceback goes to stderr, its last line is recorded."""
    sys.stderr.write(traceback_text if traceback_text.endswith("\n") else traceback_text + "\n")
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    _record_failure(run_directory, spec, lines[-1] if lines else "it failed")
    return ChainFailed(f"chain {spec.label} failed (traceback above)")


def _run_in_processes(
    run_directory: Path,
    specs: Sequence[ChainSpec],
    todo: list[int],
    workers: int,
    iterations: int,
    checkpoints: str,
    quiet: bool,
    advance: Callable[[int, int], None],
    describe: Callable[[int, str], None],
) -> None:
    """Run the chains ``todo`` in at most ``workers`` spawned processes at once. The first chain that
    fails stops the others (their committed iterations stay; ``resume`` finishes them) and its error
    is raised here; so is anything that interrupts this process, after the workers are stopped."""
    context = multiprocessing.get_context("spawn")
    pending = list(todo)
    running: dict[int, tuple[multiprocessing.process.BaseProcess, Any]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                index = pending.pop(0)
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker,
                    args=(writer, os.getpid(), run_directory, specs[index], iterations, checkpoints, quiet),
                    name=f"chain-{index}",
                )
                process.start()
                writer.close()  # the worker holds the only writing end: its death reads as end of file
                running[index] = (process, reader)
            for reader in multiprocessing.connection.wait([r for _, r in running.values()], timeout=1.0):
                index = next(i for i, (_, r) in running.items() if r is reader)
                try:
                    message = reader.recv()
                except (EOFError, OSError):
                    message = ("died",)
                if message[0] == "iteration":
                    advance(index, message[1])
                    continue
                if message[0] == "activity":
                    describe(index, message[1])
                    continue
                process, _ = running.pop(index)
                reader.close()
                process.join()
                if message[0] == "error":
                    raise chain_error(run_directory, specs[index], message[1], message[2])
                if message[0] == "crash":
                    raise chain_crash(run_directory, specs[index], message[1])
                if message[0] == "died":
                    died = f"its worker process {_death(process.exitcode)}"
                    raise chain_error(run_directory, specs[index], "ResourceError", died)
    finally:
        _stop([process for process, _ in running.values()])
        for _, reader in running.values():
            reader.close()


def _record_failure(run_directory: Path, spec: ChainSpec, reason: str) -> None:
    """Leave the reason a chain stopped in its directory, for ``model-collapse status``."""
    spec.store(run_directory, writer=False).record_failure(reason)


def _stop(processes: list) -> None:
    """Stop workers: SIGTERM first, on which a cheap chain commits the iterations it has computed since
    its last commit; SIGKILL for any still running after the grace period (commits are atomic: a chain
    killed anywhere resumes from its last one)."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        cause = ", most likely by the out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{cause}"
    return f"ended with exit code {exitcode} without a word"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[activity]}"),  # what a long iteration is doing (activity.py)
        console=console,
        transient=False,
    )


def completed_iterations(run_directory: Path, specs: Sequence[ChainSpec], iterations: int) -> list[int]:
    """Iterations each chain has completed (0 for a chain not started), checked on disk.

    The iterations must form an unbroken sequence and a finished chain's records be whole (every metric,
    every seed), so that a damaged chain is named now rather than later by ``table``."""
    done = []
    for spec in specs:
        store = spec.store(run_directory, writer=False)
        completed = min(store.completed(), iterations)
        if completed == iterations:
            store.records(len(spec.seeds), SETTINGS.declared(spec.point.name).metrics, completed)
        done.append(completed)
    return done


# What the main process keeps per chain (its spec, progress bar, record of iterations) and per seed.
_BYTES_PER_CHAIN = 4096
_BYTES_PER_SEED = 64


def estimate_memory(experiment: Experiment, workers: int) -> None:
    """Refuse, before anything is written, a config whose chains cannot fit in this machine's memory.

    ``seeds=1000000000``, ``mix:1e9`` or ``setting.dim=100000`` would otherwise fail hours in. The
    estimate is what a chain holds at its largest iteration (the setting's footprint, the regime's
    synthetic sizes) plus every chain's bookkeeping, computed from counts: nothing that large is built."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    config = experiment.config
    declared = SETTINGS.declared(experiment.setting_name)
    seeds_per_chain = 1 if declared.one_seed_per_chain else config.seeds
    chains = len(experiment.points) * len(experiment.regimes) * (config.seeds // seeds_per_chain)
    bookkeeping = chains * _BYTES_PER_CHAIN + config.seeds * _BYTES_PER_SEED
    worst, worst_case = 0, None
    for point in experiment.points:
        footprint = declared.footprint(point)
        if footprint is None:
            continue
        for regime in experiment.regimes:
            rows = footprint.rows + peak_synthetic_rows(regime, config.iterations, footprint.rows)
            need = seeds_per_chain * (footprint.fixed_bytes + rows * footprint.bytes_per_row)
            if need > worst:
                worst, worst_case = need, (point, regime)
    parallel = max(1, min(workers, chains))
    if worst * parallel + bookkeeping <= total:
        return
    where = f"seeds={config.seeds}, iterations={config.iterations}"
    if worst_case is None or bookkeeping > worst * parallel:
        raise ConfigError(
            f"{where}: {chains} chains would need about {_bytes(bookkeeping)} of memory to track, "
            f"this machine has {_bytes(total)}"
        )
    point, regime = worst_case
    sizes = ", ".join(
        f"setting.{k}={v}" for k, v in point.model_dump().items() if isinstance(v, int) and not isinstance(v, bool)
    )
    at_once = f" x {parallel} chains at once (--workers)" if parallel > 1 else ""
    raise ConfigError(
        f"{where}, {sizes}, regime {regime.label}: a chain would hold about {_bytes(worst)} in memory{at_once}, "
        f"this machine has {_bytes(total)}"
    )


def peak_synthetic_rows(regime, iterations: int, real_size: int) -> int:
    """Rows per seed besides the real data at the largest iteration: every batch so far for a regime
    that keeps its history, else the largest single iteration's (sizes never shrink with n)."""
    if iterations < 2:
        return 0

    def rows(i: int) -> int:
        return regime.synthetic_size(i, real_size) + regime.fresh_real_size(i, real_size)

    if regime.keeps_history:
        return (
            (iterations - 1) * rows(iterations)
            if rows(2) == rows(iterations)
            else sum(rows(i) for i in range(2, iterations + 1))
        )
    return rows(iterations)


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"


def resolve_workers(experiment: Experiment, workers: int | None) -> int:
    """Parallel processes: the command line's, else the config's, else one per CPU."""
    return workers or experiment.config.workers or os.cpu_count() or 1


def resolve_executor(experiment: Experiment, executor: str | None) -> ExecutorConfig:
    """The config's executor section, its name replaced by the command line's ``--executor`` if given;
    for Slurm, checked with the cluster before anything is written."""
    options = experiment.config.executor
    if executor is not None:
        names = get_args(ExecutorConfig.model_fields["name"].annotation)
        if executor not in names:
            raise ConfigError(f"--executor {executor!r}: choose one of {', '.join(names)}")
        options = options.named(executor)
    if options.name == "slurm":
        from .executors.slurm_jobs import check_submission

        check_submission(options)
    return options


def run_experiment(
    run_directory: Path,
    experiment: Experiment,
    workers: int | None = None,
    quiet: bool = False,
    options: ExecutorConfig | None = None,
) -> None:
    """Run the unfinished chains of ``experiment``: in local processes (``workers`` of them), or with
    the executor of ``options`` (from ``resolve_executor``; default: the config's) (``executors/``)."""
    options = options or resolve_executor(experiment, None)
    specs = experiment.chains()
    iterations = experiment.config.iterations
    checkpoints = experiment.config.checkpoints
    workers = resolve_workers(experiment, workers)
    if distributed.world_size() > 1:
        workers, quiet = 1, quiet or not distributed.is_main()  # ranks run the chains together, one at a time
    done = completed_iterations(run_directory, specs, iterations)
    todo = [i for i, spec in enumerate(specs) if done[i] < iterations]
    console = Console(stderr=True, quiet=quiet)
    show_messages(quiet)
    with _progress(console) as progress:
        overall = progress.add_task("all chains", total=len(specs) * iterations, completed=sum(done), activity="")
        tasks = {i: progress.add_task(specs[i].label, total=iterations, completed=done[i], activity="") for i in todo}

        reached = dict(enumerate(done))

        def advance(index: int, iteration: int) -> None:  # workers report every iteration or every 0.1 s
            progress.update(tasks[index], completed=iteration)
            progress.advance(overall, iteration - reached[index])
            reached[index] = iteration

        def describe(index: int, line: str) -> None:  # what a chain does inside its iteration (activity.py)
            progress.update(tasks[index], activity=line)

        if options.name == "ray":
            from .executors.ray_tasks import run_with_ray

            run_with_ray(run_directory, specs, todo, iterations, checkpoints, options, advance)
            return
        if options.name == "slurm":
            from .executors.slurm_jobs import run_with_slurm

            run_with_slurm(run_directory, specs, todo, iterations, checkpoints, options, advance, describe)
            return
        if workers == 1 or len(todo) <= 1:
            # A cheap chain computes with one BLAS thread here too, as in a worker: its numbers then do not
            # depend on --workers, which its resume (recomputing, then comparing) relies on.
            cheap = SETTINGS.declared(experiment.setting_name).cheap
            for i in todo:

                def report(record: IterationRecord, i: int = i) -> None:
                    advance(i, record.iteration)

                try:
                    with (
                        threadpool_limits(limits=1) if cheap else contextlib.nullcontext(),
                        activity.listening(lambda line, i=i: describe(i, line)),
                    ):
                        run_spec(run_directory, specs[i], iterations, checkpoints, report)
                except (OSError, MemoryError) as error:
                    fault = describe_fault(error, run_directory)
                    if fault is None:
                        _record_failure(run_directory, specs[i], f"{type(error).__name__}: {error}")
                        raise
                    _record_failure(run_directory, specs[i], str(fault))
                    raise ResourceError(f"chain {specs[i].label}: {fault}") from None
                except ModelCollapseError as error:
                    _record_failure(run_directory, specs[i], str(error))
                    raise
                except Exception as error:  # a bug: its traceback follows; the chain says it failed
                    _record_failure(run_directory, specs[i], f"{type(error).__name__}: {error}")
                    raise
            return
        _run_in_processes(
            run_directory, specs, todo, min(workers, len(todo)), iterations, checkpoints, quiet, advance, describe
        )
