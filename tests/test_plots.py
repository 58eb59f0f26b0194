"""Figures as a reader sees them: readable axes, panels named in the paper's words, one stated band,
seeds left out of a mean counted on the panel."""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from model_collapse.cli import app
from model_collapse.plots import metric_figures
from model_collapse.results import confidence_interval, load_run

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, config: str, *overrides: str) -> Path:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(ROOT / "configs" / config), *overrides, "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def figures(run_directory: Path) -> dict:
    return dict(metric_figures(*load_run(run_directory)))


def y_labels(ax) -> list[str]:
    """The y tick labels a reader sees: inside the axis' view and not blank."""
    ax.figure.canvas.draw()
    low, high = sorted(ax.get_ylim())
    ticks = [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
    return [
        t.label1.get_text()
        for t in ticks
        if t.label1.get_visible() and t.label1.get_text() and low <= t.get_loc() <= high
    ]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> dict:
    return figures(run(tmp_path_factory.mktemp("quickstart"), "quickstart.yaml", "seeds=50", "iterations=12"))


def test_every_panel_of_the_quickstart_has_readable_y_ticks(quickstart):
    for name, figure in quickstart.items():
        for ax in figure.axes:
            if ax.get_visible() and ax.lines:
                assert len(y_labels(ax)) >= 2, f"{name}: panel {ax.get_title()!r} shows {y_labels(ax)}"


def test_a_log_axis_only_where_the_means_span_more_than_a_decade(quickstart):
    assert quickstart["test_error"].axes[0].get_yscale() == "log"  # replace's error grows over tenfold in 12 iterations
    assert quickstart["real_fraction"].axes[0].get_yscale() == "linear"  # 1/n from 1 to 0.08: within a decade


def test_by_regime_panels_share_the_y_axis_of_their_sweep_point(quickstart):
    """Accumulate's wobble must not fill its panel as replace's rise fills its own."""
    replace, accumulate = quickstart["test_error_by_regime"].axes[:2]
    assert replace.get_ylim() == accumulate.get_ylim() and accumulate.get_yscale() == "log"
    figure = quickstart["test_error_by_regime"]
    assert not any(ax.get_ylabel() for ax in figure.axes) and figure.get_supylabel()  # one label, not stacked


def test_under_five_seeds_every_seed_is_a_thin_line_and_there_is_no_band(tmp_path):
    few = figures(run(tmp_path, "quickstart.yaml", "seeds=3", "iterations=4"))
    panel = few["test_error_by_regime"].axes[0]
    assert not panel.collections  # no band
    widths = [line.get_linewidth() for line in panel.lines]
    assert widths.count(0.6) == 3  # one thin line per seed beside the mean
    legend_titles = [t.get_text() for legend in few["test_error_by_regime"].legends for t in legend.texts]
    assert any("each seed (thin)" in text for text in legend_titles)


def test_panels_and_legends_speak_the_papers_words(quickstart, tmp_path):
    titles = [ax.get_title() for ax in quickstart["test_error_by_regime"].axes]
    assert titles == ["replace", "accumulate", "accumulate-subsample"]  # no "base" for a run without a sweep
    legend = [t.get_text() for t in quickstart["test_error_by_regime"].legends[0].get_texts()]
    assert legend == ["simulation: mean of 50 seeds, 95% CI (Student t)", "theory (expected)", "theory (bound)"]

    swept = figures(run(tmp_path, "gaussian.yaml", "seeds=4", "iterations=3", "sweep.samples=[10,32]"))
    assert [ax.get_title() for ax in swept["trace_ratio"].axes] == ["T = 10", "T = 32"]
    assert [ax.get_title() for ax in swept["trace_ratio_by_regime"].axes][:2] == [
        "replace  |  T = 10",
        "replace  |  T = 32",
    ]
    # T = 10 = d: every fit singular, so the panel says why it has no line instead of staying blank
    notes = [t.get_text() for t in swept["test_nll"].axes[0].texts]
    assert notes == [
        "\n".join(
            f"{r}: +inf for 4 of 4 seeds at every iteration" for r in ("replace", "accumulate", "accumulate-subsample")
        )
    ]
    assert swept["log_det_ratio_by_regime"].axes[0].texts[0].get_text() == "-inf for 4 of 4 seeds at every iteration"
    assert not swept["test_nll"].axes[1].texts  # T = 32: all finite, nothing to say


def test_the_band_is_students_t_interval_of_the_mean_over_finite_seeds():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 5))
    interval = confidence_interval(values)
    for i, row in enumerate(values):
        low, high = stats.t.interval(0.95, len(row) - 1, loc=row.mean(), scale=stats.sem(row))
        np.testing.assert_allclose([interval.low[i], interval.high[i]], [low, high])
    two = confidence_interval(np.array([[1.0, 3.0]]))
    np.testing.assert_allclose(two.high - two.mean, 12.706204736 * 1.0)  # t_{0.975, 1} s / sqrt(2), s = sqrt(2)
    values[1, 2] = np.inf
    values[2, :4] = -np.inf
    interval = confidence_interval(values)
    np.testing.assert_allclose(interval.mean[1], np.delete(values[1], 2).mean())
    assert np.isnan(interval.low[2]) and interval.mean[2] == values[2, 4]  # one finite seed: no interval
    assert interval.nonfinite(values, np.arange(1, 4)) == "-inf for 4 of 5 seeds at iteration 3"
    one_seed = confidence_interval(np.ones((4, 1)))
    assert np.isnan(one_seed.low).all() and one_seed.band_text == "1 seed: no interval"


@pytest.mark.parametrize("sweep", [None, {"model.latent_dim": [2, 3]}])
def test_sample_and_learning_curve_titles_name_a_sweep_point_only_when_there_is_a_sweep(tmp_path, sweep):
    import model_collapse
    from helpers import tiny_vae
    from model_collapse.plots import learning_curve_figures, sample_figures

    config = {"setting": tiny_vae(), "regimes": ["replace"], "iterations": 2, "seeds": 1}
    if sweep:
        config["sweep"] = sweep
    model_collapse.run(config, out=tmp_path / "run", workers=1)
    experiment, chains = load_run(tmp_path / "run")
    titles = [figure._suptitle.get_text() for figures in (sample_figures, learning_curve_figures)
              for _, figure in figures(experiment, chains)]  # fmt: skip
    assert titles and not any("base" in title for title in titles), titles
    if sweep:
        assert any("(" in title and "=" in title for title in titles), titles
    else:  # a neural run's mean is no "simulation" beside a closed form: the setting has none
        by_regime = dict(metric_figures(experiment, chains))["test_loss_by_regime"]
        legend = [text.get_text() for text in by_regime.legends[0].get_texts()]
        assert legend == ["1 seed: no interval"], legend


def test_a_grid_of_real_and_synthetic_counts_is_drawn_as_the_follow_up_draws_it(tmp_path):
    """The value-of-synthetic-data figure: the last iteration's metric against the real count, one line
    per synthetic count; with 8 real samples, synthetic ones help the Gaussian (the follow-up's finding)."""
    out = tmp_path / "grid"
    config = tmp_path / "grid.yaml"
    config.write_text(
        "setting: {name: gaussian, dim: 1, samples: 100}\n"
        "regimes: [{name: real-synthetic, real: [0, 8, 30, 100], synthetic: [0, 50, 400]}, replace]\n"
        "iterations: 2\nseeds: 30\n"
    )
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    drawn = figures(out)
    assert "mean_sq_error_by_regime" not in drawn  # 12 regimes: the grid figure instead of 12 rows of panels
    (ax,) = [a for a in drawn["mean_sq_error_by_real_and_synthetic"].axes if a.get_visible()]
    lines = {line.get_label(): line for line in ax.lines}
    assert set(lines) == {"0 synthetic", "50 synthetic", "400 synthetic"}
    assert list(lines["0 synthetic"].get_xdata()) == [8, 30, 100]  # (0, 0) trains on nothing: not in the grid
    assert list(lines["400 synthetic"].get_xdata()) == [0, 8, 30, 100]
    _, results = load_run(out)
    final = {r.spec.regime.label: r.metrics["mean_sq_error"][-1].mean() for r in results}
    np.testing.assert_allclose(lines["400 synthetic"].get_ydata()[1], final["real-synthetic:8+400"])
    assert final["real-synthetic:8+400"] < final["real-synthetic:8+0"]


def test_every_metric_figures_title_says_what_its_file_name_says(quickstart):
    """``<metric>_by_regime``: a row of panels per regime; ``<metric>``: every regime overlaid."""
    for metric in ("test_error", "real_fraction"):
        overlaid = quickstart[metric]
        assert overlaid._suptitle.get_text() == f"linear-regression: {metric}, every regime overlaid"
        assert {line.get_label() for line in overlaid.legends[0].get_lines()} >= {"replace", "accumulate"}
    by_regime = quickstart["test_error_by_regime"]
    assert by_regime._suptitle.get_text() == "linear-regression: test_error by regime (a row of panels per regime)"
    assert [ax.get_title() for ax in by_regime.axes[:3]] == ["replace", "accumulate", "accumulate-subsample"]
