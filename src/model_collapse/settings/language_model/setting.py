"""The ``language-model`` setting: causal transformers pretrained from scratch, one per iteration.

Data are token corpora (documents = stories). The tokenizer is trained once per corpus on the real
training split and cached. Each iteration trains a fresh model for ``epochs`` passes over its packed
training set, evaluates the cross-entropy on the real validation split, and - when asked for synthetic
data - samples stories prompted with BOS and the first token of a random real training story (the
paper's ``first_token_inclusive``) or with BOS alone, at ``temperature``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as transformers_logging

from ...activity import Meter
from ...atomic import write_directory_atomic
from ...distributed import all_gather, rank_and_world
from ...errors import ModelCollapseError, RunDirectoryError
from ...randomness import seed_rng
from ..base import Fit, Setting
from ..devices import resolve_device
from ..neural.seeding import generator as torch_generator
from ..neural.seeding import seeded_torch
from .config import LanguageModelConfig, LanguageModelDeclaration
from .corpus import load_documents
from .diversity import NAMES as DIVERSITY
from .diversity import diversity
from .models import build_model, dropout_overrides
from .packing import TOKEN_DTYPE, TokenCorpus, pack
from .sampling import story_prompts, stream_stories
from .tokenizer import cache_key, cached_tokenizer
from .training import cross_entropy, train

# Our own progress bars report training; transformers' would interleave with them. Its warning that
# EOS (= pad) tokens appear in inputs does not apply: packed blocks are meant to contain them.
transformers_logging.set_verbosity_error()
transformers_logging.disable_progress_bar()


# Stories per sampling shard, in batches: large enough that the slots of the last batch of a shard,
# which empty as its stories end, waste little (about 1/32 of a shard's steps); small enough that an
# interrupted run loses little.
SHARD_BATCHES = 16


def _shard_directory(scratch: Path, index: int) -> Path:
    return scratch / f"samples_{index:05d}"


def _load_shard(scratch: Path | None, index: int, stories: int) -> TokenCorpus | None:
    """A shard of ``stories`` stories an interrupted run finished, or None (also for an unreadable or
    foreign one: it is sampled again)."""
    if scratch is None or not _shard_directory(scratch, index).is_dir():
        return None
    try:
        shard = TokenCorpus.load(_shard_directory(scratch, index))
    except RunDirectoryError:
        return None
    return shard if len(shard) == stories and int(shard.offsets[-1]) == len(shard.tokens) else None


class LanguageModel(LanguageModelDeclaration, Setting[LanguageModelConfig, TokenCorpus]):
    def __init__(self, config: LanguageModelConfig, seeds: Sequence[int]):
        super().__init__(config, seeds)
        self.device = resolve_device(config.device)
        files = {"train": config.train_file, "validation": config.validation_file}
        train_documents = load_documents(config.dataset, "train", files, config.separator, config.data_dir)
        validation_documents = load_documents(config.dataset, "validation", files, config.separator, config.data_dir)
        size = config.samples or len(train_documents)
        if size > len(train_documents):
            raise ModelCollapseError(
                f"setting.samples: the corpus has {len(train_documents)} training documents, asked for {size}"
            )
        # (the tokenizer cache is keyed by this text: "corpus", the field's earlier name, keeps its keys)
        corpus_description = {"corpus": config.dataset, "files": files, "separator": config.separator}
        if config.data_dir:  # a local copy of a corpus is its own corpus to the tokenizer cache
            corpus_description["data_dir"] = str(Path(config.data_dir).expanduser().resolve())
        self.tokenizer = cached_tokenizer(
            Path(config.tokenizer_cache).expanduser(),
            cache_key(corpus_description, config.vocab_size),
            lambda: train_documents,  # the whole real training split, whatever T is: one tokenizer per corpus
            config.vocab_size,
        )
        self.eos = self.tokenizer.eos_token_id
        self._real = self._encode(train_documents[:size])
        nonempty = np.flatnonzero(np.diff(self._real.offsets) > 0)
        self._first_tokens = self._real.tokens[self._real.offsets[nonempty]]  # the prompts of first-token sampling
        self._reserve = train_documents[size:]  # never trained on: the source of fresh real documents
        validation = self._encode(validation_documents[: config.test_samples])
        self.validation = pack(validation, config.model.block_size, self.eos, self.eos)
        # Sampled stories' diversity is compared with real stories': as many, cut at the samples' length.
        self._evaluation_seed = int(seed_rng(self.seeds[0], "evaluate").integers(2**63))
        stories = config.sampling.evaluation_stories
        longest = 1 + config.sampling.max_new_tokens  # a sample's first token, then what was generated
        real = [validation.document(i)[:longest] for i in range(min(stories, len(validation)))]
        self.reference = diversity(real) if stories else {}

    def _encode(self, documents: Sequence[str]) -> TokenCorpus:
        return TokenCorpus.from_documents(self.tokenizer(list(documents), add_special_tokens=False)["input_ids"])

    # -- data -------------------------------------------------------------------------------------
    @property
    def real_train(self) -> TokenCorpus:
        return self._real

    def fresh_real(self, size: int, rng: np.random.Generator) -> TokenCorpus:
        if size > len(self._reserve):
            raise ModelCollapseError(
                f"fresh-real needs {size} unused real documents per iteration, the corpus has "
                f"{len(self._reserve)} beyond the training set: lower setting.samples"
            )
        return self._encode([self._reserve[i] for i in np.sort(rng.choice(len(self._reserve), size, replace=False))])

    def preview(self, data: TokenCorpus) -> np.ndarray:
        return np.array(
            [self.tokenizer.decode(data.document(i)) for i in range(min(len(data), self.presentation.preview_size))]
        )

    # -- model ------------------------------------------------------------------------------------
    def fit(
        self, parts: Sequence[TokenCorpus], rng: np.random.Generator, scratch: Path | None = None, previous=None
    ) -> Fit:
        documents = sum(len(part) for part in parts)
        blocks = pack(parts, self.config.model.block_size, self.eos, self.eos, order=rng.permutation(documents))
        # Initialisation and dropout draw from torch's global generator: seed it for the whole fit.
        with seeded_torch(rng, self.device):
            architecture = self.config.model
            if previous is not None:  # training.warm_start
                model = copy.deepcopy(previous)
            else:
                model = build_model(
                    architecture.preset,
                    len(self.tokenizer),
                    self.eos,
                    **dropout_overrides(architecture.preset, architecture.dropout),
                )
            # an interrupted fit resumes from its last checkpoint in scratch (same parts, same rng)
            training = self.config.training
            curve = train(model, blocks, self.validation, training, rng, self.device, checkpoint_directory=scratch)
        return Fit(model, {"learning_curve": curve, "reference": self.reference})

    def sample(self, model, size: int, rng: np.random.Generator, scratch: Path | None = None) -> TokenCorpus:
        """``size`` stories, generated in shards of ``sampling.batch_size`` x 16 stories, each with a
        random stream of its own. Under ``torchrun`` the ranks take the shards in turn and gather them
        (call it on all ranks), so the corpus does not depend on the number of ranks. With ``scratch``,
        finished shards are saved there, and a run interrupted while sampling redoes only the rest."""
        c = self.config.sampling
        model.to(self.device)
        rank, world = rank_and_world()
        first_tokens = rng.choice(self._first_tokens, size) if c.prompt == "first-token" else None
        prompts = story_prompts(first_tokens, size, self.eos)
        shard_size = c.batch_size * SHARD_BATCHES
        seeds = rng.integers(2**63, size=-(-size // shard_size))
        new_tokens = min(c.max_new_tokens, model.config.max_position_embeddings - prompts.shape[1])
        shard_prompts = [prompts[start : start + shard_size] for start in range(0, size, shard_size)]
        shards = {index: _load_shard(scratch, index, len(shard_prompts[index])) for index in range(len(seeds))}
        todo = [index for index, shard in shards.items() if shard is None]
        meter = Meter("sampling", size, "stories", done=sum(len(shard) for shard in shards.values() if shard))
        for first in range(0, len(todo), world):  # one shard per rank at a time
            group = todo[first : first + world]
            mine = None
            if rank < len(group):
                index = group[rank]
                generator = torch.Generator(device=self.device).manual_seed(int(seeds[index]))
                mine = self._sample_shard(model, shard_prompts[index], new_tokens, generator, meter, world)
            gathered = all_gather(mine)
            for index, shard in zip(group, gathered):
                shards[index] = shard
                if scratch is not None and rank == 0:
                    write_directory_atomic(_shard_directory(scratch, index), shard.save)
        meter.close()
        ordered = [shards[index] for index in range(len(seeds))]
        assert all(shard is not None for shard in ordered)  # each shard sampled here or read back
        return TokenCorpus.concatenate(cast(list[TokenCorpus], ordered))

    def _sample_shard(
        self,
        model,
        prompts: torch.Tensor,
        new_tokens: int,
        generator: torch.Generator,
        meter: Meter | None = None,
        world: int = 1,
    ) -> TokenCorpus:
        c = self.config.sampling
        documents: list[np.ndarray] = [np.empty(0, TOKEN_DTYPE)] * len(prompts)
        stories = stream_stories(
            model,
            prompts.to(self.device),
            new_tokens,
            self.eos,
            generator,
            c.temperature,
            c.top_k,
            c.top_p,
            batch_size=c.batch_size,
        )
        for index, story in stories:
            documents[index] = np.array(story[1:], dtype=TOKEN_DTYPE)  # without BOS; the prompt's first token stays
            if meter is not None:
                meter.advance(world)  # the other ranks sample as many meanwhile
        return TokenCorpus.from_documents(documents)

    def evaluate(self, model) -> dict[str, np.ndarray]:
        training = self.config.training
        loss = cross_entropy(model, self.validation, training.batch_size, self.device, training.precision)
        return {"test_cross_entropy": np.array([loss]), **{k: np.array([v]) for k, v in self._diversity(model).items()}}

    def _diversity(self, model) -> dict[str, float]:
        """The diversity of ``sampling.evaluation_stories`` stories, drawn from the same prompts and
        random stream at every iteration, so that differences are the model's."""
        c = self.config.sampling
        if not c.evaluation_stories:
            return dict.fromkeys(DIVERSITY, float("nan"))
        rng = np.random.default_rng(self._evaluation_seed)
        first_tokens = rng.choice(self._first_tokens, c.evaluation_stories) if c.prompt == "first-token" else None
        prompts = story_prompts(first_tokens, c.evaluation_stories, self.eos)
        new_tokens = min(c.max_new_tokens, model.config.max_position_embeddings - prompts.shape[1])
        generator = torch_generator(rng, self.device)
        model.to(self.device)
        stories = self._sample_shard(model, prompts, new_tokens, generator)
        return diversity([stories.document(i) for i in range(len(stories))])

    @torch.no_grad()
    def score(self, name: str, model, samples: TokenCorpus) -> np.ndarray:
        """``likelihood``: each document's mean log-probability per token under the model that wrote
        it, predicting its tokens and its EOS after the EOS that opens it (as training reads documents):
        minus the log of its perplexity. A document longer than the context is scored on its first
        ``max_position_embeddings`` predictions."""
        limit, eos = model.config.max_position_embeddings, self.eos
        model.to(self.device).eval()
        scores = np.empty(len(samples))
        batch = min(self.config.training.batch_size, 8)  # logits of (batch, length, vocabulary) floats
        for start in range(0, len(samples), batch):
            indices = range(start, min(start + batch, len(samples)))
            documents = [np.concatenate([[eos], samples.document(i), [eos]])[: limit + 1] for i in indices]
            width = max(len(d) for d in documents)
            ids = np.full((len(documents), width), eos, dtype=np.int64)
            predicted = np.zeros((len(documents), width - 1), dtype=bool)
            for row, document in enumerate(documents):
                ids[row, : len(document)] = document
                predicted[row, : len(document) - 1] = True
            tokens = torch.from_numpy(ids).to(self.device)
            # right padding: a causal model's earlier positions never see it, and it is not predicted
            logits = model(input_ids=tokens[:, :-1]).logits.float()
            chosen = torch.log_softmax(logits, dim=-1).gather(2, tokens[:, 1:, None])[:, :, 0].cpu().numpy()
            scores[start : start + len(documents)] = np.where(predicted, chosen, 0).sum(1) / predicted.sum(1)
        return scores[None]

    # -- storage ----------------------------------------------------------------------------------
    def save_model(self, model, directory: Path) -> None:
        model.save_pretrained(directory)

    def load_model(self, directory: Path):
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(directory)
        except Exception as error:  # transformers raises several types, some with long messages
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise RunDirectoryError(f"{directory} holds no usable checkpoint: {first}") from None
        return model.to(self.device).eval()
