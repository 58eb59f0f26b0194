"""The molecules of a chain, split by molecule: training, test and a reserve for ``fresh-real``.

* ``drugs-like``: the 300 molecules x 5 conformers bundled with the package (``conformers.bundled``),
  shuffled once with a fixed seed (every chain and seed sees the same split), then ``samples`` training
  molecules, ``test_samples`` test molecules, the rest in reserve; MAT/COV references are the first
  ``evaluation.molecules`` test molecules.
* ``geom``: GeoDiff's files in ``data_dir``: the training file gives the training molecules (a random
  subset of ``samples`` of them, as the paper subsampled; the others are the reserve), the validation
  file the test molecules of ``test_loss`` and the learning curves, the test file the MAT/COV references
  (GeoDiff evaluates coverage on its test molecules).

All splits share one ``MoleculeGraphs``, so conformers of any split can be selected together.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ModelCollapseError
from .config import ConformerDiffusionConfig
from .conformers import Conformers, MoleculeGraphs, _offsets, bundled, rank_within_molecule

SPLIT_SEED = 20240401  # the fixed shuffle of the bundled molecules


@dataclass(frozen=True)
class MoleculeSplits:
    train: Conformers
    test: Conformers
    reserve: Conformers
    references: Conformers  # MAT/COV


def _capped(conformers: Conformers, per_molecule: int | None) -> Conformers:
    """At most ``per_molecule`` conformers of each molecule (the first ones)."""
    if per_molecule is None:
        return conformers
    keep = rank_within_molecule(conformers.molecule) < per_molecule
    return Conformers.select([conformers], np.flatnonzero(keep)[None])


def _take(order: np.ndarray, count: int | None, what: Path | str, available: int, option: str) -> np.ndarray:
    if count is not None and count > available:
        raise ModelCollapseError(f"setting.{option}: {what} has {available} molecules, asked for {count}")
    return order[: count if count is not None else available]


def load_splits(config: ConformerDiffusionConfig) -> MoleculeSplits:
    if config.dataset == "geom":
        return _geom_splits(config)
    return _drugs_like_splits(config.samples, config.test_samples, config.conformers_per_molecule,
                              config.evaluation.molecules)  # fmt: skip


@functools.lru_cache(maxsize=4)
def _drugs_like_splits(samples, test_molecules, per_molecule, reference_molecules) -> MoleculeSplits:
    everything = _capped(bundled(), per_molecule)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(everything.graphs))
    train = _take(order, samples, "the drugs-like set", len(order), "samples")
    rest = order[len(train) :]
    if test_molecules is None:
        test_molecules = len(rest) // 2
    test = _take(rest, test_molecules, "the drugs-like set beyond the training molecules", len(rest), "test_samples")
    reserve = rest[len(test) :]
    return MoleculeSplits(
        train=everything.subset(np.sort(train)),
        test=everything.subset(np.sort(test)),
        reserve=everything.subset(np.sort(reserve)),
        references=everything.subset(np.sort(test[:reference_molecules])),
    )


def _geom_splits(config: ConformerDiffusionConfig) -> MoleculeSplits:
    from .geom import read_records

    assert config.data_dir is not None, "GEOM files are read from setting.data_dir"  # the config checks it
    folder = Path(config.data_dir).expanduser()
    files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
    records = {split: read_records(folder / name) for split, name in files.items()}
    graphs, molecule_of = _graphs([r for split in records.values() for r in split])
    conformers, start = {}, 0
    for split, split_records in records.items():
        if not split_records:
            raise ModelCollapseError(f"{folder / files[split]}: holds no conformers")
        indices = molecule_of[start : start + len(split_records)]
        start += len(split_records)
        conformers[split] = _capped(
            Conformers.from_ensembles(graphs, indices, [r["pos"] for r in split_records]),
            config.conformers_per_molecule,
        )
    rng = np.random.default_rng(SPLIT_SEED)

    def molecules(split: str, count: int | None, option: str) -> tuple[np.ndarray, np.ndarray]:
        present = np.unique(conformers[split].molecule)
        chosen = _take(rng.permutation(present), count, folder / files[split], len(present), option)
        return np.sort(chosen), np.setdiff1d(present, chosen)

    train, reserve = molecules("train", config.samples, "samples")
    test, _ = molecules("validation", config.test_samples, "test_samples")
    evaluation = config.evaluation
    if evaluation.first_molecule is None:
        references, _ = molecules("test", min(evaluation.molecules, len(np.unique(conformers["test"].molecule))),
                                  "evaluation.molecules")  # fmt: skip
    else:  # as GeoDiff's test.py takes them: molecules first..first+count of the test file, in its order
        present = conformers["test"].molecule
        in_file_order = present[np.sort(np.unique(present, return_index=True)[1])]
        end = evaluation.first_molecule + evaluation.molecules
        if end > len(in_file_order):
            raise ModelCollapseError(
                f"setting.evaluation: {folder / files['test']} has {len(in_file_order)} molecules, "
                f"first_molecule + molecules asks for {end}"
            )
        references = in_file_order[evaluation.first_molecule : end]
    return MoleculeSplits(
        train=conformers["train"].subset(train),
        test=conformers["validation"].subset(test),
        reserve=conformers["train"].subset(reserve),
        references=conformers["test"].subset(references),
    )


def _graphs(records: list[dict]) -> tuple[MoleculeGraphs, np.ndarray]:
    """One graph per distinct molecule (same SMILES, atoms and bonds) and each record's molecule."""
    index: dict[tuple, int] = {}
    molecule_of = np.empty(len(records), dtype=np.int64)
    firsts: list[dict] = []
    for k, record in enumerate(records):
        key = (record["smiles"], *(record[k].tobytes() for k in ("atom_type", "bonds", "bond_type")))
        if key not in index:
            index[key] = len(firsts)
            firsts.append(record)
        molecule_of[k] = index[key]
    graphs = MoleculeGraphs(
        atom_types=np.concatenate([r["atom_type"] for r in firsts]).astype(np.uint8),
        atom_offsets=_offsets(np.array([len(r["atom_type"]) for r in firsts])),
        bonds=np.concatenate([r["bonds"] for r in firsts]).astype(np.int32).reshape(-1, 2),
        bond_types=np.concatenate([r["bond_type"] for r in firsts]).astype(np.uint8),
        bond_offsets=_offsets(np.array([len(r["bonds"]) for r in firsts])),
        smiles=np.array([r["smiles"] for r in firsts]),
    )
    return graphs, molecule_of
