"""Batched story generation with a key-value cache.

Each synthetic story starts from a prompt - the paper's ``first_token_inclusive`` strategy prompts with
BOS and the first token of a real training story, which stays in the output; BOS alone is the other
choice - and is sampled token by token at a temperature, optionally truncated to the top k tokens or
the top-p nucleus, until EOS or ``max_new_tokens``. Prompts of one batch must have equal length (both
strategies give that), so no padding or attention mask is needed. After the prompt, every step feeds
only the newest token and reuses the cached keys and values of the earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def next_token_distribution(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Probabilities (batch, vocab) of the next token after temperature, top-k and top-p truncation."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float() / temperature
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


@torch.no_grad()
def generate(
    model,
    prompts: torch.Tensor,
    max_new_tokens: int,
    eos: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Continuations of ``prompts`` (batch, prompt length): for each, the prompt and the sampled tokens
    up to (not including) EOS. ``use_cache=False`` recomputes the whole sequence at every step; it
    exists to check the cache, and gives the same tokens."""
    model.eval()
    batch, _ = prompts.shape
    sequence = prompts
    finished = torch.zeros(batch, dtype=torch.bool, device=prompts.device)
    past, step_input = None, prompts
    for _ in range(max_new_tokens):
        if use_cache:
            output = model(input_ids=step_input, past_key_values=past, use_cache=True)
            past = output.past_key_values
        else:
            output = model(input_ids=sequence, use_cache=False)
        probabilities = next_token_distribution(output.logits[:, -1, :], temperature, top_k, top_p)
        token = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
        token = torch.where(finished, torch.full_like(token, eos), token)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
        step_input = token[:, None]
        finished |= token == eos
        if bool(finished.all()):
            break
    result = []
    for row in sequence.tolist():
        end = row.index(eos, prompts.shape[1]) if eos in row[prompts.shape[1] :] else len(row)
        result.append(row[:end])
    return result


def story_prompts(first_tokens: Sequence[int] | None, count: int, bos: int) -> torch.Tensor:
    """(count, 2) prompts BOS + a real story's first token, or (count, 1) BOS alone when none given."""
    if first_tokens is None:
        return torch.full((count, 1), bos, dtype=torch.long)
    return torch.tensor([[bos, int(t)] for t in first_tokens[:count]], dtype=torch.long)
