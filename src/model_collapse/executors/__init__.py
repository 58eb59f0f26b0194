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
from importlib import metadata
from typing import Any

# name -> "module:class", imported when a run uses it (Ray and submitit are optional extras).
EXECUTORS = {
    "local": "model_collapse.executors.local:LocalExecutor",
    "ray": "model_collapse.executors.ray_tasks:RayExecutor",
    "slurm": "model_collapse.executors.slurm_jobs:SlurmExecutor",
}
# Installed packages add executors here (``[project.entry-points."model_collapse.executors"]``).
ENTRY_POINT_GROUP = "model_collapse.executors"


def executor_targets() -> dict[str, str]:
    """Every executor by name: the built-in ones, then those installed packages register."""
    installed = {entry.name: entry.value for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**EXECUTORS, **{k: v for k, v in installed.items() if k not in EXECUTORS}}


def executor_class(name: str) -> Any:
    """The class of the executor ``name`` (an ``executors.protocol.Executor``), imported now."""
    module, _, cls = executor_targets()[name].partition(":")
    return getattr(importlib.import_module(module), cls)
