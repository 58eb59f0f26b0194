"""``model-collapse report RUN``: one self-contained HTML page of a run.

The page holds everything inline (figures as base64 PNG, styles in the page, no scripts), so it reads
offline and survives being mailed. It shows what was run (resolved config, tool version and commit,
libraries, machine, time per iteration), and for every metric the figures of ``plots.py`` with theory
overlaid and a table of the mean and its 95% interval per regime at a few iterations, then the samples
a setting previews (image grids, texts) and learning curves. A run still in progress or stopped gets a
page of what is committed, marked as such. Built from ``templates/report.html.j2`` (Jinja2, escaping on).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from . import theory
from .atomic import write_text_atomic
from .errors import RunDirectoryError
from .plots import (
    distribution_figures,
    learning_curve_figures,
    metric_figures,
    plt,
    reference,
    sample_figures,
    text_samples,
)
from .results import ChainResult, band_text, confidence_interval, load_run, merge_seeds
from .rundir import CONFIG, open_run, run_marker

FIGURE_DPI = 100


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(figure) -> str:
    """A figure as a data URI (and closed)."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return data_uri(buffer.getvalue())


def render(template: str, **context: Any) -> str:
    """A page from ``templates/`` (Jinja2, every value escaped, an unknown name an error)."""
    environment = Environment(
        loader=PackageLoader("model_collapse", "templates"), autoescape=True, undefined=StrictUndefined
    )
    return environment.get_template(template).render(**context)


def _number(value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.4g}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


# A metric's table shows every iteration of a run up to this long; of a longer one, five spread out.
TABLE_EVERY_ITERATION = 12


def table_iterations(last: int) -> list[int]:
    """The iterations a metric's table shows: every one up to ``TABLE_EVERY_ITERATION``, else the first,
    three in between and the last."""
    if last <= TABLE_EVERY_ITERATION:
        return list(range(1, last + 1))
    return sorted({int(round(i)) for i in np.linspace(1, last, 5)})


def table_note(shown: list[int], last: int) -> str:
    """What a table shows of the iterations, when it leaves some out."""
    if len(shown) == last:
        return ""
    return f"Iterations {', '.join(map(str, shown))} of 1–{last} are shown; the figures show every one."


def _metric_table(metric: str, results: list[ChainResult], iterations: list[int]) -> list[dict[str, Any]]:
    """Rows of (sweep point, regime): the mean and 95% interval at ``iterations`` (blank where the chain
    has not got there), what the mean leaves out, and the closed form where one is known."""
    rows = []

    def row(regime: str, cells: list[dict[str, str]], note: str = "", theory_row: bool = True) -> None:
        rows.append({"point": point, "regime": regime, "cells": cells, "note": note, "theory": theory_row})

    for result in results:
        values = result.real_fraction if metric == "real_fraction" else result.metrics[metric]
        interval = confidence_interval(values)
        index = {int(i): k for k, i in enumerate(result.iterations)}
        cells = []
        for iteration in iterations:
            k = index.get(iteration)
            if k is None:
                cells.append({"mean": "", "interval": ""})
            elif np.isnan(interval.low[k]):
                cells.append({"mean": _number(interval.mean[k]), "interval": ""})
            else:
                low, high = _number(interval.low[k]), _number(interval.high[k])
                cells.append({"mean": _number(interval.mean[k]), "interval": f"[{low}, {high}]"})
        point, regime = result.spec.point_title, result.spec.regime.label
        row(regime, cells, interval.nonfinite(values, result.iterations) or "", theory_row=False)
        real = reference(result, metric) if metric != "real_fraction" else None
        if real is not None:
            row(f"{regime}: real data", [{"mean": _number(real), "interval": ""}] * len(iterations))
        for curve in theory.curves(result.spec.point, result.spec.regime.name, max(iterations)):
            if curve.metric == metric:
                curve_cells = [{"mean": _number(float(curve.values[i - 1])), "interval": ""} for i in iterations]
                row(f"{regime}: theory ({curve.kind})", curve_cells)
    return rows


def _chains(experiment, chain_results: list[ChainResult]) -> list[dict[str, Any]]:
    """Every chain the config names: how far it got and how long its iterations took."""
    found = {r.spec.label: r for r in chain_results}
    rows = []
    for spec in experiment.chains():
        result = found.get(spec.label)
        done = 0 if result is None else len(result.iterations)
        seconds = np.array([]) if result is None else result.seconds[np.isfinite(result.seconds)]
        rows.append(
            {
                "label": spec.title,
                "completed": done,
                "seeds": len(spec.seeds),
                "per_iteration": _duration(seconds.mean()) if seconds.size else "not recorded",
                "total": _duration(seconds.sum()) if seconds.size else "",
            }
        )
    return rows


def build_report(run_directory: Path) -> str:
    experiment, chain_results = load_run(run_directory)
    marker = run_marker(run_directory)
    iterations = experiment.config.iterations
    chains = _chains(experiment, chain_results)
    unfinished = sum(c["completed"] < iterations for c in chains)

    sections = []
    if chain_results:
        results = merge_seeds(chain_results)
        shown = table_iterations(max(int(r.iterations.max()) for r in results))
        figures = {name: _png(figure) for name, figure in metric_figures(experiment, chain_results)}  # one at a time
        labels = {name: info.label for name, info in experiment.metrics.items()}
        labels["real_fraction"] = "real fraction of the training set"
        for metric, label in labels.items():
            sections.append(
                {
                    "metric": metric,
                    "label": label,
                    "figures": [
                        figures[name]
                        for name in (metric, f"{metric}_by_regime", f"{metric}_by_real_and_synthetic")
                        if name in figures
                    ],
                    "iterations": shown,
                    "shown": table_note(shown, max(shown)),
                    "rows": _metric_table(metric, results, shown),
                }
            )
        samples = [(name, _png(f)) for name, f in sample_figures(experiment, chain_results)]
        curves = [
            (name, _png(f))
            for figures in (learning_curve_figures, distribution_figures)
            for name, f in figures(experiment, chain_results)
        ]
        texts = text_samples(experiment, chain_results)
    else:
        samples, curves, texts = [], [], {}

    environment = marker.get("environment") or {}
    return render(
        "report.html.j2",
        run=run_directory.resolve().name,
        setting=experiment.setting_name,
        created=marker.get("created", "not recorded"),
        tool_version=marker.get("tool_version", "not recorded"),
        environment=environment,
        config=(run_directory / CONFIG).read_text(encoding="utf-8"),
        iterations=iterations,
        chains=chains,
        unfinished=unfinished,
        band=band_text(experiment.config.seeds),
        sections=sections,
        samples=samples,
        curves=curves,
        texts=texts,
    )


def write_report(run_directory: Path, out: Path | None = None) -> Path:
    """Write the report of ``run_directory`` to ``out`` (default RUN/report.html), whole or not at all."""
    open_run(run_directory)  # a run directory before anything else is said about --out
    out = out if out is not None else run_directory / "report.html"
    if out.is_dir():
        raise RunDirectoryError(f"--out {out} is a directory; name the HTML file to write")
    if not out.parent.is_dir():
        raise RunDirectoryError(f"--out {out}: the directory {out.parent} does not exist")
    write_text_atomic(out, build_report(run_directory))
    return out
