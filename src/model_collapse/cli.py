"""The ``model-collapse`` command."""

from __future__ import annotations

import contextlib
import csv
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import distributed
from .config import ExecutorConfig, apply_overrides, build_experiment, load_experiment
from .errors import ConfigError, ModelCollapseError, ResourceError, Terminated
from .regimes import REGIMES
from .settings import SETTINGS
from .settings.base import section_of
from .sweep import ChainFailed, describe_fault

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Chains of generative models trained on real and synthetic data, under any data regime.",
)
err = Console(stderr=True)

OVERRIDES = typer.Argument(None, help="Config overrides, dotted.key=value (lists as [a,b]).", show_default=False)
WORKERS = typer.Option(None, "--workers", "-j", min=1, help="Parallel processes (default: config's, else CPU count).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
EXECUTOR = typer.Option(None, "--executor", help="Where chains run: local, ray or slurm (default: the config's).")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guarded(action, resume_hint: Path | None = None):
    """Run ``action``; what the user or the machine caused becomes one line and an exit code: 2 for
    bad input, 1 for a fault (disk full, memory, a killed worker), 130 for Ctrl-C, 143 for SIGTERM."""
    hint = f"; finish it with `model-collapse resume {resume_hint}`" if resume_hint else ""
    try:
        return action()
    except (ResourceError, ChainFailed) as error:
        _fail(f"{error}{hint}", code=1)
    except ModelCollapseError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        _fail(f"interrupted{hint}", code=130)
    except Terminated:
        _fail(f"terminated{hint}", code=143)
    except (OSError, MemoryError) as error:
        fault = describe_fault(error, resume_hint or Path.cwd())
        if fault is None:
            raise
        _fail(f"{fault}{hint}", code=1)


@contextlib.contextmanager
def _terminate_like_ctrl_c():
    """While a run goes, SIGTERM (a scheduler's or ``kill``'s) stops it as Ctrl-C does: workers
    stopped, exit 143."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough: let the cleanup finish
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_holding_the_lock(
    directory: Path, take_lock, experiment, workers: int | None, quiet: bool, executor: ExecutorConfig
) -> None:
    """Run (or finish) the chains of ``experiment`` in ``directory`` while holding its lock (taken by
    ``take_lock``: creating the run, or locking an existing one); rank 0 alone takes it under torchrun."""
    from .sweep import run_experiment

    with _terminate_like_ctrl_c():
        distributed.start()
        lock = _guarded(take_lock) if distributed.is_main() else None
        distributed.barrier()
        try:
            _guarded(lambda: run_experiment(directory, experiment, workers, quiet, executor), resume_hint=directory)
        finally:
            if lock is not None:
                lock.release()
        distributed.finish()


@app.command()
def run(
    config: Path = typer.Argument(..., help="A YAML config (see configs/)."),
    overrides: Optional[list[str]] = OVERRIDES,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<config name>)."),
    workers: Optional[int] = WORKERS,
    quiet: bool = QUIET,
    executor: Optional[str] = EXECUTOR,
) -> None:
    """Run every chain of a config into a new run directory."""
    from .rundir import create_run
    from .sweep import estimate_memory, resolve_executor, resolve_workers

    def prepare():
        experiment = load_experiment(config, overrides or [])
        SETTINGS[experiment.setting_name]  # its optional dependencies are installed
        options = resolve_executor(experiment, executor)
        estimate_memory(experiment, resolve_workers(experiment, workers))
        return experiment, options

    experiment, options = _guarded(prepare)
    directory = out or Path("runs") / config.stem
    create = lambda: create_run(directory, experiment.resolved())  # noqa: E731
    _run_holding_the_lock(directory, create, experiment, workers, quiet, options)
    err.print(f"done: {directory}  (next: model-collapse report {directory}; model-collapse table {directory})")


@app.command()
def resume(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    workers: Optional[int] = WORKERS,
    quiet: bool = QUIET,
    executor: Optional[str] = EXECUTOR,
) -> None:
    """Finish an interrupted run: completed iterations are kept, the rest is computed as in one go."""
    from .results import open_experiment
    from .rundir import lock_run
    from .sweep import resolve_executor

    def prepare():
        experiment = open_experiment(run_directory)
        SETTINGS[experiment.setting_name]  # its optional dependencies are installed
        return experiment, resolve_executor(experiment, executor)

    experiment, options = _guarded(prepare)
    _run_holding_the_lock(run_directory, lambda: lock_run(run_directory), experiment, workers, quiet, options)
    err.print(f"done: {run_directory}")


@app.command()
def table(run_directory: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print the results as tidy CSV: one row per (sweep point, regime, seed, iteration)."""
    from .results import table as make_table

    sys.stdout.write(_guarded(lambda: make_table(run_directory)))


@app.command()
def plot(run_directory: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Write figures (PNG and SVG) into RUN/figures."""
    from .plots import plot_run

    paths = _guarded(lambda: plot_run(run_directory))
    if not paths:
        _fail(f"{run_directory} has no completed iteration to plot")
    for path in paths:
        print(path)


@app.command()
def status(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    chains: bool = typer.Option(True, "--chains/--summary", help="A line per chain, or the summary alone."),
) -> None:
    """How far every chain has got: done, running, failed (with the reason), stopped, not started."""
    from .status import run_status, status_lines

    found, holder = _guarded(lambda: run_status(run_directory))
    print("\n".join(status_lines(found, holder, chains)))


@app.command()
def report(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file to write (default: RUN/report.html)."),
) -> None:
    """Write one self-contained HTML page of the run: what ran, every metric's figures and table, samples."""
    from .report import write_report

    print(_guarded(lambda: write_report(run_directory, out)))


@app.command()
def export(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    to: str = typer.Option(..., "--to", help="The tracker: wandb (offline) or mlflow."),
    out: Path | None = typer.Option(None, "--out", help="Directory for the tracker's files (default: RUN/tracking)."),
    uri: str | None = typer.Option(None, "--uri", help="MLflow tracking URI (default: a SQLite file in --out)."),
    project: str | None = typer.Option(None, "--project", help="wandb project / MLflow experiment name."),
) -> None:
    """Replay a run into Weights & Biases or MLflow: one tracker run per chain, step = iteration."""
    from .export import export_run

    print(_guarded(lambda: export_run(run_directory, to, out, uri, project)))


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories."),
    out: Path = typer.Option(..., "--out", help="Directory for compare.html and figures/ (created if missing)."),
    metric: list[str] | None = typer.Option(None, "--metric", help="A metric to compare (repeat; default: all)."),
    label: list[str] | None = typer.Option(None, "--label", help="A run's name in figures (repeat, one per run)."),
) -> None:
    """Overlay runs: one panel per regime, one line per run (the paper's Fig. 2), and a table per metric."""
    from .compare import write_comparison

    print(_guarded(lambda: write_comparison(runs, out, metric or None, label or None)))


@app.command()
def theory(
    setting: str = typer.Argument(..., help="A setting with closed forms: linear-regression, gaussian or discrete."),
    overrides: Optional[list[str]] = OVERRIDES,
) -> None:
    """Print the closed-form expectations as CSV (setting, regime, metric, kind, iteration, value)."""
    from . import theory as closed_forms

    raw: dict = {"setting": {"name": setting}, "regimes": list(REGIMES), "iterations": 10, "seeds": 1}
    experiment = _guarded(lambda: build_experiment(apply_overrides(raw, overrides or [])))
    rows = []
    for point in experiment.points:
        values = point.model_dump()
        for regime in experiment.regimes:
            for curve in closed_forms.curves(point, regime.name, experiment.config.iterations):
                for i, value in enumerate(curve.values, start=1):
                    rows.append(
                        [
                            setting,
                            regime.label,
                            *(values[k] for k in experiment.varying),
                            curve.metric,
                            curve.kind,
                            i,
                            repr(float(value)),
                        ]
                    )
    if not rows:  # decided before a line is printed, so that the error is the only output
        _fail(f"no closed form is known for setting {setting!r}")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["setting", "regime", *experiment.varying, "metric", "kind", "iteration", "value"])
    writer.writerows(rows)


@app.command(name="list")
def list_() -> None:
    """List the settings (with their config fields) and the regimes."""
    console = Console()
    settings = Table("setting", "fields (default)", "metrics", title="settings")
    for name in SETTINGS:
        try:
            cls = SETTINGS[name]
        except ConfigError as error:  # an optional dependency is missing: say how to get it
            settings.add_row(name, f"[dim]{escape(str(error))}[/]", "")
            continue
        fields = ", ".join(f"{k}={v}" for k, v in _defaults(cls.Config).items() if k != "name")
        settings.add_row(name, fields, ", ".join(cls.metrics))
    console.print(settings)
    regimes = Table("regime", "parameter (default)", "what it trains on", title="regimes")
    for name, cls in REGIMES.items():
        parameter = f"{cls.parameter}={cls.default}" if cls.parameter else ""
        regimes.add_row(name, parameter, (cls.__doc__ or "").strip())
    console.print(regimes)


def _defaults(config_type, prefix: str = "") -> dict[str, object]:
    """A config's fields, dotted inside sections, with their defaults."""
    defaults: dict[str, object] = {}
    for key, field in config_type.model_fields.items():
        section = section_of(field.annotation)
        if section is not None:
            defaults.update(_defaults(section, f"{prefix}{key}."))
        else:
            defaults[f"{prefix}{key}"] = field.get_default(call_default_factory=True)
    return defaults


def main() -> None:
    """The ``model-collapse`` command: like ``app``, but a usage error (an option's bad value, a missing
    argument) is one line and exit 2, as every other error is."""
    try:
        code = app(prog_name="model-collapse", standalone_mode=False)
    except typer.Abort:
        code = 130
    except Exception as error:
        # click's usage errors (typer vendors click in recent versions, so matched by what they offer)
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        code = error.exit_code
        if type(error).__name__ != "NoArgsIsHelpError":  # (that one has printed the help)
            err.print(
                f"[bold red]error:[/] {escape(error.format_message())} (see model-collapse --help)",
                highlight=False,
                soft_wrap=True,
            )
    sys.exit(code if isinstance(code, int) else 0)
