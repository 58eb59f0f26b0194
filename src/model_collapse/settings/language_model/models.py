"""The paper's language models, built from scratch from Hugging Face ``transformers`` configs.

Presets (Gerstgrasser et al. 2024, §2.1 and App. C; docs/fidelity.md). The paper gives parameter counts;
the dimensions are those that reproduce them exactly with an 8,000-token vocabulary:

=============  ==========================================================  =============
preset         architecture                                                parameters
=============  ==========================================================  =============
gpt2-9m        GPT-2, d 256, 8 layers, 8 heads, 2,048 positions, tied      8,890,880
llama-12m      Llama, d 256, 8 layers, MLP 1,024, 4 heads, untied          12,488,960
llama-42m      Llama, d 512, 8 layers, MLP 2,048, 8 heads, untied          41,755,136
llama-126m     Llama, d 768, 12 layers, MLP 3,072, 12 heads, untied        125,553,408
gpt2-tiny      GPT-2, d 64, 2 layers, 4 heads, 256 positions (CPU runs)
llama-tiny     Llama, d 64, 2 layers, MLP 256, 4 heads, 256 positions (CPU runs)
=============  ==========================================================  =============

The head counts are not reported; 64-dimensional heads (32 for GPT-2 9M) are the usual choice.
Models are plain ``PreTrainedModel`` objects, so every checkpoint can be saved with
``save_pretrained`` and read back with ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2-9m": ("gpt2", {"n_embd": 256, "n_layer": 8, "n_head": 8, "n_positions": 2048}),
    "llama-12m": (
        "llama",
        {"hidden_size": 256, "num_hidden_layers": 8, "intermediate_size": 1024, "num_attention_heads": 4},
    ),
    "llama-42m": (
        "llama",
        {"hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 2048, "num_attention_heads": 8},
    ),
    "llama-126m": (
        "llama",
        {"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072, "num_attention_heads": 12},
    ),
    "gpt2-tiny": ("gpt2", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256}),
    "llama-tiny": (
        "llama",
        {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "intermediate_size": 256,
            "num_attention_heads": 4,
            "max_position_embeddings": 256,
        },
    ),
}


def positions(preset: str) -> int:
    """The longest context a preset's position embeddings take."""
    family, fields = PRESETS[preset]
    if family == "gpt2":
        return fields.get("n_positions", 1024)  # GPT2Config's default
    return fields.get("max_position_embeddings", 2048)  # model_config's default for Llama


def model_config(preset: str, vocab_size: int, special_token_id: int, **overrides: Any):
    """The ``transformers`` config of a preset, with any field overridden."""
    from transformers import GPT2Config, LlamaConfig  # here, so that the preset names need no transformers

    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r} (known: {', '.join(PRESETS)})")
    family, fields = PRESETS[preset]
    ids: dict[str, Any] = {
        "bos_token_id": special_token_id,
        "eos_token_id": special_token_id,
        "pad_token_id": special_token_id,
    }
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, tie_word_embeddings=True, **ids, **{**fields, **overrides})
    defaults: dict[str, Any] = {"max_position_embeddings": 2048, "tie_word_embeddings": False}
    fields = {**defaults, **fields, **overrides}
    fields.setdefault("num_key_value_heads", fields["num_attention_heads"])
    return LlamaConfig(vocab_size=vocab_size, **ids, **fields)


def dropout_overrides(preset: str, dropout: float | None) -> dict[str, float]:
    """Config fields that set every dropout of a preset's architecture to ``dropout`` (none if None)."""
    if dropout is None:
        return {}
    names = ["resid_pdrop", "embd_pdrop", "attn_pdrop"] if PRESETS[preset][0] == "gpt2" else ["attention_dropout"]
    return dict.fromkeys(names, dropout)


def build_model(preset: str, vocab_size: int, special_token_id: int, **overrides: Any) -> PreTrainedModel:
    """A freshly initialised model (uses torch's global random state: seed it first)."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    config = model_config(preset, vocab_size, special_token_id, **overrides)
    return (GPT2LMHeadModel if config.model_type == "gpt2" else LlamaForCausalLM)(config)
