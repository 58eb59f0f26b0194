"""The 8,000-token byte-level BPE tokenizer, trained once per corpus and cached in Hugging Face format.

Byte-level BPE (GPT-2's scheme) encodes any text losslessly, so decoding a synthetic story and encoding
it again is exact. One special token, ``<|endoftext|>``, opens (BOS) and closes (EOS) every document
and pads batches. The cache directory is keyed by the corpus and the vocabulary size; a finished
tokenizer is written under a temporary name and renamed, so an interrupted training leaves no cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ...errors import RunDirectoryError

END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(documents: Iterable[str], vocab_size: int = 8000) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is ever unknown
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT
    )


def cache_key(corpus: dict, vocab_size: int) -> str:
    """A directory name for one corpus description (source, files, separator) and vocabulary size."""
    text = json.dumps({"corpus": corpus, "vocab_size": vocab_size}, sort_keys=True)
    return f"bpe-{vocab_size}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def cached_tokenizer(
    cache_directory: Path, key: str, documents: Callable[[], Iterable[str]], vocab_size: int = 8000
) -> PreTrainedTokenizerFast:
    """The tokenizer under ``cache_directory/key``, trained on ``documents()`` the first time."""
    target = cache_directory / key
    if target.exists():
        try:
            return PreTrainedTokenizerFast.from_pretrained(target)
        except Exception as error:  # transformers raises several types for a damaged directory
            raise RunDirectoryError(f"corrupted tokenizer cache {target}: {error}") from None
    cache_directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(documents(), vocab_size)
    temporary = Path(tempfile.mkdtemp(dir=cache_directory, prefix=f".{key}."))
    try:
        tokenizer.save_pretrained(temporary)
        os.replace(temporary, target)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not target.exists():  # another process finished first: use theirs
            raise
    return PreTrainedTokenizerFast.from_pretrained(target)
