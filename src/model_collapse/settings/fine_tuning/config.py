"""What the fine-tuning setting is (its config, metrics and how it runs), readable without PyTorch or
transformers: ``table``, ``plot`` and config validation need only this.

Two protocols of the field, one setting:

* Shumailov et al. (*AI models collapse when trained on recursively generated data*, Nature 2024):
  ``format: text``. wikitext-2 cut into 64-token blocks; each iteration fine-tunes the pretrained model
  (AdamW, 2e-5, cosine to 1e-6, 5 epochs, batches of 16) and writes the next iteration's blocks as the
  64-token beam-search continuations (5 beams, repetition penalty 3.0) of the real blocks.
* Kazdan et al. (*Collapse or Thrive?*, 2025): ``format: prompt-response``. HelpSteer2 conversations as
  ``user: {prompt}\\nassistant: {response}`` + EOS (at most 512 tokens); full fine-tuning from the base
  checkpoint (8e-6, constant after 5% warm-up, one epoch, batches of 128); synthetic conversations
  sampled unconditionally at temperature 1 and kept only when well formed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ...errors import ConfigError
from ..base import Footprint, Metric, Presentation, activations_on_host
from ..configs import SettingConfig, StrictConfig
from ..language_model.config import (
    TrainingSection,
    parameter_count,
    preset_dimensions,
    transformer_activation_bytes,
)
from ..neural import NeuralDeclaration


class Pretraining(StrictConfig):
    """A small model pretrained once per run on the bundled Moby-Dick by the ``language-model`` setting and
    kept in the run directory (``shared/``), for runs that have no pretrained checkpoint (CPU runs, tests)."""

    preset: str = Field("gpt2-tiny", description="the architecture (language_model/models.py)")
    vocab_size: PositiveInt = Field(2000, description="its byte-level BPE tokenizer's vocabulary")
    block_size: PositiveInt = Field(128, description="tokens per pretraining block")
    samples: PositiveInt | None = Field(None, description="paragraphs pretrained on (default: the training split)")
    batch_size: PositiveInt = Field(16, description="blocks per optimiser step")
    learning_rate: PositiveFloat = Field(2e-3, description="AdamW's peak learning rate")
    epochs: PositiveInt = Field(2, description="epochs of pretraining")
    seed: NonNegativeInt = Field(0, description="the seed of its initialisation and batch order")


class PretrainedModel(StrictConfig):
    """The model every iteration starts from: a local checkpoint, or one pretrained for the run."""

    path: str | None = Field(
        None, description="a Hugging Face causal LM in a local directory (save_pretrained's layout, with its tokenizer)"
    )
    pretrain: Pretraining | None = Field(None, description="instead of path: pretrain a small model once per run")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.pretrain is None):
            raise ValueError("give model.path (a local checkpoint) or model.pretrain, one of them")
        return self


class LoRA(StrictConfig):
    """Low-rank adapters (Hu et al. 2022) through ``peft`` (``pip install -e ".[lora]"``): only the adapters
    train, and they are merged into the weights after each fit, so a saved model is a plain checkpoint."""

    rank: PositiveInt = Field(8, description="the adapters' rank r")
    alpha: PositiveFloat = Field(16.0, description="their scale alpha (the update is alpha / r * B A)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None, description="names of the layers adapted (null: peft's default for the architecture)"
    )


class FineTuningTraining(TrainingSection):
    """How each iteration fine-tunes (AdamW; warm-up, then cosine decay to a fraction of the peak).
    The defaults are Shumailov et al.'s: learning rate 2e-5 decayed to 1e-6 over 5 epochs, batches of 16."""

    batch_size: PositiveInt = Field(16, description="examples per optimiser step (and per evaluation batch)")
    learning_rate: PositiveFloat = Field(2e-5, description="AdamW's peak learning rate")
    final_learning_rate_ratio: float = Field(
        0.05, ge=0, le=1, description="cosine decays to this fraction of the peak (1: constant after warm-up)"
    )
    warmup_fraction: float = Field(0.0, ge=0, le=1, description="share of the steps of linear warm-up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW's weight decay (not on biases and norms)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's betas")
    epochs: PositiveInt = Field(5, description="epochs per fit")
    evaluations_per_epoch: PositiveInt = Field(1, description="test-loss points of the learning curve per epoch")


class Sampling(StrictConfig):
    """How a fine-tuned model writes the next iteration's data."""

    method: Literal["beam", "sample"] = Field(
        "beam",
        description="beam: each real block prompts a beam-search continuation of new_tokens tokens (Shumailov "
        "et al.; format text); sample: documents sampled from an empty prompt (Kazdan et al.)",
    )
    new_tokens: PositiveInt = Field(64, description="beam: tokens per continuation (exactly; a new block)")
    num_beams: PositiveInt = Field(5, description="beam: beams per prompt")
    repetition_penalty: PositiveFloat = Field(
        3.0, description="beam: tokens already in the sequence have their log-probability multiplied by this"
    )
    temperature: PositiveFloat = Field(1.0, description="sample: the sampling temperature")
    max_new_tokens: PositiveInt = Field(512, description="sample: tokens per sample at most (it also ends at EOS)")
    attempts: PositiveInt = Field(
        20, description="sample: rounds of sampling at most to find enough well-formed samples before giving up"
    )
    batch_size: PositiveInt = Field(64, description="prompts (beam) or samples (sample) generated at once")
    evaluation_samples: NonNegativeInt = Field(
        64,
        description="generated at each evaluation, from the same prompts and random stream every iteration, "
        "for the generated-data metrics (0: none)",
    )
    measured_by: Literal["pretrained", "fine-tuned"] = Field(
        "pretrained",
        description="the model that measures generated data's perplexity: the pretrained weights (the tail: "
        "above real data's 95% quantile), or Shumailov et al.'s 'first model trained with the real data', the "
        "pretrained weights fine-tuned once on the real training set and kept in RUN/shared/ (the tail: above "
        "the 95% quantile of what that model writes)",
    )


class FineTuningConfig(SettingConfig):
    name: Literal["fine-tuning"] = "fine-tuning"
    model: PretrainedModel
    format: Literal["text", "prompt-response"] = Field(
        "text",
        description="text: wikitext-2, cut into blocks; prompt-response: HelpSteer2's conversations",
    )
    data_dir: str | None = Field(
        None,
        description="text: the Hub's wikitext-2-raw-v1 parquet files or wiki.{train,valid,test}.raw; "
        "prompt-response: HelpSteer2's {train,validation}.jsonl.gz or parquet files (null: the bundled Moby-Dick, "
        "as blocks, or as 'continue the passage that begins: ...' prompts with the passage as the response)",
    )
    block_size: PositiveInt = Field(64, description="text: tokens per block")
    max_length: PositiveInt = Field(512, description="prompt-response: longer examples (in tokens) are dropped")
    train_on: Literal["all", "response"] = Field(
        "all",
        description="prompt-response: the tokens the loss counts (in training and on the held-out set): all, as "
        "SFT on a text field does (an unconditional sample must write the prompt too), or the response and EOS",
    )
    samples: PositiveInt | None = Field(None, description="T: real training blocks or examples (default: all)")
    test_samples: PositiveInt | None = Field(None, description="held-out blocks or examples used (default: all)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where models train: auto (CUDA when present, else CPU), cpu or cuda"
    )
    lora: LoRA | None = Field(None, description="fine-tune low-rank adapters instead of every weight (null: full)")
    training: FineTuningTraining = Field(default_factory=FineTuningTraining)
    sampling: Sampling = Field(default_factory=Sampling)

    renamed: ClassVar[dict[str, str]] = {"test_examples": "test_samples", "generation": "sampling"}

    @model_validator(mode="after")
    def _consistent(self):
        if self.sampling.method == "beam" and self.format != "text":
            raise ValueError("sampling.method 'beam' continues real blocks: it needs format 'text'")
        if self.sampling.method == "beam" and self.sampling.new_tokens != self.block_size:
            raise ValueError(
                f"sampling.new_tokens ({self.sampling.new_tokens}) must equal block_size ({self.block_size}): "
                "each continuation is a training block"
            )
        return self


GENERATED = ("generated_perplexity_q05", "generated_perplexity_median", "generated_perplexity_q95")


class FineTuningDeclaration(NeuralDeclaration[FineTuningConfig]):
    """The fine-tuning setting's declaration; ``setting.FineTuning`` inherits it."""

    name = "fine-tuning"
    Config = FineTuningConfig
    metrics = {
        "test_cross_entropy": Metric("cross-entropy on real held-out text (nats / token)"),
        "test_perplexity": Metric("perplexity on real held-out text", log_scale=True),
        # what the model writes, measured by the pretrained model or the first model fine-tuned on real data
        # (sampling.measured_by; Shumailov et al.'s histograms)
        "generated_perplexity_q05": Metric("5% quantile of generated data's perplexity (measuring model)"),
        "generated_perplexity_median": Metric("median perplexity of generated data (measuring model)"),
        "generated_perplexity_q95": Metric("95% quantile of generated data's perplexity (measuring model)"),
        "generated_perplexity_tail": Metric("share of generated data above the reference's 95% perplexity quantile"),
        "well_formed": Metric("share of generated samples kept by the format filter"),
        "distinct_2": Metric("distinct-2 of generated data"),
        "distinct_4": Metric("distinct-4 of generated data"),
        "repeated_4grams": Metric("share of 4-grams repeated within a generated sample"),
    }
    capabilities = replace(NeuralDeclaration.capabilities, scores=("likelihood", "original-likelihood"))
    presentation = Presentation(
        preview_size=6,
        learning_curve_axes=("epoch", "epoch", "validation_loss", "held-out loss (nats / token)"),
        distributions={"generated_perplexity": "perplexity of the written sequences under the measuring model"},
    )

    @classmethod
    def check_inputs(cls, config: FineTuningConfig) -> None:
        """The checkpoint (a causal language model with its tokenizer, whose context holds what the config
        trains on and writes) and the data files, read without loading a weight."""
        from .data import check_data_files
        from .pretrained import check_model_directory, context_length

        if config.model.path is not None:
            fields = check_model_directory(Path(config.model.path).expanduser())
            check_context(config, context_length(fields))
        if config.data_dir is not None:
            check_data_files(Path(config.data_dir).expanduser(), text=config.format == "text")

    @classmethod
    def footprint(cls, config: FineTuningConfig) -> Footprint | None:
        """Where the model trains in this machine's memory: the trained copy with its gradients and
        AdamW's two moments (16 bytes a parameter), the original model every fit starts from and every
        written sequence is measured by (4), and the activations of a training step or of generation
        (``transformer_activation_bytes``); on a GPU, the original model alone. None when the checkpoint
        cannot be read yet (the setting then says what is wrong with it)."""
        model = model_dimensions(config)
        if model is None:
            return None
        family, parameters, width, layers, heads = model
        g = config.sampling
        length = config.block_size if config.format == "text" else config.max_length
        row = length * 4 + 16  # an example: its tokens (uint32) and two offsets
        if not activations_on_host(config.device):  # the original model, kept on the host to copy from
            return Footprint(config.samples or 1, row, fixed_bytes=4 * parameters, fields=("model.path",))
        measuring = 4 * parameters if config.sampling.measured_by == "fine-tuned" else 0  # a second model
        adapters = 0
        if config.lora is not None:  # r x (in + out) per adapted matrix: two per layer unless named
            matrices = len(config.lora.target_modules or ()) or 2
            adapters = 16 * config.lora.rank * 2 * width * matrices * layers  # trained: weights, grads, AdamW
        written = (
            (g.batch_size * g.num_beams, 2 * config.block_size)
            if g.method == "beam"
            else (g.batch_size, g.max_new_tokens)
        )
        activations = transformer_activation_bytes(
            family, width, layers, heads,
            rows=config.training.micro_batch_size or config.training.batch_size,
            length=length, sampled=written[0], sampled_length=written[1],
        )  # fmt: skip
        fields = ("lora.rank",) if adapters > 20 * parameters else ("model.path", "training.batch_size")
        return Footprint(
            config.samples or 1,
            row,
            fixed_bytes=20 * parameters + measuring + adapters,
            activation_bytes=activations,
            fields=fields,
        )


# config.json's names of (width, layers, attention heads) across Hugging Face architectures
_WIDTH, _LAYERS, _HEADS = (
    ("hidden_size", "n_embd", "d_model"),
    ("num_hidden_layers", "n_layer"),
    ("num_attention_heads", "n_head"),
)
_BYTES_PER_VALUE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def model_dimensions(config: FineTuningConfig) -> tuple[str, int, int, int, int] | None:
    """(family, parameters, width, layers, heads) of the model the chains start from: a preset's, or read
    from the checkpoint's config.json, its parameters counted from the size of its weight files and the
    dtype they are stored in. None when the checkpoint is missing or unreadable."""
    if config.model.pretrain is not None:
        pretrain = config.model.pretrain
        family, width, layers, heads = preset_dimensions(pretrain.preset)
        return family, parameter_count(pretrain.preset, pretrain.vocab_size), width, layers, heads
    directory = Path(str(config.model.path)).expanduser()
    try:
        fields = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        weights = sum(f.stat().st_size for f in directory.iterdir() if f.suffix in (".safetensors", ".bin"))
    except (OSError, ValueError):
        return None
    if not isinstance(fields, dict):
        return None
    dimensions = [
        next((fields[k] for k in names if isinstance(fields.get(k), int)), None) for names in (_WIDTH, _LAYERS, _HEADS)
    ]
    if None in dimensions:
        return None
    width, layers, heads = (int(d) for d in dimensions)  # type: ignore[arg-type]
    parameters = weights // _BYTES_PER_VALUE.get(str(fields.get("torch_dtype", "float32")), 4)
    return str(fields.get("model_type", "")), parameters, width, layers, heads


def check_context(config: FineTuningConfig, positions: int) -> None:
    """That the longest sequence ``config`` trains on or writes fits the model's ``positions``."""
    g = config.sampling
    if config.format == "prompt-response" and config.max_length > positions:
        raise ConfigError(f"setting.max_length {config.max_length} exceeds the model's context of {positions} tokens")
    longest = config.block_size + g.new_tokens if g.method == "beam" else 1 + g.max_new_tokens
    if longest > positions:
        what = "block_size + sampling.new_tokens" if g.method == "beam" else "1 + sampling.max_new_tokens"
        raise ConfigError(f"setting: {what} = {longest} exceeds the model's context of {positions} tokens")
