"""The chain: for n = 1..N, sample from model n-1, let the regime build the training set, fit, evaluate.

The chain knows nothing about any setting (it calls the setting protocol) and nothing about any regime
(it asks the regime what to sample and which rows to train on). With a ``ChainStore`` it records its
iterations durably and resumes after the last committed one. Every random stream is keyed by (seeds,
iteration, purpose) rather than carried along, so a resumed chain reproduces an uninterrupted one
exactly, and there are two ways to resume:

* a costly setting (a neural network per iteration) commits every iteration with its model and the
  synthetic batch the regime keeps, and resumes from them;
* a cheap setting (``Capabilities.cheap``: milliseconds per iteration) commits its records in groups, at most
  every ``COMMIT_INTERVAL_S`` seconds, and keeps neither models nor synthetic data: on resume it
  recomputes its iterations from the first, without evaluating them, and checks that the last one gives
  the metrics it recorded before it goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, get_args

import numpy as np

from .contract import checked_data, checked_evaluation, checked_fit
from .curation import Curator, metrics_for
from .errors import NoSamples, RunDirectoryError, Terminated
from .experiment import Checkpoints
from .randomness import chain_rng
from .regimes import REAL, Regime, Source, TrainingPlan, fresh_real_source, synthetic_source
from .rundir import ChainStore, IterationRecord
from .settings import Data, Fit, Setting

# How often a cheap chain commits at most (and at its end, and when stopped); the environment may set it
# (a slow shared filesystem; the tests, which stop chains between commits).
COMMIT_INTERVAL_S = float(os.environ.get("MODEL_COLLAPSE_COMMIT_INTERVAL_S", "1.0"))

log = logging.getLogger(__name__)


def _training_parts(kind: type[Data], plan: TrainingPlan, pool: dict[Source, Any]) -> list[Any]:
    parts = []
    for selection in plan.selections:
        data = [pool[source] for source in selection.sources]
        if selection.rows is None:
            parts.extend(data)  # whole sources, reused as they are (their cached statistics too)
        else:
            parts.append(kind.select(data, selection.rows))
    return parts


class _Chain:
    """What a chain carries from one iteration to the next: the last model and the pool of sources."""

    def __init__(self, setting: Setting, regime: Regime):
        self.setting, self.regime = setting, regime
        self.capabilities = setting.capabilities_of(setting.config)
        self.pool: dict[Source, Any] = {REAL: setting.real_train}
        self.model: Any = None
        self.curator = Curator.of(setting)
        self.curated: dict[str, np.ndarray] = {}  # the last iteration's curation metrics (with a curator)

    def advance(self, iteration: int, scratch: Any = None) -> tuple[Fit, TrainingPlan, Any | None]:
        """Sample from the last model what ``iteration`` needs, fit its model; returns the fit, the plan
        and the new synthetic batch (None at iteration 1)."""
        setting, regime, seeds = self.setting, self.regime, self.setting.seeds
        real = setting.real_train
        new_synthetic, curated = None, self.curator.nothing if self.curator is not None else dict
        if iteration > 1:
            if not regime.keeps_history:
                self.pool = {REAL: real}
            size = regime.synthetic_size(iteration, len(real))
            if size:
                rng = chain_rng(seeds, iteration, "sample")
                if self.curator is None:
                    new_synthetic = setting.sample(self.model, size, rng, scratch)
                else:
                    curation_rng = chain_rng(seeds, iteration, "curation")
                    new_synthetic, curated = self.curator.draw(self.model, size, rng, curation_rng, scratch, iteration)
                self.pool[synthetic_source(iteration)] = checked_data(setting, "sample", new_synthetic, size)
            size = regime.fresh_real_size(iteration, len(real))
            if size:
                fresh = setting.fresh_real(size, chain_rng(seeds, iteration, "fresh-real"))
                self.pool[fresh_real_source(iteration)] = checked_data(setting, "fresh_real", fresh, size)
        sizes = {source: len(data) for source, data in self.pool.items()}
        plan = regime.plan(sizes, iteration, setting.seed_count, chain_rng(seeds, iteration, "regime"))
        parts = _training_parts(type(real), plan, self.pool)
        previous = {"previous": self.model} if self.capabilities.warm_start else {}  # None at iteration 1
        fitted = checked_fit(setting, setting.fit(parts, chain_rng(seeds, iteration, "fit"), scratch, **previous))
        self.model = fitted.model
        self.curated = curated()  # after the fit: scoring a batch of one candidate each may draw its rows
        return fitted, plan, new_synthetic

    def evaluate(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The last model's metrics with its iteration's curation metrics, and the details its
        evaluation keeps (``Evaluation.diagnostics``; none for most settings)."""
        evaluated = checked_evaluation(self.setting, self.setting.evaluate(self.model))
        return {**evaluated.metrics, **self.curated}, evaluated.diagnostics

    def restore(self, store: ChainStore, completed: int) -> None:
        """A costly chain: the model of the last completed iteration, and the synthetic batches the
        regime still needs, each checked to hold as many samples per seed as this chain drew for it."""
        if self.regime.keeps_history:
            for iteration in range(2, completed + 1):
                self.pool[synthetic_source(iteration)] = _kept_batch(self.setting, self.regime, store, iteration)
        self.model = self.setting.load_model(store.model_directory(completed))

    def reload_kept(self, iteration: int, store: ChainStore) -> None:
        """The batch ``iteration`` sampled, once committed, read back from the run directory when its
        type memory-maps: an accumulated pool then does not grow RAM."""
        source = synthetic_source(iteration)
        kind = type(self.pool[source])
        if kind.memory_mapped:
            store.wait_for_commit()  # a reading rank maps the batch only once the writer has committed it
            self.pool[source] = kind.load(store.synthetic_directory(iteration), like=self.setting.real_train)

    def recompute(self, store: ChainStore, last: IterationRecord) -> None:
        """A cheap chain: its iterations 1..``last.iteration`` again, checked against the last record."""
        for iteration in range(1, last.iteration + 1):
            self.advance(iteration)
        again, _ = self.evaluate()
        for name, recorded in last.metrics.items():
            now = np.asarray(again[name], dtype=float)
            differs = ~((now == recorded) | (np.isnan(now) & np.isnan(recorded)))
            if differs.any():
                seed = int(np.flatnonzero(differs)[0])
                raise RunDirectoryError(
                    f"{store.directory}: recomputing its {last.iteration} committed iterations gives "
                    f"{name} = {now[seed]!r} for seed {self.setting.seeds[seed]} at iteration {last.iteration}, "
                    f"where the run recorded {recorded[seed]!r}: this version of model-collapse or this "
                    "machine's numerical libraries compute other numbers than the ones that started the run, "
                    "so resuming here would mix the two; resume where the run started, or run it afresh"
                )


def _saves_model(checkpoints: str, final: bool, resumes_from_model: bool) -> bool:
    """Whether an iteration's commit holds its model (the one policy for what is kept): every one
    under ``all``, the last under ``last``, and a costly chain's latest until the chain is complete,
    to resume from. A commit that holds a model drops the earlier ones, but under ``all``."""
    return checkpoints == "all" or (final and checkpoints == "last") or (resumes_from_model and not final)


class _Uncommitted:
    """A chain without a run directory (a library call, a test): nothing is kept."""

    def start(self, iterations: int) -> list[IterationRecord]:
        """The records of the iterations already committed, after which the chain resumes."""
        return []

    def commit(self, record: IterationRecord, fitted: Fit, new_synthetic: Any | None, final: bool) -> None:
        pass

    def interrupted(self) -> None:
        pass


def _preview(setting: Setting, model: Any, iteration: int, where: Any) -> np.ndarray | None:
    """A few samples of ``model`` for figures (``Setting.preview``), on a stream of their own; None for a
    setting without previews, or a model that writes nothing usable (its metrics say so)."""
    size = setting.presentation.preview_size
    if not size:
        return None
    try:
        samples = setting.sample(model, size, chain_rng(setting.seeds, iteration, "preview"))
    except NoSamples as error:
        log.warning("%s: no preview of iteration %d: %s", where, iteration, error)
        return None
    return setting.preview(samples)


class _CheapCommits(_Uncommitted):
    """A cheap chain: records committed in groups, at most every ``interval_s`` (and at the end, and
    when stopped), with their previews; models only as ``checkpoints`` asks; resumed by recomputing."""

    def __init__(self, chain: _Chain, store: ChainStore, checkpoints: str, interval_s: float) -> None:
        self.chain, self.store, self.checkpoints, self.interval_s = chain, store, checkpoints, interval_s
        self.setting = chain.setting
        self.pending: list[IterationRecord] = []
        self.previews: dict[int, np.ndarray] = {}
        self.last_commit = time.monotonic()

    def start(self, iterations: int) -> list[IterationRecord]:
        records = _open(self.store, self.setting, iterations)
        if 0 < len(records) < iterations:
            self.chain.recompute(self.store, records[-1])
        return records

    def commit(self, record: IterationRecord, fitted: Fit, new_synthetic: Any | None, final: bool) -> None:
        self.pending.append(record)
        preview = _preview(self.setting, fitted.model, record.iteration, self.store.directory)
        if preview is not None:
            self.previews[record.iteration] = preview
        save_model = _saves_model(self.checkpoints, final, resumes_from_model=False)
        if save_model or final or time.monotonic() - self.last_commit >= self.interval_s:
            self._commit_pending(fitted.model if save_model else None)

    def interrupted(self) -> None:
        # iterations computed whole since the last commit; one already on disk (a commit interrupted
        # after its rename) is not committed twice
        if not self.pending:
            return
        done = self.store.completed()
        self.pending = [record for record in self.pending if record.iteration > done]
        if self.pending:
            self._commit_pending(None)

    def _commit_pending(self, model: Any | None) -> None:
        setting = self.setting
        save = (lambda directory: setting.save_model(model, directory)) if model is not None else None
        self.store.commit(
            self.pending, save_model=save, drop_earlier_models=self.checkpoints != "all", previews=self.previews
        )
        self.pending, self.previews, self.last_commit = [], {}, time.monotonic()


class _CostlyCommits(_Uncommitted):
    """A costly chain: every iteration committed with its model, the synthetic batch the regime keeps,
    the model's preview and the fit's details; resumed from them."""

    def __init__(self, chain: _Chain, store: ChainStore, checkpoints: str) -> None:
        self.chain, self.store, self.checkpoints = chain, store, checkpoints
        self.setting = chain.setting

    def start(self, iterations: int) -> list[IterationRecord]:
        records = _open(self.store, self.setting, iterations)
        if 0 < len(records) < iterations:
            self.chain.restore(self.store, len(records))
        return records

    def commit(self, record: IterationRecord, fitted: Fit, new_synthetic: Any | None, final: bool) -> None:
        setting, iteration = self.setting, record.iteration
        kept = new_synthetic if new_synthetic is not None and self.chain.regime.keeps_history else None
        # on every rank of a data-parallel run, since sampling may be split across them
        preview = _preview(setting, fitted.model, iteration, self.store.directory)
        save_model = _saves_model(self.checkpoints, final, resumes_from_model=True)
        self.store.commit(
            [record],
            save_model=(lambda directory: setting.save_model(fitted.model, directory)) if save_model else None,
            save_synthetic=kept.save if kept is not None else None,
            drop_earlier_models=self.checkpoints != "all",
            previews={iteration: preview} if preview is not None else None,
            diagnostics=fitted.diagnostics,
        )
        if kept is not None:
            self.chain.reload_kept(iteration, self.store)


def _kept_batch(setting: Setting, regime: Regime, store: ChainStore, iteration: int) -> Any:
    """The synthetic batch ``iteration`` committed, checked to hold as many samples per seed as the chain
    drew for it."""
    real = setting.real_train
    directory = store.synthetic_directory(iteration)
    data = type(real).load(directory, like=real)
    expected = regime.synthetic_size(iteration, len(real))
    if len(data) != expected:
        raise RunDirectoryError(
            f"corrupted data in {directory}: {len(data)} samples per seed, this chain drew {expected}"
        )
    return data


def first_unreadable_state(setting: Setting, regime: Regime, store: ChainStore, completed: int) -> int | None:
    """What a costly chain resumes from, read as ``restore`` reads it (the synthetic batches its regime
    keeps, the model of its last commit): the first iteration whose files of those cannot be read, or
    None when all can."""
    for iteration in range(2, completed + 1) if regime.keeps_history else ():
        try:
            _kept_batch(setting, regime, store, iteration)
        except RunDirectoryError:
            return iteration
    try:
        setting.load_model(store.model_directory(completed))
    except RunDirectoryError:
        return completed
    return None


def _open(store: ChainStore, setting: Setting, iterations: int) -> list[IterationRecord]:
    """Prepare the chain's directory; the records of its completed iterations (at most ``iterations``)."""
    store.prepare()
    metrics = metrics_for(type(setting), setting.config)
    records = store.records(setting.seed_count, metrics, min(store.completed(), iterations))
    size = setting.presentation.preview_size
    if size:
        store.save_real_preview(setting.preview(setting.real_train)[:size])
    return records


def run_chain(
    setting: Setting,
    regime: Regime,
    iterations: int,
    store: ChainStore | None = None,
    checkpoints: str = "last",
    on_iteration: Callable[[IterationRecord], None] | None = None,
    commit_interval_s: float = COMMIT_INTERVAL_S,
) -> list[IterationRecord]:
    """Run (or finish) one chain; returns the records of all its iterations, 1..``iterations``.

    ``checkpoints``: which models stay in the run directory once the chain is complete: ``none``,
    ``last`` or ``all`` (an unfinished costly chain always keeps its last, to resume from). Ctrl-C or
    SIGTERM (``Terminated``) stops a cheap chain after committing what it has computed."""
    if checkpoints not in get_args(Checkpoints):
        raise ValueError(f"checkpoints must be one of {', '.join(get_args(Checkpoints))}, got {checkpoints!r}")
    chain = _Chain(setting, regime)
    commits: _Uncommitted
    if store is None:
        commits = _Uncommitted()
    elif chain.capabilities.cheap:
        commits = _CheapCommits(chain, store, checkpoints, commit_interval_s)
    else:
        commits = _CostlyCommits(chain, store, checkpoints)
    records = commits.start(iterations)
    try:
        for iteration in range(len(records) + 1, iterations + 1):
            started = time.perf_counter()
            scratch = store.scratch_directory(iteration) if store is not None else None
            fitted, plan, new_synthetic = chain.advance(iteration, scratch)
            metrics, details = chain.evaluate()
            seconds = time.perf_counter() - started
            record = IterationRecord(iteration, plan.train_size, plan.real_fraction, metrics, seconds)
            if details:
                fitted = Fit(fitted.model, {**(fitted.diagnostics or {}), **details})
            commits.commit(record, fitted, new_synthetic, final=iteration == iterations)
            records.append(record)
            if on_iteration is not None:
                on_iteration(record)
    except (KeyboardInterrupt, Terminated):
        commits.interrupted()
        raise
    return records
