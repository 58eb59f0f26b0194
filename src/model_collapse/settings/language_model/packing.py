"""Token corpora and sequence packing.

A corpus is stored as one flat token array plus document offsets, so that millions of short stories
cost two arrays (memory-mappable from disk) rather than millions of Python lists. For training,
documents are packed end to end - each one opened with the BOS token and closed with EOS - into
blocks of ``block_size`` inputs with their next-token targets, as GPT-2-style pretraining does: a
block may start inside a document and attention may look back across an EOS into the previous one.
What is masked is the loss: no target crosses from one document into the next (EOS -> next BOS), and
padding at the end of the stream is never predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...arrayio import load_array, save_array
from ...errors import RunDirectoryError

TOKEN_DTYPE = np.uint16  # vocabularies up to 65,536 tokens; the paper's is 8,000


@dataclass
class TokenCorpus:
    # Loaded memory-mapped: a corpus kept for later iterations (accumulate) costs no RAM until read.
    memory_mapped: ClassVar[bool] = True

    tokens: np.ndarray  # (total,) token ids of all documents, without BOS/EOS
    offsets: np.ndarray  # (documents + 1,) start of each document in ``tokens``

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[int] | np.ndarray]) -> TokenCorpus:
        lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
        offsets = np.zeros(len(documents) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = (
            np.concatenate([np.asarray(d, dtype=TOKEN_DTYPE) for d in documents])
            if len(documents)
            else np.empty(0, TOKEN_DTYPE)
        )
        return cls(tokens, offsets)

    @classmethod
    def concatenate(cls, parts: Sequence[TokenCorpus]) -> TokenCorpus:
        """The documents of ``parts``, one part after the other."""
        if not parts:
            return cls.from_documents([])
        starts = np.cumsum([0] + [int(p.offsets[-1] - p.offsets[0]) for p in parts])
        offsets = np.concatenate(
            [np.zeros(1, np.int64)] + [p.offsets[1:] - p.offsets[0] + start for p, start in zip(parts, starts)]
        )
        return cls(np.concatenate([p.tokens[p.offsets[0] : p.offsets[-1]] for p in parts]).astype(TOKEN_DTYPE), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def save(self, directory: Path) -> None:
        save_array(directory / "tokens.npy", self.tokens)
        save_array(directory / "offsets.npy", self.offsets)

    @classmethod
    def load(cls, directory: Path, like: TokenCorpus | None = None) -> TokenCorpus:
        """Memory-mapped: a corpus on disk costs no RAM until it is read. A missing, damaged or foreign
        corpus is a RunDirectoryError naming the file (never numpy's advice to load it with pickles
        enabled). ``like`` is part of the data-type protocol; a corpus needs nothing from it."""
        tokens = load_array(directory / "tokens.npy", mapped=True)
        offsets = load_array(directory / "offsets.npy")
        if tokens.ndim != 1 or offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
            raise RunDirectoryError(f"corrupted corpus in {directory}: tokens and offsets of the wrong shape")
        if offsets[0] < 0 or offsets[-1] > len(tokens) or (np.diff(offsets) < 0).any():
            raise RunDirectoryError(f"corrupted file {directory / 'offsets.npy'}: it points outside the tokens")
        return cls(tokens, offsets)

    @classmethod
    def select(cls, parts: Sequence[TokenCorpus], rows: np.ndarray) -> TokenCorpus:
        """The documents ``rows[0]`` (one seed per chain) of the concatenation of ``parts``."""
        starts = np.cumsum([0] + [len(p) for p in parts])
        documents: list[Any] = []
        for row in rows[0]:
            part = int(np.searchsorted(starts, row, side="right")) - 1
            documents.append(parts[part].document(int(row - starts[part])))
        return cls.from_documents(documents)


class PackedBlocks:
    """Documents of several corpora, in ``order``, as BOS doc EOS back to back, cut into blocks.

    Nothing is materialised up front: only the document lengths are held (8 bytes per document), and
    ``batch`` builds the requested blocks from the corpora, which may be memory-mapped. So an
    accumulate chain whose pool grows to n corpora does not need n corpora's worth of RAM to train.
    The tail of the last block is padded with EOS and never predicted.
    """

    def __init__(
        self, parts: Sequence[TokenCorpus], block_size: int, bos: int, eos: int, order: np.ndarray | None = None
    ):
        self.parts = list(parts)
        self.part_starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.block_size, self.bos, self.eos = block_size, bos, eos
        lengths = np.concatenate([np.diff(p.offsets) for p in self.parts])
        self.order = np.arange(len(lengths)) if order is None else np.asarray(order)
        self.starts = np.zeros(len(self.order) + 1, dtype=np.int64)  # where each document enters the stream
        np.cumsum(lengths[self.order] + 2, out=self.starts[1:])
        self.count = max(0, -(-(int(self.starts[-1]) - 1) // block_size))

    def __len__(self) -> int:
        return self.count

    def limited(self, count: int) -> PackedBlocks:
        """The first ``count`` blocks only."""
        view = object.__new__(PackedBlocks)
        view.__dict__.update(self.__dict__, count=min(count, self.count))
        return view

    def _document(self, position: int) -> np.ndarray:
        index = int(self.order[position])
        part = int(np.searchsorted(self.part_starts, index, side="right")) - 1
        return self.parts[part].document(index - int(self.part_starts[part]))

    def _stream(self, begin: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and owning document of stream positions [begin, end)."""
        tokens = np.full(end - begin, self.eos, dtype=np.int64)
        owner = np.full(end - begin, -1, dtype=np.int64)
        position = int(np.searchsorted(self.starts, begin, side="right")) - 1
        while position < len(self.order) and self.starts[position] < end:
            first = int(self.starts[position])
            segment = np.concatenate(([self.bos], self._document(position), [self.eos]))
            low, high = max(first, begin), min(first + len(segment), end)
            tokens[low - begin : high - begin] = segment[low - first : high - first]
            owner[low - begin : high - begin] = position
            position += 1
        return tokens, owner

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of the given blocks, each (len(indices), block_size); targets are -100
        where the next token belongs to another document or is padding."""
        size = self.block_size
        inputs = np.empty((len(indices), size), dtype=np.int64)
        targets = np.empty((len(indices), size), dtype=np.int64)
        for row, block in enumerate(indices):
            tokens, owner = self._stream(int(block) * size, int(block) * size + size + 1)
            inputs[row] = tokens[:-1]
            targets[row] = np.where((owner[1:] == owner[:-1]) & (owner[1:] >= 0), tokens[1:], -100)
        return inputs, targets

    @property
    def inputs(self) -> np.ndarray:
        return self.batch(range(len(self)))[0]

    @property
    def targets(self) -> np.ndarray:
        return self.batch(range(len(self)))[1]


def pack(
    corpus: TokenCorpus | Sequence[TokenCorpus], block_size: int, bos: int, eos: int, order: np.ndarray | None = None
) -> PackedBlocks:
    """Blocks of one corpus or of several taken as one (documents numbered across them in order)."""
    return PackedBlocks([corpus] if isinstance(corpus, TokenCorpus) else corpus, block_size, bos, eos, order)
