"""The errors a user or the machine can cause, each printed by the command as one line: bad input
(``ConfigError``, ``RunDirectoryError``) exits with code 2, a fault of the machine (``ResourceError``)
and a chain stopped by a bug (``ChainFailed``) with 1."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any


class ModelCollapseError(Exception):
    """Bad input: a config, a command-line argument or a file the tool cannot use."""


class ConfigError(ModelCollapseError):
    """A config that does not validate."""


class RunDirectoryError(ModelCollapseError):
    """A run directory (or a file in it) that is missing, corrupted or not ours."""


class NoSamples(ModelCollapseError):
    """A model that cannot write what ``Setting.sample`` must return (a fine-tuned model that writes no
    well-formed conversation): a chain that needs the samples to train on stops with it; a preview of
    the model's samples goes without."""


class SettingError(ModelCollapseError):
    """A setting (shipped or a plugin) that breaks the protocol: ``evaluate`` giving the wrong number of
    values, ``sample`` the wrong number of samples. Found before anything of it is committed."""


class ResourceError(ModelCollapseError):
    """The machine ran out of something (disk space, memory) or a worker was killed: the run
    directory is intact and ``resume`` continues it."""


class ChainFailed(Exception):
    """A chain stopped on an unexpected error (a bug in a setting, shipped or a plugin): the message
    names the chain, the error and the file in the run directory that keeps its full traceback
    (``log``; None where it could not be written, and the traceback went to stderr instead).
    ``original`` is the error itself when the chain ran in this process, for a debugger."""

    def __init__(self, message: str, log: Path | None = None, original: BaseException | None = None):
        super().__init__(message)
        self.log = log
        self.original = original


def one_line_error(error: BaseException, where: Path) -> ModelCollapseError | None:
    """The one-line error for a failure that is the user's or the machine's, not the code's: the
    tool's own errors, a full disk (naming the file, else ``where``), memory running out. None for
    anything else."""
    if isinstance(error, ModelCollapseError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"no space left on the device while writing {error.filename or where}")
    if isinstance(error, MemoryError):
        return ResourceError("out of memory (lower seeds, setting sizes or --workers)")
    if is_torch_write_failure(error):  # a plugin's own torch.save (training_state.torch_save names the file)
        if disk_full(where):
            return ResourceError(f"no space left on the device while writing {where}")
        first = (str(error).strip().splitlines() or [""])[0]
        return ResourceError(f"PyTorch could not finish writing a file in {where} ({first})")
    return None


# What PyTorch's file writer (caffe2's inline_container) raises when a write comes up short: a full disk,
# mostly, as a RuntimeError rather than an OSError.
_TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def is_torch_write_failure(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES)


def disk_full(path: Path, margin: int = 1 << 20) -> bool:
    """Whether the filesystem of ``path`` (or of its nearest existing parent) has less than ``margin``
    bytes left for this user: after a write came up short, whether that was for want of space."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            stats = os.statvfs(candidate)
            return stats.f_bavail * stats.f_frsize < margin
    return False


class Terminated(BaseException):
    """The process received SIGTERM: handled like Ctrl-C (a BaseException, so that no ``except
    Exception`` on the way swallows it)."""


def yaml_problem(error: Any) -> str:
    """PyYAML's message in one line: what is wrong and where (its own spans several lines)."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or type(error).__name__
    mark = getattr(error, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)
