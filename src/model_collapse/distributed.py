"""Running under ``torchrun``: data-parallel training for neural settings.

Every rank runs the same chains in the same order, with the same keyed random streams; a neural
setting splits each training batch, its sampling and its evaluation across the ranks (so all ranks
call them together) and gathers what every rank needs. Rank 0 alone writes the run
directory; the others only read it, after rank 0 has prepared each chain. Without ``torchrun``
(no WORLD_SIZE > 1 in the environment) all of this is a no-op and PyTorch is never imported.
"""

from __future__ import annotations

import os


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


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()
