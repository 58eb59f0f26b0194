"""Training GeoDiff's network as GeoDiff does (``train.py``): minibatches of conformers, paired timesteps,
the mean per-atom loss, gradient clipping, and two Adam optimisers - one for the global encoder and one
for the local - each with a plateau schedule stepped on its own part of the validation loss.

Every ``evaluate_every`` steps the loss on a fixed set of validation conformers, with noise fixed once
for all evaluations, is recorded: the learning curve (the local part is what the paper's Fig. 4 plots)
and what the schedules see. With a checkpoint directory, the whole state is saved every few minutes and
an interrupted fit continues from there, ending as an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...activity import Meter
from ..training_state import TrainingState
from .config import TrainingSection
from .conformers import Conformers
from .graph import MoleculeBatch
from .network import DualEncoder, diffusion_loss, paired_timesteps

log = logging.getLogger(__name__)

# Conformers per batch when the loss is only evaluated (no gradients kept).
EVALUATION_BATCH = 256


def generator_for(seed: int | np.integer, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


@torch.no_grad()
def evaluation_loss(model: DualEncoder, conformers: Conformers, seed: int, device: torch.device) -> dict[str, float]:
    """The loss per atom on ``conformers`` (total, local, global) with timesteps and noise drawn from
    ``seed``: the same seed gives the same noise, so two models are compared on equal terms."""
    model.eval()
    generator = generator_for(seed, device)
    sums, atoms = np.zeros(2), 0
    for start in range(0, len(conformers), EVALUATION_BATCH):
        rows = np.arange(start, min(start + EVALUATION_BATCH, len(conformers)))
        batch = MoleculeBatch.of(Conformers.select([conformers], rows[None]), device)
        timesteps = paired_timesteps(batch.count, model.steps, generator, device)
        noise = torch.randn(batch.positions.shape, generator=generator, device=device)
        global_loss, local_loss = diffusion_loss(model, batch, timesteps, noise)
        sums += [global_loss.sum().item(), local_loss.sum().item()]
        atoms += len(batch.atom_types)
    global_loss, local_loss = sums / max(atoms, 1)
    return {"loss": float(global_loss + local_loss), "loss_local": float(local_loss), "loss_global": float(global_loss)}


def train(
    model: DualEncoder,
    parts: Sequence[Conformers],
    validation: Conformers,
    options: TrainingSection,
    rng: np.random.Generator,
    device: torch.device,
    checkpoint_directory: Path | None = None,
) -> list[dict]:
    """Train ``model`` in place on the conformers of ``parts``; returns the learning curve."""
    pool = sum(len(part) for part in parts)
    checkpoint = TrainingState(
        checkpoint_directory,
        options.checkpoint_minutes,
        {
            "options": options.model_dump(exclude={"checkpoint_minutes"}),
            "pool": pool,
            "rng": rng.bit_generator.state,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    )
    model.to(device)
    optimisers = [
        torch.optim.Adam(parameters, lr=options.learning_rate, betas=options.betas, weight_decay=options.weight_decay)
        for parameters in (model.global_parameters(), model.local_parameters())
    ]
    schedules = [
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, factor=options.scheduler_factor, patience=options.scheduler_patience
        )
        for optimiser in optimisers
    ]
    generator = generator_for(rng.integers(2**63), device)  # timesteps and noise of the training batches
    order_seed, validation_seed = (int(s) for s in rng.integers(2**63, size=2))
    curve: list[dict] = []
    step, running, running_atoms = 0, 0.0, 0
    saved = checkpoint.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        holders: list[Any] = [*optimisers, *schedules]
        for holder, state in zip(holders, saved["optimisers"] + saved["schedules"]):
            holder.load_state_dict(state)
        generator.set_state(saved["generator"])
        step, running, running_atoms, curve[:] = saved["step"], saved["running"], saved["running_atoms"], saved["curve"]
        log.info("training resumes at step %d of %d from %s", step, options.steps, checkpoint.path)

    # The data order: a permutation of the pool per pass, from a stream of its own, drawn pass after pass
    # as steps need them, so that a resumed fit finds its place by step alone.
    order_rng = np.random.default_rng(order_seed)
    order = np.empty(0, dtype=np.int64)

    meter = Meter("training", options.steps, "steps", done=step)
    model.train()
    while step < options.steps:
        start = step * options.batch_size
        while len(order) < start + options.batch_size:
            order = np.concatenate([order, order_rng.permutation(pool)])
        rows = order[start : start + options.batch_size]
        batch = MoleculeBatch.of(Conformers.select(parts, rows[None]), device)
        timesteps = paired_timesteps(batch.count, model.steps, generator, device)
        noise = torch.randn(batch.positions.shape, generator=generator, device=device)
        global_loss, local_loss = diffusion_loss(model, batch, timesteps, noise)
        loss = (global_loss + local_loss).mean()
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip)
        for optimiser in optimisers:
            optimiser.step()
        step += 1
        running += loss.item() * len(batch.atom_types)
        running_atoms += len(batch.atom_types)
        meter.advance(1)
        if step % options.evaluate_every == 0 or step == options.steps:
            losses = evaluation_loss(model, validation, validation_seed, device)
            model.train()
            curve.append(
                {
                    "step": step,
                    "train_loss": running / max(running_atoms, 1),
                    **{f"validation_{name}": value for name, value in losses.items()},
                    "learning_rate": optimisers[1].param_groups[0]["lr"],
                }
            )
            running, running_atoms = 0.0, 0
            schedules[0].step(losses["loss_global"])
            schedules[1].step(losses["loss_local"])
        if step < options.steps and checkpoint.due():
            checkpoint.save(
                {
                    "step": step,
                    "model": model.state_dict(),
                    "optimisers": [o.state_dict() for o in optimisers],
                    "schedules": [s.state_dict() for s in schedules],
                    "generator": generator.get_state(),
                    "running": running,
                    "running_atoms": running_atoms,
                    "curve": curve,
                }
            )
    meter.close()
    model.eval()
    return curve
