"""The run directory: the single record of a run.

    RUN/run.json                      marker: format, version, tool version, creation time, environment
                                      (the tool's commit, libraries, machine: provenance.py)
    RUN/config.yaml                   the resolved config (overrides applied)
    RUN/run.lock                      locked (flock) by the one process running or resuming the run
    RUN/chains/<point>/<regime>/      one directory per chain
        chain.json                    what the chain is: setting fields, regime, seeds
        real_preview.npy              a few real samples beside which figures show the synthetic ones
        progress.json                 {"completed": n}: the last iteration that is fully on disk
        iter_0001-0042/               a commit of several iterations (cheap settings commit in groups)
            metrics.npz               their records: train size, real fraction and metrics per seed
                                      (metrics.json, one record, in run formats 1 and 2)
            model/                    the model of the commit's last iteration, when kept (``checkpoints``)
            preview_0001.npy …        samples of each iteration's model, for a cheap setting with previews
        iter_0043/                    a commit of one iteration, holding the same and, for that iteration:
            synthetic/                its synthetic batch, kept when the regime needs its history
            preview.npy               samples of its model: images (uint8 N,H,W,C) or texts
            diagnostics.json          details of the fit a setting keeps (a language model's learning curve)
        iter_0044.scratch/            the running iteration's own progress (a language model's finished
                                      sampling shards, its last saved training step): kept across an
                                      interruption, removed at commit
    RUN/first-iterations/<point>/     while a run of a costly setting is under way: the first iteration
                                      of each sweep point (and seed), computed once and committed as it
                                      is into every regime's chain (it fits the real data alone, so it
                                      is the same in every regime); removed once the run is complete
    RUN/damaged/<UTC time>/chains/…   commits ``resume --recompute-damaged`` set aside (a damaged one
                                      and those after it), as they were
    RUN/shared/                       what a setting makes once per run for all its chains (a model
                                      the fine-tuning setting pretrains): ``Setting.shared``
    RUN/figures/                      written by `model-collapse plot`
    RUN/logs/<UTC time>-<chain>.txt   the full traceback of a chain that stopped on an unexpected error
                                      (the command prints one line naming this file)

Every file is written to a temporary name, flushed to disk and renamed into place (``atomic.py``); a commit is
assembled in ``iter_....partial`` and renamed as a whole, and only then does progress.json move on.
A crash at any point therefore leaves either the old state or the new one, never a half-written one.
A commit's directory is committed the moment it appears, so nothing ever deletes one: progress.json
is a record kept in step with them, rebuilt from them when it lags behind (a crash between the rename
and its update, or a file rolled back), and a gap in the iterations is refused rather than repaired.
The run directory itself is assembled beside its final name and renamed into place, so a crash while
creating it leaves no half-made run.
"""

from __future__ import annotations

from .chain_store import ChainStore, Commit, commit_name
from .records import RECORDS, IterationRecord, records_from_arrays, records_to_arrays
from .run import (
    CONFIG,
    DAMAGED,
    FORMAT_VERSION,
    LOCK,
    LOGS,
    READABLE_VERSIONS,
    SHARED,
    RunLock,
    create_run,
    inside,
    lock_run,
    open_run,
    read_json,
    run_in_use,
    run_marker,
)

__all__ = [
    "CONFIG",
    "DAMAGED",
    "FORMAT_VERSION",
    "LOCK",
    "LOGS",
    "READABLE_VERSIONS",
    "RECORDS",
    "SHARED",
    "ChainStore",
    "Commit",
    "IterationRecord",
    "RunLock",
    "commit_name",
    "create_run",
    "inside",
    "lock_run",
    "open_run",
    "read_json",
    "records_from_arrays",
    "records_to_arrays",
    "run_in_use",
    "run_marker",
]
