"""The base of every executor's options: each executor declares the keys of the config's ``executor:``
section it takes in a subclass of its own (``LocalExecutor.Options``, ``RayExecutor.Options``,
``SlurmExecutor.Options``), as Hydra's launchers do. One section may hold the options of several
executors, so that one config serves a laptop and a cluster: each checks the values of its own, and the
one that runs gets them (``runner.resolve_executor``).
"""

from __future__ import annotations

from pydantic import Field, PositiveFloat

from ..settings.configs import StrictConfig


class ExecutorOptions(StrictConfig):
    """Options every executor has: its name."""

    name: str = Field("local", description="where the chains run: local, ray, slurm or an installed executor")

    @property
    def runs_here(self) -> bool:
        """Whether the chains run on this machine (then its memory, cores and files are theirs)."""
        return False

    @property
    def threads_per_chain(self) -> int | None:
        """The threads a chain may use where it runs (None: its share of this machine's cores)."""
        return None


class ReservedOptions(ExecutorOptions):
    """Options of an executor that reserves resources for each chain (Ray, Slurm)."""

    cpus_per_chain: PositiveFloat = Field(1.0, description="CPUs reserved per chain (slurm: whole, split among tasks)")
    gpus_per_chain: float = Field(0.0, ge=0, description="GPUs per chain (ray: fractions share one)")

    @property
    def threads_per_chain(self) -> int:
        return max(1, int(self.cpus_per_chain))
