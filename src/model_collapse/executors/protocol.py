"""What an executor is given and implements: ``Work`` (the chains to run and how), ``Progress`` (where it
reports), ``Executor`` (the protocol, with its ``Options``). The registry of executors by name is
``executors/__init__.py``; each executor's module owns its options class (``options.py``'s base).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from ..experiment import ChainSpec
from .options import ExecutorOptions

# How often a driver reads the chains' progress from the run directory.
POLL_INTERVAL_S = 0.5
# How long chains stopped by Ctrl-C get to commit what they have computed before they are killed.
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class Work:
    """The chains an executor is to run (``specs[i]`` for each ``i`` in ``todo``) and how."""

    run_directory: Path
    specs: Sequence[ChainSpec]
    todo: Sequence[int]
    iterations: int
    checkpoints: str
    workers: int  # local processes at most (the local executor)
    quiet: bool  # notices off in the workers as in the driver
    threads: int  # each chain's thread budget (threads.py; a cheap setting's chains use one)


class Progress(Protocol):
    """Where an executor reports how far each chain (by its index in ``Work.specs``) has got."""

    def reached(self, chain: int, iteration: int) -> None: ...

    def doing(self, chain: int, activity: str) -> None: ...


class Executor(Protocol):
    """Runs chains. ``Options`` is its options class (the config's ``executor:`` section, the keys it
    declares); it is constructed with them. ``check`` runs before anything is written (a cluster refusing
    the jobs is a config error then); ``run`` returns when every chain of ``work`` is complete, or raises
    the first chain's error after stopping the others."""

    Options: ClassVar[type[ExecutorOptions]]

    def __init__(self, options: ExecutorOptions) -> None: ...

    def check(self) -> None: ...

    def run(self, work: Work, progress: Progress) -> None: ...
