"""Compare the tables of the shipped configs between two versions of the code, bit for bit.

    python scripts/compare_tables.py f583b1a                 # that commit against this checkout
    python scripts/compare_tables.py f583b1a --iterations 10 --seeds 20 lm_tiny_cpu.yaml

Each side runs its own ``configs/*.yaml`` (so a change of config format is compared as well) with the
same top-level overrides, which keep every sweep point and regime but shorten the run, on this machine,
side by side; then the two ``model-collapse table`` outputs must be equal byte for byte. Where a config's
fields moved (a setting's flat keys grouped into sections), the table's columns are renamed with them:
such tables are reported as equal in every value when each column of the earlier table, under its new
name, holds the same text in every row (columns only the later table has are listed); so are keys a
setting has since renamed (``SettingConfig.renamed``). Configs whose data
are not here (TinyStories, MNIST, CelebA) are reported as skipped. Refactors that must not change any
number are checked with this before they land.
"""

from __future__ import annotations

import argparse
import csv
import io
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


def same_values(before: str, after: str) -> str | None:
    """How the columns changed, when the two tables hold the same values under moved column names;
    None when a value differs."""
    sys.path.insert(0, str(ROOT / "src"))
    from model_collapse.settings import SETTINGS

    old_rows, new_rows = list(csv.reader(io.StringIO(before))), list(csv.reader(io.StringIO(after)))
    if len(old_rows) != len(new_rows) or len(old_rows) < 2:
        return None
    old_columns = dict(zip(old_rows[0], zip(*old_rows[1:])))
    new_columns = dict(zip(new_rows[0], zip(*new_rows[1:])))
    config = SETTINGS.declared(new_rows[1][0]).Config

    def now(column: str) -> str:
        """A column under its name now: a key moved into a section, or renamed (a section's keys with it)."""
        if column in config.moved:
            return config.moved[column]
        for old, new in config.renamed.items():
            if column == old or column.startswith(f"{old}."):
                return new + column[len(old) :]
        return column

    renamed = {old: now(old) for old in old_columns}
    if any(old_columns[old] != new_columns.get(new) for old, new in renamed.items()):
        return None
    changes = [f"{old} -> {new}" for old, new in renamed.items() if old != new]
    added = [name for name in new_columns if name not in renamed.values()]
    return f"renamed {', '.join(changes) or 'none'}; added {', '.join(added) or 'none'}"


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
            elif (columns := same_values(before_text, after_text)) is not None:
                print(f"same values {name}: {len(after_text.splitlines()) - 1} rows; columns {columns}")
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
