"""Fine-tuning examples: token sequences of which the loss counts a suffix, and their training batches.

An example is a token sequence (a 64-token block of text, or a whole conversation with its EOS) and the
index of the first token the loss predicts: 0 for text, where every token after the first is a target,
and the response's first token for a conversation, whose prompt is context only. A set of examples is one
flat token array, offsets and those indices, so that a data set of millions of examples is three arrays,
memory-mapped from the run directory when a regime keeps it for later iterations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...arrayio import load_array, save_array
from ...errors import RunDirectoryError

TOKEN_DTYPE = np.uint32  # Gemma's vocabulary has 256,000 tokens
IGNORE = -100  # a target the loss does not count


@dataclass
class Examples:
    memory_mapped: ClassVar[bool] = True

    tokens: np.ndarray  # (total,) the tokens of every example, one after the other
    offsets: np.ndarray  # (examples + 1,) where each example starts in ``tokens``
    loss_from: np.ndarray  # (examples,) the first token of each example that is a target

    @classmethod
    def from_sequences(cls, sequences: Sequence[np.ndarray], loss_from: np.ndarray) -> Examples:
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sequences], out=offsets[1:])
        tokens = (
            np.concatenate([np.asarray(s, dtype=TOKEN_DTYPE) for s in sequences])
            if len(sequences)
            else np.empty(0, TOKEN_DTYPE)
        )
        return cls(tokens, offsets, np.asarray(loss_from, dtype=np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence[Examples]) -> Examples:
        if not parts:
            return cls.from_sequences([], np.zeros(0, dtype=np.int64))
        shifts = np.cumsum([0] + [len(p.tokens) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + shift for p, shift in zip(parts, shifts)])
        tokens = np.concatenate([np.asarray(p.tokens, dtype=TOKEN_DTYPE) for p in parts])
        return cls(tokens, offsets.astype(np.int64), np.concatenate([p.loss_from for p in parts]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def head(self, count: int) -> Examples:
        """The first ``count`` examples (views of these arrays)."""
        count = min(count, len(self))
        return Examples(self.tokens[: self.offsets[count]], self.offsets[: count + 1], self.loss_from[:count])

    # -- the data-type protocol (settings/base.py: Data) --------------------------------------------
    @classmethod
    def select(cls, parts: Sequence[Examples], rows: np.ndarray) -> Examples:
        """The examples ``rows[0]`` (one seed per chain) of the concatenation of ``parts``."""
        starts = np.cumsum([0] + [len(p) for p in parts])
        sequences, loss_from = [], []
        for row in rows[0]:
            part = int(np.searchsorted(starts, row, side="right")) - 1
            sequences.append(parts[part].example(int(row - starts[part])))
            loss_from.append(int(parts[part].loss_from[int(row - starts[part])]))
        return cls.from_sequences(sequences, np.asarray(loss_from, dtype=np.int64))

    def save(self, directory: Path) -> None:
        save_array(directory / "tokens.npy", self.tokens)
        save_array(directory / "offsets.npy", self.offsets)
        save_array(directory / "loss_from.npy", self.loss_from)

    @classmethod
    def load(cls, directory: Path, like: Examples | None = None) -> Examples:
        """Memory-mapped; a missing, damaged or foreign set is a RunDirectoryError naming the file."""
        tokens = load_array(directory / "tokens.npy", mapped=True)
        offsets = load_array(directory / "offsets.npy")
        loss_from = load_array(directory / "loss_from.npy")
        shapes_fit = tokens.ndim == offsets.ndim == loss_from.ndim == 1 and len(offsets) == len(loss_from) + 1
        if not shapes_fit or not all(np.issubdtype(a.dtype, np.integer) for a in (tokens, offsets, loss_from)):
            raise RunDirectoryError(f"corrupted examples in {directory}: tokens, offsets and loss_from do not fit")
        if offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) < 0).any():
            raise RunDirectoryError(f"corrupted file {directory / 'offsets.npy'}: it points outside the tokens")
        return cls(tokens, offsets, loss_from)


class ExampleBatches:
    """Batches of examples for training and evaluation: right-padded to the longest example of the
    batch (a causal model's earlier positions never see the padding, which is never predicted), with
    targets ``IGNORE`` before each example's ``loss_from`` and on padding."""

    def __init__(self, parts: Sequence[Examples], pad: int):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.pad = pad
        lengths = np.concatenate([np.diff(p.offsets) for p in self.parts] or [np.zeros(0, np.int64)])
        self.block_size = int(lengths.max(initial=1))  # the widest batch, for throughput figures

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _example(self, index: int) -> tuple[np.ndarray, int]:
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        local = int(index - self.starts[part])
        return self.parts[part].example(local), int(self.parts[part].loss_from[local])

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of the given examples, each (len(indices), longest - 1)."""
        examples = [self._example(int(i)) for i in indices]
        width = max(1, max(len(tokens) for tokens, _ in examples) - 1)
        inputs = np.full((len(examples), width), self.pad, dtype=np.int64)
        targets = np.full((len(examples), width), IGNORE, dtype=np.int64)
        for row, (tokens, loss_from) in enumerate(examples):
            inputs[row, : len(tokens) - 1] = tokens[:-1]
            first = max(1, loss_from)  # target j + 1 is predicted at position j
            targets[row, first - 1 : len(tokens) - 1] = tokens[first:]
        return inputs, targets
