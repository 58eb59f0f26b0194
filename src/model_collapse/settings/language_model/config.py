"""What the language-model setting is (its config, metrics and how it runs), readable without
PyTorch or transformers: ``table``, ``plot`` and config validation need only this."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from ..base import Declaration, Metric, SettingConfig
from .corpus import BUNDLED
from .models import PRESETS


class LanguageModelConfig(SettingConfig):
    name: Literal["language-model"] = "language-model"
    corpus: Literal["tinystories", "files", "moby-dick"] = BUNDLED
    train_file: str | None = None
    validation_file: str | None = None
    separator: str | None = Field(None, description="a line that separates documents in .txt files")
    samples: PositiveInt | None = Field(None, description="T: real training documents (default: the whole split)")
    validation_documents: PositiveInt | None = None
    vocab_size: PositiveInt = 8000
    tokenizer_cache: str = "~/.cache/model-collapse/tokenizers"
    model: str = "gpt2-tiny"
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="dropout probability everywhere the architecture has it (null: its default, "
        "0.1 for GPT-2, 0 for Llama; the paper does not say)",
    )
    block_size: PositiveInt = 256
    batch_size: PositiveInt = 32
    learning_rate: PositiveFloat = 5e-4
    warmup_fraction: float = Field(0.02, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    epochs: PositiveInt = 1
    evaluations_per_epoch: PositiveInt = 10
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    checkpoint_minutes: float | None = Field(
        10.0, ge=0, description="minutes between resumable training checkpoints in the run directory (null: none)"
    )
    temperature: PositiveFloat = 1.0
    top_k: PositiveInt | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    prompt: Literal["first-token", "bos"] = "first-token"
    max_new_tokens: PositiveInt = 256
    generation_batch_size: PositiveInt = Field(256, description="stories sampled at once (continuous batching)")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _consistent(self):
        if self.model not in PRESETS:
            raise ValueError(f"model: unknown preset {self.model!r} (known: {', '.join(PRESETS)})")
        if self.corpus == "files" and not (self.train_file and self.validation_file):
            raise ValueError("corpus 'files' needs train_file and validation_file")
        return self


class LanguageModelDeclaration(Declaration):
    """The language-model setting's declaration; ``setting.LanguageModel`` inherits it."""

    name = "language-model"
    Config = LanguageModelConfig
    metrics = {"test_cross_entropy": Metric("cross-entropy on real validation text (nats / token)")}
    one_seed_per_chain = True
    preview_size = 8
