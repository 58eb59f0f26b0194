"""One chain of a run, wherever it runs (this process, a local worker, a Ray task, a Slurm job), and
what stopped it, as the one line the run ends with.

``run_chain_spec`` runs a chain and returns an ``Outcome`` instead of raising: it crosses a pipe, Ray
or a pickle file back to the driver, which raises it with ``Outcome.raise_for``. This is the one place
where a failure becomes its message: a user's error as it is, a fault of the machine (a full disk,
memory running out, a worker killed) as a ``ResourceError``, a bug as a ``ChainFailed`` of one line
naming the chain, the error and the file of the run directory that keeps its traceback: the same
wherever the chain ran, in this process or elsewhere.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import activity, distributed
from .chain import run_chain
from .errors import (
    ChainFailed,
    ConfigError,
    ModelCollapseError,
    NoSamples,
    ResourceError,
    RunDirectoryError,
    SettingError,
    one_line_error,
)
from .experiment import ChainSpec, setting_class
from .rundir import SHARED, ChainStore, IterationRecord
from .threads import limited as limited_threads

_ERRORS = {
    cls.__name__: cls
    for cls in (ModelCollapseError, ConfigError, RunDirectoryError, ResourceError, SettingError, NoSamples)
}


@dataclass(frozen=True)
class Outcome:
    """How a chain's run ended: complete, a one-line error (``error``: its class name), or a bug
    (``traceback``). ``exception`` is the bug itself when the chain ran in this process (it is not
    pickled), so that it is raised with its own traceback."""

    error: str | None = None
    message: str = ""
    traceback: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    @property
    def complete(self) -> bool:
        return self.error is None and self.traceback is None

    @classmethod
    def of(cls, error: Exception, run_directory: Path) -> Outcome:
        fault = one_line_error(error, run_directory)
        if fault is not None:
            return cls(type(fault).__name__, str(fault))
        text = "".join(traceback.format_exception(error))
        return cls(message=_first_line(f"{type(error).__name__}: {error}"), traceback=text, exception=error)

    @classmethod
    def died(cls, reason: str) -> Outcome:
        """A chain whose process or job ended without a word (killed, lost with its node)."""
        return cls("ResourceError", reason)

    @classmethod
    def crashed(cls, traceback_text: str) -> Outcome:
        """A bug reported by its traceback alone (a Slurm job's)."""
        lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
        return cls(message=_first_line(lines[-1]) if lines else "it failed", traceback=traceback_text)

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "exception"}

    def raise_for(self, run_directory: Path, spec: ChainSpec) -> None:
        """Nothing if complete; else record why in the chain's directory (``model-collapse status``
        shows it) and raise the chain's error."""
        if self.complete:
            return
        store = ChainStore.of(run_directory, spec, writer=False)
        store.record_failure(self.message)
        if self.error is not None:
            raise _ERRORS.get(self.error, ModelCollapseError)(f"chain {spec.label}: {self.message}")
        text = self.traceback or ""
        log = store.keep_traceback(run_directory, text)
        if log is None:  # (the run directory cannot take it: the one place left to say it)
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
        where = f"its traceback is in {log}" if log is not None else "its traceback is above"
        raise ChainFailed(f"chain {spec.label} failed: {self.message} ({where})", log, self.exception)


def _first_line(message: str, limit: int = 300) -> str:
    """An error's message as one line of a readable length (the whole of it is in the traceback)."""
    line = (message.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_spec(
    run_directory: Path,
    spec: ChainSpec,
    iterations: int,
    checkpoints: str,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> None:
    """Run (or finish) the chain ``spec`` in its directory of ``run_directory``; errors are raised."""
    setting = setting_class(spec.point)(spec.point, spec.seeds)
    setting.shared = run_directory / SHARED
    store = ChainStore.of(run_directory, spec, writer=distributed.is_main())
    if store.writer:
        store.prepare()  # under torchrun, the other ranks read the chain only once rank 0 has prepared it
    for regime in spec.sharing:  # a regime that cannot run on these data is named before anything is fitted
        regime.check_real_size(len(setting.real_train))
    cheap = setting.capabilities_of(spec.point).cheap
    if store.writer and not (cheap or spec.shared_first_iteration):  # computed once for every regime
        store.adopt_first_iteration(ChainStore.of(run_directory, spec.first_iteration(), writer=False))
    distributed.barrier()
    run_chain(setting, spec.regime, iterations, store, checkpoints=checkpoints, on_iteration=on_iteration)


def run_chain_spec(
    run_directory: Path,
    spec: ChainSpec,
    iterations: int,
    checkpoints: str,
    on_iteration: Callable[[IterationRecord], None] | None = None,
    threads: int = 1,
) -> Outcome:
    """``run_spec`` within the chain's thread budget (``threads.py``: ``threads``, or one for a cheap
    setting, whose numbers must not depend on where it ran), its ending as an ``Outcome`` (Ctrl-C and
    SIGTERM still raise). The setting's module (and with it PyTorch) is imported first, so that the
    limit covers its thread pools."""
    try:
        budget = 1 if setting_class(spec.point).capabilities_of(spec.point).cheap else threads
        with limited_threads(budget), activity.in_chain(spec.label):
            run_spec(run_directory, spec, iterations, checkpoints, on_iteration)
    except Exception as error:
        return Outcome.of(error, run_directory)
    return Outcome()
