"""Running under ``torchrun``: data-parallel training for neural settings.

Every rank runs the same chains in the same order, with the same keyed random streams; a neural
setting splits each training batch, its sampling and its evaluation across the ranks (so all ranks
call them together) and gathers what every rank needs. Rank 0 alone writes the run
directory; the others only read it, after rank 0 has prepared each chain. Without ``torchrun``
(no WORLD_SIZE > 1 in the environment) all of this is a no-op and PyTorch is never imported.
"""

from __future__ import annotations

import gc
import os
import sys


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def start() -> None:
    """Join the process group that ``torchrun`` describes in the environment."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def finish() -> None:
    """Leave the process group together (gloo aborts a rank whose peer tears down while it still talks)."""
    if _group_running():
        dist = sys.modules["torch.distributed"]
        # DDP wrappers caught in reference cycles hold the group; freed at interpreter exit instead,
        # their gloo threads can abort the process (SIGABRT, "terminate called without an active exception").
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def _group_running() -> bool:
    """A process group of several ranks is running (checked without importing PyTorch if nothing has)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks of the running process group ((0, 1) without one)."""
    if not _group_running():
        return 0, 1
    dist = sys.modules["torch.distributed"]
    return dist.get_rank(), dist.get_world_size()


def global_sum(value: float, device) -> float:
    """``value`` summed over the ranks (itself without a process group); ``device`` is where the
    reduction runs: NCCL reduces GPU tensors only."""
    if not _group_running():
        return value
    import torch
    import torch.distributed as dist

    total = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item()


def all_gather(value):
    """Every rank's ``value``, in rank order ([value] without a process group)."""
    if not _group_running():
        return [value]
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
