"""The memory a run will need, estimated before anything is written, from the settings' footprints
(``Setting.footprint``) and the regimes' sizes: a config that cannot fit is refused in one line."""

from __future__ import annotations

import os

from .errors import ConfigError
from .experiment import Experiment
from .regimes import Regime
from .settings import SETTINGS

# What the main process keeps per chain (its spec, progress bar, record of iterations) and per seed.
_BYTES_PER_CHAIN = 4096
_BYTES_PER_SEED = 64


def estimate_memory(experiment: Experiment, workers: int, here: bool = True) -> None:
    """Refuse, before anything is written, a config whose chains cannot fit in this machine's memory.

    ``seeds=1000000000``, ``mix:1e9`` or ``setting.dim=100000`` would otherwise fail hours in. The
    estimate is what a chain holds at its largest iteration (the setting's footprint, the regime's
    synthetic sizes) plus every chain's bookkeeping, computed from counts: nothing that large is built.
    ``here``: the chains run on this machine (a local executor or a local Ray cluster), so that models'
    activations count too."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    config = experiment.config
    declared = SETTINGS.declared(experiment.setting_name)
    seeds_per_chain = 1 if experiment.capabilities.one_seed_per_chain else config.seeds
    chains = len(experiment.points) * len(experiment.regimes) * (config.seeds // seeds_per_chain)
    bookkeeping = chains * _BYTES_PER_CHAIN + config.seeds * _BYTES_PER_SEED
    worst, worst_case = 0, None
    for point in experiment.points:
        footprint = declared.footprint(point)
        if footprint is None:
            continue
        for regime in experiment.regimes:
            rows = footprint.rows + peak_synthetic_rows(regime, config.iterations, footprint.rows)
            candidates = 0
            if point.curation is not None:  # the candidates of the largest batch, before all but 1 in m go
                candidates = (point.curation.candidates - 1) * regime.synthetic_size(config.iterations, footprint.rows)
            activations = footprint.activation_bytes if here else 0
            parts = {
                "model": footprint.fixed_bytes + activations,
                "data": rows * footprint.bytes_per_row,
                "candidates": candidates * footprint.bytes_per_row,
            }
            need = seeds_per_chain * sum(parts.values())
            if need > worst:
                worst, worst_case = need, (point, regime, footprint, max(parts, key=lambda k: parts[k]))
    parallel = max(1, min(workers, chains))
    if worst * parallel + bookkeeping <= total:
        return
    where = f"seeds={config.seeds}, iterations={config.iterations}"
    if worst_case is None or bookkeeping > worst * parallel:
        raise ConfigError(
            f"{where}: {chains} chains would need about {_bytes(bookkeeping)} of memory to track, "
            f"this machine has {_bytes(total)}"
        )
    point, regime, footprint, largest = worst_case
    sizes = ", ".join(f"setting.{key}={_text(value)}" for key, value in _blamed(point, footprint, largest))
    at_once = f" x {parallel} chains at once (--workers)" if parallel > 1 else ""
    raise ConfigError(
        f"{where}, {sizes}, regime {regime.label}: a chain would hold about {_bytes(worst)} in memory{at_once}, "
        f"this machine has {_bytes(total)}"
    )


def _blamed(point, footprint, largest: str) -> list[tuple[str, object]]:
    """The config fields to name for the largest part of a chain's memory: the model's own fields
    (``Footprint.fields``), the curation's candidates, or the sizes of the data (every whole number)."""
    values = point.model_dump()
    if largest == "candidates":
        return [("curation.candidates", point.curation.candidates)]
    if largest == "model" and footprint.fields:
        found = []
        for key in footprint.fields:
            value: object = values
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                found.append((key, value))
        if found:
            return found
    return [(k, v) for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool)]


def _text(value: object) -> str:
    """A config value as an override writes it: ``[32, 64]`` for a list or tuple."""
    return f"[{', '.join(map(str, value))}]" if isinstance(value, list | tuple) else str(value)


def peak_synthetic_rows(regime: Regime, iterations: int, real_size: int) -> int:
    """Rows per seed besides the real data at the largest iteration: every batch so far for a regime
    that keeps its history, else the largest single iteration's (sizes never shrink with n)."""
    if iterations < 2:
        return 0

    def rows(i: int) -> int:
        return regime.synthetic_size(i, real_size) + regime.fresh_real_size(i, real_size)

    if regime.keeps_history:
        return (
            (iterations - 1) * rows(iterations)
            if rows(2) == rows(iterations)
            else sum(rows(i) for i in range(2, iterations + 1))
        )
    return rows(iterations)


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} PiB"
