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
    np.testing.assert_array_less(np.abs(mean / expected - 1), relative + standard_errors * error / expected)


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


def test_gaussian_replace_covariance_decays_as_theory_says():
    config = GaussianConfig(dim=2, samples=20, variance=1.0)
    values = simulate(Gaussian(config, range(4000)), "replace", 15)
    for curve in curves(config, "replace", 15):
        assert_matches(values[curve.metric], curve.values, relative=0.05)


def test_gaussian_accumulate_keeps_the_mean_error_bounded():
    config = GaussianConfig(dim=1, samples=10, variance=1.0)
    values = simulate(Gaussian(config, range(4000)), "accumulate", 30)
    (bound,) = curves(config, "accumulate", 30)
    assert values["mean_sq_error"].mean(axis=1).max() < bound.values[0] * 1.03
    # the follow-up's d = 1, T = 10 runs (docs/fidelity.md): accumulate's trace ratio settles near 0.85-0.87,
    # replace's falls as 0.9^t
    assert 0.8 < values["trace_ratio"][-1].mean() < 0.92
