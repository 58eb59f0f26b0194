"""Batches of conformers as the network sees them: atoms, and the atom pairs its two encoders use.

GeoDiff's graph has two kinds of edges (``models/common.py``, ``extend_graph_order_radius``):

* *local* edges: the bond graph extended to third neighbours. A bonded pair keeps its RDKit bond type
  (1 single, 2 double, 3 triple, 12 aromatic, among RDKit's 22 types); a pair two bonds apart has type
  22 + 1 = 23, three bonds apart 22 + 2 = 24 (angles and torsions);
* *global* edges: every other pair of atoms of the same molecule closer than the cutoff, type 0.

GeoDiff finds the second kind with torch-cluster's ``radius_graph``; here every pair of a molecule is
listed once per batch (molecules have tens of atoms) and the pairs within the cutoff are kept at each
forward pass, which needs no compiled extension. ``radius_graph`` also caps an atom at 32 neighbours,
which drops some pairs of large molecules arbitrarily; here none are dropped. Edges are directed, both
ways, as in GeoDiff, so losses keep its scale.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .conformers import Conformers, MoleculeGraphs

BOND_TYPE_COUNT = 22  # RDKit's BondType values, whose indices GeoDiff uses as edge types


def rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor[index]`` along the first axis, by ``index_select``: its backward (``index_add_``) sums
    a repeated row's gradients in one order on a CPU with several threads, where advanced indexing's
    (``index_put_`` with accumulate) does not, so fits would differ from run to run. On CUDA both sum
    with atomics; ``torch.use_deterministic_algorithms`` is what makes them reproducible there."""
    return tensor.index_select(0, index)


def pair_types(atoms: int, bonds: np.ndarray, bond_types: np.ndarray, order: int = 3) -> np.ndarray:
    """(atoms, atoms) edge types: the bond type of bonded pairs, 23 / 24 for pairs 2 / 3 bonds apart
    (up to ``order``), 0 for the rest (and the diagonal)."""
    adjacency = np.zeros((atoms, atoms), dtype=bool)
    adjacency[bonds[:, 0], bonds[:, 1]] = adjacency[bonds[:, 1], bonds[:, 0]] = True
    types = np.zeros((atoms, atoms), dtype=np.int64)
    types[bonds[:, 0], bonds[:, 1]] = types[bonds[:, 1], bonds[:, 0]] = bond_types
    reached = adjacency | np.eye(atoms, dtype=bool)  # within k bonds
    for hops in range(2, order + 1):
        further = (reached.astype(np.int64) @ adjacency.astype(np.int64) > 0) & ~reached
        types[further] = BOND_TYPE_COUNT + hops - 1
        reached |= further
    return types


@functools.lru_cache(maxsize=8192)
def _molecule_pairs(graphs: MoleculeGraphs, molecule: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i != j) of the molecule's atoms, (2, P), and its type."""
    atoms = int(graphs.atom_counts()[molecule])
    bonds, bond_types = graphs.bonds_of(molecule)
    types = pair_types(atoms, bonds.astype(np.int64), bond_types.astype(np.int64), order)
    source, target = np.nonzero(~np.eye(atoms, dtype=bool))
    return np.stack([source, target]), types[source, target]


@dataclass
class MoleculeBatch:
    """Conformers stacked atom after atom: ``graph[a]`` is the conformer of atom a, ``pairs`` every
    ordered pair of atoms within a conformer with its ``pair_type`` (0: not a local edge)."""

    atom_types: torch.Tensor  # (N,) long
    graph: torch.Tensor  # (N,) long
    positions: torch.Tensor  # (N, 3) float
    pairs: torch.Tensor  # (2, P) long
    pair_type: torch.Tensor  # (P,) long
    count: int  # conformers

    @classmethod
    def of(cls, conformers: Conformers, device: torch.device, order: int = 3) -> MoleculeBatch:
        graphs = conformers.graphs
        counts = graphs.atom_counts()[conformers.molecule]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pairs, types = [], []
        for molecule, start in zip(conformers.molecule, starts):
            molecule_pairs, molecule_types = _molecule_pairs(graphs, int(molecule), order)
            pairs.append(molecule_pairs + start)
            types.append(molecule_types)
        atom_types = np.concatenate([graphs.atoms(int(m)) for m in conformers.molecule])
        return cls(
            atom_types=torch.from_numpy(atom_types.astype(np.int64)).to(device),
            graph=torch.from_numpy(np.repeat(np.arange(len(conformers)), counts)).to(device),
            positions=torch.from_numpy(np.asarray(conformers.positions, dtype=np.float32)).to(device),
            pairs=torch.from_numpy(np.concatenate(pairs, axis=1)).to(device),
            pair_type=torch.from_numpy(np.concatenate(types)).to(device),
            count=len(conformers),
        )

    def edges(self, positions: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GeoDiff's graph at ``positions``: (2, E) pairs that are local or within ``cutoff``, their
        types and lengths (E, 1)."""
        lengths = (rows(positions, self.pairs[0]) - rows(positions, self.pairs[1])).norm(dim=-1)
        keep = (self.pair_type > 0) | (lengths <= cutoff)
        return self.pairs[:, keep], self.pair_type[keep], lengths[keep, None]

    def centred(self, positions: torch.Tensor) -> torch.Tensor:
        """``positions`` with each conformer's centroid moved to the origin."""
        sums = torch.zeros(self.count, 3, dtype=positions.dtype, device=positions.device)
        sums.index_add_(0, self.graph, positions)
        atoms = torch.bincount(self.graph, minlength=self.count).clamp(min=1)[:, None]
        return positions - rows(sums / atoms, self.graph)
