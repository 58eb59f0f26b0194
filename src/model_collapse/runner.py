"""Running the unfinished chains of an experiment into its run directory, with the executor its config
(or ``--executor``) names (``executors/``), behind one progress display.

Each chain is independent and resumable on its own, so a run interrupted anywhere is finished by
running the same function again: chains already complete are skipped, others resume where they stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import activity, distributed
from .errors import ConfigError, RunDirectoryError
from .executors import EXECUTORS, executor_class, executor_targets
from .executors.options import ExecutorOptions
from .executors.protocol import Work
from .experiment import FIRST_ITERATIONS, ChainSpec, Experiment
from .rundir import ChainStore
from .threads import share_of_cores
from .validation import validation_error

log = logging.getLogger(__name__)


def completed_iterations(run_directory: Path, specs: Sequence[ChainSpec], iterations: int) -> list[int]:
    """Iterations each chain has completed (0 for a chain not started), checked on disk.

    The iterations must form an unbroken sequence and a finished chain's records be whole (every metric,
    every seed), so that a damaged chain is named now rather than later by ``table``."""
    done = []
    for spec in specs:
        store = ChainStore.of(run_directory, spec, writer=False)
        completed = min(store.completed(), iterations)
        if completed == iterations:
            store.records(len(spec.seeds), spec.metrics, completed)
        done.append(completed)
    return done


def code_only_here(experiment: Experiment) -> str | None:
    """Why the chains of ``experiment`` can run only in this process (None: they can run anywhere): its
    setting, reward or verifier is defined in ``__main__`` (a notebook, a script), which a worker
    process cannot import."""
    named = [("the setting", experiment.setting_name)]
    named += [
        (f"setting.curation.{point.curation.scorer_key}", point.curation.scored_by)
        for point in experiment.points
        if point.curation is not None and point.curation.score is None
    ]
    for what, path in named:
        if path.partition(":")[0] == "__main__":
            name = path.partition(":")[2]
            return (
                f"{what} {name} is defined in __main__ (a notebook or a script), which worker processes cannot import"
            )
    return None


def chain_threads(options: ExecutorOptions, threads: int | None, chains_at_once: int) -> int:
    """Each chain's thread budget (``threads.py``): ``threads`` when given; else what the executor
    reserves for a chain (the CPUs of a Ray task, or of a Slurm task of the chain); else, locally, its
    share of this machine's cores."""
    if threads is not None:
        return threads
    reserved = options.threads_per_chain
    return reserved if reserved is not None else share_of_cores(chains_at_once)


def resolve_workers(experiment: Experiment, workers: int | None) -> int:
    """Parallel processes: the command line's, else the config's, else one per CPU."""
    return workers or experiment.config.workers or os.cpu_count() or 1


def resolve_executor(experiment: Experiment, executor: str | None) -> ExecutorOptions:
    """The options of the executor that runs the chains: the config's ``executor`` section, its name
    replaced by the command line's ``--executor`` if given, checked by that executor (Slurm asks the
    cluster) before anything is written."""
    section = dict(experiment.config.executor)
    name = section.pop("name", "local")
    names = executor_targets()
    if executor is not None:
        if executor not in names:
            raise ConfigError(f"--executor {executor!r}: choose one of {', '.join(names)}")
        name = executor
    options = executor_options(name, section)
    executor_class(name)(options).check()
    return options


def executor_options(name: str, section: dict[str, Any]) -> ExecutorOptions:
    """``section``'s options for the executor ``name``. Every executor checks the values of the options it
    takes, whichever runs (one section serves a laptop and a cluster); a key that no executor takes is
    refused. An installed executor that cannot be imported here takes nothing, unless it is to run."""
    classes = {}
    for other in executor_targets():
        try:
            classes[other] = executor_class(other).Options
        except Exception as error:
            if other == name:
                target = executor_targets()[name]
                raise ConfigError(
                    f"executor {name!r}: importing {target} failed: {type(error).__name__}: {error}"
                ) from None
            if other in EXECUTORS:
                raise
    unknown = [key for key in section if not any(key in cls.model_fields for cls in classes.values())]
    if unknown:
        raise ConfigError(f"executor.{unknown[0]}: unknown key (no executor takes it)")
    checked = {}
    for other, cls in classes.items():
        own = {key: value for key, value in section.items() if key in cls.model_fields}
        try:
            checked[other] = cls.model_validate({**own, "name": other})
        except ValidationError as error:
            raise validation_error(error, ("executor",)) from None
    return checked[name]


class _ProgressBars:
    """The progress display: a bar for all chains, one per unfinished chain with what it is doing."""

    def __init__(
        self, display: Progress, specs: Sequence[ChainSpec], done: list[int], iterations: int, title: str = "all chains"
    ) -> None:
        self.display = display
        self.overall = display.add_task(title, total=len(specs) * iterations, completed=sum(done), activity="")
        self.bars = {
            i: display.add_task(spec.label, total=iterations, completed=done[i], activity="")
            for i, spec in enumerate(specs)
            if done[i] < iterations
        }
        self.reached_at = dict(enumerate(done))

    def reached(self, chain: int, iteration: int) -> None:
        self.display.update(self.bars[chain], completed=iteration)
        self.display.advance(self.overall, iteration - self.reached_at[chain])
        self.reached_at[chain] = iteration

    def doing(self, chain: int, activity: str) -> None:
        self.display.update(self.bars[chain], activity=activity)


def _display(console: Console) -> Progress:
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


def run_experiment(
    run_directory: Path,
    experiment: Experiment,
    workers: int | None = None,
    quiet: bool = False,
    options: ExecutorOptions | None = None,
    threads: int | None = None,
) -> None:
    """Run the unfinished chains of ``experiment`` with the executor of ``options`` (from
    ``resolve_executor``; default: the config's), locally in at most ``workers`` processes, each chain
    on ``threads`` threads (default: the config's, else its share of the cores: ``threads.py``)."""
    options = options or resolve_executor(experiment, None)
    specs = experiment.chains()
    iterations = experiment.config.iterations
    workers = resolve_workers(experiment, workers)
    if distributed.world_size() > 1:
        workers, quiet = 1, quiet or not distributed.is_main()  # ranks run the chains together, one at a time
    if workers > 1 and options.runs_here and options.name == "local":
        reason = code_only_here(experiment)
        if reason is not None:
            log.warning("note: the chains run in this process, one at a time: %s", reason)
            workers = 1
    done = completed_iterations(run_directory, specs, iterations)
    todo = [i for i, spec in enumerate(specs) if done[i] < iterations]
    cheap = experiment.capabilities.cheap
    budget = threads or experiment.config.threads
    each = chain_threads(options, budget, min(workers, len(todo)))
    work = Work(run_directory, specs, todo, iterations, experiment.config.checkpoints, workers, quiet, each)
    first = [] if cheap else shared_first_iterations(run_directory, specs, done, iterations)
    activity.show_messages(quiet)
    executor = executor_class(options.name)(options)
    with _display(Console(stderr=True, quiet=quiet)) as display:
        if first:  # the chains then commit them as their own (outcome.run_spec), rather than each fitting its own
            each = chain_threads(options, budget, min(workers, len(first)))
            shared = Work(run_directory, first, range(len(first)), 1, "last", workers, quiet, each)
            executor.run(shared, _ProgressBars(display, first, [0] * len(first), 1, "first iterations, shared"))
        executor.run(work, _ProgressBars(display, specs, done, iterations))
    if distributed.is_main():  # every chain is complete: what they shared is theirs now
        shutil.rmtree(run_directory / FIRST_ITERATIONS, ignore_errors=True)


def shared_first_iterations(
    run_directory: Path, specs: Sequence[ChainSpec], done: list[int], iterations: int
) -> list[ChainSpec]:
    """The first iterations to compute once for several chains: where two or more regimes of a sweep
    point (and seed group) have yet to start, their iteration 1 is the same fit (the real data alone, on
    streams keyed without the regime), so it is computed once into RUN/first-iterations/ and every
    one of those chains commits it as its own. A first iteration already there (an interrupted run) is
    not computed again."""
    if iterations < 2:
        return []
    waiting: dict[tuple[str, tuple[int, ...]], list[ChainSpec]] = {}
    for spec, completed in zip(specs, done):
        if completed == 0:
            waiting.setdefault((spec.point_name, spec.seeds), []).append(spec)
    first = [group[0].first_iteration(tuple(s.regime for s in group)) for group in waiting.values() if len(group) > 1]
    return [spec for spec in first if not _has_first_iteration(ChainStore.of(run_directory, spec))]


def _has_first_iteration(store: ChainStore) -> bool:
    """Whether a shared first iteration is committed; one that cannot be read is removed (it is only
    ever a copy of what each chain would compute) and computed again."""
    try:
        return store.completed() >= 1
    except RunDirectoryError:
        if distributed.is_main():
            shutil.rmtree(store.directory, ignore_errors=True)
        return False
