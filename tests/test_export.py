"""`model-collapse export`: a run replayed into Weights & Biases (offline) and MLflow (SQLite), read back."""

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import invoke
from model_collapse.results import confidence_interval

ROOT = Path(__file__).resolve().parents[1]
REGIMES = ["replace", "accumulate", "accumulate-subsample"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    result = invoke("run", ROOT / "configs" / "quickstart.yaml", "seeds=5", "iterations=3", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out


def expected(run: Path, regime: str) -> tuple[np.ndarray, np.ndarray]:
    """The mean and interval ends the table gives for a chain's test error, per iteration."""
    from io import StringIO

    table = pd.read_csv(StringIO(invoke("table", run).stdout))
    values = table[table.regime == regime].pivot(index="iteration", columns="seed", values="test_error").to_numpy()
    interval = confidence_interval(values)
    return interval.mean, np.stack([interval.low, interval.high])


@pytest.mark.slow
def test_mlflow_holds_one_run_per_chain_with_the_tables_numbers(run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    out = tmp_path / "tracking"
    for _ in range(2):  # a second export replaces the first's runs
        result = invoke("export", run, "--to", "mlflow", "--out", out)
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracking"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("model-collapse-linear-regression")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(REGIMES)
    for regime in REGIMES:
        chain = runs[regime]
        assert chain.data.params["setting.dim"] == "10" and chain.data.params["regime"] == regime
        assert chain.data.params["seeds"] == "0..4 (5)"
        history = client.get_metric_history(chain.info.run_id, "test_error")
        mean, ends = expected(run, regime)
        assert [m.step for m in history] == [1, 2, 3]
        np.testing.assert_allclose([m.value for m in history], mean, rtol=1e-12)
        low = client.get_metric_history(chain.info.run_id, "test_error/ci_low")
        np.testing.assert_allclose([m.value for m in low], ends[0], rtol=1e-12)


def wandb_records(run_file: Path) -> list:
    """The records of a wandb offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data, position, records, pending = run_file.read_bytes(), 7, [], b""  # after the ':W&B' file header
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk, position = data[position + 7 : position + 7 + length], position + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.mark.slow
def test_wandb_offline_holds_one_run_per_chain_with_the_tables_numbers(run, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # wandb must not need (or write) a home of its own
    out = tmp_path / "tracking"
    result = invoke("export", run, "--to", "wandb", "--out", out)
    assert result.exit_code == 0, result.output
    assert "wandb sync" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tracking"]
    found = {}
    for run_file in (out / "wandb").glob("offline-run-*/run-*.wandb"):
        records = wandb_records(run_file)
        name = next(r.run.display_name for r in records if r.WhichOneof("record_type") == "run")
        history = [
            {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        found[name] = history
    assert sorted(found) == sorted(REGIMES)
    for regime in REGIMES:
        mean, ends = expected(run, regime)
        assert [h["_step"] for h in found[regime]] == [1, 2, 3]
        np.testing.assert_allclose([h["test_error"] for h in found[regime]], mean, rtol=1e-12)
        np.testing.assert_allclose([h["test_error/ci_high"] for h in found[regime]], ends[1], rtol=1e-12)
        assert all(h["real_fraction"] == pytest.approx(1.0) for h in found[regime][:1])


def test_bad_export_arguments_get_one_line(run, tmp_path):
    (tmp_path / "file").write_text("")
    for args, message in [
        ((run, "--to", "tensorboard"), "--to 'tensorboard': choose one of wandb, mlflow"),
        ((run, "--to", "wandb", "--uri", "sqlite:///x.db"), "--uri is for --to mlflow"),
        ((tmp_path / "nothing", "--to", "mlflow"), "is not a directory"),
        ((run, "--to", "mlflow", "--out", tmp_path / "file"), "is a file"),
    ]:
        result = invoke("export", *args)
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
