"""A small causal model pretrained once per run, for fine-tuning runs without a pretrained checkpoint.

The ``language-model`` setting trains it on the bundled Moby-Dick (``model.pretrain`` says how), and it
is saved with its tokenizer in ``save_pretrained``'s layout in the run's shared directory, where every
chain of the run reads it as it would read any checkpoint. Training is seeded, so a chain that finds no
copy makes the same one; two chains finishing together keep the first (each writes beside the target and
renames it into place). Under ``torchrun`` every rank trains (the fit is data parallel) and rank 0 alone
puts the model in place.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ... import distributed
from .config import Pretraining

_OUTSIDE_A_RUN: dict[str, Path] = {}  # without a run directory: one temporary copy per process


def _key(spec: Pretraining) -> str:
    text = json.dumps(spec.model_dump(), sort_keys=True)
    return f"pretrained-{spec.preset}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _pretrain(spec: Pretraining, directory: Path) -> None:
    from ...randomness import seed_rng
    from ..language_model.config import LanguageModelConfig
    from ..language_model.setting import LanguageModel

    config = LanguageModelConfig.model_validate(
        {
            "dataset": "moby-dick",
            "samples": spec.samples,
            "vocab_size": spec.vocab_size,
            "tokenizer_cache": str(directory / "tokenizer-cache"),
            "model": {"preset": spec.preset, "block_size": spec.block_size},
            "training": {
                "batch_size": spec.batch_size,
                "learning_rate": spec.learning_rate,
                "epochs": spec.epochs,
                "evaluations_per_epoch": 1,
                "checkpoint_minutes": None,
            },
            "sampling": {"evaluation_stories": 0},
        }
    )
    setting = LanguageModel(config, [spec.seed])
    fitted = setting.fit([setting.real_train], seed_rng(spec.seed, "pretrain"))
    shutil.rmtree(directory / "tokenizer-cache")
    fitted.model.save_pretrained(directory)
    setting.tokenizer.save_pretrained(directory)


def pretrained_once(spec: Pretraining, shared: Path | None) -> Path:
    """The directory of the model ``spec`` describes, pretrained now if this run has none yet."""
    key = _key(spec)
    if shared is None:
        if key not in _OUTSIDE_A_RUN:
            temporary = Path(tempfile.mkdtemp(prefix="model-collapse-"))
            atexit.register(shutil.rmtree, temporary, True)
            _pretrain(spec, temporary)
            _OUTSIDE_A_RUN[key] = temporary
        return _OUTSIDE_A_RUN[key]
    target = shared / key
    made_once(target, lambda work: _pretrain(spec, work))
    return target


def made_once(target: Path, make: Callable[[Path], None]) -> None:
    """Make the model directory ``target`` (save_pretrained's layout) with ``make`` unless it is there:
    ``make`` fills a directory beside it, which is renamed into place, so that chains making it at once
    keep the first. Under ``torchrun`` every rank calls ``make`` (the fit is data parallel), rank 0 alone
    puts its directory in place (the other ranks' copies may lack the weights: only rank 0 saves), and
    every rank returns once it is there."""
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            make(work)
            if distributed.is_main():
                os.replace(work, target)
        except OSError:
            if not (target / "config.json").is_file():  # not because another chain finished first
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    distributed.barrier()
