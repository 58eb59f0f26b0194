"""The ``conformer-diffusion`` setting: GeoDiff trained afresh at every iteration (the paper's §2.2, Fig. 4).

Data are conformers of molecules (``conformers.py``), split by molecule (``datasets.py``). Each
iteration trains a new dual-encoder network (``network.py``, ``training.py``) on its conformers. A
synthetic set is drawn for the *training* molecules: as many conformers as asked, spread over the
molecules in the proportions of the real set (asked for as many as the real set holds, it has exactly
the real set's molecules and counts), sampled in shards that a resumed run does not sample again.

Metrics on held-out molecules: GeoDiff's loss per atom with its local and global parts, with timesteps
and noise fixed for all iterations of a chain; and MAT-R / COV-R of conformers generated for a fixed
set of reference molecules (``chemistry.py``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rdkit  # noqa: F401  (the [molecules] extra: its absence is named when the setting is chosen)

from ...activity import Meter
from ...atomic import write_directory_atomic
from ...errors import ModelCollapseError, RunDirectoryError
from ...randomness import seed_rng
from ..base import Evaluation, Fit, Setting
from ..devices import resolve_device
from ..neural.seeding import seeded_torch
from .chemistry import bond_validity, coverage_curve, covmat, mmff_energies, molblocks, rmsd_tables
from .config import ConformerDiffusionConfig, ConformerDiffusionDeclaration
from .conformers import Conformers, rank_within_molecule
from .datasets import SPLIT_SEED, load_splits
from .graph import MoleculeBatch
from .network import DualEncoder, langevin_sample
from .training import evaluation_loss, generator_for, train

SYNTHETIC_ATTEMPTS = 5  # a synthetic conformer is needed: sampled again (clipped) up to this many times
CLIP_LOCAL_ON_RETRY = 20.0  # GeoDiff's test.py samples a diverged molecule again with this local clip


def interleaved(molecules: np.ndarray) -> np.ndarray:
    """The entries of ``molecules`` reordered as first conformers of every molecule (in order of first
    appearance), then second ones, and so on: any prefix spreads over as many molecules as it can."""
    _, first, inverse = np.unique(molecules, return_index=True, return_inverse=True)
    order = np.lexsort((first[inverse], rank_within_molecule(molecules)))  # by rank, then first appearance
    return molecules[order]


def _shard_directory(scratch: Path, index: int) -> Path:
    return scratch / f"samples_{index:05d}"


class ConformerDiffusion(ConformerDiffusionDeclaration, Setting[ConformerDiffusionConfig, Conformers]):
    def __init__(self, config: ConformerDiffusionConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        self.device = resolve_device(config.device)
        splits = load_splits(config)
        self._real, self.test, self._reserve, self.references = (
            splits.train,
            splits.test,
            splits.reserve,
            splits.references,
        )
        # the learning curve's conformers: a fixed subset of the test set, the same for every chain
        shown = np.random.default_rng(SPLIT_SEED).permutation(len(self.test))[: config.training.validation_conformers]
        self.validation = Conformers.select([self.test], np.sort(shown)[None])
        self._synthetic_molecules = interleaved(self._real.molecule)
        self._evaluation_seed = int(seed_rng(self.seeds[0], "evaluate").integers(2**63))

    # -- data -------------------------------------------------------------------------------------
    @property
    def real_train(self) -> Conformers:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> Conformers:
        if size > len(self._reserve):
            raise ModelCollapseError(
                f"fresh-real needs {size} unused real conformers per iteration, the data set has "
                f"{len(self._reserve)} beyond the training and test molecules: lower setting.samples"
            )
        return Conformers.select([self._reserve], np.sort(rng.choice(len(self._reserve), size, replace=False))[None])

    def preview(self, data: Conformers) -> np.ndarray:
        """Mol blocks of the first conformer of each of ``data``'s first molecules."""
        _, first = np.unique(data.molecule, return_index=True)
        rows = np.sort(first)[: self.presentation.preview_size]
        return molblocks(Conformers.select([data], rows[None]))

    # -- model ------------------------------------------------------------------------------------
    def new_model(self) -> DualEncoder:
        return DualEncoder(self.config.network, self.config.diffusion).to(self.device)

    def fit(
        self, parts: Sequence[Conformers], rng: np.random.Generator, scratch: Path | None = None, previous=None
    ) -> Fit:
        with seeded_torch(rng, self.device):
            # training.warm_start: on from the last iteration's model
            model = copy.deepcopy(previous).to(self.device) if previous is not None else self.new_model()
        curve = train(model, parts, self.validation, self.config.training, rng, self.device, scratch)
        return Fit(model, {"learning_curve": curve})

    def _generate(self, model: DualEncoder, molecules: np.ndarray, seed: int, attempts: int) -> Conformers:
        """Conformers sampled for ``molecules`` (indices into the chain's graphs), ``sampling.batch_size``
        at a time, all from one random stream. A conformer whose sampling diverges is sampled again with
        the local score clipped (GeoDiff's retry), up to ``attempts`` times in all; those that never
        converge are left out (their molecule index in the result is missing)."""
        graphs, per_batch = self._real.graphs, self.config.sampling.batch_size
        generator = generator_for(seed, self.device)
        batches = []
        for start in range(0, len(molecules), per_batch):
            todo = molecules[start : start + per_batch].astype(np.int64)
            done: dict[int, np.ndarray] = {}
            rows = np.arange(len(todo))  # which of the batch's conformers are still to sample
            for attempt in range(attempts):
                clip_local = None if attempt == 0 else CLIP_LOCAL_ON_RETRY
                atoms = int(graphs.atom_counts()[todo[rows]].sum())
                template = Conformers(graphs, todo[rows], np.zeros((atoms, 3), np.float32))
                positions, diverged = langevin_sample(
                    model, MoleculeBatch.of(template, self.device), self.config.sampling, generator, clip_local
                )
                sampled, failed = Conformers(graphs, todo[rows], positions.cpu().numpy()), diverged.cpu().numpy()
                for k in np.flatnonzero(~failed):
                    done[int(rows[k])] = sampled.positions_of(int(k))
                rows = rows[failed]
                if not len(rows):
                    break
            kept = sorted(done)
            batches.append(Conformers.from_ensembles(graphs, todo[kept], [done[k] for k in kept]))
        return Conformers.concatenate(batches)

    def sample(
        self, model: DualEncoder, size: int, rng: np.random.Generator, scratch: Path | None = None
    ) -> Conformers:
        """``size`` conformers for the training molecules, in shards of ``sampling.batch_size``; with
        ``scratch``, finished shards are kept there and an interrupted run samples only the rest."""
        model.to(self.device)
        molecules = np.resize(self._synthetic_molecules, size)
        shard_size = self.config.sampling.batch_size
        starts = range(0, size, shard_size)
        seeds = rng.integers(2**63, size=len(starts))
        meter = Meter("sampling", size, "conformers")
        shards = []
        for index, (start, seed) in enumerate(zip(starts, seeds)):
            wanted = molecules[start : start + shard_size]
            shard = self._load_shard(scratch, index, wanted)
            if shard is None:
                shard = self._generate(model, wanted, int(seed), SYNTHETIC_ATTEMPTS)
                if len(shard) < len(wanted):
                    raise ModelCollapseError(
                        f"conformer sampling diverged {SYNTHETIC_ATTEMPTS} times for {len(wanted) - len(shard)} of "
                        f"{len(wanted)} conformers, with local clipping after the first: the model is unstable "
                        "(lower sampling.step_lr, or train longer)"
                    )
                if scratch is not None:
                    write_directory_atomic(_shard_directory(scratch, index), shard.save)
            shards.append(shard)
            meter.advance(len(wanted))
        meter.close()
        return Conformers.concatenate(shards)

    def _load_shard(self, scratch: Path | None, index: int, molecules: np.ndarray) -> Conformers | None:
        """A shard an interrupted run finished, or None (also for an unreadable or foreign one)."""
        if scratch is None or not _shard_directory(scratch, index).is_dir():
            return None
        try:
            shard = Conformers.load(_shard_directory(scratch, index), like=self._real)
        except RunDirectoryError:
            return None
        return shard if np.array_equal(shard.molecule, molecules) else None

    def score(self, name: str, model: DualEncoder, samples: Conformers) -> np.ndarray:
        """``mmff-energy``: minus each conformer's MMFF94 energy above the lowest energy among its molecule's
        real conformers (force-field minima on the bundled set), so that molecules compare: 0 for a
        conformer as relaxed as the real ones, -inf where MMFF cannot type it or the energy is not finite."""
        strain = mmff_energies(samples) - self._lowest_real_energies[samples.molecule]
        return np.where(np.isfinite(strain), -strain, -np.inf)[None]

    @functools.cached_property
    def _lowest_real_energies(self) -> np.ndarray:
        """The lowest MMFF94 energy of each molecule's real training conformers (inf for other molecules)."""
        lowest = np.full(len(self._real.graphs), np.inf)
        np.minimum.at(lowest, self._real.molecule, mmff_energies(self._real))
        return lowest

    def evaluate(self, model: DualEncoder) -> Evaluation:
        """The metrics, and COV-R over GeoDiff's grid of thresholds (``coverage_by_threshold``)."""
        losses = evaluation_loss(model, self.test, self._evaluation_seed, self.device)
        scores = {name: float("nan") for name in self.metrics if not name.startswith("test_loss")}
        curve: list[dict[str, float]] = []
        options = self.config.evaluation
        if options.molecules and len(self.references):
            molecules = np.repeat(self.references.molecule, options.per_reference)
            generated = self._generate(model, molecules, self._evaluation_seed, attempts=2)
            # as GeoDiff: a molecule with a conformer whose sampling diverged twice is skipped, and counted
            count = len(self._real.graphs)
            lost = np.flatnonzero(
                np.bincount(generated.molecule, minlength=count) < np.bincount(molecules, minlength=count)
            )
            kept = generated.subset(np.setdiff1d(np.unique(molecules), lost))
            tables = rmsd_tables(self.references, kept)
            curve = coverage_curve(tables)
            scores = {
                **covmat(tables, options.delta),
                **bond_validity(self.references, kept),
                "skipped_molecules": len(lost),
            }
        metrics = {
            "test_loss": np.array([losses["loss"]]),
            "test_loss_local": np.array([losses["loss_local"]]),
            "test_loss_global": np.array([losses["loss_global"]]),
            **{name: np.array([value]) for name, value in scores.items()},
        }
        return Evaluation(metrics, {"coverage_by_threshold": curve} if curve else {})
