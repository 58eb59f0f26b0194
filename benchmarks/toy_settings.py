"""The toy settings end to end: ``model-collapse run`` against a per-seed loop written the follow-up's way.

For each of linear regression, Gaussians and KDE, one shipped config (``configs/<name>.yaml``, with the
seeds and iterations given here) is run three ways, each in a fresh process, side by side:

* cli: ``model-collapse run CONFIG --out TMP -q -j 1``: everything a user waits for (start-up, imports,
  the run directory written durably, grouped commits);
* engine: the same chains through ``run_chain`` in memory, no run directory (the engine's own cost);
* loop: the follow-up's way (Kazdan et al., "Collapse or Thrive?", its public code): for every seed and
  iteration, refit on the whole training set as a stacked array and evaluate - linear regression by
  ``np.linalg.pinv``, Gaussians by ``np.mean`` / ``np.cov`` and ``multivariate_normal``, KDE by
  scikit-learn's ``KernelDensity``.

It prints wall-clock seconds and peak memory (max RSS) of each, the loop/cli speed ratio (target >= 5x)
and the cli/engine memory ratio (target <= 1.5x), and the run directory's size.

    python benchmarks/toy_settings.py [--seeds 100] [--iterations 100] [--only gaussian_small kde ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("linear_regression", "gaussian", "gaussian_small", "kde")
# name -> (shipped config, overrides): gaussian_small is the Gaussian config at one sweep point, T = 100
# (d = 10, three regimes), a sweep small enough that start-up and per-iteration overheads show.
CONFIGS = {"gaussian_small": ("gaussian", ["setting.samples=100"])}


def config_of(name: str) -> tuple[str, list[str]]:
    return CONFIGS.get(name, (name, []))


def experiment(name: str, seeds: int, iterations: int):
    from model_collapse.config import load_experiment

    config, overrides = config_of(name)
    return load_experiment(
        ROOT / "configs" / f"{config}.yaml", [*overrides, f"seeds={seeds}", f"iterations={iterations}"]
    )


def engine(name: str, seeds: int, iterations: int) -> None:
    from threadpoolctl import threadpool_limits

    from model_collapse.chain import run_chain
    from model_collapse.experiment import setting_class

    with threadpool_limits(limits=1):  # as the command line's workers run
        for spec in experiment(name, seeds, iterations).chains():
            run_chain(setting_class(spec.point)(spec.point, spec.seeds), spec.regime, iterations)


def _grown(regime: str, pool: list, new: np.ndarray) -> list:
    """The follow-up's pool after a new batch: the batch alone (replace) or everything so far."""
    return [new] if regime == "replace" else [*pool, new]


def _training(regime: str, pool: list, size: int, rng) -> np.ndarray:
    stacked = np.concatenate(pool)
    if regime == "accumulate-subsample":
        return stacked[rng.choice(len(stacked), size=size, replace=False)]
    return stacked


def loop(name: str, seeds: int, iterations: int) -> None:
    from model_collapse.experiment import setting_class

    for spec in experiment(name, seeds, iterations).chains():
        setting = setting_class(spec.point)(spec.point, spec.seeds)  # the same real data per seed
        regime = spec.regime.label
        for b in range(len(spec.seeds)):
            rng = np.random.default_rng(b)
            if name == "linear_regression":
                X, w_true = setting.design[b], setting.true_weight[b]
                sigma = np.sqrt(spec.point.noise_variance)
                pool = [np.column_stack([X, setting.real_train["y"][b]])]
                for _ in range(iterations):
                    data = _training(regime, pool, len(X), rng)
                    w = np.linalg.pinv(data[:, :-1]) @ data[:, -1]
                    _ = np.sum((w - w_true) ** 2)
                    labels = X @ w + sigma * rng.standard_normal(len(X))
                    pool = _grown(regime, pool, np.column_stack([X, labels]))
            elif name.startswith("gaussian"):
                real = setting.real_train["x"][b]
                pool = [real]
                for _ in range(iterations):
                    data = _training(regime, pool, len(real), rng)
                    mean = data.mean(axis=0)
                    cov = np.cov(data, rowvar=False, bias=True).reshape(len(mean), len(mean))
                    _ = np.sum(mean**2), np.trace(cov), np.linalg.slogdet(cov)
                    pool = _grown(regime, pool, rng.multivariate_normal(mean, cov, size=len(real)))
            else:
                from sklearn.neighbors import KernelDensity

                real = setting.real_train["x"][b]
                pool = [real]
                for _ in range(iterations):
                    data = _training(regime, pool, len(real), rng)
                    model = KernelDensity(bandwidth=spec.point.bandwidth, kernel=spec.point.kernel).fit(data)
                    _ = -model.score_samples(setting.test[b]).mean()
                    new = model.sample(len(real), random_state=int(rng.integers(2**31)))
                    pool = _grown(regime, pool, new)


def measure(command: list[str]) -> tuple[float, float]:
    """Wall-clock seconds and peak memory (MiB) of a command run in its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024


def size_of(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--only", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--part", choices=["engine", "loop"], help=argparse.SUPPRESS)  # one measured process
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        (engine if args.part == "engine" else loop)(args.setting, args.seeds, args.iterations)
        return

    me = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--seeds",
        str(args.seeds),
        "--iterations",
        str(args.iterations),
    ]
    print(f"{args.seeds} seeds, {args.iterations} iterations, one process each (-j 1)")
    print(f"{'config':<20}{'cli':>16}{'engine':>16}{'loop':>16}{'loop/cli':>10}{'cli/engine mem':>16}{'run dir':>10}")
    for name in args.only:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "run"
            file, overrides = config_of(name)
            config = [*overrides, f"seeds={args.seeds}", f"iterations={args.iterations}"]
            cli = measure(
                [sys.executable, "-m", "model_collapse", "run", f"configs/{file}.yaml", *config, "--out", str(out)]
                + ["-q", "-j", "1"]
            )
            size = size_of(out)
        ours = measure([*me, "--part", "engine", "--setting", name])
        theirs = measure([*me, "--part", "loop", "--setting", name])
        print(
            f"{name:<20}"
            + "".join(f"{s:8.1f} s{m:5.0f} M" for s, m in (cli, ours, theirs))
            + f"{theirs[0] / cli[0]:9.1f}x{cli[1] / ours[1]:15.2f}x{size:8.1f} MB"
        )


if __name__ == "__main__":
    main()
