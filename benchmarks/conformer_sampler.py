"""What the conformer setting's first model draws, against RDKit's ETKDG on the same molecules.

Iteration 1 of a chain fits GeoDiff's network on real conformers only; every later iteration trains on
what the previous model drew, so the first model's samples must already be molecules. This script fits
that model for a config (the CPU config by default), draws the evaluation's conformers with the config's
sampler (the MAT/COV reference molecules, ``evaluation.per_reference`` per reference conformer), and
draws as many with RDKit's ETKDGv3 (no force-field clean-up) for the same molecules, with five random
seeds (ETKDG's MAT-R on ten molecules varies by about 0.1 A between seeds). It prints, side by
side, the bonds' RMS error against the references' (force-field minima on the bundled set) and the
share of conformers with every bond within 0.1 A, MAT-R, COV-R at several of GeoDiff's thresholds, and
the time each took, with the ratios of the model's figures to ETKDG's mean, and ETKDG's range.

    python benchmarks/conformer_sampler.py [CONFIG] [field=value ...] [--seed 0]

for example ``python benchmarks/conformer_sampler.py configs/conformers_cpu.yaml setting.diffusion.steps=50
setting.diffusion.beta_end=0.18`` for the schedule the CPU config had before.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from model_collapse.config import load_experiment
from model_collapse.randomness import chain_rng
from model_collapse.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.5, 0.75, 1.0, 1.25)
ETKDG_SEEDS = 5


def etkdg(references, per_reference: int, seed: int):
    """``per_reference`` ETKDGv3 conformers per reference conformer of every molecule of ``references``."""
    from rdkit.Chem import AllChem

    from model_collapse.settings.conformer_diffusion.chemistry import molecule
    from model_collapse.settings.conformer_diffusion.conformers import Conformers

    molecules, positions = [], []
    for index in np.unique(references.molecule):
        wanted = int((references.molecule == index).sum()) * per_reference
        mol = molecule(references.graphs, int(index))
        parameters = AllChem.ETKDGv3()
        parameters.randomSeed = seed
        for conformer in AllChem.EmbedMultipleConfs(mol, wanted, parameters):
            molecules.append(int(index))
            positions.append(mol.GetConformer(conformer).GetPositions().astype(np.float32))
    return Conformers.from_ensembles(references.graphs, np.array(molecules, dtype=np.int64), positions)


def scores(references, generated) -> dict[str, float]:
    from model_collapse.settings.conformer_diffusion.chemistry import bond_validity, coverage_curve, covmat, rmsd_tables

    tables = rmsd_tables(references, generated)
    coverage = {point["threshold"]: point["cov_r"] for point in coverage_curve(tables)}
    return {
        **bond_validity(references, generated),
        "mat_r": covmat(tables, 1.25)["mat_r"],
        **{f"cov_r@{delta}": coverage[delta] for delta in THRESHOLDS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "conformers_cpu.yaml"))
    parser.add_argument("overrides", nargs="*", help="field=value, as on model-collapse run's command line")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    experiment = load_experiment(Path(args.config), args.overrides)
    point = experiment.points[0]
    setting = SETTINGS[point.name](point, [args.seed])
    started = time.perf_counter()
    model = setting.fit([setting.real_train], chain_rng([args.seed], 1, "fit")).model
    fitted = time.perf_counter() - started
    per_reference = point.evaluation.per_reference
    wanted = np.repeat(setting.references.molecule, per_reference)
    started = time.perf_counter()
    drawn = setting._generate(model, wanted, args.seed, attempts=2)
    sampled = time.perf_counter() - started
    started = time.perf_counter()
    embedded = [etkdg(setting.references, per_reference, 1 + args.seed * ETKDG_SEEDS + k) for k in range(ETKDG_SEEDS)]
    embedding = (time.perf_counter() - started) / ETKDG_SEEDS

    mine = scores(setting.references, drawn)
    theirs = [scores(setting.references, conformers) for conformers in embedded]
    d, s = point.diffusion, point.sampling
    print(
        f"{len(np.unique(wanted))} molecules x {per_reference} per reference: GeoDiff fit in {fitted:.0f} s "
        f"({point.training.steps} steps); {d.steps} levels, beta {d.beta_start:g} -> {d.beta_end:g} "
        f"({d.beta_schedule}), step_lr {s.step_lr:g}; ETKDG over {ETKDG_SEEDS} seeds"
    )
    print(f"{'':18}{'GeoDiff':>10}{'ETKDG':>10}{'ratio':>8}   ETKDG's range")
    for name in mine:
        values = [t[name] for t in theirs]
        mean = float(np.mean(values))
        ratio = mine[name] / mean if mean else float("nan")
        print(f"{name:18}{mine[name]:10.3f}{mean:10.3f}{ratio:8.2f}   {min(values):.3f}-{max(values):.3f}")
    print(f"{'seconds to draw':18}{sampled:10.2f}{embedding:10.2f}{sampled / embedding:8.1f}")


if __name__ == "__main__":
    main()
