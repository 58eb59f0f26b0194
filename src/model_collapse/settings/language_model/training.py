"""A lean pretraining loop: AdamW, linear warmup then cosine decay, gradient clipping, mixed precision
on GPU (bf16 where supported, else fp16 with loss scaling), optional ``torch.compile``, and evaluation
on the real validation blocks several times per epoch, so that learning curves can be drawn.

Data parallel when a process group is running (``torchrun``): every rank holds the same model and the
same global batch order, takes every world-th block of each global batch, and scales its summed loss
by world / (unmasked targets in the whole global batch), so that DDP's gradient averaging yields the
gradient of the single-process loss: the same optimisation, split across processes.

The paper does not report its optimiser settings; the defaults are the reference notes' suggestion
(AdamW, lr 5e-4, wd 0.1, cosine decay, ~2% warmup, batches of 32 x 512 tokens, 1 epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .packing import PackedBlocks


@dataclass(frozen=True)
class TrainingOptions:
    batch_size: int = 32
    learning_rate: float = 5e-4
    final_learning_rate_ratio: float = 0.1  # cosine decays to this fraction of the peak
    warmup_fraction: float = 0.02
    weight_decay: float = 0.1
    gradient_clip: float = 1.0
    epochs: int = 1
    evaluations_per_epoch: int = 10
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16, fp16
    compile: bool = False


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _global_sum(value: float, device: torch.device) -> float:
    """``value`` summed over the ranks of a running process group (itself without one)."""
    if not distributed():
        return value
    total = torch.tensor([float(value)], dtype=torch.float64, device=device)  # NCCL reduces GPU tensors only
    dist.all_reduce(total)
    return total.item()


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


def _loss(model, inputs: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the unmasked targets, and how many there are."""
    with torch.autocast(inputs.device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(input_ids=inputs).logits
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


@torch.no_grad()
def cross_entropy(model, blocks: PackedBlocks, batch_size: int, device: torch.device, precision: str = "auto") -> float:
    """Mean next-token cross-entropy (nats per token) over every unmasked target of ``blocks``."""
    was_training = model.training
    model.eval()
    dtype = _autocast_dtype(precision, device)
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        inputs, targets = (torch.from_numpy(a).to(device) for a in blocks.batch(range(start, min(start + batch_size, len(blocks)))))
        loss, n = _loss(model, inputs, targets, dtype)
        total += loss.item()
        count += n
    model.train(was_training)
    return total / count


def train(
    model,
    blocks: PackedBlocks,
    validation: PackedBlocks,
    options: TrainingOptions,
    rng: np.random.Generator,
    device: torch.device,
    on_evaluation: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns the learning curve (one dict per evaluation)."""
    model.to(device).train()
    steps_per_epoch = -(-len(blocks) // options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    warmup_steps = max(1, round(options.warmup_fraction * total_steps))
    decay, no_decay = [], []
    for parameter in model.parameters():
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)  # no decay on biases and norms
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.learning_rate,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: learning_rate_factor(step, total_steps, warmup_steps, options.final_learning_rate_ratio)
    )
    dtype = _autocast_dtype(options.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed() else (0, 1)
    forward = DistributedDataParallel(model) if world > 1 else model
    forward = torch.compile(forward) if options.compile else forward
    evaluate_every = max(1, steps_per_epoch // max(1, options.evaluations_per_epoch))
    curve: list[dict] = []

    def evaluate(step: int, train_loss: float) -> None:
        point = {"step": step, "epoch": step / steps_per_epoch, "train_loss": train_loss,
                 "validation_loss": cross_entropy(model, validation, options.batch_size, device, options.precision)}
        curve.append(point)
        if on_evaluation is not None:
            on_evaluation(point)

    step, running, running_count = 0, 0.0, 0
    for _ in range(options.epochs):
        order = rng.permutation(len(blocks))
        for start in range(0, len(order), options.batch_size):
            batch = order[start : start + options.batch_size]
            mine = batch[rank::world]
            # A rank left without a block in a short last batch still joins the gradient all-reduce.
            weight = 1.0 if len(mine) else 0.0
            inputs, targets = (torch.from_numpy(a).to(device, non_blocking=True) for a in blocks.batch(mine if len(mine) else batch[:1]))
            loss, count = _loss(forward, inputs, targets, dtype)
            count = _global_sum(count * weight, device)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss * weight * world / max(count, 1)).backward()
            loss = loss * weight
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.gradient_clip)
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            step += 1
            running += _global_sum(loss.item(), device)
            running_count += count
            if step % evaluate_every == 0 or step == total_steps:
                evaluate(step, running / max(running_count, 1))
                running, running_count = 0.0, 0
    model.eval()
    return curve
