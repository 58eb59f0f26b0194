"""The ``model-collapse`` command: a thin layer over the Python API (``api.py``).

Each command imports what it needs when it runs, so that ``--help`` (and a typo) costs typer alone:
no numpy, no pydantic, no setting.
"""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from . import api
from .errors import (
    ChainFailed,
    ConfigError,
    ModelCollapseError,
    ResourceError,
    Terminated,
    one_line_error,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Chains of generative models trained on real and synthetic data, under any data regime.",
)
err = Console(stderr=True)

OVERRIDES = typer.Argument(None, help="Config overrides, dotted.key=value (lists as \\[a,b]).", show_default=False)
WORKERS = typer.Option(None, "--workers", "-j", min=1, help="Parallel processes (default: config's, else CPU count).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars.")
THREADS = typer.Option(
    None,
    "--threads",
    min=1,
    help="Threads each chain computes with, BLAS and PyTorch (default: the config's, else the cores divided by "
    "the chains running at once).",
)
EXECUTOR = typer.Option(None, "--executor", help="Where chains run: local, ray or slurm (default: the config's).")


def _say(line: str) -> None:
    """A line for the user on stderr, as written: never wrapped (a path in it is copied whole), no markup."""
    err.print(escape(line), highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guarded(action, resumable: api.Resumable | None = None):
    """Run ``action``; what the user or the machine caused becomes one line and an exit code: 2 for
    bad input, 1 for a fault (disk full, memory, a killed worker) or a chain stopped by a bug, 130 for
    Ctrl-C, 143 for SIGTERM. With ``resumable``, the line ends with the command that finishes the run."""
    hint = f"; finish it with `{resumable.command}`" if resumable else ""
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
        fault = one_line_error(error, resumable.directory if resumable else Path.cwd())
        if fault is None:
            raise
        _fail(f"{fault}{hint}", code=1)


class _CommandLine(api.Hooks):
    """The command's hooks into ``api.run`` and ``api.resume``: errors as one line and an exit code,
    notices on stderr as they are."""

    def guard(self, action, resumable=None):
        return _guarded(action, resumable)

    def say(self, line: str) -> None:
        _say(line)


ALLOW_IMPORT = typer.Option(  # noqa: B008 (typer's way)
    [],
    "--allow-import",
    "--setting",
    help="An import path (package.module:name) the run names, a setting or a curation function, that you vouch "
    "for: a run directory alone never makes model-collapse import code. Repeat it for several (--setting: its "
    "earlier name).",
)


def _allow(paths: list[str]) -> None:
    from .vouched import vouch

    for path in paths:
        _guarded(lambda path=path: vouch(path))


@app.command()
def run(
    config: Path = typer.Argument(..., help="A YAML config (see configs/)."),
    overrides: list[str] | None = OVERRIDES,
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<config name>)."),
    workers: int | None = WORKERS,
    quiet: bool = QUIET,
    executor: str | None = EXECUTOR,
    threads: int | None = THREADS,
) -> None:
    """Run every chain of a config into a new run directory."""
    hooks = _CommandLine()
    finished = api.run(
        config,
        out=out,
        overrides=overrides or [],
        workers=workers,
        quiet=quiet,
        executor=executor,
        threads=threads,
        hooks=hooks,
    )
    directory = finished.directory
    _say(f"done: {directory}  (next: model-collapse report {directory}; model-collapse table {directory})")


@app.command()
def resume(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    workers: int | None = WORKERS,
    quiet: bool = QUIET,
    executor: str | None = EXECUTOR,
    threads: int | None = THREADS,
    allow_import: list[str] = ALLOW_IMPORT,
    recompute_damaged: bool = typer.Option(
        False,
        "--recompute-damaged",
        help="Move each chain's damaged record and the iterations after it into RUN/damaged/<time>/ (nothing "
        "is deleted) and compute them again, with the same numbers: chains are deterministic.",
    ),
) -> None:
    """Finish an interrupted run: completed iterations are kept, the rest is computed as in one go."""
    api.resume(
        run_directory,
        workers=workers,
        quiet=quiet,
        executor=executor,
        allow_import=allow_import,
        recompute_damaged=recompute_damaged,
        threads=threads,
        hooks=_CommandLine(),
    )
    _say(f"done: {run_directory}")


@app.command()
def table(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    complete: bool = typer.Option(False, "--complete", help="Refuse a run whose chains have not all finished."),
    allow_import: list[str] = ALLOW_IMPORT,
) -> None:
    """Print the results as tidy CSV: one row per (sweep point, regime, seed, iteration). Chains without
    every iteration are named on stderr."""
    from .status import run_status

    _allow(allow_import)
    found = api.Run(run_directory)
    text = _guarded(found.table_csv)  # a damaged record is refused here, naming its file
    unfinished = _guarded(lambda: run_status(run_directory, read_records=False).unfinished)  # read just now
    if complete and unfinished:
        _fail(
            f"{run_directory} is incomplete: {len(unfinished)} of {len(found.experiment.chains())} chains "
            f"have not finished (model-collapse status {run_directory})"
        )
    sys.stdout.write(text)
    for chain in unfinished:
        rows = "no rows" if chain.completed == 0 else f"rows of {chain.completed} of {chain.iterations} iterations"
        why = {"not started": "not started, or its directory is missing"}.get(chain.state, chain.state)
        _say(f"note: chain {chain.label}: {rows} ({why}{'; ' + chain.reason if chain.reason else ''})")


@app.command()
def plot(
    run_directory: Path = typer.Argument(..., help="A run directory."), allow_import: list[str] = ALLOW_IMPORT
) -> None:
    """Write figures (PNG and SVG) into RUN/figures."""
    _allow(allow_import)
    paths = _guarded(lambda: api.Run(run_directory).plot())
    if not paths:
        _fail(f"{run_directory} has no completed iteration to plot")
    for path in paths:
        print(path)


@app.command()
def status(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    chains: bool = typer.Option(True, "--chains/--summary", help="A line per chain, or the summary alone."),
    allow_import: list[str] = ALLOW_IMPORT,
) -> None:
    """How far every chain has got: done, running, failed (with the reason), stopped, not started."""
    _allow(allow_import)
    found = _guarded(lambda: api.Run(run_directory).status())
    print("\n".join(found.lines(chains)))
    if found.damaged:
        raise typer.Exit(2)  # as resume and table refuse such a run


@app.command()
def report(
    run_directory: Path = typer.Argument(..., help="A run directory."),
    out: Path | None = typer.Option(None, "--out", help="The HTML file to write (default: RUN/report.html)."),
    allow_import: list[str] = ALLOW_IMPORT,
) -> None:
    """Write one self-contained HTML page of the run: what ran, every metric's figures and table, samples."""
    _allow(allow_import)
    print(_guarded(lambda: api.Run(run_directory).report(out=out)))


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
    setting: str = typer.Argument(..., help="A setting with closed forms (model-collapse list shows which)."),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Print the closed-form expectations as CSV (setting, regime, metric, kind, iteration, value)."""
    from . import theory as closed_forms
    from .config import apply_overrides, build_experiment
    from .regimes import REGIMES
    from .settings import SETTINGS

    # every regime that has defaults for its parameters (real-synthetic's counts have none)
    named = [name for name, regime in REGIMES.items() if len(regime.parameters()) <= 1]
    raw: dict = {"setting": {"name": setting}, "regimes": named, "iterations": 10, "seeds": 1}
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
        known = ", ".join(name for name in SETTINGS if _states_theory(name))
        _fail(f"no closed form is known for setting {setting!r} (settings with closed forms: {known})")
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["setting", "regime", *experiment.varying, "metric", "kind", "iteration", "value"])
    writer.writerows(rows)


@app.command(name="list")
def list_(
    markdown: bool = typer.Option(
        False, "--markdown", help="Print the config reference as Markdown: every field, its default and meaning."
    ),
    format: str | None = typer.Option(
        None,
        "--format",
        help="table (a terminal's default), text (plain lines: the default when the output is not a terminal) or json.",
        show_default=False,
    ),
) -> None:
    """List the settings (where they come from, their config fields, metrics) and the regimes."""
    from .reference import reference_markdown
    from .settings import SETTINGS

    if markdown:
        sys.stdout.write(_guarded(lambda: reference_markdown(list(SETTINGS))))
        return
    chosen = format if format is not None else ("table" if sys.stdout.isatty() else "text")
    if chosen not in _LIST_FORMATS:
        _fail(f"--format {chosen!r}: choose one of {', '.join(_LIST_FORMATS)}")
    settings, regimes = _listing()
    _LIST_FORMATS[chosen](settings, regimes)


def _listing() -> tuple[list[dict], list[dict]]:
    """What ``list`` shows: a dict per setting (a setting that cannot be imported here says why under
    ``problem``) and per regime, every value whole."""
    from .curation import offered_scores
    from .reference import config_fields
    from .regimes.grammar import regime_class, regime_names
    from .settings import SETTINGS

    settings = []
    for name in SETTINGS:
        entry: dict = {"setting": name}
        settings.append(entry)
        try:
            entry["from"] = SETTINGS.origin(name).describe()
        except ConfigError as error:  # two packages register the name
            entry["problem"] = str(error)
            continue
        try:  # the declaration alone: listing imports no model code (PyTorch, RDKit)
            missing = SETTINGS.unavailable(name)
            if missing is not None:
                raise missing
            cls = SETTINGS.declared(name)
        except ConfigError as error:  # an optional dependency is missing: say how to get it
            entry["problem"] = str(error)
            continue
        entry["fields"] = {k: f.get_default(call_default_factory=True) for k, f in config_fields(cls.Config)}
        entry["metrics"] = list(cls.metrics)
        entry["closed_forms"] = _states_theory(name)
        entry["curation_scores"] = list(offered_scores(cls))
    regimes = []
    for name in regime_names():
        try:
            regime = regime_class(name)
        except ConfigError as error:  # an installed regime that cannot be imported here
            regimes.append({"regime": name, "parameters": "", "trains_on": str(error)})
            continue
        assert regime is not None
        defaults = regime.defaults()
        parameter = ", ".join(f"{p}={defaults[p]}" if p in defaults else p for p in regime.parameters())
        regimes.append({"regime": name, "parameters": parameter, "trains_on": (regime.__doc__ or "").strip()})
    return settings, regimes


def _fields_text(fields: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in fields.items())


def _list_table(settings: list[dict], regimes: list[dict]) -> None:
    """Rich tables for a terminal: names and origins never cut (they fold), the long cells wrap."""
    from rich.table import Table

    console = Console()
    table = Table(title="settings")
    widest = max(len(entry["setting"]) for entry in settings)
    table.add_column("setting", no_wrap=True, min_width=widest)
    table.add_column("from", overflow="fold")
    for column in ("fields (default)", "metrics", "closed forms", "curation scores"):
        table.add_column(column, overflow="fold")
    for entry in settings:
        if "problem" in entry:
            table.add_row(entry["setting"], escape(entry.get("from", "")), f"[dim]{escape(entry['problem'])}[/]")
            continue
        table.add_row(
            entry["setting"],
            escape(entry["from"]),
            escape(_fields_text(entry["fields"])),
            ", ".join(entry["metrics"]),
            "yes" if entry["closed_forms"] else "",
            ", ".join(entry["curation_scores"]),
        )
    console.print(table)
    table = Table(title="regimes")
    table.add_column("regime", no_wrap=True, min_width=max(len(entry["regime"]) for entry in regimes))
    table.add_column("parameter (default)", overflow="fold")
    table.add_column("what it trains on", overflow="fold")
    for entry in regimes:
        table.add_row(entry["regime"], entry["parameters"], entry["trains_on"])
    console.print(table)


def _list_text(settings: list[dict], regimes: list[dict]) -> None:
    """Plain lines, nothing cut or wrapped: a setting's name and origin, then its details indented."""
    lines = ["settings:"]
    for entry in settings:
        lines.append(f"{entry['setting']}  ({entry.get('from', 'origin unknown')})")
        if "problem" in entry:
            lines.append(f"    unavailable: {entry['problem']}")
            continue
        lines.append(f"    fields: {_fields_text(entry['fields'])}")
        lines.append(f"    metrics: {', '.join(entry['metrics'])}")
        if entry["closed_forms"]:
            lines.append("    closed forms: yes")
        if entry["curation_scores"]:
            lines.append(f"    curation scores: {', '.join(entry['curation_scores'])}")
    lines += ["", "regimes:"]
    for entry in regimes:
        parameters = f" ({entry['parameters']})" if entry["parameters"] else ""
        lines.append(f"{entry['regime']}{parameters}: {entry['trains_on']}")
    sys.stdout.write("\n".join(lines) + "\n")


def _list_json(settings: list[dict], regimes: list[dict]) -> None:
    import json

    sys.stdout.write(json.dumps({"settings": settings, "regimes": regimes}, indent=2, default=str) + "\n")


_LIST_FORMATS = {"table": _list_table, "text": _list_text, "json": _list_json}


def _states_theory(name: str) -> bool:
    from .theory import has_theory

    try:
        return has_theory(name)
    except ModelCollapseError:  # a setting that cannot be imported here
        return False


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A deprecation of the user's code or config as the command's other notices are: one line, with
    where it was found; any other warning as Python shows it."""
    from .deprecation import ModelCollapseDeprecationWarning

    if issubclass(category, ModelCollapseDeprecationWarning):  # where, when it is the user's code
        inside = Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent)
        _say(f"warning: {message}" if inside else f"warning: {message} ({filename}:{lineno})")
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def main() -> None:
    """The ``model-collapse`` command: like ``app``, but a usage error (an option's bad value, a missing
    argument) is one line and exit 2, as every other error is."""
    warnings.showwarning = _one_line_warning
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
