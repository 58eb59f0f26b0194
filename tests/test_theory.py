"""Simulations against the closed forms, with enough seeds to tell them apart within a few percent."""

import numpy as np
import pytest

from model_collapse.chain import run_chain
from model_collapse.regimes import parse_regime
from model_collapse.settings.gaussian import Gaussian, GaussianConfig
from model_collapse.settings.linear_regression import (
    LinearRegression,
    LinearRegressionConfig,
    expected_error_of_real_fit,
)
from model_collapse.theory import curves


def simulate(setting, regime, iterations):
    records = run_chain(setting, parse_regime(regime), iterations)
    return {name: np.stack([r.metrics[name] for r in records]) for name in records[0].metrics}


def assert_matches(values, expected, relative=0.03, standard_errors=4.0):
    """Mean over seeds within a few percent of theory and within the Monte-Carlo error."""
    mean = values.mean(axis=1)
    error = values.std(axis=1, ddof=1) / np.sqrt(values.shape[1])
    np.testing.assert_array_less(np.abs(mean - expected), np.maximum(standard_errors * error, 1e-12))
    np.testing.assert_array_less(np.abs(mean / expected - 1), relative + standard_errors * error / np.abs(expected))


@pytest.fixture(scope="module")
def linear_regression():
    config = LinearRegressionConfig(dim=10, samples=100, noise_variance=1.0)
    return config, LinearRegression(config, range(4000))


@pytest.mark.parametrize("regime", ["replace", "accumulate", "replace-grown"])
def test_linear_regression_matches_the_papers_closed_forms(linear_regression, regime):
    config, setting = linear_regression
    iterations = 12
    values = simulate(setting, regime, iterations)["test_error"]
    (expected, *_) = [c.values for c in curves(config, regime, iterations) if c.kind == "expected"]
    assert_matches(values, expected)


def test_linear_regression_theory_values():
    c = expected_error_of_real_fit(10, 100, 1.0)
    assert c == pytest.approx(0.11236, abs=1e-5)  # c = sigma^2 d / (T - d - 1) at d = 10, T = 100 (docs/fidelity.md)
    config = LinearRegressionConfig(dim=10, samples=100)
    accumulate = curves(config, "accumulate", 10000)
    assert accumulate[0].values[-1] == pytest.approx(c * np.pi**2 / 6, rel=1e-4)
    assert (accumulate[0].values <= accumulate[1].values + 1e-15).all()
    np.testing.assert_allclose(curves(config, "replace", 3)[0].values, [c, 2 * c, 3 * c])
    np.testing.assert_allclose(curves(config, "replace-grown", 3)[0].values, c * np.array([1, 1.5, 11 / 6]))
    assert curves(config, "mix:0.5", 3) == []


def test_accumulate_stays_below_the_pi_squared_over_six_bound(linear_regression):
    config, setting = linear_regression
    values = simulate(setting, "accumulate", 40)["test_error"].mean(axis=1)
    bound = expected_error_of_real_fit(10, 100, 1.0) * np.pi**2 / 6
    assert values.max() < 1.03 * bound
    assert values[-1] > 0.9 * bound  # and it does approach it


@pytest.mark.parametrize("dim,samples", [(2, 20), (5, 8)])
def test_gaussian_replace_covariance_decays_as_theory_says(dim, samples):
    config = GaussianConfig(dim=dim, samples=samples, variance=1.0)
    values = simulate(Gaussian(config, range(4000)), "replace", 15)
    found = curves(config, "replace", 15)
    assert {c.metric for c in found} == {"trace_ratio", "mean_sq_error", "det_ratio", "log_det_ratio"}
    for curve in found:
        if curve.metric == "det_ratio" and dim > 2:
            continue  # a product of many small factors: its mean needs far more seeds than its log's
        assert_matches(values[curve.metric], curve.values, relative=0.05)


def test_gaussian_accumulate_keeps_the_mean_error_bounded():
    config = GaussianConfig(dim=1, samples=10, variance=1.0)
    values = simulate(Gaussian(config, range(4000)), "accumulate", 30)
    (bound,) = curves(config, "accumulate", 30)
    assert values["mean_sq_error"].mean(axis=1).max() < bound.values[0] * 1.03
    # the follow-up's d = 1, T = 10 runs (docs/fidelity.md): accumulate's trace ratio settles near 0.85-0.87,
    # replace's falls as 0.9^t
    assert 0.8 < values["trace_ratio"][-1].mean() < 0.92


@pytest.mark.parametrize("dim,samples", [(32, 10), (32, 20)])
@pytest.mark.parametrize("regime", ["replace", "accumulate", "replace-grown"])
def test_minimum_norm_linear_regression_matches_its_closed_forms(dim, samples, regime):
    """T < d - 1: the part of w* outside the design's row space is never learned (d - T on average),
    the rest follows the paper's recursions with c' = sigma^2 T / (d - T - 1)."""
    config = LinearRegressionConfig(dim=dim, samples=samples, noise_variance=1.0)
    values = simulate(LinearRegression(config, range(4000)), regime, 10)["test_error"]
    expected = curves(config, regime, 10)[0]
    assert expected.kind == "expected"
    assert_matches(values, expected.values)


@pytest.mark.parametrize("samples", [10, 11])
def test_linear_regression_without_a_finite_expectation_runs_and_draws_no_curve(samples):
    config = LinearRegressionConfig(dim=10, samples=samples)
    assert curves(config, "replace", 5) == []
    setting = LinearRegression(config, range(50))
    values = simulate(setting, "accumulate-subsample", 5)["test_error"]
    assert np.isfinite(values).all()
    # iteration 1 interpolates (T = d) or nearly: the OLS and minimum-norm solutions agree
    expected = np.stack(
        [np.linalg.lstsq(setting.design[b], setting.real_train["y"][b], rcond=None)[0] for b in range(50)]
    )
    np.testing.assert_allclose(values[0], ((expected - setting.true_weight) ** 2).sum(axis=1), rtol=1e-6)
