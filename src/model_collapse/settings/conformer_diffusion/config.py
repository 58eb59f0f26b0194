"""What the conformer-diffusion setting is (its config, metrics and how it runs), readable without
PyTorch or RDKit: ``table``, ``plot`` and config validation need only this.

The defaults are a CPU-sized GeoDiff (minutes on 2 cores, ``configs/conformers_cpu.yaml``); the paper's
size is ``configs/geodiff_drugs.yaml`` (GeoDiff's ``drugs_1k`` configuration as the paper's authors ran it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ..base import Footprint, Metric, Presentation, activations_on_host
from ..configs import SettingConfig, StrictConfig
from ..neural import NeuralDeclaration

# Atoms (hydrogens included) of a typical conformer, for the memory of a batch: GEOM-Drugs' mean is 44;
# the bundled drug-like molecules are smaller.
ATOMS_PER_CONFORMER = 50


class NetworkSection(StrictConfig):
    """GeoDiff's dual-encoder network (``network.py``): a SchNet-style global encoder over the radius
    graph and a GIN-style local encoder over the bond graph extended to third neighbours."""

    hidden_dim: PositiveInt = Field(32, description="GeoDiff: 128")
    global_convolutions: PositiveInt = Field(3, description="SchNet interaction blocks (GeoDiff: 6)")
    local_convolutions: PositiveInt = Field(2, description="GIN convolutions (GeoDiff: 4)")
    cutoff: PositiveFloat = Field(10.0, description="radius of the global graph (A)")
    smooth_cutoff: bool = Field(True, description="SchNet filters fade to 0 at the cutoff with a cosine")
    activation: Literal["relu", "silu", "softplus"] = Field(
        "relu", description="the networks' activation (GeoDiff: relu)"
    )


class DiffusionSection(StrictConfig):
    """The noise schedule: ``timesteps`` betas from ``beta_start`` to ``beta_end``. Fewer timesteps need a
    larger ``beta_end`` for the largest noise to stay about 10 A (GeoDiff: 1,000, sigmoid 1e-7 -> 9e-3)."""

    timesteps: PositiveInt = Field(50, description="diffusion timesteps (noise levels)")
    beta_schedule: Literal["sigmoid", "linear", "quad"] = Field(
        "sigmoid", description="how betas grow from beta_start to beta_end (GeoDiff: sigmoid)"
    )
    beta_start: PositiveFloat = Field(1e-7, description="the first step's beta")
    beta_end: float = Field(0.18, gt=0, lt=1, description="the last step's beta")

    @model_validator(mode="after")
    def _increasing(self):
        if self.beta_start >= self.beta_end:
            raise ValueError(f"beta_start ({self.beta_start}) must be below beta_end ({self.beta_end})")
        return self

    def betas(self) -> np.ndarray:
        """The schedule, as GeoDiff's ``get_beta_schedule`` computes it (float64)."""
        start, end, steps = self.beta_start, self.beta_end, self.timesteps
        if self.beta_schedule == "linear":
            return np.linspace(start, end, steps, dtype=np.float64)
        if self.beta_schedule == "quad":
            return np.linspace(start**0.5, end**0.5, steps, dtype=np.float64) ** 2
        return 1 / (np.exp(-np.linspace(-6, 6, steps)) + 1) * (end - start) + start


class TrainingSection(StrictConfig):
    """Adam with a plateau schedule on the validation loss, as GeoDiff trains (separate optimisers and
    schedules for the global and the local part of the network)."""

    steps: PositiveInt = Field(300, description="optimiser steps per fit (the paper: 41,000)")
    batch_size: PositiveInt = Field(32, description="conformers per step")
    learning_rate: PositiveFloat = Field(1e-3, description="Adam's learning rate (GeoDiff: 1e-3)")
    betas: tuple[float, float] = Field((0.95, 0.999), description="Adam's betas (GeoDiff: 0.95, 0.999)")
    weight_decay: float = Field(0.0, ge=0, description="Adam's weight decay")
    gradient_clip: PositiveFloat = Field(30000.0, description="maximum gradient norm (GeoDiff's Drugs value)")
    scheduler_factor: float = Field(
        0.6, gt=0, lt=1, description="the learning rate's factor when the validation loss plateaus (GeoDiff: 0.6)"
    )
    scheduler_patience: NonNegativeInt = Field(10, description="evaluations without improvement before decaying")
    evaluate_every: PositiveInt = Field(25, description="steps between evaluations of the validation loss")
    validation_conformers: PositiveInt = Field(
        200, description="test conformers of the learning curve and the plateau schedule (a fixed subset)"
    )
    checkpoint_minutes: float | None = Field(
        10.0, ge=0, description="minutes between resumable training checkpoints in the run directory (null: none)"
    )
    warm_start: bool = Field(
        False, description="each fit continues from the previous iteration's model, not from a fresh one"
    )


class SamplingSection(StrictConfig):
    """GeoDiff's annealed Langevin sampler (``test.py`` with ``--sampling_type ld``): each of the schedule's
    levels moves the conformer by step_lr / 1e-4 of its noise variance, so the schedule's length and
    step_lr together set how far sampling goes (GeoDiff: 1,000 levels x 1% = 10 variances)."""

    step_lr: PositiveFloat = Field(1e-6, description="the step size at noise 0.01 A (GeoDiff: 1e-6)")
    global_start_sigma: PositiveFloat = Field(0.5, description="the global score joins below this noise (A)")
    w_global: float = Field(1.0, ge=0, description="weight of the global score in sampling (GeoDiff: 1.0)")
    clip: PositiveFloat = Field(1000.0, description="maximum norm of an atom's global score")
    batch_size: PositiveInt = Field(64, description="conformers sampled at once (a resumable shard)")


class EvaluationSection(StrictConfig):
    """MAT-R and COV-R (GeoDiff's covmat.py) on a fixed subset of the test molecules."""

    molecules: NonNegativeInt = Field(10, description="test molecules to generate conformers for (0: no MAT/COV)")
    per_reference: PositiveInt = Field(2, description="conformers generated per reference conformer")
    delta: PositiveFloat = Field(1.25, description="COV-R threshold (A): 1.25 for Drugs, 0.5 for QM9")
    first_molecule: NonNegativeInt | None = Field(
        None,
        description="geom: the test file's molecules from this one on, in file order (GeoDiff's test.py: 800, "
        "with molecules 200); null: a random subset",
    )


class ConformerDiffusionConfig(SettingConfig):
    name: Literal["conformer-diffusion"] = "conformer-diffusion"
    dataset: Literal["drugs-like", "geom"] = Field(
        "drugs-like", description="drugs-like: 300 molecules bundled with the package; geom: GeoDiff's pickles"
    )
    data_dir: str | None = Field(
        None, description="geom: the folder with train_data_40k.pkl, val_data_5k.pkl, test_data_1k.pkl"
    )
    train_file: str = Field("train_data_40k.pkl", description="GEOM: the training pickle in data_dir")
    validation_file: str = Field("val_data_5k.pkl", description="GEOM: the validation pickle in data_dir")
    test_file: str = Field("test_data_1k.pkl", description="GEOM: the test pickle in data_dir")
    samples: PositiveInt | None = Field(
        40, description="training molecules (null: all); their conformers are the real training data"
    )
    test_samples: PositiveInt | None = Field(40, description="held-out molecules of test_loss (null: all)")
    conformers_per_molecule: PositiveInt | None = Field(None, description="keep at most this many (null: all)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where models train: auto (CUDA when present, else CPU), cpu or cuda"
    )
    network: NetworkSection = Field(default_factory=NetworkSection)
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)

    renamed: ClassVar[dict[str, str]] = {"test_molecules": "test_samples", "diffusion.steps": "diffusion.timesteps"}

    @model_validator(mode="after")
    def _consistent(self):
        if self.dataset == "geom" and not self.data_dir:
            raise ValueError("dataset 'geom' needs data_dir, the folder with GeoDiff's pickles")
        if self.dataset != "geom" and self.data_dir:
            raise ValueError(f"data_dir is for dataset 'geom' (dataset {self.dataset!r} ships with the package)")
        if self.dataset != "geom" and self.evaluation.first_molecule is not None:
            raise ValueError("evaluation.first_molecule is for dataset 'geom' (GeoDiff's test file, in its order)")
        return self


def parameter_count(network: NetworkSection) -> int:
    """The parameters of ``network.DualEncoder`` for ``network``, counted from its dimensions (equal to
    the built model's, tested): two edge encoders, the SchNet and GIN encoders, two score MLPs."""
    h, half, table = network.hidden_dim, network.hidden_dim // 2, 100  # network.ELEMENTS
    edge_encoder = table * h + (h + h) + (h * h + h)  # type embedding, length MLP [1, h, h]
    interaction = 2 * (h * h + h) + h * h + 2 * (h * h + h)  # filter (2 layers), into (no bias), out, mix
    gin = 2 * (h * h + h)  # MLP [h, h, h]
    scores = (2 * h * h + h) + (h * half + half) + (half + 1)  # MLP [2h, h, h/2, 1]
    encoders = (table * h + network.global_convolutions * interaction) + (table * h + network.local_convolutions * gin)
    return 2 * edge_encoder + encoders + 2 * scores


def activation_bytes(config: ConformerDiffusionConfig) -> int:
    """An estimate of what one training step holds for its backward pass: every pair of atoms of a
    conformer is an edge (the cutoff spans a drug-like molecule), and each edge holds hidden-width
    float32 features in the edge encoders (3 each), every SchNet block (6), every GIN convolution (3)
    and the score MLPs (4). On the bundled set's largest molecules (41 atoms) it is 8% and 29% above the
    peak measured at hidden 32 and at GeoDiff's size (128, 6 + 4 convolutions)."""
    network = config.network
    edges = config.training.batch_size * ATOMS_PER_CONFORMER * (ATOMS_PER_CONFORMER - 1)
    per_edge = network.hidden_dim * (6 + 6 * network.global_convolutions + 3 * network.local_convolutions + 4)
    return 4 * edges * per_edge


def depict_conformers(molblocks: np.ndarray) -> np.ndarray:
    """Images (N, H, W, 3) of the conformers in ``molblocks`` (their 3D geometry seen from above)."""
    from .chemistry import depict

    return depict(molblocks)


def conformers_file(sections: list[tuple[str, np.ndarray]]) -> tuple[str, str] | None:
    """An SD file of every previewed conformer, each titled with where it comes from, for a molecule
    viewer."""
    blocks = []
    for title, molblocks in sections:
        for block in molblocks:
            name, _, rest = str(block).partition("\n")
            blocks.append(f"{title}: {name}\n{rest}".rstrip("\n") + "\n$$$$\n")
    return (".sdf", "".join(blocks)) if blocks else None


class ConformerDiffusionDeclaration(NeuralDeclaration[ConformerDiffusionConfig]):
    """The conformer-diffusion setting's declaration; ``setting.ConformerDiffusion`` inherits it."""

    name = "conformer-diffusion"
    Config = ConformerDiffusionConfig
    metrics = {
        # GeoDiff's loss on held-out molecules, per atom, with the same noise at every iteration
        "test_loss": Metric("test loss (per atom)"),
        "test_loss_local": Metric("test loss, local part (per atom)"),
        "test_loss_global": Metric("test loss, global part (per atom)"),
        "mat_r": Metric("MAT-R: best RMSD (A), mean over molecules"),
        "cov_r": Metric("COV-R: references matched (fraction), mean over molecules"),
        "mat_r_median": Metric("MAT-R: best RMSD (A), median over molecules"),
        "cov_r_median": Metric("COV-R: references matched (fraction), median over molecules"),
        "skipped_molecules": Metric("MAT/COV molecules left out: their sampling diverged twice"),
        # are the samples molecules at all: their bonds against the reference conformers'
        "bond_length_rms": Metric("RMS error of bond lengths (A)"),
        "valid_bond_share": Metric("samples with every bond within 0.1 A (fraction)"),
    }
    # curation: minus the MMFF94 energy above the lowest of the molecule's real conformers (kcal/mol)
    capabilities = replace(NeuralDeclaration.capabilities, scores=("mmff-energy",))
    presentation = Presentation(
        preview_size=6,
        learning_curve_axes=(
            "step",
            "training step",
            "validation_loss_local",
            "local loss on test molecules (per atom)",
        ),
        # COV-R over GeoDiff's thresholds, 0.05-3 A (``chemistry.COVERAGE_THRESHOLDS``), every iteration
        curves={"coverage_by_threshold": ("threshold", "RMSD threshold (A)", "cov_r", "COV-R, mean over molecules")},
        depict=depict_conformers,
        export_previews=conformers_file,
    )

    @classmethod
    def footprint(cls, config: ConformerDiffusionConfig) -> Footprint:
        """The network's weights with their gradients and Adam's two moments (16 bytes a parameter), and a
        training step's activations where they are in this machine's memory (``activation_bytes``);
        conformers are a few hundred bytes each, and synthetic ones memory-mapped."""
        activations = activation_bytes(config) if activations_on_host(config.device) else 0
        parameters = parameter_count(config.network)
        return Footprint(config.samples or 1, 0, fixed_bytes=16 * parameters, activation_bytes=activations)
