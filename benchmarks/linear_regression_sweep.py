"""The full linear-regression sweep: the engine against the obvious per-seed loop, side by side.

Sweep: d = 10, T = 100, sigma^2 = 1, 100 iterations, 1000 seeds, replace and accumulate.

* engine: ``run_chain`` on the ``linear-regression`` setting, all seeds as one batch, accumulate through
  cached sufficient statistics (in memory; the run-directory cost is reported separately).
* baseline: what the follow-up's code does - for every seed, every iteration, relabel the design and
  re-solve least squares (``np.linalg.lstsq``) on the stacked accumulated data [X; X; ...; X].

Both consume the same random numbers, so they must agree to rounding; the script checks it. It prints
the wall-clock ratio and how the engine's cost per iteration grows from iteration 1 to iteration 100.

    python benchmarks/linear_regression_sweep.py [--seeds 1000] [--iterations 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from model_collapse.chain import run_chain
from model_collapse.randomness import chain_rng
from model_collapse.regimes import parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings.linear_regression import LinearRegression, LinearRegressionConfig


def engine(config, seeds, iterations, regime, store=None):
    setting = LinearRegression(config, seeds)
    stamps = [time.perf_counter()]
    records = run_chain(
        setting, parse_regime(regime), iterations, store, on_iteration=lambda r: stamps.append(time.perf_counter())
    )
    return np.stack([r.metrics["test_error"] for r in records]), np.diff(stamps)


def baseline(config, seeds, iterations, regime):
    """Per seed, per iteration: relabel, stack, lstsq. Same random numbers as the engine."""
    setting = LinearRegression(config, seeds)  # the same real data (design, w*, labels) per seed
    sigma = np.sqrt(config.noise_variance)
    noise = {
        n: chain_rng(setting.seeds, n, "sample").standard_normal((len(seeds), config.samples))
        for n in range(2, iterations + 1)
    }
    errors = np.empty((iterations, len(seeds)))
    for b in range(len(seeds)):
        X, w_true = setting.design[b], setting.true_weight[b]
        labels = [setting.real_train["y"][b]]
        w = np.linalg.lstsq(X, labels[0], rcond=None)[0]
        errors[0, b] = np.sum((w - w_true) ** 2)
        for n in range(2, iterations + 1):
            y = X @ w + sigma * noise[n][b]
            labels = labels + [y] if regime == "accumulate" else [y]
            w = np.linalg.lstsq(np.vstack([X] * len(labels)), np.concatenate(labels), rcond=None)[0]
            errors[n - 1, b] = np.sum((w - w_true) ** 2)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    config = LinearRegressionConfig(dim=10, samples=100, noise_variance=1.0)
    seeds = range(args.seeds)
    print(f"linear regression d=10 T=100, {args.iterations} iterations, {args.seeds} seeds, replace + accumulate")

    engine_seconds = baseline_seconds = 0.0
    per_iteration = {}
    for regime in ["replace", "accumulate"]:
        start = time.perf_counter()
        ours, durations = engine(config, seeds, args.iterations, regime)
        engine_seconds += time.perf_counter() - start
        per_iteration[regime] = durations
        start = time.perf_counter()
        theirs = baseline(config, seeds, args.iterations, regime)
        baseline_seconds += time.perf_counter() - start
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
        print(f"  {regime:<10} same numbers: max relative difference {np.max(np.abs(ours / theirs - 1)):.1e}")

    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        for regime in ["replace", "accumulate"]:
            engine(config, seeds, args.iterations, regime, ChainStore(Path(directory) / regime, {}))
        stored_seconds = time.perf_counter() - start

    print(f"engine (in memory)         {engine_seconds:8.2f} s")
    print(f"engine (with run directory){stored_seconds:8.2f} s")
    print(f"per-seed lstsq loop        {baseline_seconds:8.2f} s")
    print(
        f"speed-up: {baseline_seconds / engine_seconds:.0f}x in memory, "
        f"{baseline_seconds / stored_seconds:.0f}x with the run directory"
    )
    for regime, durations in per_iteration.items():
        # medians over a window: single iterations take a millisecond or two and are noisy
        first = durations[0]
        second = np.median(durations[1:6])
        last = np.median(durations[-5:])
        print(
            f"{regime:<10} iteration {args.iterations} / iteration 1: {last / first:.2f}x; "
            f"/ iteration 2 (the first that also samples): {last / second:.2f}x  "
            f"({first * 1e3:.2f} / {second * 1e3:.2f} / {last * 1e3:.2f} ms)"
        )


if __name__ == "__main__":
    main()
