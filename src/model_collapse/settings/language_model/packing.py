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

import numpy as np

TOKEN_DTYPE = np.uint16  # vocabularies up to 65,536 tokens; the paper's is 8,000


@dataclass
class TokenCorpus:
    tokens: np.ndarray  # (total,) token ids of all documents, without BOS/EOS
    offsets: np.ndarray  # (documents + 1,) start of each document in ``tokens``

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[int]]) -> TokenCorpus:
        lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
        offsets = np.zeros(len(documents) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for d in documents for t in d), dtype=TOKEN_DTYPE, count=int(offsets[-1]))
        return cls(tokens, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def select(self, indices: np.ndarray) -> TokenCorpus:
        return TokenCorpus.from_documents([self.document(i) for i in indices])

    @classmethod
    def concatenate(cls, corpora: Sequence[TokenCorpus]) -> TokenCorpus:
        offsets = [corpora[0].offsets]
        shift = corpora[0].offsets[-1]
        for corpus in corpora[1:]:
            offsets.append(corpus.offsets[1:] + shift)
            shift += corpus.offsets[-1]
        return cls(np.concatenate([c.tokens for c in corpora]), np.concatenate(offsets))

    def save(self, directory: Path) -> None:
        np.save(directory / "tokens.npy", self.tokens)
        np.save(directory / "offsets.npy", self.offsets)

    @classmethod
    def load(cls, directory: Path) -> TokenCorpus:
        """Memory-mapped: a corpus on disk costs no RAM until it is read."""
        return cls(np.load(directory / "tokens.npy", mmap_mode="r"), np.load(directory / "offsets.npy"))


@dataclass
class PackedBlocks:
    inputs: np.ndarray  # (blocks, block_size) token ids
    targets: np.ndarray  # (blocks, block_size) next-token ids; -100 where no loss is taken

    def __len__(self) -> int:
        return len(self.inputs)


def pack(corpus: TokenCorpus, block_size: int, bos: int, eos: int, order: np.ndarray | None = None) -> PackedBlocks:
    """Documents (in ``order``) as BOS doc EOS, back to back, cut into blocks; the tail is padded."""
    order = np.arange(len(corpus)) if order is None else order
    lengths = np.diff(corpus.offsets)[order] + 2
    total = int(lengths.sum())
    stream = np.empty(total, dtype=np.int64)
    document = np.repeat(np.arange(len(order)), lengths)
    starts = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    stream[starts[:-1]] = bos
    stream[starts[1:] - 1] = eos
    inner = np.ones(total, dtype=bool)
    inner[starts[:-1]] = inner[starts[1:] - 1] = False
    stream[inner] = np.concatenate([corpus.document(i) for i in order]) if total > 2 * len(order) else []

    blocks = -(-(total - 1) // block_size)
    padded = blocks * block_size + 1
    tokens = np.full(padded, eos, dtype=np.int64)
    tokens[:total] = stream
    owner = np.full(padded, -1, dtype=np.int64)
    owner[:total] = document
    inputs = tokens[:-1].reshape(blocks, block_size)
    targets = tokens[1:].copy()
    same_document = owner[1:] == owner[:-1]
    targets[~same_document | (owner[1:] < 0)] = -100
    return PackedBlocks(inputs, targets.reshape(blocks, block_size))
