"""Running every chain of an experiment into a run directory, in parallel local processes.

Each chain is independent and resumable on its own, so a sweep interrupted anywhere is finished by
running the same function again: chains already complete are skipped, others resume where they stopped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from queue import Empty

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from threadpoolctl import threadpool_limits

from . import distributed
from .chain import run_chain
from .config import ChainSpec, Experiment, type_of
from .rundir import ChainStore, IterationRecord


def run_spec(
    run_directory: Path,
    spec: ChainSpec,
    iterations: int,
    keep_models: bool,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> None:
    setting = type_of(spec.point)(spec.point, spec.seeds)
    store = ChainStore(run_directory / spec.relative_directory, spec.description(), writer=distributed.is_main())
    if store.writer:
        store.open()  # under torchrun, the other ranks read the chain only once rank 0 has prepared it
    distributed.barrier()
    run_chain(setting, spec.regime, iterations, store, keep_models=keep_models, on_iteration=on_iteration)


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


def _worker(run_directory: Path, index: int, spec: ChainSpec, iterations: int, keep_models: bool, quiet: bool, queue) -> None:
    show_messages(quiet)
    # One BLAS/OpenMP thread per process: the parallelism is across chains. The setting's module (and
    # with it PyTorch, for neural settings) is imported first, so that the limit covers its thread pools.
    type_of(spec.point)
    with threadpool_limits(limits=1):
        run_spec(run_directory, spec, iterations, keep_models, lambda record: queue.put((index, record.iteration)))


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def completed_iterations(run_directory: Path, specs: Sequence[ChainSpec], iterations: int) -> list[int]:
    """Iterations each chain has already completed (0 for a chain not started)."""
    done = []
    for spec in specs:
        store = ChainStore(run_directory / spec.relative_directory, spec.description())
        done.append(min(store.completed(), iterations) if store.directory.exists() else 0)
    return done


def run_experiment(run_directory: Path, experiment: Experiment, workers: int | None = None, quiet: bool = False) -> None:
    specs = experiment.chains()
    iterations = experiment.config.iterations
    keep_models = experiment.config.checkpoints == "all"
    workers = workers or experiment.config.workers or os.cpu_count() or 1
    if distributed.world_size() > 1:
        workers, quiet = 1, quiet or not distributed.is_main()  # ranks run the chains together, one at a time
    done = completed_iterations(run_directory, specs, iterations)
    todo = [i for i, spec in enumerate(specs) if done[i] < iterations]
    console = Console(stderr=True, quiet=quiet)
    show_messages(quiet)
    with _progress(console) as progress:
        overall = progress.add_task("all chains", total=len(specs) * iterations, completed=sum(done))
        tasks = {
            i: progress.add_task(specs[i].label, total=iterations, completed=done[i])
            for i in todo
        }

        def advance(index: int, iteration: int) -> None:
            progress.update(tasks[index], completed=iteration)
            progress.advance(overall)

        if workers == 1 or len(todo) <= 1:
            for i in todo:
                run_spec(run_directory, specs[i], iterations, keep_models, lambda r, i=i: advance(i, r.iteration))
            return
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            queue = manager.Queue()
            futures = {pool.submit(_worker, run_directory, i, specs[i], iterations, keep_models, quiet, queue) for i in todo}
            try:
                while futures:
                    try:
                        advance(*queue.get(timeout=0.2))
                    except Empty:
                        pass
                    finished, futures = wait(futures, timeout=0, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        future.result()  # re-raise a chain's error here, in the main process
                while True:
                    advance(*queue.get_nowait())
            except Empty:
                pass
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
