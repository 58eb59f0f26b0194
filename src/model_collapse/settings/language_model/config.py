"""What the language-model setting is (its config, metrics and how it runs), readable without
PyTorch or transformers: ``table``, ``plot`` and config validation need only this."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from ..base import Footprint, Metric, Presentation, activations_on_host
from ..configs import SettingConfig, StrictConfig
from ..neural import NeuralDeclaration
from .corpus import BUNDLED
from .models import PRESETS, positions


class ModelSection(StrictConfig):
    """The architecture: a preset of ``models.py`` and what may be changed in it."""

    preset: str = Field(
        "gpt2-tiny",
        description="the architecture (models.py): gpt2-9m, llama-12m, llama-42m, llama-126m, gpt2-tiny, llama-tiny",
    )
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="dropout probability everywhere the architecture has it (null: its default, "
        "0.1 for GPT-2, 0 for Llama; the paper does not say)",
    )
    block_size: PositiveInt = Field(256, description="tokens per training and validation block (the context)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        return preset

    @model_validator(mode="after")
    def _fits_the_context(self):
        if self.block_size > positions(self.preset):
            limit = positions(self.preset)
            raise ValueError(f"block_size {self.block_size} exceeds the {limit} positions of {self.preset}")
        return self


class TrainingSection(StrictConfig):
    """How each iteration's model is trained (AdamW, warmup then cosine decay) and evaluated."""

    batch_size: PositiveInt = Field(32, description="blocks per optimiser step (and per evaluation batch)")
    micro_batch_size: PositiveInt | None = Field(
        None, description="blocks per forward pass, gradients accumulated over a step (null: the whole batch)"
    )
    learning_rate: PositiveFloat = Field(5e-4, description="AdamW's peak learning rate")
    final_learning_rate_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to this fraction of the peak")
    warmup_fraction: float = Field(
        0.02, ge=0, le=1, description="share of the steps of linear warm-up, before the cosine decay"
    )
    weight_decay: float = Field(0.1, ge=0, description="AdamW's weight decay (not on biases and norms)")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW's betas")
    gradient_clip: PositiveFloat = Field(1.0, description="the gradient norm is clipped to this")
    epochs: PositiveInt = Field(1, description="epochs per fit")
    evaluations_per_epoch: PositiveInt = Field(10, description="validation-loss points of the learning curve per epoch")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (else fp16) autocast on GPU, fp32 on CPU"
    )
    compile: bool = Field(False, description="train through torch.compile")
    checkpoint_minutes: float | None = Field(
        10.0, ge=0, description="minutes between resumable training checkpoints in the run directory (null: none)"
    )
    warm_start: bool = Field(
        False, description="each fit continues from the previous iteration's model, not from a fresh one"
    )


class SamplingSection(StrictConfig):
    """How synthetic stories are generated."""

    temperature: PositiveFloat = Field(1.0, description="sampling temperature")
    top_k: PositiveInt | None = Field(None, description="sample among the k likeliest tokens (none: all)")
    top_p: float | None = Field(
        None, gt=0, le=1, description="nucleus sampling: the smallest set of tokens with this probability (none: all)"
    )
    prompt: Literal["first-token", "bos"] = Field(
        "first-token", description="BOS and a real story's first token (the paper's), or BOS alone"
    )
    max_new_tokens: PositiveInt = Field(256, description="tokens sampled per story at most (a story also ends at EOS)")
    batch_size: PositiveInt = Field(256, description="stories sampled at once (continuous batching)")
    evaluation_stories: NonNegativeInt = Field(
        100, description="stories sampled at each evaluation to measure their diversity (0: none)"
    )


class LanguageModelConfig(SettingConfig):
    name: Literal["language-model"] = "language-model"
    dataset: Literal["tinystories", "files", "moby-dick"] = Field(
        BUNDLED, description="the text: the bundled moby-dick (offline), tinystories (Hugging Face), or your files"
    )
    train_file: str | None = Field(None, description="dataset files: the training text")
    validation_file: str | None = Field(None, description="dataset files: the validation text")
    separator: str | None = Field(None, description="a line that separates documents in .txt files")
    data_dir: str | None = Field(
        None, description="tinystories: a local copy of the Hugging Face data set (data/*.parquet); else the Hub"
    )
    samples: PositiveInt | None = Field(None, description="T: real training documents (default: the whole split)")
    test_samples: PositiveInt | None = Field(None, description="held-out validation documents used (default: all)")
    vocab_size: PositiveInt = Field(
        8000, description="the byte-level BPE tokenizer's vocabulary, trained on the real training text"
    )
    tokenizer_cache: str = Field(
        "~/.cache/model-collapse/tokenizers",
        description="where trained tokenizers are kept, keyed by their corpus and size",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where models train: auto (CUDA when present, else CPU), cpu or cuda"
    )
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)

    renamed: ClassVar[dict[str, str]] = {"corpus": "dataset", "validation_documents": "test_samples"}
    # the flat layout of model-collapse 0.1
    moved: ClassVar[dict[str, str]] = {
        "model": "model.preset",
        "dropout": "model.dropout",
        "block_size": "model.block_size",
        **{
            key: f"training.{key}"
            for key in (
                "batch_size",
                "learning_rate",
                "warmup_fraction",
                "weight_decay",
                "epochs",
                "evaluations_per_epoch",
                "precision",
                "compile",
                "checkpoint_minutes",
            )
        },
        **{key: f"sampling.{key}" for key in ("temperature", "top_k", "top_p", "prompt", "max_new_tokens")},
        "generation_batch_size": "sampling.batch_size",
    }

    @model_validator(mode="after")
    def _consistent(self):
        if self.dataset == "files" and not (self.train_file and self.validation_file):
            raise ValueError("dataset 'files' needs train_file and validation_file")
        if self.data_dir and self.dataset != "tinystories":
            raise ValueError(f"data_dir is for dataset 'tinystories' (dataset {self.dataset!r} takes train_file)")
        return self


class LanguageModelDeclaration(NeuralDeclaration[LanguageModelConfig]):
    """The language-model setting's declaration; ``setting.LanguageModel`` inherits it."""

    name = "language-model"
    Config = LanguageModelConfig
    metrics = {
        "test_cross_entropy": Metric("cross-entropy on real validation text (nats / token)"),
        # the diversity of sampled stories (diversity.py), drawn beside real text's
        "distinct_1": Metric("distinct-1 of sampled stories"),
        "distinct_2": Metric("distinct-2 of sampled stories"),
        "distinct_3": Metric("distinct-3 of sampled stories"),
        "distinct_4": Metric("distinct-4 of sampled stories"),
        "unigram_entropy": Metric("unigram entropy of sampled stories (nats)"),
        "mean_length": Metric("mean length of sampled stories (tokens)"),
        "repeated_4grams": Metric("share of 4-grams repeated within a story"),
    }
    capabilities = replace(NeuralDeclaration.capabilities, scores=("likelihood",))
    presentation = Presentation(preview_size=8)

    @classmethod
    def footprint(cls, config: LanguageModelConfig) -> Footprint:
        """The model's weights with their gradients and AdamW's two moments (16 bytes a parameter, the
        vocabulary included), and its activations where they are in this machine's memory (the larger
        of a training step's and sampling's key-value cache, ``transformer_activation_bytes``); corpora
        are token arrays a fraction of that, and synthetic ones memory-mapped."""
        family, width, layers, heads = preset_dimensions(config.model.preset)
        activations = 0
        if activations_on_host(config.device):
            activations = transformer_activation_bytes(
                family, width, layers, heads,
                rows=config.training.micro_batch_size or config.training.batch_size,
                length=config.model.block_size,
                sampled=config.sampling.batch_size,
                sampled_length=config.sampling.max_new_tokens + 1,
            )  # fmt: skip
        parameters = parameter_count(config.model.preset, config.vocab_size)
        return Footprint(config.samples or 1, 0, fixed_bytes=16 * parameters, activation_bytes=activations)


# The fields of a preset that give (width, layers, attention heads), by family.
DIMENSIONS = {
    "gpt2": ("n_embd", "n_layer", "n_head"),
    "llama": ("hidden_size", "num_hidden_layers", "num_attention_heads"),
}


def preset_dimensions(preset: str) -> tuple[str, int, int, int]:
    """(family, width, layers, attention heads) of a preset of ``models.py``."""
    family, fields = PRESETS[preset]
    width, layers, heads = (fields[k] for k in DIMENSIONS[family])
    return family, width, layers, heads


# float32 values a layer keeps per token and width for the backward pass, measured on the CPU (gpt2-9m, llama-12m,
# llama-42m): GPT-2's dropout keeps masks too. Families not measured are counted as GPT-2.
KEPT_PER_TOKEN = {"gpt2": 40, "llama": 18}


def transformer_activation_bytes(
    family: str, width: int, layers: int, heads: int, rows: int, length: int, sampled: int, sampled_length: int
) -> int:
    """What a decoder-only transformer holds beyond its weights, the larger of two moments: a training
    step on ``rows`` sequences of ``length`` tokens (per layer, ``KEPT_PER_TOKEN`` values per token and
    width, and three attention maps per head: PyTorch's CPU attention with dropout or a mask materialises
    them), and sampling ``sampled`` sequences of ``sampled_length`` tokens (their key-value cache). Within
    17% of the peak measured on the CPU for gpt2-9m (256 and 1,024 tokens), llama-12m and llama-42m."""
    per_token = KEPT_PER_TOKEN.get(family, KEPT_PER_TOKEN["gpt2"])
    training = 4 * layers * rows * length * (per_token * width + 3 * heads * length)
    sampling = 4 * layers * sampled * sampled_length * 2 * width
    return max(training, sampling)


def parameter_count(preset: str, vocabulary: int) -> int:
    """The parameters of ``preset`` with a vocabulary of ``vocabulary`` tokens, counted from its
    dimensions (models.py; equal to ``num_parameters()`` of the built model, tested)."""
    family, fields = PRESETS[preset]
    if family == "gpt2":  # tied embeddings; per layer: attention 4 d^2 + 4 d, MLP 8 d^2 + 5 d, two norms 4 d
        width, layers = fields["n_embd"], fields["n_layer"]
        return vocabulary * width + positions(preset) * width + layers * (12 * width**2 + 13 * width) + 2 * width
    width, layers, hidden = fields["hidden_size"], fields["num_hidden_layers"], fields["intermediate_size"]
    return 2 * vocabulary * width + layers * (4 * width**2 + 3 * width * hidden + 2 * width) + width  # Llama
