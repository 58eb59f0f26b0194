"""Beam search for fixed-length continuations, with a key-value cache: Shumailov et al.'s generation.

Their code calls ``generate(num_beams=5, min_new_tokens=64, max_new_tokens=64, repetition_penalty=3.0)``;
this computes the same tokens (``tests/test_fine_tuning.py`` checks them token for token). With the
minimum and maximum equal, EOS can never be chosen and every hypothesis ends at the same length, so
Hugging Face's search reduces to: at each step, for every running beam, the next token's log-probabilities
(log-softmax of the logits), with the repetition penalty applied to *them* (a token already in the
sequence, prompt included, has its log-probability multiplied by the penalty: transformers applies its
logits processors after the log-softmax in beam search) and EOS ruled out; the beams' scores added; the
``num_beams`` best (beam, token) pairs over all beams kept; and at the end the best-scoring beam.

Two things are cheaper than in ``generate``: the prompt is run once per prompt, not once per beam (the
beams are identical until the first token), and nothing but the running beams is kept.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache


def _cache_keyword(model) -> str:
    """transformers 5.24 renamed the forward's ``past_key_values`` to ``cache``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _processed_log_probabilities(
    logits: torch.Tensor, sequences: torch.Tensor, penalty: float, banned: list[int]
) -> torch.Tensor:
    """Log-softmax of ``logits`` (rows, vocabulary), with the repetition penalty on every token of
    ``sequences`` (rows, length) and the ``banned`` tokens ruled out."""
    log_probabilities = torch.log_softmax(logits.float(), dim=-1)
    if penalty != 1.0:
        seen = torch.gather(log_probabilities, 1, sequences)
        log_probabilities.scatter_(1, sequences, torch.where(seen < 0, seen * penalty, seen / penalty))
    if banned:
        log_probabilities[:, banned] = float("-inf")
    return log_probabilities


@torch.no_grad()
def beam_continuations(
    model,
    prompts: torch.Tensor,
    new_tokens: int,
    num_beams: int = 5,
    repetition_penalty: float = 3.0,
    banned: list[int] | None = None,
) -> torch.Tensor:
    """The best beam's ``new_tokens`` tokens after each of ``prompts`` (count, length): (count, new_tokens).
    ``banned`` (EOS, as ``min_new_tokens`` makes it) are never chosen."""
    model.eval()
    count, length = prompts.shape
    device = prompts.device
    banned = list(banned or [])
    keyword = _cache_keyword(model)
    cache = DynamicCache()
    positions = torch.arange(length, device=device)[None].expand(count, length)
    logits = model(
        input_ids=prompts,
        attention_mask=torch.ones_like(prompts),
        position_ids=positions,
        use_cache=True,
        **{keyword: cache},
    ).logits[:, -1]
    first = _processed_log_probabilities(logits, prompts, repetition_penalty, banned)
    scores, tokens = torch.topk(first, num_beams, dim=-1)  # (count, beams): every beam starts from the prompt
    sequences = torch.empty(count, num_beams, length + new_tokens, dtype=torch.long, device=device)
    sequences[:, :, :length] = prompts[:, None]
    sequences[:, :, length] = tokens
    cache.batch_repeat_interleave(num_beams)
    offsets = torch.arange(count, device=device)[:, None] * num_beams  # row of each prompt's first beam
    for step in range(1, new_tokens):
        current = length + step  # tokens each beam holds
        flat = sequences[:, :, :current].reshape(count * num_beams, current)
        logits = model(
            input_ids=flat[:, -1:],
            attention_mask=torch.ones_like(flat),
            position_ids=torch.full((count * num_beams, 1), current - 1, device=device),
            use_cache=True,
            **{keyword: cache},
        ).logits[:, -1]
        log_probabilities = _processed_log_probabilities(logits, flat, repetition_penalty, banned)
        vocabulary = log_probabilities.shape[-1]
        totals = (log_probabilities.view(count, num_beams, vocabulary) + scores[:, :, None]).view(count, -1)
        scores, chosen = torch.topk(totals, num_beams, dim=-1)
        beams, tokens = chosen // vocabulary, chosen % vocabulary
        sequences = torch.gather(sequences, 1, beams[:, :, None].expand(-1, -1, sequences.shape[2])).clone()
        sequences[:, :, current] = tokens
        if step < new_tokens - 1:
            cache.reorder_cache((beams + offsets).view(-1))  # type: ignore[arg-type]
    return sequences[:, 0, length:]  # topk sorts: beam 0 scores best
