"""Figures of a run: means over seeds with a 95% Student-t confidence band, closed forms overlaid where known.

For every metric of the setting two figures are written (PNG and SVG) into RUN/figures/:
* ``<metric>_by_regime``: one row per regime, one column per sweep point - the layout of the paper's
  Fig. 7 (replace on top, accumulate below, one column per T), theory as black lines;
* ``<metric>``: one panel per sweep point with every regime in it, to compare regimes directly -
  the layout of the follow-up's Gaussian and KDE figures.
plus ``real_fraction``: what share of each regime's training set is real, per iteration. A run of
``real-synthetic`` regimes over several real counts also gets ``<metric>_by_real_and_synthetic``: the
last iteration's metric against the real count, a line per synthetic count (the follow-up's
value-of-synthetic-data figure).

Settings with previews also get ``samples_<point>``: for images the paper's Fig. 6 (real images, then
the last iteration of every regime) and ``samples_by_iteration_<point>``; for texts a page of samples.
Settings that record learning curves (language models) get ``learning_curves_<point>``: validation loss
during training, one line per iteration, one panel per regime; settings that declare distributions
(``Presentation.distributions``: the fine-tuned model's written sequences' perplexities) get
``distribution_<key>_<point>``, a histogram per iteration, one panel per regime.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator, NullLocator  # noqa: E402

from . import theory  # noqa: E402
from .atomic import write_file_atomic, write_text_atomic
from .results import SEEDS_FOR_A_BAND, ChainResult, band_text, confidence_interval, load_run, merge_seeds  # noqa: E402
from .rundir import inside  # noqa: E402
from .settings import SETTINGS, Presentation  # noqa: E402

_STYLES = {"expected": "--", "bound": ":"}
_REFERENCE = "real data"


def draw_mean(ax, result: ChainResult, values: np.ndarray, color, label: str) -> tuple[np.ndarray, str | None]:
    """The mean over finite seeds and its confidence band (under ``SEEDS_FOR_A_BAND`` seeds, every seed
    as a thin line instead); returns the mean and what it leaves out, if anything (a singular Gaussian's
    infinite NLL), for the panel to say."""
    interval = confidence_interval(values)
    ax.plot(result.iterations, interval.mean, color=color, label=label, lw=1.5)
    if values.shape[1] >= SEEDS_FOR_A_BAND:
        ax.fill_between(result.iterations, interval.low, interval.high, color=color, alpha=0.25, lw=0)
    elif values.shape[1] > 1:
        with np.errstate(invalid="ignore"):
            ax.plot(result.iterations, np.where(np.isfinite(values), values, np.nan), color=color, lw=0.6, alpha=0.45)
    return interval.mean, interval.nonfinite(values, result.iterations)


def _draw_theory(ax, result: ChainResult, metric: str, color, with_label: bool) -> None:
    for curve in theory.curves(result.spec.point, result.spec.regime.name, int(result.iterations.max())):
        if curve.metric == metric:
            label = f"theory ({curve.kind})" if with_label else None
            ax.plot(
                result.iterations,
                curve.values[result.iterations - 1],
                _STYLES[curve.kind],
                color=color,
                lw=1,
                label=label,
            )


def reference(result: ChainResult, metric: str) -> float | None:
    """Real data's value of ``metric`` where the setting's fits record one (a language model's real-text
    diversity, ``ChainResult.references``), else None."""
    value = result.references.get(metric)
    return float(value) if value is not None and np.isfinite(value) else None


def _draw_reference(ax, result: ChainResult, metric: str, with_label: bool) -> bool:
    value = reference(result, metric)
    if value is not None:
        ax.axhline(value, color="grey", ls="-.", lw=1, label=_REFERENCE if with_label else None)
    return value is not None


def note_left_out(ax, notes: list[str]) -> None:
    """Say on the panel which seeds its means leave out, instead of a line that stops unexplained."""
    if notes:
        ax.text(
            0.02, 0.02, "\n".join(notes), transform=ax.transAxes, fontsize=6.5, va="bottom", ha="left",
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1.5},
        )  # fmt: skip


def figure_legend(figure, ncols: int = 3, title: str | None = None) -> None:
    """One legend below the panels with every kind of line any panel draws (a bound only one regime has
    included), each once."""
    entries: dict[str, object] = {}
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    figure.legend(
        list(entries.values()), list(entries), loc="outside lower center", ncols=ncols, fontsize=7, title=title,
        title_fontsize=7,
    )  # fmt: skip


def finish_axes(ax, log_scale: bool, means: list[np.ndarray], iterations: np.ndarray, bottom_row: bool = True) -> None:
    """Axis scale and ticks. A log axis is used only when the plotted means span more than a decade
    (below that it would show too few ticks to read), and its minor ticks are labelled whenever its
    major ticks alone would leave fewer than two labels. A panel with nothing to draw shows no y ticks."""
    if bottom_row:
        ax.set_xlabel("model-fitting iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    ax.set_xlim(iterations.min() - 0.5, iterations.max() + 0.5)
    finite = np.concatenate([m[np.isfinite(m)] for m in means]) if means else np.array([])
    if not finite.size:
        ax.set_yticks([])
    if log_scale and finite.size and (finite > 0).all() and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        if np.floor(np.log10(high)) - np.ceil(np.log10(low)) < 1:  # fewer than two powers of ten in view
            ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 1)))
    ax.grid(alpha=0.3)


def _save_as(figure, kind: str, handle: BinaryIO) -> None:
    figure.savefig(handle, format=kind, dpi=130, bbox_inches="tight")


def save_figure(figure, directory: Path, name: str) -> list[Path]:
    """PNG and SVG, each written whole or not at all (a full disk leaves the old figure, not an empty one)."""
    paths = [directory / f"{name}.png", directory / f"{name}.svg"]
    try:
        for path in paths:
            write_file_atomic(path, partial(_save_as, figure, path.suffix[1:]))
    finally:
        plt.close(figure)
    return paths


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """uint8 (N, H, W, C) images tiled into one (rows*H, columns*W, C) picture with 1-pixel gaps."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        grid[r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = image
    return grid


def _show(ax, images: np.ndarray | None, title: str) -> None:
    if images is None:  # a chain stopped before its preview was kept
        ax.text(0.5, 0.5, "no preview", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        return
    grid = image_grid(images, columns=min(8, int(np.ceil(np.sqrt(len(images))))))  # about square
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def text_samples(experiment, results: list[ChainResult]) -> dict[str, list[tuple[str, list[str]]]]:
    """Per sweep point: (heading, texts) for real texts, then iteration 1 and the last iteration of every
    regime (first seed); empty for settings whose previews are not texts."""
    pages: dict[str, list[tuple[str, list[str]]]] = {}
    if SETTINGS.declared(experiment.setting_name).presentation.depict is not None:
        return pages
    for point, chains in _first_seed_chains(results).items():
        real = _real_preview(chains)
        if real is None or real.ndim != 1:
            continue
        sections = [("real data", [str(t) for t in real])]
        for label, chain in chains.items():
            for iteration in sorted({1, int(chain.iterations.max())}):
                texts = chain.preview(iteration)
                if texts is not None:  # (none: a chain stopped before it, a model that wrote nothing usable)
                    sections.append((f"{label}, iteration {iteration}", [str(t) for t in texts]))
        pages[point] = sections
    return pages


def _about(chains: dict[str, ChainResult]) -> str:
    """A figure title's sweep point, `` (T = 32)``; nothing for a run without a sweep (its one point)."""
    title = next(iter(chains.values())).spec.point_title
    return f" ({title})" if title else ""


def _text_page(setting_name: str, about: str, sections: list[tuple[str, list[str]]]) -> str:
    lines = [f"# {setting_name}: samples{about}"]
    for heading, texts in sections:
        lines += ["", f"## {heading}", "", *(f"{i + 1}. {' '.join(t.split())}" for i, t in enumerate(texts))]
    return "\n".join(lines) + "\n"


def preview_files(experiment, results: list[ChainResult]) -> dict[str, str]:
    """Per sweep point, the file of previews the setting exports for another tool (an SD file of
    molecules): the real data's and every previewed iteration's of every regime (first seed)."""
    export = SETTINGS.declared(experiment.setting_name).presentation.export_previews
    files: dict[str, str] = {}
    if export is None:
        return files
    for point, chains in _first_seed_chains(results).items():
        real = _real_preview(chains)
        sections = [("real data", real)]
        for label, chain in chains.items():
            sections += [(f"{label}, iteration {int(i)}", chain.preview(int(i))) for i in chain.iterations]
        exported = export([(title, preview) for title, preview in sections if preview is not None])
        if exported is not None:
            suffix, text = exported
            files[f"samples_{point}{suffix}"] = text
    return files


def _pictures(presentation: Presentation, preview: np.ndarray | None) -> np.ndarray | None:
    """What a figure shows of a preview: images as they are, others as the setting depicts them."""
    if preview is None or presentation.depict is None:
        return preview
    return presentation.depict(preview)


def _first_seed_chains(results: list[ChainResult]) -> dict[str, dict[str, ChainResult]]:
    """Per sweep point, per regime: the chain of the first seed (what sample and learning-curve
    figures show)."""
    chains: dict[str, dict[str, ChainResult]] = {}
    for result in results:
        if result.spec.seeds[0] == 0:
            chains.setdefault(result.spec.point_name, {})[result.spec.regime.label] = result
    return chains


def _real_preview(chains: dict[str, ChainResult]) -> np.ndarray | None:
    # every chain of a point records the same real samples; a run stopped early may lack some
    return next((p for p in (chain.real_preview() for chain in chains.values()) if p is not None), None)


def sample_figures(experiment, results: list[ChainResult]):
    """(name, figure) for image previews: the paper's Fig. 6 layout (real images, then the last
    iteration of every regime), ``samples_<point>``, and every regime's samples over the iterations,
    ``samples_by_iteration_<point>``. Previews that are not images are drawn by their setting's
    ``Presentation.depict``."""
    presentation = SETTINGS.declared(experiment.setting_name).presentation
    for point, chains in _first_seed_chains(results).items():
        last = {label: int(result.iterations.max()) for label, result in chains.items()}
        real = _real_preview(chains)
        if real is None or (real.ndim == 1 and presentation.depict is None):
            continue
        real = _pictures(presentation, real)
        figure, axes = plt.subplots(
            1, 1 + len(chains), figsize=(3.2 * (1 + len(chains)), 3.6), squeeze=False, layout="constrained"
        )
        _show(axes[0][0], real, "real data")
        for ax, (label, chain) in zip(axes[0][1:], chains.items()):
            _show(ax, _pictures(presentation, chain.preview(last[label])), f"{label}, iteration {last[label]}")
        figure.suptitle(f"{experiment.setting_name}: samples{_about(chains)}")
        yield f"samples_{point}", figure

        iterations = sorted({int(i) for i in np.linspace(1, max(last.values()), min(6, max(last.values())))})
        figure, axes = plt.subplots(
            len(chains),
            len(iterations),
            figsize=(2.4 * len(iterations), 2.6 * len(chains)),
            squeeze=False,
            layout="constrained",
        )
        for row, (label, chain) in enumerate(chains.items()):
            for column, iteration in enumerate(iterations):
                images = _pictures(presentation, chain.preview(iteration)) if iteration <= last[label] else None
                if images is None:
                    axes[row][column].set_visible(False)
                    continue
                _show(axes[row][column], images, f"{label}, iteration {iteration}")
        figure.suptitle(f"{experiment.setting_name}: samples by iteration{_about(chains)}")
        yield f"samples_by_iteration_{point}", figure


def learning_curve_figures(experiment, results: list[ChainResult]):
    """(name, figure): validation loss during training, one line per iteration, one panel per regime
    (first seed), ``learning_curves_<point>`` (the paper's Fig. 3 and 4), on the axes the setting names;
    then each further curve the setting declares (``Presentation.curves``), drawn alike as ``<key>_<point>``."""
    presentation = SETTINGS.declared(experiment.setting_name).presentation
    axes = presentation.learning_curve_axes
    yield from _curve_figures(experiment, results, "learning_curve", axes, "learning curves", "learning_curves")
    for key, axes in presentation.curves.items():
        yield from _curve_figures(experiment, results, key, axes, key.replace("_", " "), key)


def _curve_figures(
    experiment, results: list[ChainResult], key: str, axes_keys: tuple[str, str, str, str], what: str, name: str
):
    x_key, x_label, y_key, y_label = axes_keys
    for point, chains in _first_seed_chains(results).items():
        curves = {}
        for label, result in chains.items():
            found = {int(i): (result.diagnostics(int(i)) or {}).get(key) for i in result.iterations}
            curves[label] = {i: c for i, c in found.items() if c}
        if not any(curves.values()):
            continue
        last = max(i for c in curves.values() for i in c)
        colour = plt.cm.viridis
        figure, axes = plt.subplots(
            1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False, sharey=True, layout="constrained"
        )
        for ax, (label, by_iteration) in zip(axes[0], curves.items()):
            for iteration, curve in by_iteration.items():
                ax.plot(
                    [p[x_key] for p in curve],
                    [p[y_key] for p in curve],
                    color=colour((iteration - 1) / max(1, last - 1)),
                    label=f"iteration {iteration}",
                    marker="o" if len(curve) == 1 else None,  # one evaluation is a point, not a line
                )
            ax.set_title(label, fontsize=9)
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(y_label)
        axes[0][0].legend(fontsize=7)
        figure.suptitle(f"{experiment.setting_name}: {what}{_about(chains)}")
        yield f"{name}_{point}", figure


def distribution_figures(experiment, results: list[ChainResult]):
    """(name, figure): each distribution the setting declares (``Presentation.distributions``), as a
    histogram per iteration (first seed), one panel per regime, ``distribution_<key>_<point>``."""
    declared = SETTINGS.declared(experiment.setting_name).presentation.distributions
    for key, label_text in declared.items():
        for point, chains in _first_seed_chains(results).items():
            found: dict[str, dict[int, list]] = {}
            for label, result in chains.items():
                recorded = {int(i): (result.diagnostics(int(i)) or {}).get(key) for i in result.iterations}
                found[label] = {i: list(v) for i, v in recorded.items() if v}
            values = [v for by in found.values() for vs in by.values() for v in vs if np.isfinite(v) and v > 0]
            if not values:
                continue
            # perplexities and the like span decades: log-spaced bins when they do
            low, high = min(values), max(values)
            logarithmic = low > 0 and high / low > 20
            bins = np.geomspace(low, high, 31) if logarithmic else np.linspace(low, high, 31)
            last = max(i for by in found.values() for i in by)
            figure, axes = plt.subplots(
                1, len(found), figsize=(4.2 * len(found), 3.4), squeeze=False, sharey=True, layout="constrained"
            )
            for ax, (label, by_iteration) in zip(axes[0], found.items()):
                for iteration, data in by_iteration.items():
                    ax.hist(
                        data, bins=bins, density=True, histtype="step", lw=1.2,
                        color=plt.cm.viridis((iteration - 1) / max(1, last - 1)), label=f"iteration {iteration}",
                    )  # fmt: skip
                ax.set_title(label, fontsize=9)
                ax.set_xlabel(label_text, fontsize=8)
                if logarithmic:
                    ax.set_xscale("log")
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel("density")
            axes[0][0].legend(fontsize=7)
            figure.suptitle(f"{experiment.setting_name}: {key} by iteration{_about(chains)}")
            yield f"distribution_{key}_{point}", figure


# Panels per row; a sweep of more points wraps onto further rows. The paper's one-row-per-regime layout
# is drawn for sweeps of up to MAX_POINTS_BY_REGIME points (a grid of 75 points x 3 regimes is no figure).
MAX_COLUMNS = 5
MAX_POINTS_BY_REGIME = 10
MAX_REGIMES_BY_REGIME = 10  # (a value-of-synthetic grid of 24 regimes has its own figure)


@dataclass(frozen=True)
class _Layout:
    """What the figures of a run share: its sweep points and regimes, their colours and panels."""

    experiment: Any
    results: list[ChainResult]
    points: list[str]
    titles: dict[str, str]
    regimes: list[str]
    colours: dict[str, Any]
    by_key: dict[tuple[str, str], ChainResult]
    band: str
    columns: int
    block: int  # rows of panels per regime (per figure for the combined one)
    mean_label: str  # "simulation: " beside closed forms; nothing for a setting without any (a neural run)

    @classmethod
    def of(cls, experiment, chain_results: list[ChainResult]) -> _Layout:
        results = merge_seeds(chain_results)
        points = list(dict.fromkeys(r.spec.point_name for r in results))
        regimes = list(dict.fromkeys(r.spec.regime.label for r in results))
        columns = min(len(points), MAX_COLUMNS)
        return cls(
            experiment,
            results,
            points,
            {r.spec.point_name: r.spec.point_title for r in results},
            regimes,
            {label: plt.cm.tab10(i % 10) for i, label in enumerate(regimes)},
            {(r.spec.point_name, r.spec.regime.label): r for r in results},
            band_text(max(len(r.spec.seeds) for r in results)),
            columns,
            -(-len(points) // columns),
            "simulation: " if theory.has_theory(experiment.setting_name) else "",
        )


def metric_figures(experiment, chain_results: list[ChainResult]):
    """(name, figure) for every metric: ``<metric>_by_regime`` (a block of rows per regime, one panel per
    sweep point; up to MAX_POINTS_BY_REGIME points) and ``<metric>`` (every regime in one panel per sweep
    point), and ``real_fraction``."""
    layout = _Layout.of(experiment, chain_results)
    metrics = experiment.metrics
    if len(layout.points) <= MAX_POINTS_BY_REGIME and len(layout.regimes) <= MAX_REGIMES_BY_REGIME:
        for metric, info in metrics.items():
            yield f"{metric}_by_regime", _by_regime_figure(layout, metric, info)
    grid = [r for r in layout.results if r.spec.regime.grid_counts is not None]
    last = max((int(r.iterations.max()) for r in grid), default=0)
    grid = [r for r in grid if r.iterations.max() == last]  # (a run in progress: the chains that got there)
    if len({_counts(r)[0] for r in grid}) > 1:
        for metric, info in metrics.items():
            yield f"{metric}_by_real_and_synthetic", _real_and_synthetic_figure(layout, grid, metric, info)
    for metric, label, log_scale in [
        *((m, i.label, i.log_scale) for m, i in metrics.items()),
        ("real_fraction", "real fraction of the training set", False),
    ]:
        yield metric, _combined_figure(layout, metric, label, log_scale)


def _by_regime_figure(layout: _Layout, metric: str, info):
    """One layout.block of rows per regime, one panel per sweep point; a sweep point's panels share their
    y axis, so that regimes compare at a glance, and the figure has one y label (stacked ones overprint)."""
    figure, axes = plt.subplots(
        len(layout.regimes) * layout.block,
        layout.columns,
        figsize=(max(5.2, 3.6 * layout.columns), max(3.6, 2.8 * len(layout.regimes) * layout.block)),
        squeeze=False,
        sharex=True,
        sharey="col" if layout.block == 1 else False,  # (a block of several rows mixes points in a column)
        layout="constrained",
    )
    for row, regime in enumerate(layout.regimes):
        for k, point in enumerate(layout.points):
            ax = axes[row * layout.block + k // layout.columns][k % layout.columns]
            result = layout.by_key.get((point, regime))
            if result is None:
                ax.set_visible(False)
                continue
            mean, note = draw_mean(
                ax, result, result.metrics[metric], layout.colours[regime], f"{layout.mean_label}{layout.band}"
            )
            _draw_theory(ax, result, metric, "black", with_label=True)
            _draw_reference(ax, result, metric, with_label=True)
            bottom = row == len(layout.regimes) - 1 and k + layout.columns >= len(layout.points)
            finish_axes(ax, info.log_scale, [mean], result.iterations, bottom_row=bottom)
            note_left_out(ax, [note] if note else [])
            ax.set_title(f"{regime}  |  {layout.titles[point]}" if layout.titles[point] else regime, fontsize=9)
        for k in range(len(layout.points), layout.block * layout.columns):  # the unused end of the regime's last row
            axes[row * layout.block + k // layout.columns][k % layout.columns].set_visible(False)
    figure_legend(figure)
    figure.supylabel(info.label, fontsize=9)
    figure.suptitle(f"{layout.experiment.setting_name}: {metric} by regime (a row of panels per regime)")
    return figure


def _counts(result: ChainResult) -> tuple[int, int]:
    """(real, synthetic) of a chain in the value-of-synthetic-data grid (``Regime.grid_counts``)."""
    counts = result.spec.regime.grid_counts
    assert counts is not None
    return counts


def _real_and_synthetic_figure(layout: _Layout, grid: list[ChainResult], metric: str, info):
    """The follow-up's value-of-synthetic-data figure: the metric of each ``real-synthetic`` chain's last
    iteration against its real count, one line (and band) per synthetic count, one panel per sweep point."""
    points = [p for p in layout.points if any(r.spec.point_name == p for r in grid)]
    columns = min(len(points), MAX_COLUMNS)
    figure, axes = plt.subplots(
        -(-len(points) // columns), columns, figsize=(max(6.4, 4.2 * columns), 4.2 * -(-len(points) // columns)),
        squeeze=False, sharey=True, layout="constrained",
    )  # fmt: skip
    synthetic = sorted({_counts(r)[1] for r in grid})
    colours = {s: plt.cm.viridis(i / max(1, len(synthetic) - 1)) for i, s in enumerate(synthetic)}
    reals = sorted({_counts(r)[0] for r in grid})
    for k, ax in enumerate(axes.flat):
        if k >= len(points):
            ax.set_visible(False)
            continue
        for count in synthetic:
            line = sorted(
                (r for r in grid if r.spec.point_name == points[k] and _counts(r)[1] == count),
                key=lambda r: _counts(r)[0],
            )
            if not line:
                continue
            last = np.stack([r.metrics[metric][-1] for r in line])  # (real counts, seeds)
            interval = confidence_interval(last)
            x = [_counts(r)[0] for r in line]
            ax.plot(x, interval.mean, "o-", color=colours[count], lw=1.5, ms=3, label=f"{count:,} synthetic")
            if last.shape[1] >= SEEDS_FOR_A_BAND:
                ax.fill_between(x, interval.low, interval.high, color=colours[count], alpha=0.2, lw=0)
        if reals[0] > 0:
            ax.set_xscale("log")
        else:  # a grid with no real data at one end: linear near 0, logarithmic beyond
            ax.set_xscale("symlog", linthresh=reals[1])
        ax.set_xticks(reals, [f"{count:,}" for count in reals])  # the grid's counts, not powers of ten
        ax.xaxis.set_minor_locator(NullLocator())
        if info.log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("real samples (a line per number of synthetic samples)", fontsize=9)
        ax.grid(alpha=0.3)
        if layout.titles[points[k]]:
            ax.set_title(layout.titles[points[k]], fontsize=9)
    axes[0][0].set_ylabel(info.label, fontsize=9)
    figure_legend(figure, ncols=min(len(synthetic), 6), title=layout.band)
    at = int(grid[0].iterations.max())
    figure.suptitle(f"{layout.experiment.setting_name}: {metric} at iteration {at}")
    return figure


def _combined_figure(layout: _Layout, metric: str, label: str, log_scale: bool):
    """Every regime in one panel per sweep point."""
    # wide and tall enough for the title and a metric's long axis label when there is one sweep point
    figure, axes = plt.subplots(
        layout.block,
        layout.columns,
        figsize=(max(5.6, 4.2 * layout.columns), 3.8 * layout.block),
        squeeze=False,
        layout="constrained",
    )
    for k in range(len(layout.points), layout.block * layout.columns):
        axes[k // layout.columns][k % layout.columns].set_visible(False)
    for k, point in enumerate(layout.points):
        ax = axes[k // layout.columns][k % layout.columns]
        means, notes, iterations, referenced = [], [], [], False
        for regime in layout.regimes:
            result = layout.by_key.get((point, regime))
            if result is None:
                continue
            values = result.real_fraction if metric == "real_fraction" else result.metrics[metric]
            mean, note = draw_mean(ax, result, values, layout.colours[regime], regime)
            if metric != "real_fraction":
                _draw_theory(ax, result, metric, layout.colours[regime], with_label=False)
                if not referenced:  # real data are the same for every regime of a point
                    referenced = _draw_reference(ax, result, metric, with_label=False)
            means.append(mean)
            iterations.append(result.iterations)
            notes += [f"{regime}: {note}"] if note else []
        finish_axes(
            ax, log_scale, means, np.concatenate(iterations), bottom_row=k + layout.columns >= len(layout.points)
        )
        note_left_out(ax, notes)
        if layout.titles[point]:
            ax.set_title(layout.titles[point], fontsize=9)
        if k % layout.columns == 0:
            ax.set_ylabel(label, fontsize=9)
    curves = (c for r in layout.results for c in theory.curves(r.spec.point, r.spec.regime.name, 1))
    kinds = {c.kind for c in curves if c.metric == metric}
    theory_lines = [Line2D([], [], color="grey", ls=_STYLES[k], lw=1, label=f"theory ({k})") for k in sorted(kinds)]
    regime_lines = [Line2D([], [], color=layout.colours[r], lw=1.5, label=r) for r in layout.regimes]
    if metric != "real_fraction" and any(reference(r, metric) is not None for r in layout.results):
        theory_lines.append(Line2D([], [], color="grey", ls="-.", lw=1, label=_REFERENCE))
    figure.legend(
        handles=regime_lines + theory_lines, loc="outside lower center", ncols=4, fontsize=7, title=layout.band,
        title_fontsize=7,
    )  # fmt: skip
    figure.suptitle(f"{layout.experiment.setting_name}: {metric}, every regime overlaid")
    return figure


def plot_run(run_directory: Path) -> list[Path]:
    experiment, chain_results = load_run(run_directory)
    if not chain_results:
        return []
    out = inside(run_directory, "figures")
    out.mkdir(exist_ok=True)
    written: list[Path] = []
    for figures in (metric_figures, sample_figures, learning_curve_figures, distribution_figures):
        for name, figure in figures(experiment, chain_results):
            written += save_figure(figure, out, name)
    titles = {result.spec.point_name: result.spec.point_title for result in chain_results}
    for point, sections in text_samples(experiment, chain_results).items():
        written.append(out / f"samples_{point}.md")
        about = f" ({titles[point]})" if titles.get(point) else ""
        write_text_atomic(written[-1], _text_page(experiment.setting_name, about, sections))
    for name, text in preview_files(experiment, chain_results).items():
        written.append(out / name)
        write_text_atomic(written[-1], text)
    return written
