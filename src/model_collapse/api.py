"""The Python API: what the ``model-collapse`` command does, from a notebook or a script.

    import model_collapse

    run = model_collapse.run("configs/quickstart.yaml", out="runs/quickstart", overrides=["seeds=20"])
    run.table()          # a pandas DataFrame, the rows `model-collapse table` prints
    run.plot()           # the figures, in RUN/figures
    run.report()         # RUN/report.html
    run.status()         # how far every chain has got

    run = model_collapse.run({"setting": {"name": "gaussian", "dim": 2}, "regimes": ["replace"],
                              "iterations": 10, "seeds": 5}, out="runs/gaussian")
    model_collapse.open("runs/quickstart").table()
    model_collapse.resume("runs/interrupted")

A config is a YAML file's path or the same mapping as a dict. Errors are the exceptions of
``model_collapse.errors`` (``ConfigError`` for a bad config, ``RunDirectoryError`` for a damaged run,
``ResourceError`` when the machine runs out of something), with the one-line messages the command
prints. The command (``cli.py``) is a thin layer over these functions.
"""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError, ModelCollapseError

if TYPE_CHECKING:  # imported when called: `import model_collapse` stays light
    import pandas

    from .executors.options import ExecutorOptions
    from .experiment import Experiment
    from .status import RunStatus


@dataclass(frozen=True)
class Prepared:
    """A validated experiment and the executor options it runs with, before anything is written."""

    experiment: Experiment
    options: ExecutorOptions


def _count(name: str, value: Any) -> int | None:
    """A count argument (``workers``, ``threads``): None, or a whole number >= 1, as the command line's
    ``--workers`` and ``--threads`` take."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r}: expected a whole number >= 1 (or None for the default)")
    return value


def _overrides(overrides: Any) -> tuple[str, ...]:
    """The ``overrides`` argument: ``dotted.key=value`` strings, as the command line takes them."""
    if isinstance(overrides, str | bytes):
        raise ConfigError(
            f"overrides={overrides!r}: expected a list of 'dotted.key=value' strings, not one string "
            f"(overrides=[{overrides!r}])"
        )
    try:
        items = tuple(overrides)
    except TypeError:
        raise ConfigError(f"overrides={overrides!r}: expected a list of 'dotted.key=value' strings") from None
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"overrides: {item!r} is not a 'dotted.key=value' string")
    return items


def _choice(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: expected a name (a string) or None")
    return value


def _directory(name: str, value: Any) -> Path | None:
    if value is not None and not isinstance(value, str | Path):
        raise ConfigError(f"{name}={value!r}: expected a path (a string or pathlib.Path)")
    return Path(value) if value is not None else None


def _run_directory(value: Any) -> Path:
    """The ``run_directory`` argument of ``resume`` and ``open``: a path, which they cannot do without."""
    directory = _directory("run_directory", value)
    if directory is None:
        raise ConfigError("run_directory=None: expected the path of a run directory")
    return directory


def _check_threads(threads: int | None, experiment: Experiment, options: ExecutorOptions) -> None:
    """A thread budget (``threads``, else the config's) no larger than the cores of this machine, where
    the chains run here: more threads than cores only thrash, and a huge count exhausts the process's
    memory map (where the chains run elsewhere, their nodes' cores are not known here)."""
    from .threads import available_cores

    budget = threads if threads is not None else experiment.config.threads
    cores = available_cores()
    if budget is not None and options.runs_here and budget > cores:
        given = f"threads={budget}" if threads is not None else f"threads: {budget}"  # the argument's, the config's
        raise ConfigError(f"{given}: more threads per chain than the {cores} cores this process may use")


def _prepare(
    config: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    workers: int | None = None,
    executor: str | None = None,
    threads: int | None = None,
) -> Prepared:
    """Read and check a config (a path or a dict) with its overrides: every field, the setting's
    dependencies, the executor (Slurm's ``sbatch --test-only``), the thread budget (``threads``, the
    command line's) and the memory the chains need."""
    from .config import apply_overrides, build_experiment, load_experiment
    from .memory import estimate_memory
    from .runner import resolve_executor, resolve_workers
    from .settings import SETTINGS

    overrides, workers, executor = _overrides(overrides), _count("workers", workers), _choice("executor", executor)
    threads = _count("threads", threads)
    if not isinstance(config, Mapping) and _directory("config", config) is None:
        raise ConfigError("config=None: expected a YAML file's path or a dict")

    if isinstance(config, Mapping):
        setting = config.get("setting")
        if isinstance(setting, Mapping) and isinstance(setting.get("name"), type):
            # a class (one defined in a notebook, say): run under its import path
            config = {**config, "setting": {**setting, "name": SETTINGS.allow(setting["name"])}}
        experiment = build_experiment(apply_overrides(config, overrides))
    else:
        experiment = load_experiment(Path(config), overrides)
    SETTINGS[experiment.setting_name]  # its optional dependencies are installed
    options = resolve_executor(experiment, executor)
    _check_threads(threads, experiment, options)
    if options.runs_here:  # (elsewhere, the files may be the cluster's)
        declared = SETTINGS.declared(experiment.setting_name)
        for point in experiment.points:
            declared.check_inputs(point)
    estimate_memory(experiment, resolve_workers(experiment, workers), here=options.runs_here)
    return Prepared(experiment, options)


def _default_directory(config: str | Path | Mapping[str, Any]) -> Path:
    """Where a run goes without ``out``: ``runs/<config file's name>``, or for a dict
    ``runs/<setting>-<time>``."""
    if isinstance(config, Mapping):
        setting = config.get("setting")
        name = setting.get("name") if isinstance(setting, Mapping) else None
        name = name.name if isinstance(name, type) and hasattr(name, "name") else name
        stem = str(name).replace(":", "-").replace(".", "-") if isinstance(name, str) else "run"
        return Path("runs") / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / Path(config).stem


def _resume_command(run_directory: Path, experiment: Any) -> str:
    """The command that finishes ``run_directory``: ``model-collapse resume RUN``, with ``--allow-import``
    for a setting named by import path and for each reward or verifier its curation names by path (a run
    directory alone never makes model-collapse import code)."""
    import shlex

    from .settings import SETTINGS
    from .vouched import is_import_path

    words = ["model-collapse", "resume", str(run_directory)]
    name = experiment.setting_name
    if is_import_path(name) and name not in SETTINGS.registered_paths():
        words += ["--allow-import", name]
    curations = [point.curation for point in experiment.points if point.curation is not None]
    for path in dict.fromkeys(curation.scored_by for curation in curations if curation.score is None):
        if is_import_path(path):
            words += ["--allow-import", path]
    return shlex.join(words)


@dataclass(frozen=True)
class Resumable:
    """A run under way, for the line that says how to finish it: its directory and the command."""

    directory: Path
    command: str


T = TypeVar("T")


class Hooks:
    """How the caller of ``run`` and ``resume`` hears of what happens. The Python API's (these defaults)
    lets errors rise as they are and logs its notices; the command line's turns an error into one line
    and an exit code, and prints notices as they are."""

    def guard(self, action: Callable[[], T], resumable: Resumable | None = None) -> T:
        """Run ``action``, a step of the run; ``resumable`` (while the chains run) says how to finish
        the run should it stop."""
        return action()

    def say(self, line: str) -> None:
        """A notice for the user (a damaged commit set aside)."""
        logging.getLogger(__name__).warning(line)


def _run_locked(
    directory: Path,
    take: Callable[[], Any],
    prepared: Prepared,
    workers: int | None,
    quiet: bool,
    hooks: Hooks,
    threads: int | None = None,
) -> None:
    """Run (or finish) the chains of ``prepared`` in ``directory`` while holding its lock, taken by
    ``take`` (creating the run, or locking an existing one) on rank 0 alone under torchrun, with SIGTERM
    stopping it as Ctrl-C does; the taking of the lock and then the chains each run under
    ``hooks.guard``, the chains with the command that finishes the run."""
    from . import distributed
    from .runner import run_experiment
    from .signals import terminate_like_ctrl_c

    def lock_on_rank_0():
        lock = take() if distributed.is_main() else None
        distributed.barrier()
        return lock

    def chains():
        try:
            run_experiment(directory, prepared.experiment, workers, quiet, prepared.options, threads)
        finally:
            if lock is not None:
                lock.release()
        distributed.finish()

    with terminate_like_ctrl_c():
        distributed.start()
        lock = hooks.guard(lock_on_rank_0)
        hooks.guard(chains, Resumable(directory, _resume_command(directory, prepared.experiment)))


def _setting_record(experiment: Any) -> dict[str, Any]:
    """What run.json records of the setting: its name as the config gives it, and where its code is from."""
    from .settings import SETTINGS

    return {"name": experiment.setting_name, "origin": SETTINGS.origin(experiment.setting_name).to_json()}


def run(
    config: str | Path | Mapping[str, Any],
    *,
    out: str | Path | None = None,
    overrides: Iterable[str] = (),
    workers: int | None = None,
    quiet: bool = True,
    executor: str | None = None,
    threads: int | None = None,
    hooks: Hooks | None = None,
) -> Run:
    """Run every chain of ``config`` (a YAML file's path, or the same mapping as a dict) into the new run
    directory ``out`` (default: ``runs/<config file's name>``, or ``runs/<setting>-<time>`` for a dict);
    returns the finished ``Run``.

    In a dict, ``setting.name`` may be a setting class itself, which runs under its import path
    (``module:Class``; a class defined in a notebook or the script itself keeps the chains in this
    process, one at a time, saying so: worker processes cannot import ``__main__``).

    ``overrides`` are ``dotted.key=value`` strings, as on the command line; ``workers`` parallel local
    processes (default: the config's, else one per CPU); ``executor``: ``local``, ``ray`` or ``slurm``
    (default: the config's); ``threads``: each chain's thread budget, BLAS and PyTorch (default: the
    config's, else the cores divided by the chains running at once); ``hooks``: how errors and notices
    reach the caller (``Hooks``; the default raises and logs). Ctrl-C or SIGTERM stops the chains after
    committing what they computed; ``resume`` finishes the run."""
    from .rundir import create_run

    hooks = hooks or Hooks()
    prepared = hooks.guard(lambda: _prepare(config, overrides, workers, executor, threads))
    directory = hooks.guard(lambda: _directory("out", out)) or _default_directory(config)
    record = hooks.guard(lambda: _setting_record(prepared.experiment))
    take = lambda: create_run(directory, prepared.experiment.resolved(), record)  # noqa: E731
    _run_locked(directory, take, prepared, workers, quiet, hooks, threads)
    return Run(directory)


def _allow(setting: str | type | None, allow_import: str | Sequence[str] = ()) -> None:
    """Vouch for the import paths the caller names (``vouched.py``): a setting (a class, or its path),
    and any setting or curation function a run directory names by path."""
    from .settings import SETTINGS
    from .vouched import vouch

    if setting is not None:
        SETTINGS.allow(setting)
    for path in [allow_import] if isinstance(allow_import, str) else allow_import:
        vouch(path)


def _prepare_resume(run_directory: Path, executor: str | None = None, threads: int | None = None) -> Prepared:
    """The experiment a run directory records, checked as ``_prepare`` checks a config."""
    from .curation import check_functions_allowed
    from .results import open_experiment
    from .runner import resolve_executor
    from .settings import SETTINGS

    experiment = open_experiment(run_directory)
    SETTINGS[experiment.setting_name]  # its optional dependencies are installed
    for point in experiment.points:
        check_functions_allowed(point)
    options = resolve_executor(experiment, executor)
    _check_threads(threads, experiment, options)
    return Prepared(experiment, options)


def _damaged_commits(run_directory: Path, experiment) -> list[tuple[Any, Any, list]]:
    """(chain, its store, the commits ``resume --recompute-damaged`` would set aside) of every chain
    with a record that cannot be read."""
    from .rundir import ChainStore

    keeps_models = not experiment.capabilities.cheap
    found = []
    for spec in experiment.chains():
        store = ChainStore.of(run_directory, spec, writer=True)
        if store.directory.is_dir():
            commits = store.damaged_commits(len(spec.seeds), spec.metrics, keeps_models)
            if not commits and keeps_models:
                unreadable = _unreadable_state(run_directory, spec, store, experiment.config.iterations)
                if unreadable is not None:
                    commits = store.damaged_commits(len(spec.seeds), spec.metrics, keeps_models, unreadable)
            if commits:
                found.append((spec, store, commits))
    return found


def _unreadable_state(run_directory: Path, spec, store, iterations: int) -> int | None:
    """An unfinished costly chain whose records all read: the first iteration whose kept model or
    synthetic batch, which its resume would read, cannot be (None: it can resume as it is)."""
    from .chain import first_unreadable_state
    from .experiment import setting_class
    from .rundir import SHARED

    completed = store.completed()
    if not 0 < completed < iterations:
        return None
    try:
        setting = setting_class(spec.point)(spec.point, spec.seeds)
    except ModelCollapseError:  # its data are not here: nothing to check, and not this function's to say
        return None
    setting.shared = run_directory / SHARED
    return first_unreadable_state(setting, spec.regime, store, completed)


def _damaged_shared(run_directory: Path, experiment) -> list[Path]:
    """The files of ``RUN/shared/`` (what a setting makes once per run: the VAE's judge, say) that a
    chain's recorded failure names as damaged."""
    from .rundir import SHARED, ChainStore

    shared = run_directory / SHARED
    files = [path for path in shared.rglob("*") if path.is_file()] if shared.is_dir() else []
    if not files:
        return []
    failures = [ChainStore.of(run_directory, spec, writer=False).failure() for spec in experiment.chains()]
    reasons = [failure["reason"] for failure in failures if failure is not None]
    # a chain names the file as its run directory was given to it: as here, or resolved (Slurm, Ray)
    return [path for path in files if any(str(path) in r or str(path.resolve()) in r for r in reasons)]


def _set_aside_damaged(run_directory: Path, experiment) -> list[str]:
    """``resume --recompute-damaged``: every chain's damaged commit and the ones after it moved into
    ``RUN/damaged/<UTC time>/<chain>/`` (nothing deleted), so that resuming recomputes them (exactly:
    chains are deterministic), and a damaged file of ``RUN/shared/`` into ``RUN/damaged/<UTC
    time>/shared/``, so that the setting makes it again; a line per chain or file saying what goes. Call
    it holding the lock."""
    from datetime import timezone

    from .experiment import FIRST_ITERATIONS
    from .rundir import DAMAGED

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    lines = []
    for path in _damaged_shared(run_directory, experiment):
        destination = run_directory / DAMAGED / stamp / path.resolve().relative_to(run_directory.resolve())
        destination.parent.mkdir(parents=True, exist_ok=True)
        path.rename(destination)
        lines.append(f"{path} moved to {destination}, to be made again")
    damaged = _damaged_commits(run_directory, experiment)
    if damaged:  # a first iteration the chains shared may be the damage: they compute it afresh
        shutil.rmtree(run_directory / FIRST_ITERATIONS, ignore_errors=True)
    for spec, store, commits in damaged:
        destination = run_directory / DAMAGED / stamp / store.directory.relative_to(run_directory)
        store.set_aside(commits, destination)
        first, last = commits[0].first, commits[-1].last
        span = f"iteration {first}" if first == last else f"iterations {first}-{last}"
        lines.append(f"{spec.label}: {span} moved to {destination}, to be computed again")
    return lines


def resume(
    run_directory: str | Path,
    *,
    workers: int | None = None,
    quiet: bool = True,
    executor: str | None = None,
    setting: str | type | None = None,
    allow_import: str | Sequence[str] = (),
    recompute_damaged: bool = False,
    threads: int | None = None,
    hooks: Hooks | None = None,
) -> Run:
    """Finish an interrupted run: committed iterations are kept, the rest computed as in one go.

    ``allow_import``: the import paths (``package.module:name``) of code the run names by path, which a
    run directory alone never makes this import: its setting, the reward or verifier its curation
    names; ``setting``: the setting's path or class (an earlier way to say it); ``recompute_damaged``: a chain's
    damaged record and the commits after it are moved into ``RUN/damaged/`` and computed again
    (without it, a damaged record stops the run with an error that says so); ``threads`` and ``hooks``:
    as for ``run``."""
    hooks = hooks or Hooks()
    directory, prepared = hooks.guard(lambda: _resumable(run_directory, executor, threads, setting, allow_import))
    workers = hooks.guard(lambda: _count("workers", workers))
    take = lambda: _lock_for_resume(directory, prepared, recompute_damaged, hooks.say)  # noqa: E731
    _run_locked(directory, take, prepared, workers, quiet, _WayForward(hooks, directory, prepared, recompute_damaged))
    return Run(directory)


def _resumable(
    run_directory: Any, executor: Any, threads: Any, setting: str | type | None, allow_import: str | Sequence[str]
) -> tuple[Path, Prepared]:
    """``resume``'s arguments checked, the code it may import vouched for, and its run prepared."""
    directory = _run_directory(run_directory)
    threads, executor = _count("threads", threads), _choice("executor", executor)
    _allow(setting, allow_import)
    return directory, _prepare_resume(directory, executor, threads)


class _WayForward(Hooks):
    """``hooks``, with the way forward added to an error that a damaged record, model, kept batch or
    shared file caused: ``--recompute-damaged`` moves it aside and computes it again."""

    def __init__(self, hooks: Hooks, directory: Path, prepared: Prepared, recompute_damaged: bool):
        self.hooks, self.directory, self.prepared, self.recompute_damaged = (
            hooks,
            directory,
            prepared,
            recompute_damaged,
        )

    def say(self, line: str) -> None:
        self.hooks.say(line)

    def guard(self, action: Callable[[], T], resumable: Resumable | None = None) -> T:
        return self.hooks.guard(lambda: self._named(action), resumable)

    def _named(self, action: Callable[[], T]) -> T:
        from .errors import ChainFailed, RunDirectoryError
        from .rundir import DAMAGED, SHARED

        try:
            return action()
        except (RunDirectoryError, ChainFailed) as error:
            if self.recompute_damaged:
                raise
            directory, experiment = self.directory, self.prepared.experiment
            aside = f"{directory / DAMAGED}/"
            if _damaged_commits(directory, experiment):
                what = f"the damaged iteration and the later ones of its chain into {aside} and computes them again"
            elif _damaged_shared(directory, experiment):
                what = f"the damaged file of {directory / SHARED}/ into {aside} and makes it again"
            else:
                raise
            raise RunDirectoryError(
                f"{error}; `model-collapse resume {directory} --recompute-damaged` moves {what}"
            ) from None


def _lock_for_resume(directory: Path, prepared: Prepared, recompute_damaged: bool, say: Callable[[str], None]):
    """The run's lock, and with ``recompute_damaged`` its damaged commits set aside under it."""
    from .rundir import lock_run

    lock = lock_run(directory)
    if recompute_damaged:
        for line in _set_aside_damaged(directory, prepared.experiment):
            say(line)
    return lock


def open(  # noqa: A001 (model_collapse.open)
    run_directory: str | Path, *, setting: str | type | None = None, allow_import: str | Sequence[str] = ()
) -> Run:
    """An existing run directory, checked to be one (its config read and validated).

    ``setting`` and ``allow_import``: as for ``resume``."""
    directory = _run_directory(run_directory)
    _allow(setting, allow_import)
    found = Run(directory)
    found.experiment  # noqa: B018 (checks the directory now rather than at the first table)
    return found


class Run:
    """A run directory, and what the command line's ``table``, ``plot``, ``report`` and ``status`` give."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._experiment: Any = None

    def __repr__(self) -> str:
        return f"Run({str(self.directory)!r})"

    @property
    def experiment(self) -> Experiment:
        """The run's validated config (``config.Experiment``): points, regimes, iterations, seeds."""
        if self._experiment is None:
            from .results import open_experiment

            self._experiment = open_experiment(self.directory)
        return self._experiment

    def table_csv(self) -> str:
        """The tidy CSV ``model-collapse table`` prints: a row per (sweep point, regime, seed, iteration)."""
        from .results import table

        return table(self.directory)

    def table(self) -> pandas.DataFrame:
        """The tidy table as a pandas DataFrame (the ``pandas`` extra): the same rows and columns as
        ``table_csv``, numbers read back exactly (they are written as Python's shortest round-trip text)."""
        try:
            import pandas
        except ImportError:
            from .settings import install_hint

            raise ModelCollapseError(f"Run.table() needs pandas; install it with {install_hint('pandas')}") from None
        # pandas 3 parses floats exactly by default; 2.x only when asked (an option 3 deprecates)
        exact = {"float_precision": "round_trip"} if int(pandas.__version__.split(".")[0]) < 3 else {}
        return pandas.read_csv(io.StringIO(self.table_csv()), **exact)

    def plot(self) -> list[Path]:
        """Write the figures (PNG and SVG) into RUN/figures; returns their paths."""
        from .plots import plot_run

        return plot_run(self.directory)

    def report(self, *, out: str | Path | None = None) -> Path:
        """Write the self-contained HTML report (default RUN/report.html); returns its path."""
        from .report import write_report

        return write_report(self.directory, Path(out) if out is not None else None)

    def status(self) -> RunStatus:
        """How far every chain has got (``status.RunStatus``: its ``chains`` and ``holder``; ``str`` of it
        is what ``model-collapse status`` prints)."""
        from .status import run_status

        return run_status(self.directory)

    def resume(
        self,
        *,
        workers: int | None = None,
        quiet: bool = True,
        executor: str | None = None,
        recompute_damaged: bool = False,
        threads: int | None = None,
        hooks: Hooks | None = None,
    ) -> Run:
        """Finish this run (see ``model_collapse.resume``)."""
        return resume(
            self.directory,
            workers=workers,
            quiet=quiet,
            executor=executor,
            recompute_damaged=recompute_damaged,
            threads=threads,
            hooks=hooks,
        )
