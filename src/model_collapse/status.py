"""``model-collapse status RUN``: how far every chain of a run has got, read from the run directory.

It reads only what the chains write (their progress and committed iterations, ``failure.json`` where a
chain failed) and whether a process holds the run's lock, so it works wherever the chains run and from
any machine that sees the directory, while the run goes on or after it stopped.

A chain is ``done`` (all iterations committed), ``damaged`` (a record that cannot be read, named
with its file: ``resume`` and ``table`` refuse the run), ``failed`` (with the reason its process left),
or, while a ``run`` or ``resume`` holds the lock, ``running`` (some iterations committed) or
``waiting``; without one, ``stopped`` (some committed: ``resume`` finishes it) or ``not started``. A
chain of a costly run that waits on the first iteration its regimes share (computed once for all of
them) says so, and is ``failed`` with its reason if that computation failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import RunDirectoryError
from .results import open_experiment
from .rundir import ChainStore, run_in_use

STATES = ("done", "running", "waiting", "damaged", "failed", "stopped", "not started")


@dataclass
class ChainStatus:
    label: str
    state: str
    completed: int
    iterations: int
    reason: str = ""


@dataclass
class RunStatus:
    """Every chain's status, and who holds the run (None when no process does)."""

    chains: list[ChainStatus]
    holder: str | None

    def summary(self) -> str:
        counts = {state: sum(c.state == state for c in self.chains) for state in STATES}
        parts = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        done = sum(c.completed for c in self.chains)
        total = sum(c.iterations for c in self.chains)
        who = f"; in use by {self.holder}" if self.holder else ""
        return f"{len(self.chains)} chains: {parts}; {done} of {total} iterations committed{who}"

    def lines(self, per_chain: bool = True) -> list[str]:
        """Aligned plain lines (one per chain, then the summary): readable in a terminal, a log or grep."""
        lines = []
        if per_chain:
            rows = [("chain", "state", "iterations", "reason")]
            rows += [(c.label, c.state, f"{c.completed}/{c.iterations}", c.reason) for c in self.chains]
            widths = [max(len(row[i]) for row in rows) for i in range(3)]
            lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3] for row in rows]
            lines = [line.rstrip() for line in lines]
        return lines + [self.summary()]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    @property
    def damaged(self) -> list[ChainStatus]:
        return [c for c in self.chains if c.state == "damaged"]

    @property
    def unfinished(self) -> list[ChainStatus]:
        return [c for c in self.chains if c.state != "done"]


def run_status(run_directory: Path, read_records: bool = True) -> RunStatus:
    """Every chain's status, and who holds the run. ``read_records``: read every committed record, so
    that a damaged one makes its chain ``damaged`` (False for a caller that has just read them all)."""
    experiment = open_experiment(run_directory)
    holder = run_in_use(run_directory)
    iterations = experiment.config.iterations
    chains = []
    metrics = experiment.metrics
    for spec in experiment.chains():
        store = ChainStore.of(run_directory, spec, writer=False)
        try:
            completed = min(store.completed(), iterations) if store.directory.exists() else 0
            if read_records:
                store.records(len(spec.seeds), metrics, completed)  # every record whole, as table reads them
            failure = store.failure() if store.directory.exists() else None
        except RunDirectoryError as damage:
            readable = store.readable_iterations(len(spec.seeds), metrics)
            chains.append(ChainStatus(spec.label, "damaged", min(readable, iterations), iterations, str(damage)))
            continue
        reason = failure["reason"] if failure else ""
        if not completed and failure is None:  # it may be waiting on the first iteration its regimes share
            failure, reason = _shared_first_iteration(run_directory, spec, holder is not None)
        if completed == iterations:
            state = "done"
        elif failure is not None:
            state = "failed"
        elif holder is not None:
            state = "running" if completed else "waiting"
        else:
            state = "stopped" if completed else "not started"
        chains.append(ChainStatus(spec.label, state, completed, iterations, reason))
    return RunStatus(chains, holder)


def _shared_first_iteration(run_directory: Path, spec, running: bool) -> tuple[dict | None, str]:
    """A chain not started yet, of a costly run that computes its regimes' first iteration once
    (``runner.shared_first_iterations``): that computation's failure, or that it is under way."""
    shared = ChainStore.of(run_directory, spec.first_iteration(), writer=False)
    if not shared.directory.is_dir():
        return None, ""
    failure = shared.failure()
    if failure is not None:
        return failure, f"the first iteration its regimes share failed: {failure['reason']}"
    if running and not shared.progress():
        return None, "the first iteration its regimes share is being computed"
    return None, ""
