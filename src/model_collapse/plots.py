"""Figures of a run: simulation means with 95% bands over seeds, closed forms overlaid where known.

For every metric of the setting two figures are written (PNG and SVG) into RUN/figures/:
* ``<metric>_by_regime``: one row per regime, one column per sweep point - the layout of the paper's
  Fig. 7 (replace on top, accumulate below, one column per T), theory as black lines;
* ``<metric>``: one panel per sweep point with every regime in it, to compare regimes directly -
  the layout of the follow-up's Gaussian and KDE figures.
plus ``real_fraction``: what share of each regime's training set is real, per iteration.

Settings with previews also get ``samples_<point>``: for images the paper's Fig. 6 (real images, then
the last iteration of every regime) and ``samples_by_iteration_<point>``; for texts a page of samples.
Settings that record learning curves (language models) get ``learning_curves_<point>``: validation loss
during training, one line per iteration, one panel per regime.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullFormatter  # noqa: E402

from . import theory  # noqa: E402
from .atomic import write_atomic, write_file_atomic
from .results import ChainResult, load_run, merge_seeds  # noqa: E402
from .rundir import inside  # noqa: E402
from .settings import SETTINGS  # noqa: E402

_STYLES = {"expected": "--", "bound": ":"}


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and a normal 95% confidence band of the mean."""
    with np.errstate(invalid="ignore"):  # infinite values (a singular Gaussian's NLL) are simply not drawn
        mean = values.mean(axis=1)
        if values.shape[1] < 2:
            return mean, mean, mean
        half = 1.96 * values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])
    return mean, mean - half, mean + half


def _draw(ax, result: ChainResult, values: np.ndarray, color, label: str) -> None:
    mean, low, high = _band(values)
    ax.plot(result.iterations, mean, color=color, label=label, lw=1.5)
    ax.fill_between(result.iterations, low, high, color=color, alpha=0.25, lw=0)


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


def _finish(ax, log_scale: bool, values: list[np.ndarray], bottom_row: bool = True) -> None:
    if bottom_row:
        ax.set_xlabel("model-fitting iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    # A log axis only pays off over more than a decade; below that it hides the tick labels.
    if log_scale and finite.size and (finite > 0).all() and finite.max() > 10 * finite.min():
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)


def _save(figure, directory: Path, name: str) -> list[Path]:
    """PNG and SVG, each written whole or not at all (a full disk leaves the old figure, not an empty one)."""
    paths = [directory / f"{name}.png", directory / f"{name}.svg"]
    try:
        for path in paths:
            write_file_atomic(
                path,
                lambda handle, path=path: figure.savefig(handle, format=path.suffix[1:], dpi=130, bbox_inches="tight"),
            )
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


def _show(ax, images: np.ndarray, title: str) -> None:
    grid = image_grid(images)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _text_samples(path: Path, setting_name: str, point: str, real: np.ndarray, chains: dict, last: dict) -> Path:
    """Sample texts of iteration 1 and the last iteration of every regime, after real ones."""

    def numbered(texts) -> list[str]:
        return [f"{i + 1}. {' '.join(str(text).split())}" for i, text in enumerate(texts)]

    lines = [f"# {setting_name}: samples ({point})", "", "## real data", "", *numbered(real)]
    for label, chain in chains.items():
        for iteration in sorted({1, last[label]}):
            lines += ["", f"## {label}, iteration {iteration}", "", *numbered(chain.preview(iteration))]
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _first_seed_chains(results: list[ChainResult]) -> dict[str, dict[str, ChainResult]]:
    """Per sweep point, per regime: the chain of the first seed (what sample and learning-curve
    figures show)."""
    chains: dict[str, dict[str, ChainResult]] = {}
    for result in results:
        if result.spec.seeds[0] == 0:
            chains.setdefault(result.spec.point_name, {})[result.spec.regime.label] = result
    return chains


def _sample_figures(experiment, results: list[ChainResult], out: Path) -> list[Path]:
    """The paper's Fig. 6 layout (real images, then the last iteration of every regime) and the
    samples of every regime over the iterations; for texts, a page of samples."""
    written = []
    for point, chains in _first_seed_chains(results).items():
        last = {label: int(result.iterations.max()) for label, result in chains.items()}
        # every chain of a point records the same real samples; a run stopped early may lack some
        real = next((p for p in (chain.real_preview() for chain in chains.values()) if p is not None), None)
        if real is None:
            continue
        if real.ndim == 1:  # texts: a page of samples instead of image grids
            written.append(
                _text_samples(out / f"samples_{point}.md", experiment.setting_name, point, real, chains, last)
            )
            continue

        figure, axes = plt.subplots(
            1, 1 + len(chains), figsize=(3.2 * (1 + len(chains)), 3.6), squeeze=False, layout="constrained"
        )
        _show(axes[0][0], real, "real data")
        for ax, (label, chain) in zip(axes[0][1:], chains.items()):
            _show(ax, chain.preview(last[label]), f"{label}, iteration {last[label]}")
        figure.suptitle(f"{experiment.setting_name}: samples ({point})")
        written += _save(figure, out, f"samples_{point}")

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
                images = chain.preview(iteration) if iteration <= last[label] else None
                if images is None:
                    axes[row][column].set_visible(False)
                    continue
                _show(axes[row][column], images, f"{label}, iteration {iteration}")
        figure.suptitle(f"{experiment.setting_name}: samples by iteration ({point})")
        written += _save(figure, out, f"samples_by_iteration_{point}")
    return written


def _learning_curves(experiment, results: list[ChainResult], out: Path) -> list[Path]:
    """Validation loss during training, one line per iteration, one panel per regime (first seed)."""
    written = []
    for point, chains in _first_seed_chains(results).items():
        curves = {}
        for label, result in chains.items():
            found = {int(i): (result.diagnostics(int(i)) or {}).get("learning_curve") for i in result.iterations}
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
                    [p["epoch"] for p in curve],
                    [p["validation_loss"] for p in curve],
                    color=colour((iteration - 1) / max(1, last - 1)),
                    label=f"iteration {iteration}",
                )
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("validation loss (nats / token)")
        axes[0][0].legend(fontsize=7)
        figure.suptitle(f"{experiment.setting_name}: learning curves ({point})")
        written += _save(figure, out, f"learning_curves_{point}")
    return written


def plot_run(run_directory: Path) -> list[Path]:
    experiment, chain_results = load_run(run_directory)
    if not chain_results:
        return []
    results = merge_seeds(chain_results)
    setting = SETTINGS.declared(experiment.setting_name)
    out = inside(run_directory, "figures")
    out.mkdir(exist_ok=True)
    points = list(dict.fromkeys(r.spec.point_name for r in results))
    regimes = list(dict.fromkeys(r.spec.regime.label for r in results))
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(regimes)}
    by_key = {(r.spec.point_name, r.spec.regime.label): r for r in results}
    seeds = experiment.config.seeds
    written: list[Path] = []

    for metric, info in setting.metrics.items():
        figure, axes = plt.subplots(
            len(regimes),
            len(points),
            figsize=(max(5.2, 3.6 * len(points)), max(3.6, 2.8 * len(regimes))),
            squeeze=False,
            sharex=True,
            layout="constrained",
        )
        for row, regime in enumerate(regimes):
            for column, point in enumerate(points):
                ax = axes[row][column]
                result = by_key.get((point, regime))
                if result is None:
                    ax.set_visible(False)
                    continue
                _draw(ax, result, result.metrics[metric], colours[regime], f"simulation ({seeds} seeds)")
                _draw_theory(ax, result, metric, "black", with_label=True)
                _finish(ax, info.log_scale, [result.metrics[metric]], bottom_row=row == len(regimes) - 1)
                ax.set_title(f"{regime}  |  {point}", fontsize=9)
                if column == 0:
                    ax.set_ylabel(info.label, fontsize=9)
                if row == 0 and column == 0:
                    ax.legend(fontsize=7)
        figure.suptitle(f"{experiment.setting_name}: {metric}")
        written += _save(figure, out, f"{metric}_by_regime")

    for metric, label, log_scale in [
        *((m, i.label, i.log_scale) for m, i in setting.metrics.items()),
        ("real_fraction", "real fraction of the training set", False),
    ]:
        # wide and tall enough for the title and a metric's long axis label when there is one sweep point
        figure, axes = plt.subplots(
            1, len(points), figsize=(max(5.6, 4.2 * len(points)), 3.8), squeeze=False, layout="constrained"
        )
        for column, point in enumerate(points):
            ax = axes[0][column]
            drawn = []
            for regime in regimes:
                result = by_key.get((point, regime))
                if result is None:
                    continue
                values = result.real_fraction if metric == "real_fraction" else result.metrics[metric]
                _draw(ax, result, values, colours[regime], regime)
                if metric != "real_fraction":
                    _draw_theory(ax, result, metric, colours[regime], with_label=False)
                drawn.append(values)
            _finish(ax, log_scale, drawn)
            ax.set_title(point, fontsize=9)
            if column == 0:
                ax.set_ylabel(label, fontsize=9)
                ax.legend(fontsize=7)
        has_theory = any(
            c.metric == metric for r in results for c in theory.curves(r.spec.point, r.spec.regime.name, 1)
        )
        figure.suptitle(f"{experiment.setting_name}: {metric} by regime" + (" (dashed: theory)" if has_theory else ""))
        written += _save(figure, out, metric)
    if setting.preview_size:
        written += _sample_figures(experiment, chain_results, out)
    written += _learning_curves(experiment, chain_results, out)
    return written
