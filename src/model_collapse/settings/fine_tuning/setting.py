"""The ``fine-tuning`` setting: a pretrained causal language model fine-tuned at every iteration.

Each iteration starts from the pretrained weights in ``model.path`` (the protocol of Shumailov et al. and
of Kazdan et al.), fine-tunes them on its training set with the pretraining setting's loop
(``language_model/training.py``: AdamW, warm-up and cosine decay, resumable checkpoints, data parallel
under ``torchrun``), and is measured on the real held-out split. The model writes the next iteration's
data as its paper does (config.py): beam-search continuations of the real blocks, or unconditional
samples kept by the format filter. Generation runs in shards that are saved in the iteration's scratch
directory, so an interrupted run redoes only the shards it had not finished; under ``torchrun`` the ranks
take the shards in turn.

Generated data are also measured by a fixed model, the same at every iteration (``sampling.measured_by``):
the perplexity of each generated sequence, whose distribution Shumailov et al. draw as histograms, and the
share of it in the tail. Measured by the pretrained weights, the tail is what lies above the 95% quantile
of the real data's perplexities; measured by Shumailov et al.'s "first model trained with the real data"
(the pretrained weights fine-tuned once on the real training set, with the chains' recipe, kept in the
run's shared directory), it is what lies above the 95% quantile of what that first model writes itself:
sequences it would not write.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as transformers_logging

from ...activity import Meter
from ...distributed import all_gather, barrier, is_main, rank_and_world
from ...errors import ConfigError, ModelCollapseError, NoSamples, RunDirectoryError
from ...randomness import seed_rng
from ..base import Fit, Setting
from ..devices import resolve_device
from ..language_model.diversity import diversity
from ..language_model.sampling import stream_stories
from ..language_model.training import cross_entropy as mean_cross_entropy
from ..language_model.training import train
from ..neural.seeding import seeded_torch
from .beam_search import beam_continuations
from .config import FineTuningConfig, FineTuningDeclaration, check_context
from .data import (
    bundled_conversations,
    conversation_text,
    conversations,
    encode_conversations,
    text_blocks,
    text_lines,
    well_formed,
)
from .examples import IGNORE, ExampleBatches, Examples
from .pretrained import check_model_directory, context_length, load_causal_model, load_tokenizer
from .pretraining import made_once

transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()

_TAIL_QUANTILE = 0.95  # generated_perplexity_tail counts generated data above this quantile of the reference's


class _Data:
    """What every chain of a run shares: the tokenizer, the real splits and the original model."""

    def __init__(self, config: FineTuningConfig, directory: Path):
        fields = check_model_directory(directory)
        self.tokenizer = load_tokenizer(directory)
        self.original = load_causal_model(directory)
        self.positions = context_length(fields)
        tokenizer = self.tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else self.eos
        # an unconditional sample starts from BOS, or from EOS where there is none (GPT-2's is both)
        self.start = int(tokenizer.bos_token_id) if tokenizer.bos_token_id is not None else self.eos
        self.train, self.held_out = (self._split(config, split) for split in ("train", "held-out"))
        if not len(self.train) or not len(self.held_out):
            empty = "training" if not len(self.train) else "held-out"
            raise ConfigError(
                f"setting.data_dir: the {empty} split gives no examples"
                + (
                    f" of {config.block_size} tokens"
                    if config.format == "text"
                    else f" of {config.max_length} tokens at most"
                )
            )

    def _split(self, config: FineTuningConfig, split: str) -> Examples:
        if config.data_dir is None:  # the bundled text (Moby-Dick) that the pretraining setting reads too
            from ..language_model.corpus import load_documents

            lines = load_documents("moby-dick", "train" if split == "train" else "validation")
            if config.format == "prompt-response":
                pairs = [conversation_text(prompt, response) for prompt, response in bundled_conversations(lines)]
                return encode_conversations(self.tokenizer, pairs, config.max_length, config.train_on, self.start)
            return text_blocks(self.tokenizer, [line + "\n" for line in lines], config.block_size)
        directory = Path(config.data_dir).expanduser()  # (data.py names a directory that is not one)
        if config.format == "text":
            return text_blocks(self.tokenizer, text_lines(directory, split), config.block_size)
        pairs = [conversation_text(prompt, response) for prompt, response in conversations(directory, split)]
        return encode_conversations(self.tokenizer, pairs, config.max_length, config.train_on, self.start)


_SHARED: dict[tuple, _Data] = {}  # a sweep's chains in one process read the model and data once


def _pretrained_directory(config: FineTuningConfig, shared: Path | None) -> Path:
    if config.model.pretrain is None:
        return Path(config.model.path or "").expanduser()
    from .pretraining import pretrained_once

    return pretrained_once(config.model.pretrain, shared)


class FineTuning(FineTuningDeclaration, Setting[FineTuningConfig, Examples]):
    def __init__(self, config: FineTuningConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        self.device = resolve_device(config.device)
        # the model and data are read on first use, once ``shared`` is set (a pretrained model lives there)

    @cached_property
    def _data(self) -> _Data:
        directory = _pretrained_directory(self.config, self.shared)
        key = (
            str(directory.resolve()),
            self.config.format,
            self.config.data_dir,
            self.config.block_size,
            self.config.max_length,
            self.config.train_on,
        )
        if key not in _SHARED:
            _SHARED.clear()  # one data set at a time: a model is hundreds of MB
            _SHARED[key] = _Data(self.config, directory)
        data = _SHARED[key]
        self._check_context(data)
        return data

    def _check_context(self, data: _Data) -> None:
        check_context(self.config, data.positions)
        c = self.config
        size = c.samples or len(data.train)
        if size > len(data.train):
            raise ConfigError(f"setting.samples: the training split has {len(data.train)} examples, asked for {size}")

    @cached_property
    def _held_out(self) -> ExampleBatches:
        data = self._data
        count = self.config.test_samples or len(data.held_out)
        return ExampleBatches([data.held_out.head(count)], data.pad)

    @cached_property
    def _prompts(self) -> tuple[int, np.ndarray]:
        """The evaluation's random seed and its prompts (real training blocks, for beam search)."""
        rng = seed_rng(self.seeds[0], "evaluate")
        count = min(self.config.sampling.evaluation_samples, len(self.real_train))
        rows = np.sort(rng.choice(len(self.real_train), count, replace=False))
        return int(rng.integers(2**63)), rows

    @cached_property
    def _references(self) -> dict[str, float]:
        """The real data's values of the generated-data metrics (their perplexities under the measuring
        model, and diversity), and the perplexity above which a written sequence is in the tail."""
        _, rows = self._prompts
        if not len(rows):
            return {}
        real = Examples.select([self.real_train], rows[None])
        perplexities = self._perplexities(self._measuring_model, real)
        if self.config.sampling.measured_by == "fine-tuned":  # above what the first model writes itself
            threshold = float(np.quantile(self._write(self._measuring_model)[2], _TAIL_QUANTILE))
        else:
            threshold = float(np.quantile(perplexities, _TAIL_QUANTILE))
        return {
            "generated_perplexity_q05": float(np.quantile(perplexities, 0.05)),
            "generated_perplexity_median": float(np.median(perplexities)),
            "generated_perplexity_q95": float(np.quantile(perplexities, _TAIL_QUANTILE)),
            "generated_perplexity_tail": 1 - _TAIL_QUANTILE,
            "tail_threshold": threshold,
            **self._diversity(real),
        }

    @cached_property
    def _measuring_model(self):
        """The model every iteration's written sequences are measured by (``sampling.measured_by``)."""
        if self.config.sampling.measured_by == "pretrained":
            return self._data.original
        return self._first_fine_tuned()

    def _first_fine_tuned(self):
        """The pretrained weights fine-tuned on the real training set as iteration 1 is (Shumailov et
        al.'s gen-0 model), from a stream of its own: made once per run and seed, kept in the run's shared
        directory (trained again if its copy cannot be read; the same weights, the stream being fixed)."""

        def train():
            return self._train([self.real_train], seed_rng(self.seeds[0], "first fine-tuned"))[0]

        if self.shared is None:
            return train()
        settings = self.config.model_dump(mode="json", exclude={"sampling", "device"})
        key = hashlib.sha256(json.dumps({"setting": settings, "seed": self.seeds[0]}, sort_keys=True).encode())
        target = self.shared / f"first-fine-tuned-{key.hexdigest()[:12]}"
        if (target / "config.json").is_file():
            try:
                return load_causal_model(target, RunDirectoryError).to(self.device)
            except RunDirectoryError:  # made again below, in its place
                if is_main():
                    shutil.rmtree(target, ignore_errors=True)
                barrier()
        trained = []  # empty if another chain put it in place first

        def make(work: Path) -> None:
            trained.append(train())
            trained[0].save_pretrained(work)

        made_once(target, make)
        return trained[0] if trained else load_causal_model(target, RunDirectoryError).to(self.device)

    # -- data -------------------------------------------------------------------------------------
    @property
    def real_train(self) -> Examples:
        return self._data.train.head(self.config.samples or len(self._data.train))

    def fresh_real(self, size: int, rng: np.random.Generator) -> Examples:
        data, used = self._data, len(self.real_train)
        if size > len(data.train) - used:
            raise ModelCollapseError(
                f"fresh-real needs {size} unused real examples per iteration, the training split has "
                f"{len(data.train) - used} beyond the training set: lower setting.samples"
            )
        rows = used + np.sort(rng.choice(len(data.train) - used, size, replace=False))
        return Examples.select([data.train], rows[None])

    def preview(self, data: Examples) -> np.ndarray:
        return np.array(
            [
                self._data.tokenizer.decode(data.example(i), skip_special_tokens=True)
                for i in range(min(len(data), self.presentation.preview_size))
            ]
        )

    # -- model ------------------------------------------------------------------------------------
    def _pretrained(self):
        """A copy of the pretrained model (``_data`` holds it already: no reading from disk per fit)."""
        return copy.deepcopy(self._data.original)

    def fit(
        self, parts: Sequence[Examples], rng: np.random.Generator, scratch: Path | None = None, previous=None
    ) -> Fit:
        model, curve = self._train(parts, rng, scratch, previous)
        # each written sequence's perplexity under the measuring model (Shumailov et al.'s histograms)
        perplexities = [round(float(p), 6) for p in self._written(model)[2]]
        diagnostics = {"learning_curve": curve, "reference": self._references, "generated_perplexity": perplexities}
        return Fit(model, diagnostics)

    def _train(self, parts: Sequence[Examples], rng: np.random.Generator, scratch: Path | None = None, previous=None):
        """The fine-tuned model and its learning curve."""
        # every iteration starts from the pretrained weights (the papers' protocol), or with
        # training.warm_start from the last iteration's model
        model = copy.deepcopy(previous) if previous is not None else self._pretrained()
        batches = ExampleBatches(parts, self._data.pad)
        # dropout draws from torch's global generator: seed it for the whole fit
        with seeded_torch(rng, self.device):
            adapted = _with_adapters(model, self.config.lora) if self.config.lora is not None else None
            trained = adapted.get_base_model() if adapted is not None else model  # the adapters inside
            curve = train(
                trained, batches, self._held_out, self.config.training, rng, self.device, checkpoint_directory=scratch
            )
        if adapted is not None:  # merged into the weights: what is saved and sampled is a plain model
            model = adapted.merge_and_unload()
        return model, curve

    def sample(self, model, size: int, rng: np.random.Generator, scratch: Path | None = None) -> Examples:
        """``size`` examples written by ``model``: the beam-search continuations of ``size`` real blocks
        (all of them, in order, when ``size`` is the training set's), or well-formed unconditional samples."""
        model.to(self.device)
        if self.config.sampling.method == "beam":
            real = self.real_train
            rows = (
                np.arange(size) if size == len(real) else np.sort(rng.choice(len(real), size, replace=size > len(real)))
            )
            return self._continuations(model, Examples.select([real], rows[None]), scratch)
        return self._conversations(model, size, rng, scratch)

    def _continuations(self, model, prompts: Examples, scratch: Path | None) -> Examples:
        g = self.config.sampling
        block = self.config.block_size
        tokens = np.asarray(prompts.tokens[prompts.offsets[0] : prompts.offsets[-1]], dtype=np.int64).reshape(-1, block)
        shards = [range(start, min(start + g.batch_size, len(tokens))) for start in range(0, len(tokens), g.batch_size)]
        meter = Meter("generating", len(tokens), "blocks") if scratch is not None else None

        def shard(index: int) -> Examples:
            batch = torch.from_numpy(tokens[shards[index].start : shards[index].stop]).to(self.device)
            continued = beam_continuations(
                model, batch, g.new_tokens, g.num_beams, g.repetition_penalty, [self._data.eos]
            )
            return Examples.from_sequences(list(continued.cpu().numpy()), np.zeros(len(batch), dtype=np.int64))

        return Examples.concatenate(_sharded(len(shards), shard, scratch, "blocks", meter))

    def _conversations(self, model, size: int, rng: np.random.Generator, scratch: Path | None) -> Examples:
        """Unconditional samples, in rounds, until ``size`` are well formed (the follow-up's filter)."""
        g = self.config.sampling
        seeds = rng.integers(2**63, size=g.attempts)
        kept: list[Examples] = []
        have = drawn = 0
        for attempt, seed in enumerate(seeds):
            need = size - have
            if need <= 0:
                break
            # the first round draws as many as needed; later ones, what the acceptance so far suggests
            count = need if not drawn else min(64 * need, int(need * drawn / max(have, 1) * 1.2) + 1)
            directory = scratch / f"round_{attempt:03d}" if scratch is not None else None
            found = self._samples(model, count, int(seed), directory)
            drawn += count
            kept.append(found.head(need))
            have += min(len(found), need)
        if have < size:
            raise NoSamples(
                f"the model wrote {have} well-formed samples ('user: ...' with one 'assistant: ') in {drawn} draws, "
                f"{size} were needed: raise sampling.attempts, or start from a model that writes conversations"
            )
        return Examples.concatenate(kept)

    def _samples(self, model, count: int, seed: int, scratch: Path | None) -> Examples:
        """The well-formed ones of ``count`` unconditional samples from ``seed``."""
        g, data = self.config.sampling, self._data
        shards = [min(g.batch_size, count - start) for start in range(0, count, g.batch_size)]

        def shard(index: int) -> Examples:
            generator = torch.Generator(device=self.device).manual_seed(seed + index)
            prompts = torch.full((shards[index], 1), data.start, dtype=torch.long, device=self.device)
            texts = []
            for _, story in stream_stories(
                model, prompts, g.max_new_tokens, data.eos, generator, g.temperature, batch_size=shards[index]
            ):
                texts.append(data.tokenizer.decode(story[1:], skip_special_tokens=True))
            pairs = [pair for pair in map(well_formed, texts) if pair is not None]
            return encode_conversations(data.tokenizer, pairs, self.config.max_length, self.config.train_on, data.start)

        return Examples.concatenate(_sharded(len(shards), shard, scratch, "samples"))

    def evaluate(self, model) -> dict[str, np.ndarray]:
        t = self.config.training
        loss = mean_cross_entropy(model, self._held_out, t.batch_size, self.device, t.precision)
        metrics = {"test_cross_entropy": loss, "test_perplexity": float(np.exp(loss)), **self._generated(model)}
        return {name: np.array([value]) for name, value in metrics.items()}

    def _written(self, model) -> tuple[Examples, float, np.ndarray]:
        """The ``sampling.evaluation_samples`` sequences ``model`` writes from the same prompts or random
        stream at every iteration (so that differences are the model's), the share of them kept by the
        format filter, and their perplexities under the measuring model. Kept for the last model: ``fit``
        records the perplexities, ``evaluate`` measures the same sequences."""
        memo = self.__dict__.get("_written_memo")
        if memo is None or memo[0] is not model:
            self._written_memo = memo = (model, self._write(model))
        return memo[1]

    def _write(self, model) -> tuple[Examples, float, np.ndarray]:
        """``_written``, not kept."""
        seed, rows = self._prompts
        model.to(self.device)
        if not len(rows):
            written, share = Examples.from_sequences([], np.zeros(0, dtype=np.int64)), float("nan")
        elif self.config.sampling.method == "beam":
            written, share = self._continuations(model, Examples.select([self.real_train], rows[None]), None), 1.0
        else:
            written = self._samples(model, len(rows), seed, None)
            share = len(written) / len(rows)
        perplexities = self._perplexities(self._measuring_model, written) if len(written) else np.zeros(0)
        return written, share, perplexities

    def _generated(self, model) -> dict[str, float]:
        """The generated-data metrics: ``_written``'s perplexities under the measuring model and diversity."""
        names = [name for name in self.metrics if name.startswith(("generated", "well_formed", "distinct", "repeated"))]
        written, share, perplexities = self._written(model)
        if not len(written):
            return {**dict.fromkeys(names, float("nan")), "well_formed": share}
        threshold = self._references["tail_threshold"]
        return {
            "generated_perplexity_q05": float(np.quantile(perplexities, 0.05)),
            "generated_perplexity_median": float(np.median(perplexities)),
            "generated_perplexity_q95": float(np.quantile(perplexities, _TAIL_QUANTILE)),
            "generated_perplexity_tail": float(np.mean(perplexities > threshold)),
            "well_formed": share,
            **self._diversity(written),
        }

    @staticmethod
    def _diversity(examples: Examples) -> dict[str, float]:
        measured = diversity([examples.example(i) for i in range(len(examples))])
        return {name: measured[name] for name in ("distinct_2", "distinct_4", "repeated_4grams")}

    @torch.no_grad()
    def _mean_log_probabilities(self, model, examples: Examples, whole: bool) -> np.ndarray:
        """Each example's mean log-probability per predicted token under ``model``: of every token after
        the first (``whole``), or of its targets (the response of a conversation)."""
        model.to(self.device).eval()
        parts = [
            examples if not whole else Examples(examples.tokens, examples.offsets, np.zeros(len(examples), np.int64))
        ]
        batches = ExampleBatches(parts, self._data.pad)
        result = np.empty(len(examples))
        size = max(1, min(self.config.training.batch_size, 16))
        for start in range(0, len(examples), size):
            inputs, targets = (
                torch.from_numpy(a).to(self.device)
                for a in batches.batch(range(start, min(start + size, len(examples))))
            )
            logits = model(input_ids=inputs).logits.float()
            valid = targets != IGNORE
            chosen = torch.log_softmax(logits, dim=-1).gather(2, targets.clamp(min=0)[:, :, None])[:, :, 0]
            sums = (chosen * valid).sum(1) / valid.sum(1).clamp(min=1)
            result[start : start + len(inputs)] = sums.cpu().numpy()
        return result

    def _perplexities(self, model, examples: Examples) -> np.ndarray:
        return np.exp(-self._mean_log_probabilities(model, examples, whole=True))

    def score(self, name: str, model, samples: Examples) -> np.ndarray:
        """``likelihood``: each sample's mean log-probability per target token under the model that wrote
        it; ``original-likelihood``: the same under the original pretrained model."""
        judge = self._data.original if name == "original-likelihood" else model
        return self._mean_log_probabilities(judge, samples, whole=False)[None]

    # -- storage ----------------------------------------------------------------------------------
    def save_model(self, model, directory: Path) -> None:
        model.save_pretrained(directory)

    def load_model(self, directory: Path):
        return load_causal_model(directory, RunDirectoryError).to(self.device)


def _with_adapters(model, lora):
    """``model`` with LoRA adapters (``peft``), only they trainable; initialised from torch's generator."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from ..registry import install_hint

        raise ConfigError(f"setting.lora needs peft: install it with {install_hint('lora')}") from None
    options = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft's notes on GPT-2's Conv1D layers and deprecated names
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return get_peft_model(model, options)
    except ValueError as error:  # peft's word for an architecture it has no default layers for
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"setting.lora: {first}; name the layers in setting.lora.target_modules") from None


def _shard_path(scratch: Path, kind: str, index: int) -> Path:
    return scratch / f"{kind}_{index:05d}"


def _sharded(
    count: int, compute: Callable[[int], Examples], scratch: Path | None, kind: str, meter: Meter | None = None
) -> list[Examples]:
    """``compute(i)`` for every shard ``i``, those an interrupted run saved in ``scratch`` read back;
    under ``torchrun`` the ranks take the shards in turn and gather them (call it on every rank)."""
    shards: dict[int, Examples | None] = {}
    for index in range(count):
        shards[index] = None
        if scratch is not None and _shard_path(scratch, kind, index).is_dir():
            try:
                shards[index] = Examples.load(_shard_path(scratch, kind, index))
            except RunDirectoryError:  # unreadable: computed again
                shards[index] = None
    todo = [index for index, shard in shards.items() if shard is None]
    rank, world = rank_and_world()
    for first in range(0, len(todo), world):
        group = todo[first : first + world]
        mine = compute(group[rank]) if rank < len(group) else None
        for index, shard in zip(group, all_gather(mine)):
            shards[index] = shard
            if scratch is not None and rank == 0:
                _write_shard(_shard_path(scratch, kind, index), shard)
            if meter is not None:
                meter.advance(len(shard))
    if meter is not None:
        meter.close()
    return [shard for shard in shards.values() if shard is not None]


def _write_shard(path: Path, shard: Examples) -> None:
    from ...atomic import write_directory_atomic

    write_directory_atomic(path, shard.save)
