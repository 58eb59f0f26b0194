"""A chain's thread budget (``threads.py``) against none, idle and beside two busy loops.

The VAE on the bundled digits (``configs/vae_digits_cpu.yaml``, fewer epochs and iterations), run from
the command line as a user runs it:

* two chains at once (``-j 2``): with the budget (the default: the cores divided by the two chains)
  and without it (``--threads`` at every core for each chain: PyTorch's and BLAS's default);
* one chain (``-j 1``): with the budget (every core, the default) and ``--threads 1``, which is what
  to choose when other work shares the machine.

Each case runs idle and again while two processes spin on the CPU (``while True: pass``), as on a
shared machine; the time is the median of ``--repeat`` runs, and each ratio is against the default.

    python benchmarks/threads.py [--repeat 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from model_collapse.testing import busy_processes  # noqa: E402
from model_collapse.threads import available_cores  # noqa: E402


def seconds(arguments: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as scratch:
            command = [sys.executable, "-m", "model_collapse", "run", "configs/vae_digits_cpu.yaml", "-q"]
            start = time.perf_counter()
            subprocess.run(
                [*command, "--out", f"{scratch}/run", *arguments], cwd=ROOT, check=True, stderr=subprocess.DEVNULL
            )
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    cores = available_cores()
    size = [f"setting.training.epochs={args.epochs}", "iterations=3", "seeds=1"]
    cases = {
        "-j 2, two chains": (
            ["-j", "2", "regimes=[replace,accumulate]", *size],
            {"budget (default)": [], f"no budget (--threads {cores})": ["--threads", str(cores)]},
        ),
        "-j 1, one chain": (
            ["-j", "1", "regimes=[replace]", *size],
            {f"budget (default: {cores})": [], "--threads 1": ["--threads", "1"]},
        ),
    }
    print(f"{cores} cores; the median of {args.repeat} runs; ratio = time / the default's in the same row group")
    print(f"{'case':<20}{'threads':<26}{'idle s':>8}{'ratio':>8}{'busy s':>9}{'ratio':>8}")
    for case, (common, variants) in cases.items():
        rows = {}
        for variant, extra in variants.items():
            idle = seconds([*common, *extra], args.repeat)
            with busy_processes(2):
                loaded = seconds([*common, *extra], args.repeat)
            rows[variant] = (idle, loaded)
        default_idle, default_busy = next(iter(rows.values()))
        for variant, (idle, loaded) in rows.items():
            print(
                f"{case:<20}{variant:<26}{idle:8.1f}{idle / default_idle:7.2f}x"
                f"{loaded:9.1f}{loaded / default_busy:7.2f}x"
            )


if __name__ == "__main__":
    main()
