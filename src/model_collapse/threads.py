"""A chain's thread budget: how many threads its numerical libraries compute with.

BLAS and OpenMP (numpy, scipy, scikit-learn) and PyTorch's intra-op pool each start a thread per core
by default. Two chains at once, or one chain beside other work, then run more threads than there are
cores, and their spinning threads thrash: a small torch model on two shared cores trained several times
slower on two threads than on one. So every chain, wherever it runs (this process, a local worker, a Ray
task, a Slurm job), computes with a budget of threads:

* ``threads`` in the config or ``--threads`` on the command line, when given;
* else, locally, the cores this process may use divided by the chains running at once (and by the
  ranks ``torchrun`` starts on this node);
* else, on Ray or Slurm, the CPUs each chain reserves (``executor.cpus_per_chain``, split among a
  Slurm chain's tasks).

A cheap setting's chains (``Capabilities.cheap``) always compute on one thread: their numbers then do not
depend on where they ran, which their resume (recomputing, then comparing) relies on.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as ``taskset`` or a cgroup sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def share_of_cores(chains_at_once: int) -> int:
    """Each of ``chains_at_once`` chains' share of this machine's cores (at least one thread)."""
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this node
    return max(1, available_cores() // max(1, chains_at_once * ranks_here))


@contextlib.contextmanager
def limited(count: int) -> Iterator[None]:
    """BLAS and OpenMP pools, and PyTorch's intra-op pool when PyTorch is imported, at ``count`` threads
    inside the block; PyTorch's own setting is put back after it (the block may run in a notebook)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=count):
        if torch is not None:
            torch.set_num_threads(count)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)
