"""The chain: for n = 1..N, sample from model n-1, let the regime build the training set, fit, evaluate.

The chain knows nothing about any setting (it calls the setting protocol) and nothing about any regime
(it asks the regime what to sample and which rows to train on). With a ``ChainStore`` it records each
iteration durably and resumes after the last completed one; because every random stream is keyed by
(seeds, iteration, purpose) rather than carried along, a resumed chain reproduces an uninterrupted one
exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import RunDirectoryError
from .randomness import chain_rng
from .regimes import REAL, Regime, Source, TrainingPlan, fresh_real, synthetic
from .rundir import ChainStore, IterationRecord
from .settings import Setting


def _training_parts(setting: Setting, plan: TrainingPlan, pool: dict[Source, Any]) -> list[Any]:
    parts = []
    for selection in plan.selections:
        data = [pool[source] for source in selection.sources]
        if selection.rows is None:
            parts.extend(data)  # whole sources, reused as they are (their cached statistics too)
        else:
            parts.append(setting.select(data, selection.rows))
    return parts


def _restore(setting: Setting, regime: Regime, store: ChainStore, completed: int, pool: dict[Source, Any]) -> Any:
    """Model of the last completed iteration, and the synthetic batches the regime still needs, each
    checked to hold as many samples per seed as this chain drew for it."""
    if regime.keeps_history:
        real_size = setting.size(setting.real_train)
        for iteration in range(2, completed + 1):
            directory = store.synthetic_directory(iteration)
            data = setting.load_data(directory)
            expected = regime.synthetic_size(iteration, real_size)
            if setting.size(data) != expected:
                raise RunDirectoryError(
                    f"corrupted data in {directory}: {setting.size(data)} samples per seed, this chain drew {expected}"
                )
            pool[synthetic(iteration)] = data
    return setting.load_model(store.model_directory(completed))


def run_chain(
    setting: Setting,
    regime: Regime,
    iterations: int,
    store: ChainStore | None = None,
    keep_models: bool = False,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> list[IterationRecord]:
    """Run (or finish) one chain; returns the records of all its iterations, 1..``iterations``."""
    seeds = setting.seeds
    real_size = setting.size(setting.real_train)
    pool: dict[Source, Any] = {REAL: setting.real_train}
    records: list[IterationRecord] = []
    model = None
    completed = 0
    if store is not None:
        completed = store.open()
        if completed > iterations:
            completed = iterations
        records = store.records(setting.batch, setting.metrics, completed)
        if completed:
            model = _restore(setting, regime, store, completed, pool)
        if setting.preview_size:
            store.save_real_preview(setting.preview(setting.real_train)[: setting.preview_size])

    def scratch(iteration: int):  # where a long sample or fit of this iteration may keep its progress
        return store.scratch_directory(iteration) if store is not None else None

    sizes = {source: setting.size(data) for source, data in pool.items()}  # kept in step with the pool
    for iteration in range(completed + 1, iterations + 1):
        new_synthetic = None
        if iteration > 1:
            if not regime.keeps_history:
                pool, sizes = {REAL: setting.real_train}, {REAL: real_size}
            size = regime.synthetic_size(iteration, real_size)
            if size:
                new_synthetic = setting.sample(model, size, chain_rng(seeds, iteration, "sample"), scratch(iteration))
                pool[synthetic(iteration)], sizes[synthetic(iteration)] = new_synthetic, size
            size = regime.fresh_real_size(iteration, real_size)
            if size:
                pool[fresh_real(iteration)] = setting.fresh_real(size, chain_rng(seeds, iteration, "fresh-real"))
                sizes[fresh_real(iteration)] = size
        plan = regime.plan(sizes, iteration, setting.batch, chain_rng(seeds, iteration, "regime"))
        model = setting.fit(
            _training_parts(setting, plan, pool), chain_rng(seeds, iteration, "fit"), scratch(iteration)
        )
        record = IterationRecord(iteration, plan.train_size, plan.real_fraction, setting.evaluate(model))
        if store is not None:
            keep = new_synthetic is not None and regime.keeps_history
            preview = None
            if setting.preview_size:  # on every rank of a data-parallel run, since sampling may be split across them
                preview = setting.preview(
                    setting.sample(model, setting.preview_size, chain_rng(seeds, iteration, "preview"))
                )
            store.commit(
                record,
                save_model=lambda directory, model=model: setting.save_model(model, directory),
                save_synthetic=(lambda directory, data=new_synthetic: setting.save_data(data, directory))
                if keep
                else None,
                keep_models=keep_models,
                preview=preview,
                diagnostics=setting.diagnostics(model),
            )
            if keep and setting.data_on_disk:
                store.wait_for_commit()  # a reading rank maps the batch only once the writer has committed it
                pool[synthetic(iteration)] = setting.load_data(store.synthetic_directory(iteration))
        records.append(record)
        if on_iteration is not None:
            on_iteration(record)
    return records
