"""Next-token cross-entropy of a causal language model, computed from its final hidden states in chunks.

The straightforward loss - ``F.cross_entropy(model(inputs).logits, targets)`` - materialises the
(tokens x vocabulary) logits, then their log-softmax, then in the backward pass a zero-filled gradient
of the same size, a scatter into it and the log-softmax gradient: five passes over an array that for a
batch of 32 x 512 tokens and an 8,000-token vocabulary is 520 MB in fp32. With the small models of
the paper that memory traffic, not the matrix products, is most of a training step on a CPU.

Here the output projection and the loss are one operation over chunks of rows: for each chunk the
logits are computed, reduced to the loss, and turned in place into their gradient (softmax minus the
one-hot target), which is multiplied straight into the gradients of the hidden states and of the
projection weight while the chunk is still in cache. The gradients are computed in the forward pass
(the loss is a scalar, so the backward pass only scales them), and the logits never exist in full.
The result equals the straightforward loss and its gradients to floating-point rounding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

IGNORE = -100  # targets that are not predicted (padding, document boundaries)


def _chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    rows: int,
    gradients: bool,
    of_weight: bool = True,
):
    """Summed loss over unmasked targets, and (if asked) its gradients wrt ``hidden`` and (``of_weight``:
    a frozen output layer, as under LoRA, needs none) ``weight``."""
    loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden: Any = torch.empty_like(hidden) if gradients else None
    of_weight = gradients and of_weight
    grad_weight: Any = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if of_weight else None
    for start in range(0, hidden.shape[0], rows):
        chunk = hidden[start : start + rows]
        target = targets[start : start + rows]
        valid = target != IGNORE
        target = torch.where(valid, target, 0)
        logits = (chunk @ weight.T).float()  # under autocast the product runs in bf16/fp16
        normaliser = torch.logsumexp(logits, dim=-1)
        loss += ((normaliser - logits.gather(1, target[:, None])[:, 0]) * valid).sum()
        if gradients:
            gradient = logits.sub_(normaliser[:, None]).exp_()  # softmax, in place of the logits
            gradient.scatter_add_(1, target[:, None], -valid[:, None].float())  # minus the one-hot target
            gradient.mul_(valid[:, None])  # masked rows contribute nothing
            gradient = gradient.to(weight.dtype)  # (autocast, if on, runs both products in bf16/fp16)
            grad_hidden[start : start + rows] = gradient @ weight
            if of_weight:
                grad_weight += (gradient.T @ chunk).float()
    return loss, grad_hidden, grad_weight


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, rows):
        of_weight = weight.requires_grad
        loss, grad_hidden, grad_weight = _chunked(hidden, weight, targets, rows, gradients=True, of_weight=of_weight)
        ctx.save_for_backward(grad_hidden, *([grad_weight] if of_weight else []))
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, *grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_loss.to(grad_hidden.dtype),
            (grad_weight[0] * grad_loss).to(ctx.weight_dtype) if grad_weight else None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: int = 1024
) -> torch.Tensor:
    """Summed cross-entropy of the logits ``hidden @ weight.T`` (tokens x vocabulary) against
    ``targets`` (``IGNORE`` = not predicted), ``rows`` tokens at a time."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, rows)
    return _chunked(hidden, weight, targets, rows, gradients=False)[0]


class CausalLanguageModelLoss(nn.Module):
    """A Hugging Face causal LM with the loss in place of its output layer: ``forward(inputs, targets)``
    returns the summed next-token cross-entropy over unmasked targets and their count. A module of its
    own, so that ``DistributedDataParallel`` and ``torch.compile`` can wrap the whole computation."""

    def __init__(self, model: Any, rows: int = 1024):  # a transformers causal LM
        super().__init__()
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ValueError("the chunked loss needs an output layer without bias")
        self.model, self.rows = model, rows

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.base_model(input_ids=inputs, use_cache=False).last_hidden_state
        weight = self.model.get_output_embeddings().weight
        loss = linear_cross_entropy(hidden.flatten(0, 1), weight, targets.flatten(), self.rows)
        return loss, (targets != IGNORE).sum()
