"""KDE chains: the engine against a per-seed loop written the follow-up's way, side by side.

Two moons, Gaussian kernel, h = 0.1, 500 test points per seed.

* engine: ``run_chain`` on the ``kde`` setting, all seeds as one batch: exact evaluation that keeps each
  data part's kernel sums at the test points, so an accumulate iteration evaluates only its new batch.
* baseline: the follow-up's loop (Kazdan et al., "Collapse or Thrive?") - for every seed and iteration,
  fit scikit-learn's ``KernelDensity`` on the whole training set, score the test points, sample the next
  batch with ``KernelDensity.sample``.

The two draw different random numbers (scikit-learn samples with its own generator), so their NLLs agree
only within Monte-Carlo error; the script prints both means. It prints the wall-clock ratio and how the
engine's cost per accumulate iteration grows from iteration 2 to the last.

    python benchmarks/kde_sweep.py [--samples 100] [--seeds 20] [--iterations 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import KernelDensity

from model_collapse.chain import run_chain
from model_collapse.regimes import parse_regime
from model_collapse.settings.kde import KDE, KDEConfig


def engine(config, seeds, iterations, regime):
    setting = KDE(config, seeds)
    stamps = [time.perf_counter()]
    records = run_chain(
        setting, parse_regime(regime), iterations, on_iteration=lambda r: stamps.append(time.perf_counter())
    )
    return np.stack([r.metrics["test_nll"] for r in records]), np.diff(stamps)


def baseline(config, seeds, iterations, regime):
    """Per seed, per iteration: fit KernelDensity on the training set, score the test points, sample."""
    setting = KDE(config, seeds)  # the same real training and test data per seed
    nll = np.empty((iterations, len(seeds)))
    for b in range(len(seeds)):
        data = [setting.real_train["x"][b]]
        for n in range(1, iterations + 1):
            model = KernelDensity(bandwidth=config.bandwidth).fit(np.concatenate(data))
            nll[n - 1, b] = -model.score_samples(setting.test[b]).mean()
            synthetic = model.sample(config.samples, random_state=n * 7919 + b)
            data = [*data, synthetic] if regime == "accumulate" else [synthetic]
    return nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    config = KDEConfig(samples=args.samples)
    seeds = list(range(args.seeds))
    print(f"two moons, n = {args.samples}, h = 0.1, {args.seeds} seeds, {args.iterations} iterations")
    for regime in ("replace", "accumulate"):
        start = time.perf_counter()
        ours, per_iteration = engine(config, seeds, args.iterations, regime)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = baseline(config, seeds, args.iterations, regime)
        theirs_s = time.perf_counter() - start
        first, second, last = per_iteration[0], per_iteration[1], per_iteration[-1]
        print(
            f"{regime:10}  engine {ours_s:7.2f} s   per-seed loop {theirs_s:7.2f} s   "
            f"ratio {theirs_s / ours_s:6.1f}x   last NLL {ours[-1].mean():.3f} vs {theirs[-1].mean():.3f}"
        )
        print(
            f"{'':10}  engine per iteration: 1 {first * 1e3:.1f} ms, 2 {second * 1e3:.1f} ms, "
            f"{args.iterations} {last * 1e3:.1f} ms ({last / second:.2f}x iteration 2)"
        )


if __name__ == "__main__":
    main()
