"""Story generation with a key-value cache and continuous batching.

Each synthetic story starts from a prompt - the paper's ``first_token_inclusive`` strategy prompts with
BOS and the first token of a real training story, which stays in the output; BOS alone is the other
choice - and is sampled token by token at a temperature, optionally truncated to the top k tokens or
the top-p nucleus, until EOS or ``max_new_tokens``.

Why not ``model.generate`` on fixed batches: a batch there runs until its longest story ends, so rows
whose story ended early keep computing padding, and it draws tokens with ``torch.multinomial``, which
consumes one exponential random number per vocabulary entry (on a CPU, most of a decoding step). Here

* a batch is a set of *slots*; when a story ends, its slot takes the next prompt at the very next step,
  so every step does useful work until the prompts run out (continuous batching). A slot's new story
  starts at the cache's current column, with the slot's earlier columns masked out and its own position
  ids counted from 0; prompts are fed one token per step like everything else, so every step is one
  token per slot. Each slot's live columns are the most recent ones, so columns older than the
  longest live story are dropped as the cache grows: that bounds its memory and the attention span;
* a token is drawn by inverting the cumulative distribution with one uniform number per row.

``use_cache=False`` recomputes every live story in full at each step (left-padded, with the same
masks and positions) and consumes the same random numbers; it exists to check the cache and gives the
same tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache


def next_token_distribution(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """Probabilities (batch, vocab) of the next token after temperature, top-k and top-p truncation."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probabilities = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probabilities, order = torch.sort(probabilities, dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the most likely token always stays)
        outside = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities >= top_p
        sorted_probabilities = sorted_probabilities.masked_fill(outside, 0.0)
        probabilities = torch.zeros_like(probabilities).scatter(-1, order, sorted_probabilities)
        probabilities = probabilities / probabilities.sum(dim=-1, keepdim=True)
    return probabilities


def draw(probabilities: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of (unnormalised) ``probabilities``, by inverse-CDF sampling: one uniform
    number per row, against the one exponential per vocabulary entry of ``torch.multinomial``."""
    cdf = torch.cumsum(probabilities, dim=-1, dtype=torch.float64)  # float64: exact enough for the tail
    total = cdf[:, -1:].contiguous()
    uniform = torch.rand(total.shape, generator=generator, dtype=torch.float64, device=cdf.device)
    index = torch.searchsorted(cdf, uniform * total, right=True)
    # rounding can put the draw at the very end; the first index where the cdf reaches the total is
    # the last token with any mass, so a zero-probability token is never drawn
    last_with_mass = torch.searchsorted(cdf, total)
    return torch.minimum(index, last_with_mass)[:, 0]


def generate(model, prompts: torch.Tensor, *arguments, **options) -> list[list[int]]:
    """The stories of ``stream_stories`` (same arguments), in prompt order."""
    stories: list[list[int]] = [[] for _ in range(len(prompts))]
    for index, story in stream_stories(model, prompts, *arguments, **options):
        stories[index] = story
    return stories


@torch.no_grad()
def stream_stories(
    model,
    prompts: torch.Tensor,
    max_new_tokens: int,
    eos: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int | None = None,
    use_cache: bool = True,
) -> Iterator[tuple[int, list[int]]]:
    """Continuations of ``prompts`` (stories, prompt length): for each, the prompt and the sampled
    tokens up to (not including) EOS, at most ``max_new_tokens`` of them, as (prompt index, story)
    pairs in the order the stories end, so that a caller can store millions of them compactly as they
    come. ``batch_size`` stories are in flight at once (all of them by default)."""
    model.eval()
    device = prompts.device
    count, prompt_length = prompts.shape
    slots = min(batch_size or count, count)
    longest = prompt_length + max_new_tokens

    # per slot: the story it holds, its tokens so far (prompt, then sampled), how many of them the
    # model has been fed (= the position id of the next input), and how many it has
    story = torch.arange(slots, device=device)
    history = torch.zeros(slots, longest, dtype=torch.long, device=device)
    history[:, :prompt_length] = prompts[:slots]
    fed = torch.zeros(slots, dtype=torch.long, device=device)
    known = torch.full((slots,), prompt_length, dtype=torch.long, device=device)
    next_prompt = slots
    mask = torch.zeros(slots, 0, dtype=torch.long, device=device)  # which cache columns each slot attends to
    cache = DynamicCache() if use_cache else None
    cache_keyword = _cache_keyword(model)

    while len(story):
        rows = torch.arange(len(story), device=device)
        inputs = history[rows, fed][:, None]
        mask = torch.cat([mask, torch.ones_like(inputs)], dim=1)
        if use_cache:
            logits = model(
                input_ids=inputs,
                attention_mask=mask,
                position_ids=fed[:, None],
                use_cache=True,
                **{cache_keyword: cache},
            ).logits[:, -1]
        else:
            logits = _recompute_last_logits(model, history, fed)
        token = draw(next_token_distribution(logits, temperature, top_k, top_p), generator)
        active = story >= 0
        fed += active.long()
        ready = active & (fed == known)  # the model has seen every known token: the draw is the story's next one
        ended = ready & ((token == eos) | (known - prompt_length + 1 >= max_new_tokens))
        append = ready & (token != eos)
        history[rows[append], known[append]] = token[append]
        known += append.long()

        if bool(ended.any()):
            ended_slots = torch.nonzero(ended)[:, 0]
            ended_stories, ended_histories, ended_lengths = (
                t.tolist() for t in (story[ended_slots], history[ended_slots], known[ended_slots])
            )
            for slot, index, tokens, length in zip(ended_slots.tolist(), ended_stories, ended_histories, ended_lengths):
                yield index, tokens[:length]
                if next_prompt < count:  # the slot takes the next prompt, seeing none of its old columns
                    story[slot] = next_prompt
                    history[slot, :prompt_length] = prompts[next_prompt]
                    fed[slot], known[slot] = 0, prompt_length
                    mask[slot] = 0
                    next_prompt += 1
                else:  # no prompt left: the slot idles on a fixed input until it is dropped
                    story[slot], fed[slot] = -1, 0
                    mask[slot] = 0
            idle = story < 0
            if bool(idle.all()):
                break
            # out of prompts: drop idle slots once they are an eighth of the batch (copying the cache
            # costs about as much as a few steps of the idle rows)
            if 8 * int(idle.sum()) >= len(story):
                keep = torch.nonzero(~idle)[:, 0]
                story, history, fed, known, mask = story[keep], history[keep], fed[keep], known[keep], mask[keep]
                if cache is not None:
                    cache.batch_select_indices(keep)
        if mask.shape[1] > int(fed.max()) + COMPACT_SLACK:
            mask, cache = _compact(mask, cache, fed)


def _cache_keyword(model) -> str:
    """The name under which the model's forward takes the cache: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old name is to go in 5.40)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# Columns no live story attends to are dropped once there are this many. Dropping is a slice (a view);
# the cache's next append copies it anyway, so compacting often costs nearly nothing, and it keeps the
# cache - the sampler's largest allocation - and the attention span at about the longest live story.
COMPACT_SLACK = 8


def _compact(
    mask: torch.Tensor, cache: DynamicCache | None, fed: torch.Tensor
) -> tuple[torch.Tensor, DynamicCache | None]:
    """Drop the cache columns no live story attends to. A slot's story occupies the columns appended
    since it was fed its first token - its last ``fed`` ones - so the last ``max(fed)`` columns hold
    every live story, right-aligned, and the ones before them can go."""
    width = max(1, int(fed.max()))
    mask = mask[:, -width:]
    if cache is not None:
        layers: list[Any] = list(cache.layers)  # key-value layers: the sampler's models have no other kind
        cache = DynamicCache(
            ddp_cache_data=[(layer.keys[:, :, -width:], layer.values[:, :, -width:]) for layer in layers]
        )
    return mask, cache


def _recompute_last_logits(model, history: torch.Tensor, fed: torch.Tensor) -> torch.Tensor:
    """Next-token logits of every slot from its whole story so far, without a cache."""
    width = int(fed.max()) + 1
    positions = torch.arange(width, device=history.device)[None, :] - (width - 1 - fed[:, None])  # left padding
    live = positions >= 0
    inputs = torch.gather(history, 1, positions.clamp(min=0)) * live
    return model(
        input_ids=inputs, attention_mask=live.long(), position_ids=positions.clamp(min=0), use_cache=False
    ).logits[:, -1]


def story_prompts(first_tokens: Sequence[int] | np.ndarray | None, count: int, bos: int) -> torch.Tensor:
    """(count, 2) prompts BOS + a real story's first token, or (count, 1) BOS alone when none given."""
    if first_tokens is None:
        return torch.full((count, 1), bos, dtype=torch.long)
    return torch.tensor([[bos, int(t)] for t in first_tokens[:count]], dtype=torch.long)
