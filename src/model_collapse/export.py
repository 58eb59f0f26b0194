"""``model-collapse export RUN --to wandb|mlflow``: replay a run directory into an experiment tracker.

The run directory stays the record; a tracker is where a team browses and compares runs. Every chain
becomes one tracker run, named like the chain (``T = 32 / replace``, ``replace / seed 0``), whose
parameters are the chain's resolved setting fields, its regime and its seeds, and whose metrics are
logged at step = iteration: each metric's mean over the seeds with finite values and, with several
seeds, the ends of its 95% interval (``<metric>/ci_low``, ``<metric>/ci_high``, as ``report`` shows
them), and the real fraction and size of the training set.

* ``wandb`` (extra ``[wandb]``): offline by default (``WANDB_MODE`` decides otherwise), its files and
  caches under ``--out`` (default ``RUN/tracking``); ``wandb sync`` uploads them later.
* ``mlflow`` (extra ``[mlflow]``): into ``--uri`` (default a SQLite store in ``--out``, ``mlflow.db``),
  experiment ``--project`` (default ``model-collapse-<setting>``), each tracker run tagged with its run
  directory and chain; exporting again replaces those runs rather than adding copies.

Both take ``--project`` (default ``model-collapse-<setting>``); wandb groups a run directory's chains.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import flatten
from .errors import ConfigError, RunDirectoryError
from .results import ChainResult, confidence_interval, load_run

TRACKERS = ("wandb", "mlflow")
CHAIN_TAG = "model_collapse.chain"  # marks a tracker run with the chain it replays


def chain_parameters(result: ChainResult) -> dict[str, Any]:
    spec = result.spec
    seeds = spec.seeds
    return {
        **{f"setting.{key}": value for key, value in flatten(spec.point.model_dump(mode="json")).items()},
        "regime": spec.regime.label,
        "seeds": f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}..{seeds[-1]} ({len(seeds)})",
    }


def chain_steps(result: ChainResult) -> Iterator[tuple[int, dict[str, float]]]:
    """(iteration, metrics) to log, in order."""
    intervals = {name: confidence_interval(values) for name, values in result.metrics.items()}
    fraction = confidence_interval(result.real_fraction)
    for k, iteration in enumerate(result.iterations):
        logged = {"train_size": float(result.train_size[k]), "real_fraction": float(fraction.mean[k])}
        for name, interval in intervals.items():
            if np.isfinite(interval.mean[k]):
                logged[name] = float(interval.mean[k])
            if np.isfinite(interval.low[k]):
                logged[f"{name}/ci_low"], logged[f"{name}/ci_high"] = float(interval.low[k]), float(interval.high[k])
        yield int(iteration), logged


def _import(tracker: str):
    try:
        return __import__(tracker)
    except ImportError:
        install = f"pip install 'model-collapse[{tracker}]'"
        raise ConfigError(f"--to {tracker} needs the {tracker} package: {install}") from None


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _to_wandb(run_directory: Path, results: list[ChainResult], out: Path, project: str) -> str:
    wandb = _import("wandb")
    private = {  # everything wandb writes stays under --out
        "WANDB_DIR": str(out),
        "WANDB_CACHE_DIR": str(out / "cache"),
        "WANDB_CONFIG_DIR": str(out / "config"),
        "WANDB_DATA_DIR": str(out / "data"),
        "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        "WANDB_SILENT": "true",
    }
    with _environment(private):
        for result in results:
            run = wandb.init(
                project=project,
                name=result.spec.title,
                group=run_directory.resolve().name,
                config=chain_parameters(result),
                tags=[result.spec.regime.label],
                dir=str(out),
                settings=wandb.Settings(console="off", x_disable_stats=True, save_code=False),
            )
            for iteration, logged in chain_steps(result):
                run.log(logged, step=iteration)
            run.finish()
    return f"{len(results)} chains written to {out / 'wandb'} (offline: upload with `wandb sync {out / 'wandb'}`)"


def _to_mlflow(run_directory: Path, results: list[ChainResult], out: Path, uri: str | None, project: str) -> str:
    _import("mlflow")
    for name in ("mlflow", "alembic"):  # their INFO lines (creating the database) are not this command's say
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = uri or f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(project)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(project, artifact_location=(out / "artifacts").resolve().as_uri())
    )
    source = str(run_directory.resolve())
    for result in results:
        name = result.spec.title
        for old in client.search_runs(
            [experiment_id], f"tags.`{CHAIN_TAG}` = '{name}' and tags.`model_collapse.run` = '{source}'"
        ):
            client.delete_run(old.info.run_id)  # exporting again replaces, never duplicates
        tags = {CHAIN_TAG: name, "model_collapse.run": source, "regime": result.spec.regime.label}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        now = int(time.time() * 1000)
        params = [Param(key, str(value)) for key, value in chain_parameters(result).items()]
        metrics = [
            Metric(key, value, now, step) for step, logged in chain_steps(result) for key, value in logged.items()
        ]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):  # and at most 1000 metric values
            client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])
        client.set_terminated(run.info.run_id)
    return f"{len(results)} chains written to {uri}, experiment {project!r}"


def export_run(
    run_directory: Path, tracker: str, out: Path | None = None, uri: str | None = None, project: str | None = None
) -> str:
    """Replay ``run_directory`` into ``tracker``; returns one line saying where it went."""
    if tracker not in TRACKERS:
        raise ConfigError(f"--to {tracker!r}: choose one of {', '.join(TRACKERS)}")
    if uri is not None and tracker != "mlflow":
        raise ConfigError("--uri is for --to mlflow")
    experiment, results = load_run(run_directory)
    if not results:
        raise RunDirectoryError(f"{run_directory} has no completed iteration to export")
    out = out if out is not None else run_directory / "tracking"
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} is a file; name a directory for the tracker's files")
    if not out.parent.is_dir():
        raise RunDirectoryError(f"--out {out}: the directory {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    project = project or f"model-collapse-{experiment.setting_name}"
    if tracker == "wandb":
        return _to_wandb(run_directory, results, out, project)
    return _to_mlflow(run_directory, results, out, uri, project)
