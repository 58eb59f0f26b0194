"""Executors: where a run's chains run. Each implements ``Executor``; ``EXECUTORS`` names them for
``executor.name`` in a config and ``--executor`` on the command line.

The unit of work is one chain, which resumes from its own directory; so an executor only has to start
every unfinished chain somewhere that sees the run directory, and start it again if it is stopped.
Every executor gives the same table, byte for byte: the numbers depend on keys, not on where or in
what order the chains run.

* ``local.py``: in this process, or in spawned local processes (``--workers``).
* ``ray_tasks.py`` (extra ``[ray]``): one Ray task per chain, rerun when its worker dies.
* ``slurm_jobs.py`` (extra ``[slurm]``): one Slurm job per chain, all in one job array, requeued at its
  time limit or when preempted; a data-parallel chain is one job of several tasks.

Wherever a chain runs, ``outcome.run_chain_spec`` runs it and turns what stopped it into an
``Outcome``, which the driver raises as the run's one-line error; the first chain that fails stops the
others (their commits stay, ``resume`` finishes them). Progress is reported through ``Progress``: from
the workers' pipes locally, from each chain's ``progress.json`` elsewhere.

Importing this module imports no executor: the registry holds where each lives.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..experiment import ChainSpec, ExecutorConfig

# How often a driver reads the chains' progress from the run directory.
POLL_INTERVAL_S = 0.5
# How long chains stopped by Ctrl-C get to commit what they have computed before they are killed.
STOP_GRACE_S = 10.0

# name -> "module:class", imported when a run uses it (Ray and submitit are optional extras).
EXECUTORS = {
    "local": "model_collapse.executors.local:LocalExecutor",
    "ray": "model_collapse.executors.ray_tasks:RayExecutor",
    "slurm": "model_collapse.executors.slurm_jobs:SlurmExecutor",
}


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
    """Runs chains. Constructed with the config's ``executor`` options; ``check`` runs before anything
    is written (a cluster refusing the jobs is a config error then); ``run`` returns when every chain
    of ``work`` is complete, or raises the first chain's error after stopping the others."""

    def __init__(self, options: ExecutorConfig) -> None: ...

    def check(self) -> None: ...

    def run(self, work: Work, progress: Progress) -> None: ...


def executor_class(name: str) -> type[Executor]:
    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
