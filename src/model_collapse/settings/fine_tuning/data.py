"""The fine-tuning data sets, read from local files in the layouts their publishers ship.

* ``text``: wikitext-2 (Merity et al. 2016), as the Hugging Face Hub has it
  (``wikitext-2-raw-v1/{train,validation,test}-00000-of-00001.parquet``, column ``text``, one line per row)
  or as the original archive has it (``wiki.{train,valid,test}.raw``). Every line is tokenized without
  special tokens, the lines are concatenated, and the stream is cut into blocks of ``block_size`` tokens,
  the remainder dropped (``run_clm``'s ``group_texts``, which Shumailov et al. use). The test split is the
  held-out text.
* ``prompt-response``: HelpSteer2 (Wang et al. 2024) as ``{train,validation}.jsonl.gz`` (the Hub's
  files), ``.jsonl`` or parquet files, fields ``prompt`` and ``response``. An example is
  ``user: {prompt}\\nassistant: {response}`` followed by EOS (Kazdan et al.), tokenized as one text; the
  loss counts every token, as SFT on a text field does (``train_on: response``: the response and EOS).
  Examples longer than ``max_length`` tokens are dropped. The validation split is the held-out set.

Files are read with pyarrow and the standard library (``language_model/corpus.py``: ``read_fields``), not
``datasets.load_dataset``, which would write a converted copy into ``~/.cache``: a run writes nothing
outside its directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ..language_model.corpus import read_fields
from .examples import TOKEN_DTYPE, Examples

USER, ASSISTANT = "user: ", "assistant: "
# (the Hub's parquet name, the raw archive's name) of the splits the setting reads
_TEXT_SPLITS = {"train": ("train", "train"), "held-out": ("test", "test")}
_CONVERSATION_SPLITS = {"train": "train", "held-out": "validation"}


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((path for path in candidates if path.is_file()), None)


def _data_directory(data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise ConfigError(f"setting.data_dir: {data_dir} is not a directory")
    return data_dir


def text_file(data_dir: Path, split: str) -> Path:
    """The file of a wikitext-2 split (``train`` or ``held-out``, the test split)."""
    parquet, raw = _TEXT_SPLITS[split]
    name = f"{parquet}-00000-of-00001.parquet"
    path = _first_existing(
        [data_dir / "wikitext-2-raw-v1" / name, data_dir / name]
        + [data_dir / "wikitext-2-raw" / f"wiki.{raw}.raw", data_dir / f"wiki.{raw}.raw"]
    )
    if path is None:
        raise ConfigError(
            f"setting.data_dir: {_data_directory(data_dir)} holds no wikitext-2 {parquet} split "
            f"(wikitext-2-raw-v1/{name}, or wiki.{raw}.raw, directly or under wikitext-2-raw/)"
        )
    return path


def text_lines(data_dir: Path, split: str) -> list[str]:
    """The lines of a wikitext-2 split (``train`` or ``held-out``, the test split); a file without a line
    of text (empty, or a parquet ``text`` column that holds no strings) is one line naming it."""
    path = text_file(data_dir, split)
    if path.suffix == ".parquet":
        column = read_fields(path, ["text"])["text"]
        lines = [line for line in column if isinstance(line, str)]
        if column and not lines:
            kinds = sorted({type(value).__name__ for value in column})
            raise ConfigError(f"{path}: its text column holds no strings ({', '.join(kinds)}), not wikitext-2's lines")
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read {path} as text: {error}") from None
    if not any(line.strip() for line in lines):
        raise ConfigError(f"{path} holds no text: an empty wikitext-2 {split} split")
    return lines


def text_blocks(tokenizer, lines: list[str], block_size: int) -> Examples:
    """The lines tokenized, concatenated and cut into blocks of ``block_size`` tokens (the rest dropped)."""
    ids = tokenizer([line for line in lines if line], add_special_tokens=False)["input_ids"]
    stream = np.fromiter((token for line in ids for token in line), dtype=TOKEN_DTYPE)
    count = len(stream) // block_size
    offsets = np.arange(count + 1, dtype=np.int64) * block_size
    return Examples(stream[: count * block_size], offsets, np.zeros(count, dtype=np.int64))


def conversation_files(data_dir: Path, split: str) -> list[Path]:
    """The files of a HelpSteer2 split (``train``, or ``held-out``: validation)."""
    name = _CONVERSATION_SPLITS[split]
    jsonl = _first_existing([data_dir / f"{name}.jsonl.gz", data_dir / f"{name}.jsonl"])
    parquets = sorted((data_dir / "data").glob(f"{name}-*.parquet")) + sorted(data_dir.glob(f"{name}*.parquet"))
    files = [jsonl] if jsonl is not None else parquets
    if not files:
        raise ConfigError(
            f"setting.data_dir: {_data_directory(data_dir)} holds no HelpSteer2 {name} split ({name}.jsonl.gz, "
            f"{name}.jsonl or {name}*.parquet, directly or under data/)"
        )
    return files


def conversations(data_dir: Path, split: str) -> list[tuple[str, str]]:
    """(prompt, response) pairs of a HelpSteer2 split (``train``, or ``held-out``: validation). A record
    whose prompt or response is not a string (null) is refused in one line naming its file and record:
    it would otherwise become the text "None" and be trained on."""
    pairs: list[tuple[str, str]] = []
    for path in conversation_files(data_dir, split):
        columns = read_fields(path, ["prompt", "response"])
        for index, (prompt, response) in enumerate(zip(columns["prompt"], columns["response"]), 1):
            for field, value in (("prompt", prompt), ("response", response)):
                if not isinstance(value, str):
                    found = "null" if value is None else f"a {type(value).__name__}"
                    raise ConfigError(f"{path}: record {index} has {found} for its {field}, not a text")
            pairs.append((prompt, response))
    return pairs


def check_data_files(data_dir: Path, text: bool) -> None:
    """That ``data_dir`` holds both splits a config needs (found, not read): before anything is written."""
    for split in ("train", "held-out"):
        text_file(data_dir, split) if text else conversation_files(data_dir, split)


# The bundled stand-in for conversations: a prompt quoting a passage's first words, the rest of the
# passage (at most this many words) as the response.
OPENING_WORDS, RESPONSE_WORDS = 6, 40


def bundled_conversations(paragraphs: list[str]) -> list[tuple[str, str]]:
    """(prompt, response) pairs for runs without HelpSteer2 (CPU runs, tests): each paragraph of at least
    ``OPENING_WORDS`` + 5 words becomes "Continue the passage that begins: <its first words>" and the
    next ``RESPONSE_WORDS`` words. A task in the follow-up's format, not a conversation data set."""
    pairs = []
    for paragraph in paragraphs:
        words = paragraph.split()
        if len(words) >= OPENING_WORDS + 5:
            opening, rest = (
                " ".join(words[:OPENING_WORDS]),
                " ".join(words[OPENING_WORDS : OPENING_WORDS + RESPONSE_WORDS]),
            )
            pairs.append((f"Continue the passage that begins: {opening}", rest))
    return pairs


def conversation_text(prompt: str, response: str) -> tuple[str, str]:
    """The text of an example and its prefix (everything before the response)."""
    prefix = f"{USER}{prompt}\n{ASSISTANT}"
    return prefix, prefix + response


def well_formed(text: str) -> tuple[str, str] | None:
    """The (prefix, text) of a generated conversation that starts with ``user: `` and holds exactly one
    ``assistant: `` (the follow-up's filter), else None."""
    if not text.startswith(USER) or text.count(ASSISTANT) != 1:
        return None
    return text[: text.index(ASSISTANT) + len(ASSISTANT)], text


def encode_conversations(
    tokenizer, texts: list[tuple[str, str]], max_length: int, train_on: str, start: int
) -> Examples:
    """Examples of (prefix, text) pairs: ``start`` (BOS), the text's tokens and EOS; the loss starts at
    the first token that reaches past the prefix (``train_on: response``). An unconditional sample
    starts from ``start`` too, so every example opens with it, whether the tokenizer adds it (Llama,
    Gemma, OPT) or not (GPT-2). Examples of more than ``max_length`` tokens are dropped."""
    if not texts:
        return Examples.from_sequences([], np.zeros(0, dtype=np.int64))
    encoded = tokenizer([text for _, text in texts], return_offsets_mapping=True)
    sequences, starts = [], []
    for (prefix, _), ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"]):
        if not ids or ids[0] != start:
            ids, offsets = [start, *ids], [(0, 0), *offsets]
        ids = [*ids, tokenizer.eos_token_id]
        if len(ids) > max_length:
            continue
        response = next((i for i, (_, end) in enumerate(offsets) if end > len(prefix)), len(offsets))
        sequences.append(np.asarray(ids))
        starts.append(0 if train_on == "all" else response)
    return Examples.from_sequences(sequences, np.asarray(starts, dtype=np.int64))
