"""``model-collapse compare RUN1 RUN2 ... --out DIR``: several runs in one figure and one page.

The paper's Fig. 2 is four language-model runs (GPT-2 9M, Llama-2 12M / 42M / 126M) under replace and
accumulate; Fig. 13 the same at temperature 0.3; Table 2 their test cross-entropy at a few iterations.
Each is a comparison across runs, which no single run's report can draw: here every metric the runs
share gets one panel per regime with one line per run (and sweep point), the band of ``plots.py``, and a
table of means and intervals at chosen iterations. DIR receives ``compare.html`` (self-contained, as
``report.py``'s pages) and ``figures/<metric>.{png,svg}``; nothing else is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .errors import ConfigError, RunDirectoryError
from .plots import draw_mean, figure_legend, finish_axes, note_left_out, plt, save_figure
from .report import _metric_table, data_uri, render, table_iterations
from .results import BAND_LEVEL, ChainResult, band_text, load_run, merge_seeds
from .settings import Metric


@dataclass
class ComparedRun:
    label: str
    setting_name: str
    metrics: dict[str, Metric]
    results: list[ChainResult]  # merged over seeds


def _load(runs: list[Path], labels: list[str] | None) -> list[ComparedRun]:
    if len(runs) < 2:
        raise ConfigError("compare needs at least two run directories")
    if labels and len(labels) != len(runs):
        raise ConfigError(f"--label given {len(labels)} times for {len(runs)} runs: give one per run, or none")
    names = labels or [run.resolve().name for run in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"runs would share a label ({', '.join(names)}): name them apart with --label")
    compared = []
    for run, name in zip(runs, names):
        experiment, chain_results = load_run(run)
        if not chain_results:
            raise RunDirectoryError(f"{run} has no completed iteration to compare")
        compared.append(ComparedRun(name, experiment.setting_name, experiment.metrics, merge_seeds(chain_results)))
    return compared


def shared_metrics(compared: list[ComparedRun], wanted: list[str] | None) -> dict[str, str]:
    """The metrics every run records (name -> axis label), in the first run's order, or those asked for."""
    declared = [c.metrics for c in compared]
    shared = {name: info.label for name, info in declared[0].items() if all(name in d for d in declared[1:])}
    if not wanted:
        if not shared:
            raise ConfigError("these runs record no metric in common: " + ", ".join(c.setting_name for c in compared))
        return shared
    unknown = [m for m in wanted if m not in shared]
    if unknown:
        raise ConfigError(f"--metric {', '.join(unknown)}: not recorded by every run (shared: {', '.join(shared)})")
    return {m: shared[m] for m in wanted}


def _line_label(run: ComparedRun, point_title: str) -> str:
    return f"{run.label} ({point_title})" if point_title else run.label


def comparison_figure(compared: list[ComparedRun], metric: str, label: str):
    """One panel per regime, one line per (run, sweep point), each with its confidence band."""
    regimes = list(dict.fromkeys(r.spec.regime.label for c in compared for r in c.results))
    lines = list(dict.fromkeys(_line_label(c, r.spec.point_title) for c in compared for r in c.results))
    colours = {line: plt.cm.tab10(i % 10) for i, line in enumerate(lines)}
    log_scale = any(c.metrics[metric].log_scale for c in compared)
    figure, axes = plt.subplots(
        1, len(regimes), figsize=(max(5.6, 4.4 * len(regimes)), 3.9), squeeze=False, sharey=False, layout="constrained"
    )
    seeds = {len(r.spec.seeds) for c in compared for r in c.results}
    for ax, regime in zip(axes[0], regimes):
        means, notes, iterations = [], [], []
        for run in compared:
            for result in run.results:
                if result.spec.regime.label != regime:
                    continue
                line = _line_label(run, result.spec.point_title)
                mean, note = draw_mean(ax, result, result.metrics[metric], colours[line], line)
                notes += [f"{line}: {note}"] if note else []
                means.append(mean)
                iterations.append(result.iterations)
        finish_axes(ax, log_scale, means, np.concatenate(iterations))
        note_left_out(ax, notes)
        ax.set_title(regime, fontsize=9)
    axes[0][0].set_ylabel(label, fontsize=9)
    band = band_text(seeds.pop()) if len(seeds) == 1 else f"bands: {BAND_LEVEL:.0%} CI of the mean (Student t)"
    figure_legend(figure, ncols=4, title=band)
    figure.suptitle(f"{metric}: " + " vs ".join(c.label for c in compared))
    return figure


def write_comparison(runs: list[Path], out: Path, metrics: list[str] | None = None, labels: list[str] | None = None):
    """Write DIR/compare.html and DIR/figures/<metric>.{png,svg}; returns the page's path."""
    compared = _load(runs, labels)
    chosen = shared_metrics(compared, metrics)
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} is a file; name a directory for the comparison")
    if not out.parent.is_dir():
        raise RunDirectoryError(f"--out {out}: the directory {out.parent} does not exist")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    last = max(int(r.iterations.max()) for c in compared for r in c.results)
    shown = table_iterations(last)
    sections = []
    for metric, label in chosen.items():
        png, _ = save_figure(comparison_figure(compared, metric, label), out / "figures", metric)
        rows = []
        for run in compared:
            for row in _metric_table(metric, run.results, shown):
                rows.append({**row, "point": _line_label(run, row["point"])})
        sections.append(
            {
                "metric": metric,
                "label": label,
                "figures": [data_uri(png.read_bytes())],
                "iterations": shown,
                "rows": rows,
            }
        )
    page = out / "compare.html"
    write_text_atomic(
        page,
        render(
            "compare.html.j2",
            runs=[{"label": c.label, "path": str(p), "setting": c.setting_name} for c, p in zip(compared, runs)],
            sections=sections,
            band=f"mean over seeds, {BAND_LEVEL:.0%} CI (Student t)",
        ),
    )
    return page
