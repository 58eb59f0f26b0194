"""A lean pretraining loop: AdamW, linear warmup then cosine decay, gradient clipping, mixed precision
on GPU (bf16 where supported, else fp16 with loss scaling), optional ``torch.compile``, and evaluation
on the real validation blocks several times per epoch, so that learning curves can be drawn.

Data parallel when a process group is running (``torchrun``): every rank holds the same model and the
same global batch order, takes every world-th block of each global batch, and scales its summed loss
by world / (unmasked targets in the whole global batch), so that DDP's gradient averaging yields the
gradient of the single-process loss: the same optimisation, split across processes.

The loss is computed from the final hidden states in chunks (``loss.py``), without materialising the
logits. With a checkpoint directory (the chain's scratch directory for the iteration) the whole training
state is saved every few minutes, and an interrupted run continues from the last saved step.

Evaluation is split across ranks too (every world-th validation block), so call it on every rank.

The paper does not report its optimiser settings; the defaults are the reference notes' suggestion
(AdamW, lr 5e-4, wd 0.1, cosine decay, ~2% warmup, batches of 32 x 512 tokens, 1 epoch).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ...activity import Meter
from ...distributed import global_sum, rank_and_world
from ..training_state import TrainingState
from .config import TrainingSection
from .loss import IGNORE, CausalLanguageModelLoss

log = logging.getLogger(__name__)


class Batches(Protocol):
    """Training or evaluation rows as the loop reads them: packed blocks (``packing.PackedBlocks``) or
    padded examples (``fine_tuning/examples.py``). ``batch`` gives inputs and targets, IGNORE-masked."""

    block_size: int  # tokens per row at most, for throughput figures

    def __len__(self) -> int: ...

    def batch(self, indices: Any) -> tuple[np.ndarray, np.ndarray]: ...


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _loss(
    loss_module, inputs: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the unmasked targets, and how many there are."""
    with torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None):
        loss, count = loss_module(inputs, targets)
    return loss, int(count)


def _loss_module(model, device: torch.device) -> CausalLanguageModelLoss:
    # Chunks of logits of ~2 MiB stay in a CPU's cache; on a GPU, fewer and larger chunks (~128 MiB)
    # keep the kernels busy. At least 256 rows: fewer make the products against the output layer
    # inefficient once the hidden states are a few hundred wide (an OPT-sized model).
    elements = 2**19 if device.type == "cpu" else 2**25
    return CausalLanguageModelLoss(model, rows=max(256, elements // model.get_output_embeddings().weight.shape[0]))


@torch.no_grad()
def cross_entropy(model, blocks: Batches, batch_size: int, device: torch.device, precision: str = "auto") -> float:
    """Mean next-token cross-entropy (nats per token) over every unmasked target of ``blocks``; under
    ``torchrun`` each rank takes every world-th block and the sums are combined (call it on all ranks)."""
    was_training = model.training
    model.eval()
    dtype = _autocast_dtype(precision, device)
    loss_module = _loss_module(model, device)
    rank, world = rank_and_world()
    mine = np.arange(rank, len(blocks), world)
    total, count = 0.0, 0
    for start in range(0, len(mine), batch_size):
        inputs, targets = (torch.from_numpy(a).to(device) for a in blocks.batch(mine[start : start + batch_size]))
        loss, n = _loss(loss_module, inputs, targets, dtype)
        total += loss.item()
        count += n
    model.train(was_training)
    return global_sum(total, device) / global_sum(count, device)


def train(
    model,
    blocks: Batches,
    validation: Batches,
    options: TrainingSection,
    rng: np.random.Generator,
    device: torch.device,
    on_evaluation: Callable[[dict], None] | None = None,
    checkpoint_directory: Path | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns the learning curve (one dict per evaluation).

    With ``checkpoint_directory``, the state is saved there every ``options.checkpoint_minutes``,
    and a run started again with the same model initialisation, data, options and ``rng`` state
    continues from the last saved step and ends exactly as an uninterrupted run (on CPU, bit for bit).
    """
    checkpoint = TrainingState(
        checkpoint_directory,
        options.checkpoint_minutes,
        {
            "options": options.model_dump(exclude={"checkpoint_minutes"}),
            "blocks": len(blocks),
            "block_size": blocks.block_size,
            "rng": rng.bit_generator.state,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    )
    model.to(device).train()
    steps_per_epoch = -(-len(blocks) // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    warmup_steps = max(1, round(options.warmup_fraction * total_steps))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)  # no decay on biases and norms
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.learning_rate,
        betas=options.betas,
        fused=device.type == "cuda",
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: learning_rate_factor(step, total_steps, warmup_steps, options.final_learning_rate_ratio)
    )
    dtype = _autocast_dtype(options.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    rank, world = rank_and_world()
    forward: Any = _loss_module(model, device)
    parallel = DistributedDataParallel(forward) if world > 1 else None
    forward = parallel if parallel is not None else forward
    forward = torch.compile(forward) if options.compile else forward
    evaluate_every = max(1, steps_per_epoch // max(1, options.evaluations_per_epoch))
    curve: list[dict] = []

    def evaluate(step: int, train_loss: float) -> None:
        point = {
            "step": step,
            "epoch": step / steps_per_epoch,
            "train_loss": train_loss,
            "validation_loss": cross_entropy(model, validation, options.batch_size, device, options.precision),
        }
        curve.append(point)
        if on_evaluation is not None:
            on_evaluation(point)

    step, running = 0, 0.0
    running_count: float = 0  # tokens, summed over the ranks
    resume_at = 0
    saved = checkpoint.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in saved:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        resume_at, running, running_count, curve[:] = (
            saved["step"],
            saved["running"],
            saved["running_count"],
            saved["curve"],
        )
        log.info("training resumes at step %d of %d from %s", resume_at, total_steps, checkpoint.path)

    meter = Meter("training", total_steps, "steps", rate_unit="tokens", done=resume_at)
    for _ in range(options.epochs):
        order = rng.permutation(len(blocks))  # drawn for every epoch, resumed or not, to stay in step
        for start in range(0, len(order), options.batch_size):
            if step < resume_at:
                step += 1
                continue
            batch = order[start : start + options.batch_size]
            mine = batch[rank::world]
            # A rank left without a block in a short last batch still joins the gradient all-reduce.
            weight = 1.0 if len(mine) else 0.0
            rows = mine if len(mine) else batch[:1]
            micro = options.micro_batch_size or len(rows)
            pieces = [blocks.batch(rows[first : first + micro]) for first in range(0, len(rows), micro)]
            # the step's loss is the mean over every counted token of the batch, however it is split
            tokens = global_sum(sum(int((targets != IGNORE).sum()) for _, targets in pieces) * weight, device)
            optimiser.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=device)
            for index, piece in enumerate(pieces):
                inputs, targets = (torch.from_numpy(a).to(device, non_blocking=True) for a in piece)
                # under DDP the gradients are all-reduced once, after the last piece
                last = index == len(pieces) - 1
                with parallel.no_sync() if parallel is not None and not last else contextlib.nullcontext():
                    piece_loss, _ = _loss(forward, inputs, targets, dtype)
                    scaler.scale(piece_loss * weight * world / max(tokens, 1)).backward()
                loss = loss + piece_loss.detach() * weight
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip)
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            step += 1
            meter.advance(1, amount=len(batch) * blocks.block_size)
            running += global_sum(loss.item(), device)
            running_count += tokens
            if step % evaluate_every == 0 or step == total_steps:
                evaluate(step, running / max(running_count, 1))
                running, running_count = 0.0, 0
            if step < total_steps and rank == 0 and checkpoint.due():
                checkpoint.save(
                    {
                        "step": step,
                        "model": model.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "schedule": schedule.state_dict(),
                        "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                        "running": running,
                        "running_count": running_count,
                        "curve": curve,
                    }
                )
    meter.close()
    model.eval()
    return curve
