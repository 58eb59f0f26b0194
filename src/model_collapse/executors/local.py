"""The ``local`` executor: the chains in this process one after another, or in spawned local processes,
at most ``--workers`` at once (each chain is independent and resumable on its own).

Every chain computes within its thread budget (``threads.py``), in this process as in a worker; a worker reports its
iterations at most every ``REPORT_INTERVAL_S`` and what a long iteration is doing through a pipe, and
dies with the driver, however the driver ends. The first chain that fails stops the others: SIGTERM,
on which a cheap chain commits what it has computed, then SIGKILL after ``STOP_GRACE_S``.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

from .. import activity
from ..deprecation import WORKER_ENVIRONMENT
from ..experiment import ChainSpec
from ..outcome import Outcome, run_chain_spec
from ..rundir import IterationRecord
from ..signals import raise_terminated
from .options import ExecutorOptions
from .protocol import STOP_GRACE_S, Progress, Work

# A worker reports its progress at most this often: a cheap chain's iterations take a fraction of a millisecond.
REPORT_INTERVAL_S = 0.1


class LocalOptions(ExecutorOptions):
    """The local executor takes no option of its own: ``--workers`` (or the config's ``workers``) says how
    many processes."""

    @property
    def runs_here(self) -> bool:
        return True


class LocalExecutor:
    Options = LocalOptions

    def __init__(self, options: LocalOptions) -> None:
        self.options = options

    def check(self) -> None:
        pass

    def run(self, work: Work, progress: Progress) -> None:
        if work.workers == 1 or len(work.todo) <= 1:
            _run_here(work, progress)
        else:
            _run_in_processes(work, progress, min(work.workers, len(work.todo)))


def _run_here(work: Work, progress: Progress) -> None:
    """The chains one after another in this process, each within its thread budget, as in a worker."""
    for index in work.todo:

        def report(record: IterationRecord, index: int = index) -> None:
            progress.reached(index, record.iteration)

        def show(line: str, index: int = index) -> None:
            progress.doing(index, line)

        spec = work.specs[index]
        with activity.listening(show):
            outcome = run_chain_spec(work.run_directory, spec, work.iterations, work.checkpoints, report, work.threads)
        outcome.raise_for(work.run_directory, spec)


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


def _worker(connection: Any, parent: int, spec: ChainSpec, work: Work) -> None:
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent handles it
    signal.signal(signal.SIGTERM, raise_terminated)  # the parent's way of stopping the chain (see _stop)
    activity.show_messages(work.quiet)
    reported = 0.0

    def report(record: IterationRecord) -> None:
        nonlocal reported
        now = time.monotonic()
        if now - reported >= REPORT_INTERVAL_S or record.iteration == work.iterations:
            connection.send(("iteration", record.iteration))
            reported = now

    try:
        with activity.listening(lambda line: connection.send(("activity", line))):
            outcome = run_chain_spec(work.run_directory, spec, work.iterations, work.checkpoints, report, work.threads)
    except BaseException:  # Terminated: stopped by the parent, which is on its way out; nothing to report
        os._exit(143)
    connection.send(("outcome", outcome))
    connection.close()
    sys.exit(0 if outcome.complete else 1)


def _run_in_processes(work: Work, progress: Progress, workers: int) -> None:
    """Run the chains of ``work`` in at most ``workers`` spawned processes at once. The first chain that
    fails stops the others (their committed iterations stay; ``resume`` finishes them) and its error
    is raised here; so is anything that interrupts this process, after the workers are stopped."""
    context = multiprocessing.get_context("spawn")
    pending = list(work.todo)
    running: dict[int, tuple[Any, Any]] = {}  # chain -> (its process, the reading end of its pipe)
    # what a worker needs, without the other chains' specs (pickled into every worker otherwise)
    light = Work(work.run_directory, (), (), work.iterations, work.checkpoints, 1, work.quiet, work.threads)
    try:
        while pending or running:
            while pending and len(running) < workers:
                index = pending.pop(0)
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(
                    target=_worker,
                    args=(writer, os.getpid(), work.specs[index], light),
                    name=f"chain-{index}",
                )
                with _main_left_out():
                    process.start()
                writer.close()  # the worker holds the only writing end: its death reads as end of file
                running[index] = (process, reader)
            for ready in multiprocessing.connection.wait([r for _, r in running.values()], timeout=1.0):
                index = next(i for i, (_, r) in running.items() if r is ready)
                try:
                    message = running[index][1].recv()
                except (EOFError, OSError):
                    message = ("died",)
                if message[0] == "iteration":
                    progress.reached(index, message[1])
                    continue
                if message[0] == "activity":
                    progress.doing(index, message[1])
                    continue
                process, pipe = running.pop(index)
                pipe.close()
                process.join()
                if message[0] == "outcome":
                    outcome = message[1]
                else:
                    outcome = Outcome.died(f"its worker process {_death(process.exitcode)}")
                outcome.raise_for(work.run_directory, work.specs[index])
    finally:
        _stop([process for process, _ in running.values()])
        for _, reader in running.values():
            reader.close()


@contextlib.contextmanager
def _main_left_out() -> Iterator[None]:
    """Start a worker without the parent's ``__main__``: a spawned process runs the user's script (or
    ``python -m`` module) again as ``__mp_main__`` before anything else, its unguarded
    ``model_collapse.run(...)`` included (the README's example saved as a file), and no chain needs it:
    a setting or function defined in ``__main__`` makes the runner keep the chains in this process."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__: nothing to re-run
    before = os.environ.get(WORKER_ENVIRONMENT)
    os.environ[WORKER_ENVIRONMENT] = "1"  # what the user's code is warned about, this process has said
    try:
        yield
    finally:
        sys.modules["__main__"] = main
        if before is None:
            del os.environ[WORKER_ENVIRONMENT]
        else:
            os.environ[WORKER_ENVIRONMENT] = before


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
        # resuming as it ran would run out of memory again: say what changes that
        cause = (
            ", most likely by the out-of-memory killer (fewer chains at once, --workers 1 on resume, "
            "or a smaller setting would need less)"
            if -exitcode == signal.SIGKILL
            else ""
        )
        return f"was killed by {name}{cause}"
    return f"ended with exit code {exitcode} without a word"
