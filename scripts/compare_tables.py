"""Compare the tables of the shipped configs between two versions of the code, bit for bit.

    python scripts/compare_tables.py f583b1a                 # that commit against this checkout
    python scripts/compare_tables.py f583b1a --iterations 10 --seeds 20 lm_tiny_cpu.yaml

Each side runs its own ``configs/*.yaml`` (so a change of config format is compared as well) with the
same top-level overrides, which keep every sweep point and regime but shorten the run, on this machine,
side by side; then the two ``model-collapse table`` outputs must be equal byte for byte. Configs whose data
are not here (TinyStories, MNIST, CelebA) are reported as skipped. Refactors that must not change any
number are checked with this before they land.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(revision: str, destination: Path) -> Path:
    """The tree of ``revision`` unpacked into ``destination`` (git archive: no worktree, no .git changes)."""
    archive = destination.with_suffix(".tar")
    with open(archive, "wb") as handle:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision], stdout=handle, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    archive.unlink()
    return destination


def run_table(tree: Path, config: Path, overrides: list[str], out: Path) -> tuple[int, str]:
    """(exit code, table or error) of one config run with the code in ``tree``."""
    environment = {**os.environ, "PYTHONPATH": str(tree / "src")}
    command = [sys.executable, "-m", "model_collapse"]
    run = subprocess.run(
        [*command, "run", str(config), *overrides, "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        env=environment,
    )
    if run.returncode != 0:
        return run.returncode, (run.stderr.strip().splitlines() or ["no message"])[-1]
    table = subprocess.run([*command, "table", str(out)], capture_output=True, text=True, env=environment, check=True)
    return 0, table.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="a git revision")
    parser.add_argument("configs", nargs="*", help="config file names (default: every shipped config)")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    overrides = [f"iterations={args.iterations}", f"seeds={args.seeds}"]
    names = args.configs or sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    different = 0
    with tempfile.TemporaryDirectory(prefix="compare-tables-") as scratch:
        before = export(args.before, Path(scratch) / "before")
        for name in names:
            configs = {side: tree / "configs" / name for side, tree in (("before", before), ("after", ROOT))}
            if not all(config.exists() for config in configs.values()):
                print(f"{'new' if configs['after'].exists() else 'removed':10} {name}")
                continue
            results = {
                side: run_table(tree, configs[side], overrides, Path(scratch) / side / name)
                for side, tree in (("before", before), ("after", ROOT))
            }
            (code_before, before_text), (code_after, after_text) = results["before"], results["after"]
            if code_before or code_after:
                state = {side: text if code else "ran" for side, (code, text) in results.items()}
                print(f"skipped    {name}: before: {state['before']}; after: {state['after']}")
                different += bool(code_before) != bool(code_after)  # one side running alone is a difference
            elif before_text == after_text:
                print(f"identical  {name}: {len(after_text.splitlines()) - 1} rows")
            else:
                different += 1
                pairs = zip(before_text.splitlines(), after_text.splitlines())
                line = next(
                    (i for i, (a, b) in enumerate(pairs) if a != b),
                    min(len(before_text.splitlines()), len(after_text.splitlines())),
                )
                print(f"DIFFERENT  {name}: first at line {line + 1}")
    print("all tables identical" if not different else f"{different} config(s) differ")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
