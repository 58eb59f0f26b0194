"""Conformers as RDKit molecules: MDL mol blocks (the SDF a molecule viewer opens), GeoDiff's coverage and
matching metrics, and pictures.

MAT-R and COV-R follow GeoDiff's ``utils/evaluation/covmat.py``: for every reference conformer of a
molecule, the best RMSD (``GetBestRMS``: optimal alignment over the molecule's symmetries) to any of the
conformers generated for that molecule, computed without hydrogens. Per molecule, MAT-R is the mean of
those best RMSDs and COV-R the share of references whose best match is within delta; both are then
averaged over molecules (mean and median), so a molecule with many conformers weighs as much as one
with few. Molecules whose SMILES has several fragments (``.``: salts, mixtures) are left out, as GeoDiff
filters them. COV-R is also given over GeoDiff's grid of thresholds, 0.05 to 3 A in steps of 0.05
(``CovMatEvaluator``'s default), since one threshold saturates on small molecules or flattens on large ones.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .conformers import Conformers, MoleculeGraphs


def _rdkit():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # sanitisation warnings of generated geometries are expected
    return Chem


def molecule(graphs: MoleculeGraphs, index: int, positions: np.ndarray | None = None):
    """The RDKit molecule of ``graphs[index]`` (hydrogens included), with a conformer at ``positions``."""
    Chem = _rdkit()
    bond_type = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE, 12: Chem.BondType.AROMATIC}
    atoms = graphs.atoms(index)
    bonds, types = graphs.bonds_of(index)
    editable = Chem.RWMol()
    aromatic = set(bonds[types == 12].ravel().tolist())
    for number, atom_index in zip(atoms.tolist(), range(len(atoms))):
        atom = Chem.Atom(int(number))
        atom.SetIsAromatic(atom_index in aromatic)
        atom.SetNoImplicit(True)  # every hydrogen is an atom of the graph
        editable.AddAtom(atom)
    for (begin, end), kind in zip(bonds.tolist(), types.tolist()):
        editable.AddBond(int(begin), int(end), bond_type.get(int(kind), Chem.BondType.SINGLE))
        if kind == 12:
            editable.GetBondBetweenAtoms(int(begin), int(end)).SetIsAromatic(True)
    mol = editable.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # an unusual valence of a foreign file: keep the graph as it is
        mol.UpdatePropertyCache(strict=False)
    if positions is not None:
        conformer = Chem.Conformer(len(atoms))
        for atom_index, (x, y, z) in enumerate(np.asarray(positions, dtype=np.float64)):
            conformer.SetAtomPosition(atom_index, (x, y, z))
        mol.AddConformer(conformer, assignId=True)
    return mol


def molblocks(conformers: Conformers, titles: list[str] | None = None) -> np.ndarray:
    """One MDL mol block per conformer (strings), titled with its molecule's SMILES or ``titles``."""
    Chem = _rdkit()
    blocks = []
    for k in range(len(conformers)):
        mol = molecule(conformers.graphs, int(conformers.molecule[k]), conformers.positions_of(k))
        mol.SetProp("_Name", titles[k] if titles else str(conformers.graphs.smiles[int(conformers.molecule[k])]))
        try:
            blocks.append(Chem.MolToMolBlock(mol))
        except Exception:  # aromatic bonds that do not kekulise are written as aromatic (type 4)
            blocks.append(Chem.MolToMolBlock(mol, kekulize=False))
    return np.array(blocks)


def _heavy(mol):
    return _rdkit().RemoveHs(mol, sanitize=False)


def best_rmsd(graphs: MoleculeGraphs, index: int, references: list[np.ndarray], generated: list[np.ndarray]):
    """(references, generated) best RMSDs without hydrogens, A."""
    from rdkit.Chem import rdMolAlign

    reference_mols = [_heavy(molecule(graphs, index, x)) for x in references]
    generated_mols = [_heavy(molecule(graphs, index, x)) for x in generated]
    table = np.empty((len(references), len(generated)))
    for i, reference in enumerate(reference_mols):
        for j, probe in enumerate(generated_mols):
            table[i, j] = rdMolAlign.GetBestRMS(probe, reference)
    return table


# GeoDiff's thresholds of COV-R (A): np.arange(0.05, 3.05, 0.05), rounded so that they print as written
COVERAGE_THRESHOLDS = np.round(np.arange(1, 61) * 0.05, 2)


def coverage_curve(tables: list[np.ndarray]) -> list[dict[str, float]]:
    """COV-R at each of ``COVERAGE_THRESHOLDS``, mean and median over molecules, as GeoDiff's
    ``print_covmat_results`` tabulates it: a list of {threshold, cov_r, cov_r_median} (empty without any
    molecule)."""
    if not tables:
        return []
    best = np.array([[(table.min(axis=1) <= delta).mean() for delta in COVERAGE_THRESHOLDS] for table in tables])
    return [
        {"threshold": float(delta), "cov_r": float(mean), "cov_r_median": float(median)}
        for delta, mean, median in zip(COVERAGE_THRESHOLDS, best.mean(axis=0), np.median(best, axis=0))
    ]


def covmat(tables: list[np.ndarray], delta: float) -> dict[str, float]:
    """MAT-R and COV-R from each molecule's (references, generated) table of best RMSDs: per molecule,
    then their mean and median over molecules (NaN without any molecule)."""
    if not tables:
        return dict.fromkeys(("cov_r", "mat_r", "cov_r_median", "mat_r_median"), float("nan"))
    best = [table.min(axis=1) for table in tables]  # each reference's best match
    coverage = np.array([(distances <= delta).mean() for distances in best])
    matching = np.array([distances.mean() for distances in best])
    return {
        "cov_r": float(coverage.mean()),
        "mat_r": float(matching.mean()),
        "cov_r_median": float(np.median(coverage)),
        "mat_r_median": float(np.median(matching)),
    }


def rmsd_tables(references: Conformers, generated: Conformers) -> list[np.ndarray]:
    """The (references, generated) best-RMSD table of each molecule of ``references`` in one fragment
    that has generated conformers: each reference against the conformers generated for its molecule."""
    tables = []
    for index in np.unique(references.molecule):
        theirs = np.flatnonzero(generated.molecule == index)
        if not len(theirs) or "." in str(references.graphs.smiles[index]):
            continue
        mine = np.flatnonzero(references.molecule == index)
        tables.append(
            best_rmsd(
                references.graphs,
                int(index),
                [references.positions_of(int(k)) for k in mine],
                [generated.positions_of(int(k)) for k in theirs],
            )
        )
    return tables


def coverage_and_matching(references: Conformers, generated: Conformers, delta: float) -> dict[str, float]:
    """``covmat`` over the molecules of ``references`` (``rmsd_tables``)."""
    return covmat(rmsd_tables(references, generated), delta)


def bond_lengths(conformers: Conformers, index: int) -> np.ndarray:
    """The lengths (A) of every bond of conformer ``index``, in the molecule's bond order."""
    bonds, _ = conformers.graphs.bonds_of(int(conformers.molecule[index]))
    x = conformers.positions_of(index)
    return np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)


def bond_validity(references: Conformers, generated: Conformers, tolerance: float = 0.1) -> dict[str, float]:
    """How far generated conformers' bonds are from their molecule's: ``bond_length_rms``, the mean over
    conformers of the RMS difference (A) between each bond's length and its mean length in the
    molecule's reference conformers (force-field minima on the bundled set, GEOM's on GEOM), and
    ``valid_bond_share``, the share of conformers whose every bond is within ``tolerance`` of it."""
    expected = {}
    for molecule in np.unique(references.molecule):
        mine = np.flatnonzero(references.molecule == molecule)
        expected[int(molecule)] = np.mean([bond_lengths(references, int(k)) for k in mine], axis=0)
    errors = [
        bond_lengths(generated, k) - expected[int(generated.molecule[k])]
        for k in range(len(generated))
        if int(generated.molecule[k]) in expected
    ]
    if not errors:
        return {"bond_length_rms": float("nan"), "valid_bond_share": float("nan")}
    return {
        "bond_length_rms": float(np.mean([np.sqrt(np.mean(e**2)) for e in errors])),
        "valid_bond_share": float(np.mean([np.abs(e).max(initial=0.0) <= tolerance for e in errors])),
    }


def mmff_energies(conformers: Conformers) -> np.ndarray:
    """The MMFF94 energy (kcal/mol) of every conformer at its positions, as RDKit computes it; +inf
    where MMFF cannot type the molecule or the energy is not finite (atoms on top of each other)."""
    from rdkit.Chem import rdForceFieldHelpers

    energies = np.full(len(conformers), np.inf)
    for k in range(len(conformers)):
        mol = molecule(conformers.graphs, int(conformers.molecule[k]), conformers.positions_of(k))
        properties = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
        if properties is None:
            continue
        field = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, properties)
        energy = field.CalcEnergy() if field is not None else np.inf
        energies[k] = energy if np.isfinite(energy) else np.inf
    return energies


def depict(blocks: np.ndarray, size: int = 200) -> np.ndarray:
    """Pictures (N, size, size, 3) uint8 of mol blocks: heavy atoms and bonds as placed in 3D, seen along
    the axis of least spread (so that a distorted geometry looks distorted)."""
    from PIL import Image
    from rdkit.Chem.Draw import rdMolDraw2D

    Chem = _rdkit()
    images = []
    for block in blocks:
        mol = Chem.MolFromMolBlock(str(block), removeHs=False, sanitize=False)
        drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
        if mol is not None and mol.GetNumAtoms():
            mol = _heavy(mol)
            mol.UpdatePropertyCache(strict=False)
            positions = mol.GetConformer().GetPositions()
            centred = positions - positions.mean(axis=0)
            _, _, axes = np.linalg.svd(centred, full_matrices=False)
            flat = centred @ axes.T  # principal axes: the widest view first
            conformer = mol.GetConformer()
            for atom_index, (x, y, _) in enumerate(flat):
                conformer.SetAtomPosition(atom_index, (float(x), float(y), 0.0))
            conformer.Set3D(False)
            options: Any = drawer.drawOptions()  # (RDKit's stubs type its fields as the options object)
            options.bondLineWidth = 2
            options.includeRadicals = False  # atoms without their hydrogens are not radicals
            options.fixedBondLength = size / 7  # one scale for every picture: a stretched molecule looks it
            options.prepareMolsBeforeDrawing = False
            # no stereo wedges: RDKit would derive them from the geometry, drawn as large wedges where it is broken
            mol = rdMolDraw2D.PrepareMolForDrawing(mol, kekulize=False, addChiralHs=False, wedgeBonds=False)
            drawer.DrawMolecule(mol)
        drawer.FinishDrawing()
        images.append(np.asarray(Image.open(io.BytesIO(drawer.GetDrawingText())).convert("RGB")))
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
