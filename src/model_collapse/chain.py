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
from .regimes import REAL, Regime, Source, TrainingPlan, fresh_real_source, synthetic_source
from .rundir import ChainStore, IterationRecord
from .settings import Fit, Setting


def _training_parts(kind: type, plan: TrainingPlan, pool: dict[Source, Any]) -> list[Any]:
    parts = []
    for selection in plan.selections:
        data = [pool[source] for source in selection.sources]
        if selection.rows is None:
            parts.extend(data)  # whole sources, reused as they are (their cached statistics too)
        else:
            parts.append(kind.select(data, selection.rows))
    return parts


def _restore(setting: Setting, regime: Regime, store: ChainStore, completed: int, pool: dict[Source, Any]) -> Any:
    """Model of the last completed iteration, and the synthetic batches the regime still needs, each
    checked to hold as many samples per seed as this chain drew for it."""
    real = setting.real_train
    if regime.keeps_history:
        for iteration in range(2, completed + 1):
            directory = store.synthetic_directory(iteration)
            data = type(real).load(directory, like=real)
            expected = regime.synthetic_size(iteration, len(real))
            if len(data) != expected:
                raise RunDirectoryError(
                    f"corrupted data in {directory}: {len(data)} samples per seed, this chain drew {expected}"
                )
            pool[synthetic_source(iteration)] = data
    return setting.load_model(store.model_directory(completed))


def _commit(
    setting: Setting,
    store: ChainStore,
    record: IterationRecord,
    fitted: Fit,
    kept_synthetic: Any | None,
    keep_models: bool,
) -> Any | None:
    """Record ``record`` durably with the model, the synthetic batch the regime keeps, the model's
    preview and the fit's details; returns the kept batch as read back from the run directory when its
    type memory-maps (so that an accumulated pool does not grow RAM), else None."""
    seeds, iteration = setting.seeds, record.iteration
    preview = None
    if setting.preview_size:  # on every rank of a data-parallel run, since sampling may be split across them
        samples = setting.sample(fitted.model, setting.preview_size, chain_rng(seeds, iteration, "preview"))
        preview = setting.preview(samples)
    store.commit(
        record,
        save_model=lambda directory: setting.save_model(fitted.model, directory),
        save_synthetic=kept_synthetic.save if kept_synthetic is not None else None,
        keep_models=keep_models,
        preview=preview,
        diagnostics=fitted.diagnostics,
    )
    if kept_synthetic is None or not type(kept_synthetic).memory_mapped:
        return None
    store.wait_for_commit()  # a reading rank maps the batch only once the writer has committed it
    return type(kept_synthetic).load(store.synthetic_directory(iteration), like=setting.real_train)


def run_chain(
    setting: Setting,
    regime: Regime,
    iterations: int,
    store: ChainStore | None = None,
    keep_models: bool = False,
    on_iteration: Callable[[IterationRecord], None] | None = None,
) -> list[IterationRecord]:
    """Run (or finish) one chain; returns the records of all its iterations, 1..``iterations``."""
    seeds, real = setting.seeds, setting.real_train
    kind = type(real)  # the data type of every part: it selects rows, saves and loads itself
    pool: dict[Source, Any] = {REAL: real}
    records: list[IterationRecord] = []
    model = None
    completed = 0
    if store is not None:
        completed = min(store.open(), iterations)
        records = store.records(setting.seed_count, setting.metrics, completed)
        if completed:
            model = _restore(setting, regime, store, completed, pool)
        if setting.preview_size:
            store.save_real_preview(setting.preview(real)[: setting.preview_size])

    def scratch(iteration: int):  # where a long sample or fit of this iteration may keep its progress
        return store.scratch_directory(iteration) if store is not None else None

    for iteration in range(completed + 1, iterations + 1):
        new_synthetic = None
        if iteration > 1:
            if not regime.keeps_history:
                pool = {REAL: real}
            size = regime.synthetic_size(iteration, len(real))
            if size:
                new_synthetic = setting.sample(model, size, chain_rng(seeds, iteration, "sample"), scratch(iteration))
                pool[synthetic_source(iteration)] = new_synthetic
            size = regime.fresh_real_size(iteration, len(real))
            if size:
                pool[fresh_real_source(iteration)] = setting.fresh_real(size, chain_rng(seeds, iteration, "fresh-real"))
        sizes = {source: len(data) for source, data in pool.items()}
        plan = regime.plan(sizes, iteration, setting.seed_count, chain_rng(seeds, iteration, "regime"))
        result = setting.fit(_training_parts(kind, plan, pool), chain_rng(seeds, iteration, "fit"), scratch(iteration))
        fitted = result if isinstance(result, Fit) else Fit(result, None)
        model = fitted.model
        record = IterationRecord(iteration, plan.train_size, plan.real_fraction, setting.evaluate(model))
        if store is not None:
            kept = new_synthetic if new_synthetic is not None and regime.keeps_history else None
            mapped = _commit(setting, store, record, fitted, kept, keep_models)
            if mapped is not None:
                pool[synthetic_source(iteration)] = mapped
        records.append(record)
        if on_iteration is not None:
            on_iteration(record)
    return records
