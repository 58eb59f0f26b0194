"""Molecular conformations as a data type: molecules' graphs, and 3D conformers that point at them.

A conformer is one set of atom positions (A, hydrogens included) for one molecule; a molecule has several
(GEOM keeps the most probable ones, the bundled set five each). The graphs (atom types, bonds and their
RDKit bond types) are the setting's fixed data, shared by every conformer of the chain, real or
synthetic: a synthetic conformer is sampled *for* a training molecule and keeps its index. So a batch
saves only its molecule indices and positions, and loads back against the graphs of the chain's real
data (``load(directory, like)``), memory-mapped: an accumulated pool costs no RAM until read.

The rows the regimes select are conformers (one seed per chain, as for the language model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...arrayio import load_array, save_array
from ...errors import RunDirectoryError

BUNDLED = "drugs_like.npz"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: the chain's one set of molecules
class MoleculeGraphs:
    """Molecular graphs, concatenated: molecule i has atoms ``atom_offsets[i]:atom_offsets[i+1]`` of
    ``atom_types`` (atomic numbers) and bonds ``bond_offsets[i]:...`` of ``bonds`` (atom pairs numbered
    within the molecule) with ``bond_types`` (RDKit's: 1 single, 2 double, 3 triple, 12 aromatic)."""

    atom_types: np.ndarray  # (atoms,) uint8
    atom_offsets: np.ndarray  # (molecules + 1,) int64
    bonds: np.ndarray  # (bonds, 2) int32
    bond_types: np.ndarray  # (bonds,) uint8
    bond_offsets: np.ndarray  # (molecules + 1,) int64
    smiles: np.ndarray  # (molecules,) str

    def __len__(self) -> int:
        return len(self.atom_offsets) - 1

    def atom_counts(self) -> np.ndarray:
        return np.diff(self.atom_offsets)

    def atoms(self, molecule: int) -> np.ndarray:
        return self.atom_types[self.atom_offsets[molecule] : self.atom_offsets[molecule + 1]]

    def bonds_of(self, molecule: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(self.bond_offsets[molecule], self.bond_offsets[molecule + 1])
        return self.bonds[span], self.bond_types[span]


def rank_within_molecule(molecules: np.ndarray) -> np.ndarray:
    """For each entry of ``molecules``, how many earlier entries name the same molecule (0, 1, ...)."""
    rank = np.zeros(len(molecules), dtype=np.int64)
    seen: dict[int, int] = {}
    for k, molecule in enumerate(molecules.tolist()):
        rank[k] = seen.get(molecule, 0)
        seen[molecule] = rank[k] + 1
    return rank


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


@dataclass
class Conformers:
    """Conformers of the molecules in ``graphs``: conformer k is molecule ``molecule[k]`` at positions
    ``positions[offsets[k]:offsets[k+1]]`` (as many rows as that molecule has atoms)."""

    memory_mapped: ClassVar[bool] = True

    graphs: MoleculeGraphs
    molecule: np.ndarray  # (conformers,) int64
    positions: np.ndarray  # (atoms of all conformers, 3) float32

    def __post_init__(self) -> None:
        self.offsets = _offsets(self.graphs.atom_counts()[self.molecule])

    def __len__(self) -> int:
        return len(self.molecule)

    def positions_of(self, conformer: int) -> np.ndarray:
        return self.positions[self.offsets[conformer] : self.offsets[conformer + 1]]

    @classmethod
    def from_ensembles(cls, graphs: MoleculeGraphs, molecule: np.ndarray, positions: Sequence[np.ndarray]):
        """Conformers from one (atoms, 3) array per conformer."""
        stacked = np.concatenate(positions).astype(np.float32) if len(positions) else np.empty((0, 3), np.float32)
        return cls(graphs, np.asarray(molecule, np.int64), stacked)

    @classmethod
    def concatenate(cls, parts: Sequence[Conformers]) -> Conformers:
        """The conformers of ``parts`` one after the other (parts of the same molecules)."""
        return cls(
            parts[0].graphs, np.concatenate([p.molecule for p in parts]), np.concatenate([p.positions for p in parts])
        )

    @classmethod
    def select(cls, parts: Sequence[Conformers], rows: np.ndarray) -> Conformers:
        """The conformers ``rows[0]`` (one seed per chain) of the concatenation of ``parts``."""
        starts = np.cumsum([0] + [len(p) for p in parts])
        molecules, positions = [], []
        for row in rows[0]:
            part = int(np.searchsorted(starts, row, side="right")) - 1
            local = int(row - starts[part])
            molecules.append(parts[part].molecule[local])
            positions.append(parts[part].positions_of(local))
        return cls.from_ensembles(parts[0].graphs, np.asarray(molecules, dtype=np.int64), positions)

    def subset(self, molecules: np.ndarray) -> Conformers:
        """The conformers of the molecules ``molecules`` (indices into ``graphs``), in their order."""
        keep = np.flatnonzero(np.isin(self.molecule, molecules))
        return Conformers.select([self], keep[None])

    def save(self, directory: Path) -> None:
        save_array(directory / "molecule.npy", self.molecule)
        save_array(directory / "positions.npy", self.positions)

    @classmethod
    def load(cls, directory: Path, like: Conformers) -> Conformers:
        """Conformers saved in ``directory`` for the molecules of ``like`` (the chain's real data), with
        positions memory-mapped. A missing, damaged or foreign file is a RunDirectoryError naming it."""
        molecule = load_array(directory / "molecule.npy")
        positions = load_array(directory / "positions.npy", mapped=True)
        graphs = like.graphs
        if molecule.ndim != 1 or not np.issubdtype(molecule.dtype, np.integer):
            raise RunDirectoryError(f"corrupted file {directory / 'molecule.npy'}: not a list of molecule indices")
        if len(molecule) and (molecule.min() < 0 or molecule.max() >= len(graphs)):
            raise RunDirectoryError(
                f"corrupted file {directory / 'molecule.npy'}: molecule indices outside this chain's "
                f"{len(graphs)} molecules"
            )
        expected = int(graphs.atom_counts()[molecule].sum())
        if positions.ndim != 2 or positions.shape != (expected, 3) or positions.dtype.kind != "f":
            raise RunDirectoryError(
                f"corrupted file {directory / 'positions.npy'}: positions of shape {positions.shape} "
                f"({positions.dtype}), these conformers need ({expected}, 3) floats"
            )
        return cls(graphs, molecule.astype(np.int64), positions)


def bundled() -> Conformers:
    """The bundled drug-like set (``scripts/build_drugs_like.py``): 300 molecules x 5 conformers."""
    with resources.files("model_collapse.data").joinpath(BUNDLED).open("rb") as handle, np.load(handle) as archive:
        data = {name: archive[name] for name in archive.files}
    graphs = MoleculeGraphs(
        atom_types=data["atom_types"],
        atom_offsets=_offsets(data["atom_counts"]),
        bonds=data["bonds"],
        bond_types=data["bond_types"],
        bond_offsets=_offsets(data["bond_counts"]),
        smiles=data["smiles"],
    )
    per_molecule = int(data["conformers"])
    molecule = np.repeat(np.arange(len(graphs)), per_molecule)
    return Conformers(graphs, molecule, data["positions"])
