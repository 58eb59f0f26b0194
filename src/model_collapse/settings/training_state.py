"""What neural settings keep of a fit: its resumable state while it runs (one file in the iteration's
scratch directory, replaced atomically) and the fitted network's weights.

Language models and conformer diffusion models save their whole training state every few minutes;
a fit run again with the same data, options and random generator continues from the last saved step.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import time
from pathlib import Path
from typing import BinaryIO

import torch

from ..atomic import write_file_atomic
from ..errors import RunDirectoryError, disk_full, is_torch_write_failure

log = logging.getLogger(__name__)


class TrainingState:
    """The whole state of a training run at a step, in one file replaced atomically.

    Model, optimiser, schedule, loss scaler, torch's random state (dropout), the loss since the last
    evaluation and the curve so far: with the data order, drawn from the run's own generator, that is all
    it takes to continue as if never interrupted. A fingerprint of the run (options, data size, the
    generator's starting state) makes a file of any other run, or an unreadable one, ignored."""

    FILE = "training_state.pt"

    def __init__(self, directory: Path | None, minutes: float | None, fingerprint: dict):
        self.path = directory / self.FILE if directory is not None else None
        self.interval_s = None if minutes is None else 60 * minutes
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        self.last_saved = time.monotonic()

    def load(self) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's message advises weights_only=False: never, for this file
            log.warning(
                "refused training state %s: it holds objects other than tensors and plain data, which are "
                "never unpickled; training from the start",
                self.path,
            )
            return None
        except Exception as error:  # torch raises many types for a truncated or foreign file
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            log.warning("ignoring unreadable training state %s (%s); training from the start", self.path, reason)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring training state %s of another run; training from the start", self.path)
            return None
        return state

    def due(self) -> bool:
        return (
            self.path is not None
            and self.interval_s is not None
            and time.monotonic() - self.last_saved >= self.interval_s
        )

    def save(self, state: dict) -> None:
        assert self.path is not None, "saving a training state needs a directory"  # due() says when
        path = self.path
        write_file_atomic(path, lambda handle: torch_save({**state, "fingerprint": self.fingerprint}, handle, path))
        self.last_saved = time.monotonic()


def torch_save(value: object, target: Path | BinaryIO, path: Path) -> None:
    """``torch.save``, whose short write on a full disk (a RuntimeError, "unexpected pos …") becomes the
    OSError of a full disk naming ``path``, which the run reports in one line with how to resume."""
    try:
        torch.save(value, target)
    except RuntimeError as error:
        if is_torch_write_failure(error) and disk_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise


WEIGHTS = "model.pt"


def save_weights(model: torch.nn.Module, directory: Path) -> None:
    """A fitted network's parameters, for ``load_weights`` (the chain's model directory)."""
    torch_save(model.state_dict(), directory / WEIGHTS, directory / WEIGHTS)


def load_weights(model: torch.nn.Module, directory: Path, device: torch.device | str) -> torch.nn.Module:
    """``model`` (a fresh one of the right architecture) with the parameters saved in ``directory``, in
    evaluation mode; a missing, damaged or foreign file is a RunDirectoryError naming it."""
    path = directory / WEIGHTS
    try:
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    except FileNotFoundError:
        raise RunDirectoryError(f"missing file {path}") from None
    except Exception:  # torch raises several types, with long messages, for damaged or foreign files
        raise RunDirectoryError(f"corrupted file {path}: not a checkpoint of this model") from None
    return model.eval()
