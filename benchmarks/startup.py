"""What the command costs before it does anything: each command's wall-clock time against ``python -c
pass`` (the interpreter alone), median of several fresh processes, side by side.

* ``--help``, ``list``, ``theory gaussian``, ``status RUN``: what a user types most, which should import
  only what it needs (``--help``: neither numpy nor a setting);
* ``run`` of a one-iteration, one-seed Gaussian config: the fixed cost before a run's first iteration
  (imports, validating the config, the run directory written), and ``python -c "import numpy"`` beside
  it, the floor of anything that computes.

    python benchmarks/startup.py [--repeat 7]
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
COMMAND = [sys.executable, "-m", "model_collapse"]


def seconds(command: list[str], repeat: int) -> float:
    """The median wall-clock time of ``command`` in fresh processes (after one warm-up run)."""
    times = []
    for trial in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if trial:  # the first run warms the file cache
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        tiny = ["configs/gaussian_1d.yaml", "iterations=1", "seeds=1", "regimes=[replace]", "-q", "-j", "1"]
        subprocess.run([*COMMAND, "run", *tiny, "--out", str(run)], cwd=ROOT, check=True, capture_output=True)
        counter = iter(range(10**6))
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
            "model-collapse --help": [*COMMAND, "--help"],
            "model-collapse list": [*COMMAND, "list"],
            "model-collapse theory gaussian": [*COMMAND, "theory", "gaussian"],
            "model-collapse status RUN": [*COMMAND, "status", str(run)],
        }
        baseline = seconds(cases["python -c pass"], args.repeat)
        print(f"median of {args.repeat} fresh processes; ratio = time / python -c pass")
        print(f"{'command':<44}{'seconds':>9}{'ratio':>8}")
        for name, command in cases.items():
            took = baseline if name == "python -c pass" else seconds(command, args.repeat)
            print(f"{name:<44}{took:9.3f}{took / baseline:7.1f}x")
        times = []
        for _ in range(args.repeat):
            out = Path(scratch) / f"tiny-{next(counter)}"
            start = time.perf_counter()
            subprocess.run([*COMMAND, "run", *tiny, "--out", str(out)], cwd=ROOT, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        took = statistics.median(times)
        print(f"{'model-collapse run (1 iteration, 1 seed)':<44}{took:9.3f}{took / baseline:7.1f}x")


if __name__ == "__main__":
    main()
