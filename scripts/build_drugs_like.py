"""Build the bundled ``drugs-like`` conformer set: small drug-like molecules with RDKit conformer ensembles.

The molecules come from the NCI SMILES file that the rdkit wheel ships (``rdkit/Data/NCI/first_5K.smi``,
BSD-3): neutral, 8 to 14 heavy atoms of C, N, O, F, S and Cl, at least one rotatable bond, one fragment.
Each gets conformers embedded with ETKDGv3, optimised with MMFF94, and the ``--conformers`` lowest-energy
ones that differ pairwise by more than ``--distinct`` A heavy-atom RMSD are kept, with hydrogens, as in
GEOM (whose GeoDiff files keep the 5 highest Boltzmann weights per molecule). Molecules with fewer
distinct conformers are left out. The result is the package data file ``data/drugs_like.npz``
(``conformers/molecules.py`` reads it).

    pip install -e ".[molecules]"
    python scripts/build_drugs_like.py [--molecules 300] [--conformers 5] [--out src/model_collapse/data/drugs_like.npz]

Deterministic for a given RDKit version (every embedding has its own seed), about a minute or two on 2 cores.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ELEMENTS = {"C", "N", "O", "F", "S", "Cl", "H"}


def candidates(path: Path):
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    for line in path.read_text().splitlines():
        smiles = line.split()[0] if line.strip() else ""
        molecule = Chem.MolFromSmiles(smiles) if smiles else None
        if molecule is None or len(Chem.GetMolFrags(molecule)) != 1:
            continue
        atoms = molecule.GetAtoms()
        if not 8 <= molecule.GetNumHeavyAtoms() <= 14 or any(a.GetFormalCharge() for a in atoms):
            continue
        if any(a.GetSymbol() not in ELEMENTS for a in atoms) or rdMolDescriptors.CalcNumRotatableBonds(molecule) < 1:
            continue
        yield Chem.MolToSmiles(molecule), molecule


def ensemble(molecule, seed: int, conformers: int, distinct: float, attempts: int):
    """Positions (conformers, atoms, 3) of the lowest-energy distinct MMFF conformers, or None."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    with_h = Chem.AddHs(molecule)
    parameters = AllChem.ETKDGv3()
    parameters.randomSeed = seed  # >= 1: a seed of 0 gave identical conformers
    ids = list(AllChem.EmbedMultipleConfs(with_h, numConfs=attempts, params=parameters))
    if len(ids) < conformers or not AllChem.MMFFHasAllMoleculeParams(with_h):
        return None, None
    results = AllChem.MMFFOptimizeMoleculeConfs(with_h, maxIters=2000)
    energies = [energy if converged == 0 else np.inf for converged, energy in results]
    heavy = Chem.RemoveHs(with_h)
    kept: list[int] = []
    for index in np.argsort(energies):
        if not np.isfinite(energies[index]):
            break
        conformer_id = ids[index]
        if all(rdMolAlign.GetBestRMS(heavy, heavy, k, conformer_id) > distinct for k in kept):
            kept.append(conformer_id)
        if len(kept) == conformers:
            break
    if len(kept) < conformers:
        return None, None
    positions = np.stack([with_h.GetConformer(k).GetPositions() for k in kept]).astype(np.float32)
    return with_h, positions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--molecules", type=int, default=300)
    parser.add_argument("--conformers", type=int, default=5)
    parser.add_argument("--distinct", type=float, default=0.5, help="least heavy-atom RMSD between kept conformers")
    parser.add_argument("--attempts", type=int, default=30, help="conformers embedded per molecule")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "src/model_collapse/data/drugs_like.npz"
    )
    args = parser.parse_args()
    import rdkit
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    source = Path(os.path.dirname(rdkit.__file__)) / "Data" / "NCI" / "first_5K.smi"
    smiles, atom_types, atom_counts, bonds, bond_types, bond_counts, positions = [], [], [], [], [], [], []
    for seed, (canonical, molecule) in enumerate(candidates(source), start=1):
        with_h, ensemble_positions = ensemble(molecule, seed, args.conformers, args.distinct, args.attempts)
        if with_h is None:
            continue
        smiles.append(canonical)
        atom_types.append([atom.GetAtomicNum() for atom in with_h.GetAtoms()])
        atom_counts.append(with_h.GetNumAtoms())
        bonds.append([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in with_h.GetBonds()])
        bond_types.append([int(b.GetBondType()) for b in with_h.GetBonds()])
        bond_counts.append(with_h.GetNumBonds())
        positions.append(ensemble_positions)
        print(f"{len(smiles):4d} {canonical}", flush=True)
        if len(smiles) == args.molecules:
            break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as handle:
        np.savez_compressed(
            handle,
            smiles=np.array(smiles),
            atom_types=np.concatenate(atom_types).astype(np.uint8),
            atom_counts=np.array(atom_counts, np.int32),
            bonds=np.concatenate(bonds).astype(np.int32),
            bond_types=np.concatenate(bond_types).astype(np.uint8),
            bond_counts=np.array(bond_counts, np.int32),
            # (molecules, conformers, atoms, 3) ragged in atoms: one block per molecule, conformer-major
            positions=np.concatenate([p.reshape(-1, 3) for p in positions]).astype(np.float32),
            conformers=np.array(args.conformers, np.int32),
            rdkit_version=np.array(rdkit.__version__),
        )
    print(f"{len(smiles)} molecules x {args.conformers} conformers -> {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
