"""Helpers the tests share: config files, tiny neural settings, progress, torchrun."""

import json
import tempfile
from pathlib import Path

import yaml


def write_config(path: Path, base: dict, **changes) -> Path:
    """Write ``base`` with top-level ``changes`` as a YAML config at ``path``."""
    path.write_text(yaml.safe_dump({**base, **changes}))
    return path


def tiny_vae(**fields) -> dict:
    """A VAE setting that trains in a fraction of a second (8 x 8 digits), with ``fields`` on top."""
    return {
        "name": "vae",
        "samples": 16,
        "test_samples": 20,
        "image_size": 8,
        "evaluation_samples": 20,
        "model": {"widths": [4], "latent_dim": 2},
        "training": {"epochs": 1},
        **fields,
    }


def tiny_language_model(tokenizer_cache: Path | str, **fields) -> dict:
    """A language-model setting (bundled corpus, 300-token vocabulary, 32-token blocks) that trains
    and samples in seconds, with ``fields`` on top."""
    return {
        "name": "language-model",
        "samples": 8,
        "test_samples": 4,
        "vocab_size": 300,
        "tokenizer_cache": str(tokenizer_cache),
        "model": {"block_size": 32},
        "training": {"batch_size": 4},
        "sampling": {"max_new_tokens": 12},
        **fields,
    }


def tiny_conformers(**fields) -> dict:
    """A conformer-diffusion setting (4 bundled training molecules x 5 conformers, a network of width 8,
    5 diffusion steps) that trains and samples in about a second, with ``fields`` on top."""
    return {
        "name": "conformer-diffusion",
        "samples": 4,
        "test_samples": 4,
        "device": "cpu",
        "network": {"hidden_dim": 8, "global_convolutions": 1, "local_convolutions": 1},
        "diffusion": {"timesteps": 5, "beta_end": 0.6},
        "training": {"steps": 4, "batch_size": 8, "evaluate_every": 2, "validation_conformers": 8},
        "sampling": {"batch_size": 8},
        "evaluation": {"molecules": 2},
        **fields,
    }


# A model pretrained for the tests on 60 Moby-Dick paragraphs (a few seconds, once per test process).
TINY_PRETRAINING = {
    "preset": "gpt2-tiny", "vocab_size": 300, "block_size": 32, "samples": 60, "batch_size": 8, "epochs": 1,
}  # fmt: skip


def tiny_fine_tuning(**fields) -> dict:
    """A fine-tuning setting (that tiny model, 16-token blocks of the bundled text, 2 beams) that fine-tunes
    and generates in about a second, with ``fields`` on top."""
    return {
        "name": "fine-tuning",
        "model": {"pretrain": TINY_PRETRAINING},
        "block_size": 16,
        "samples": 8,
        "test_samples": 8,
        "device": "cpu",
        "training": {"batch_size": 4, "epochs": 1, "learning_rate": 1e-3, "checkpoint_minutes": None},
        "sampling": {"new_tokens": 16, "num_beams": 2, "batch_size": 4, "evaluation_samples": 4},
        **fields,
    }


_TOKENIZERS = tempfile.mkdtemp(prefix="tokenizers-")  # one tokenizer cache for the test process


def tiny_settings() -> dict[str, dict]:
    """The one table of tiny configs of every shipped setting (fields by setting name), which the shared
    suites run: every regime on every setting (test_chain.py) and the conformance checks
    (test_conformance.py). A new setting adds its row here."""
    tokenizer_cache = _TOKENIZERS
    return {
        "linear-regression": {"dim": 2, "samples": 8},
        "gaussian": {"dim": 2, "samples": 8},
        "kde": {"samples": 8, "test_samples": 20},
        "discrete": {"samples": 8, "outcomes": 5},
        "vae": tiny_vae(samples=8),
        "language-model": tiny_language_model(
            tokenizer_cache, sampling={"max_new_tokens": 16}, training={"batch_size": 4, "evaluations_per_epoch": 1}
        ),
        "conformer-diffusion": tiny_conformers(conformers_per_molecule=2),  # 4 molecules x 2 conformers
        "fine-tuning": tiny_fine_tuning(),
    }


# Two chains of several seconds each (a cheap chain commits about once a second), long enough to kill or
# signal whatever runs one in the middle of it.
SLOW_TWO_CHAINS = {
    "setting": {"name": "gaussian", "dim": 20, "samples": 100},
    "regimes": ["replace", "accumulate"],
    "iterations": 600,
    "seeds": 200,
}


def failing_at_iteration_2(directory: Path) -> Path:
    """A config whose one chain stops at iteration 2 with a one-line error (fresh-real asks for more
    unused real images than the data set has), written into ``directory``."""
    import yaml

    config = {"setting": tiny_vae(samples=1700), "regimes": ["fresh-real:1.0"], "iterations": 2, "seeds": 1}
    path = directory / "failing.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


FAILING_AT_ITERATION_2 = "fresh-real needs 1700 unused real images per iteration"


def completed(progress: Path) -> int:
    """The iterations a chain's progress.json records (0 before it exists or while it is replaced)."""
    try:
        return json.loads(progress.read_text())["completed"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def torchrun_command(*program: str, processes: int = 2) -> list[str]:
    """``torchrun`` launching ``program`` (a script and its arguments, or ``-m module ...``) on this
    machine's loopback, with a rendezvous port that was free a moment ago."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(port), *program,
    ]  # fmt: skip


def cli(*args, cwd=None, timeout=300, **kwargs):
    """``model-collapse ARGS`` in a process of its own (``python -m``), its output captured as text."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "model_collapse", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        **kwargs,
    )


def invoke(*args, env: dict | None = None):
    """The command in this process (typer's runner): its exit code, stdout and stderr, as a user sees them."""
    from typer.testing import CliRunner

    from model_collapse.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=env)


NEURAL = ("vae", "language-model", "conformer-diffusion", "fine-tuning")


def setting_params(names) -> list:
    """Setting names as pytest parameters, the neural ones in the slow lane (seconds per chain each)."""
    import pytest

    return [pytest.param(name, marks=pytest.mark.slow) if name in NEURAL else name for name in names]


# Tiny randomly initialised checkpoints of three architectures, each with its family's special tokens:
# GPT-2 (one <|endoftext|>, no pad token), OPT (</s> opens every text, <pad>) and Llama (<s> and </s>,
# no pad token).
_SPECIAL = {
    "gpt2": {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": None, "prefix": False},
    "opt": {"bos": "</s>", "eos": "</s>", "pad": "<pad>", "prefix": True},
    "llama": {"bos": "<s>", "eos": "</s>", "pad": None, "prefix": True},
}


def tiny_checkpoint(directory: Path, architecture: str = "gpt2", positions: int = 128) -> Path:
    """A random ``architecture`` model with a 300-token byte-level BPE tokenizer trained on the bundled
    text, saved in ``directory`` as ``save_pretrained`` writes it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        OPTConfig,
        OPTForCausalLM,
        PreTrainedTokenizerFast,
    )

    from model_collapse.settings.language_model.corpus import load_documents

    special = _SPECIAL[architecture]
    names = list(dict.fromkeys(t for t in (special["pad"], special["bos"], special["eos"]) if t))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=names, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(load_documents("moby-dick", "train")[:200], trainer)
    bos = tokenizer.token_to_id(special["bos"])
    if special["prefix"]:  # the tokenizer opens every text with BOS, as OPT's and Llama's do
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{special['bos']} $A", special_tokens=[(special["bos"], bos)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=special["bos"],
        eos_token=special["eos"],
        **({"pad_token": special["pad"]} if special["pad"] else {}),
    )
    eos = tokenizer.token_to_id(special["eos"])
    pad = tokenizer.token_to_id(special["pad"]) if special["pad"] else None
    # weights drawn wider than the usual 0.02, so that a random model's next-token distributions are far
    # from uniform and beams rarely tie
    ids = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "initializer_range": 0.3}
    torch.manual_seed(0)
    vocabulary = tokenizer.get_vocab_size()
    if architecture == "gpt2":
        config = GPT2Config(vocab_size=vocabulary, n_embd=32, n_layer=2, n_head=2, n_positions=positions, **ids)
        model = GPT2LMHeadModel(config)
    elif architecture == "opt":
        config = OPTConfig(
            vocab_size=vocabulary, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
            max_position_embeddings=positions, word_embed_proj_dim=32, **ids,
        )  # fmt: skip
        model = OPTForCausalLM(config)
    else:
        config = LlamaConfig(
            vocab_size=vocabulary, hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=positions, **ids,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    wrapped.save_pretrained(directory)
    return directory


def moby_dick_lines(count: int, start: int = 0) -> list[str]:
    """Bundled paragraphs as wikitext-2's lines are (a heading, then paragraphs, each ending in a newline)."""
    from model_collapse.settings.language_model.corpus import load_documents

    paragraphs = load_documents("moby-dick", "train")[start : start + count]
    return [" = Moby-Dick = \n", " \n", *(f" {p} \n" for p in paragraphs)]


def wikitext_files(directory: Path, layout: str = "parquet", sizes=(60, 10, 10)) -> Path:
    """A wikitext-2 copy in the Hub's parquet layout or the raw archive's, from the bundled text."""
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for (parquet, raw), count in zip((("train", "train"), ("validation", "valid"), ("test", "test")), sizes):
        lines = moby_dick_lines(count, start)
        start += count
        if layout == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            (directory / "wikitext-2-raw-v1").mkdir(exist_ok=True)
            pq.write_table(
                pa.table({"text": lines}), directory / "wikitext-2-raw-v1" / f"{parquet}-00000-of-00001.parquet"
            )
        else:
            (directory / f"wiki.{raw}.raw").write_text("".join(lines), encoding="utf-8")
    return directory


def helpsteer_files(directory: Path, train: int = 12, validation: int = 4) -> Path:
    """HelpSteer2's {train,validation}.jsonl.gz, with its fields, from the bundled text."""
    import gzip

    from model_collapse.settings.language_model.corpus import load_documents

    paragraphs = load_documents("moby-dick", "train")
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in (("train", train), ("validation", validation)):
        with gzip.open(directory / f"{split}.jsonl.gz", "wt", encoding="utf-8") as out:
            for i in range(start, start + count):
                record = {
                    "prompt": f"Say something about whales, number {i}.",
                    "response": paragraphs[i][:40],
                    "helpfulness": 3, "correctness": 3, "coherence": 4, "complexity": 2, "verbosity": 1,
                }  # fmt: skip
                out.write(json.dumps(record) + "\n")
        start += count
    return directory


# A setting as a researcher writes it, against the public API alone: a Gaussian's mean refitted to its
# own samples; default save/load of its array model, a random stream of its own ("test"). What it can do
# is declared by the subclasses the tests write (tests/test_plugins.py, tests/test_protocol.py).
MEAN_PLUGIN_BASE = """
import numpy as np
from pydantic import Field, PositiveInt

from model_collapse.randomness import seed_rng
from model_collapse.settings import Capabilities, Metric, Presentation, Samples, Setting, SettingConfig, concatenate


class MeanConfig(SettingConfig):
    name: str = "mean"
    samples: PositiveInt = Field(20, description="draws per seed")


class MeanBase(Setting):
    name = "mean"
    Config = MeanConfig
    metrics = {"error": Metric("squared error of the mean")}

    def __init__(self, config, seeds):
        super().__init__(config, seeds)
        self._real = Samples(x=np.stack([seed_rng(s, "real").normal(size=config.samples) for s in self.seeds]))
        self.test = np.stack([seed_rng(s, "test").normal(size=100) for s in self.seeds])

    @property
    def real_train(self):
        return self._real

    def fit(self, parts, rng, scratch=None):
        x = concatenate(parts)["x"]
        return np.stack([x.mean(axis=1), x.std(axis=1)], axis=1)

    def sample(self, model, size, rng, scratch=None):
        return Samples(x=model[:, :1] + model[:, 1:] * rng.standard_normal((self.seed_count, size)))

    def evaluate(self, model):
        return {"error": (model[:, 0] - self.test.mean(axis=1)) ** 2}
"""
