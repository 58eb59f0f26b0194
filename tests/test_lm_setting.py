"""The language-model setting in the engine: storage, resume, fresh real data and the run directory."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from helpers import tiny_language_model, torchrun_command
from model_collapse.chain import run_chain
from model_collapse.cli import app
from model_collapse.errors import ModelCollapseError, RunDirectoryError
from model_collapse.regimes import parse_regime
from model_collapse.rundir import ChainStore
from model_collapse.settings import SETTINGS
from model_collapse.settings.language_model.packing import TokenCorpus

LanguageModel = SETTINGS["language-model"]


@pytest.fixture()
def config(tmp_path):
    return LanguageModel.Config.model_validate(tiny_language_model(tmp_path / "tokenizers", samples=10))


def test_synthetic_stories_keep_the_prompt_token_and_are_as_many_as_asked(config):
    setting = LanguageModel(config, [0])
    fitted = setting.fit([setting.real_train], np.random.default_rng(0))
    stories = setting.sample(fitted.model, 7, np.random.default_rng(1))
    assert len(stories) == 7
    first_tokens = {int(setting.real_train.document(i)[0]) for i in range(10)}
    assert all(int(stories.document(i)[0]) in first_tokens for i in range(7))
    assert all(len(stories.document(i)) <= 1 + 12 for i in range(7))
    texts = setting.preview(stories)
    assert texts.dtype.kind == "U" and len(texts) == 7
    assert fitted.diagnostics["learning_curve"][-1]["epoch"] == 1.0


def test_sampling_in_shards_resumes_from_the_shards_an_interrupted_run_saved(config, tmp_path):
    import torch

    from model_collapse.settings.language_model.models import build_model

    sampling = config.sampling.model_copy(update={"batch_size": 2})  # shards of 32 stories
    setting = LanguageModel(config.model_copy(update={"sampling": sampling}), [0])
    torch.manual_seed(0)
    model = build_model(config.model.preset, len(setting.tokenizer), setting.eos)
    straight = setting.sample(model, 70, np.random.default_rng(3))
    scratch = tmp_path / "scratch"
    saved = setting.sample(model, 70, np.random.default_rng(3), scratch)
    assert sorted(p.name for p in scratch.iterdir()) == ["samples_00000", "samples_00001", "samples_00002"]
    documents = lambda corpus: [corpus.document(i).tolist() for i in range(len(corpus))]  # noqa: E731
    assert documents(saved) == documents(straight) and len(straight) == 70

    # an interruption: shard 1 was never written, shard 2 was cut short; shard 0 stands in for one
    # whose stories differ, to show that it is taken as saved rather than sampled again
    import shutil

    shutil.rmtree(scratch / "samples_00001")
    (scratch / "samples_00002" / "tokens.npy").write_bytes(b"\x93NUMPY")
    marked = TokenCorpus.from_documents([[7]] * 32)
    shutil.rmtree(scratch / "samples_00000")
    (scratch / "samples_00000").mkdir()
    marked.save(scratch / "samples_00000")
    resumed = setting.sample(model, 70, np.random.default_rng(3), scratch)
    assert documents(resumed) == [[7]] * 32 + documents(straight)[32:]


def test_fresh_real_documents_past_the_reserve_are_refused(config):
    # (select across parts, fresh documents unseen: the conformance suite, test_conformance.py)
    with pytest.raises(ModelCollapseError, match="lower setting.samples"):
        LanguageModel(config, [0]).fresh_real(10**6, np.random.default_rng(0))


def test_a_committed_iteration_keeps_its_learning_curve(config, tmp_path):
    # (resuming every regime to the same numbers: test_conformance.py)
    run_chain(LanguageModel(config, [0]), parse_regime("replace"), 1, ChainStore(tmp_path / "chain", {}))
    curve = json.loads((tmp_path / "chain" / "iter_0001" / "diagnostics.json").read_text())["learning_curve"]
    assert curve and all("validation_loss" in point for point in curve)


def test_foreign_checkpoints_and_corpora_are_refused(config, tmp_path):
    setting = LanguageModel(config, [0])
    with pytest.raises(RunDirectoryError, match="no usable checkpoint"):
        setting.load_model(tmp_path)
    (tmp_path / "offsets.npy").write_bytes(b"nonsense")
    with pytest.raises(RunDirectoryError, match="missing file .*tokens.npy"):
        TokenCorpus.load(tmp_path)
    (tmp_path / "tokens.npy").write_bytes(b"nonsense")
    with pytest.raises(RunDirectoryError, match="corrupted file .*tokens.npy"):
        TokenCorpus.load(tmp_path)


def test_bad_language_model_configs(tmp_path):
    from model_collapse.config import build_experiment
    from model_collapse.errors import ConfigError

    for changes, message in [
        ({"model": {"preset": "gpt5"}}, "setting.model.preset: unknown preset 'gpt5'"),
        ({"model": {"block_size": 512}}, "block_size 512 exceeds the 256 positions of gpt2-tiny"),
        ({"dataset": "files"}, "needs train_file"),
        ({"sampling": {"top_p": 1.5}}, "setting.sampling.top_p"),
        ({"model": "gpt2-9m"}, "setting.model: moved to setting.model.preset"),
        ({"generation_batch_size": 8}, "setting.generation_batch_size: moved to setting.sampling.batch_size"),
    ]:
        raw = {"setting": {"name": "language-model", **changes}, "regimes": ["replace"], "iterations": 2, "seeds": 1}
        with pytest.raises(ConfigError, match=message):
            build_experiment(raw)


@pytest.mark.slow
def test_run_table_and_text_samples_from_the_command_line(tmp_path, monkeypatch):
    config = {
        "setting": tiny_language_model(tmp_path / "tokenizers"),
        "regimes": ["replace", "accumulate"],
        "iterations": 2,
        "seeds": 1,
        "workers": 1,
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "run"), "-q"]).exit_code == 0
    table = runner.invoke(app, ["table", str(tmp_path / "run")]).stdout.splitlines()
    assert table[0].split(",")[-8:] == list(LanguageModel.metrics) and len(table) == 1 + 2 * 2
    assert (tmp_path / "run" / "chains" / "base" / "replace" / "seed-0" / "real_preview.npy").exists()

    def no_data_loading(*args, **kwargs):
        raise AssertionError("plot must draw from the run directory, not reload the corpus")

    monkeypatch.setattr(LanguageModel, "__init__", no_data_loading)
    result = runner.invoke(app, ["plot", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "figures" / "learning_curves_base.png").exists()
    assert (tmp_path / "run" / "figures" / "distinct_2.png").exists()
    page = (tmp_path / "run" / "figures" / "samples_base.md").read_text()
    assert "## real data" in page and "## replace, iteration 2" in page and "## accumulate, iteration 1" in page


def test_accumulated_synthetic_corpora_are_read_from_disk_not_kept_in_ram(config, tmp_path):
    setting = LanguageModel(config, [0])
    seen = []
    fit = setting.fit

    def recording(parts, rng, scratch=None):
        seen.append([type(p.tokens) for p in parts])
        return fit(parts, rng, scratch)

    setting.fit = recording
    run_chain(setting, parse_regime("accumulate"), 3, ChainStore(tmp_path / "chain", {}))
    # iteration 3 trains on real + S_2 (committed, so memory-mapped) + S_3 (just sampled)
    assert seen[2][0] is np.ndarray and seen[2][1] is np.memmap and seen[2][2] is np.ndarray


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_at_the_saved_step_with_the_same_numbers(tmp_path):
    import io
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    config = {
        "setting": tiny_language_model(
            tmp_path / "tokenizers",
            samples=500,
            model={"block_size": 64},
            training={"batch_size": 8, "checkpoint_minutes": 0.003},
            sampling={"max_new_tokens": 24},
        ),
        "regimes": ["accumulate"],
        "iterations": 2,
        "seeds": 1,
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "model_collapse",
        "run",
        str(tmp_path / "lm.yaml"),
        "--out",
        str(tmp_path / "killed"),
        "-q",
    ]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = (
        tmp_path / "killed" / "chains" / "base" / "accumulate" / "seed-0" / "iter_0002.scratch" / "training_state.pt"
    )
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists() and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.5)  # some steps and checkpoints into iteration 2's training
    assert process.poll() is None, "the run ended before it could be killed in iteration 2's training"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "model_collapse", "resume", str(tmp_path / "killed")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training resumes at step" in resumed.stderr
    assert not checkpoint.parent.exists()  # gone once the iteration is committed
    runner = CliRunner()
    assert (
        runner.invoke(app, ["run", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "straight"), "-q"]).exit_code == 0
    )
    killed, straight = (
        pd.read_csv(io.StringIO(runner.invoke(app, ["table", str(tmp_path / d)]).stdout))
        for d in ("killed", "straight")
    )
    assert len(killed) == 2
    pd.testing.assert_frame_equal(killed, straight)


@pytest.mark.slow
def test_a_run_under_torchrun_with_two_processes(tmp_path):
    """Two gloo ranks run the chains together; rank 0 writes the run directory, once."""
    import io
    import subprocess

    import pandas as pd

    config = {
        "setting": tiny_language_model(
            tmp_path / "tokenizers",
            samples=24,
            model={"preset": "llama-tiny", "block_size": 32},
            sampling={"max_new_tokens": 12, "batch_size": 1},  # shards of 16 stories: 24 stories are a shard per rank
        ),
        "regimes": ["replace", "accumulate"],
        "iterations": 2,
        "seeds": 1,
    }
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(config))
    command = torchrun_command(
        "-m", "model_collapse", "run", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "parallel"), "-q"
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runner = CliRunner()
    assert (
        runner.invoke(app, ["run", str(tmp_path / "lm.yaml"), "--out", str(tmp_path / "single"), "-q"]).exit_code == 0
    )
    parallel, single = (
        pd.read_csv(io.StringIO(runner.invoke(app, ["table", str(tmp_path / d)]).stdout))
        for d in ("parallel", "single")
    )
    assert len(parallel) == len(single) == 4
    # same data, same initialisation, the same optimisation split over two processes
    first = lambda frame: frame[frame.iteration == 1].set_index("regime").test_cross_entropy  # noqa: E731
    pd.testing.assert_series_equal(first(parallel), first(single), rtol=1e-4)
    # sampling is split across the ranks in shards and gathered: the whole corpus, as one process samples it
    synthetic = {
        d: TokenCorpus.load(tmp_path / d / "chains" / "base" / "accumulate" / "seed-0" / "iter_0002" / "synthetic")
        for d in ("parallel", "single")
    }
    assert len(synthetic["parallel"]) == 24
    np.testing.assert_array_equal(synthetic["parallel"].tokens, synthetic["single"].tokens)
    np.testing.assert_array_equal(synthetic["parallel"].offsets, synthetic["single"].offsets)
    assert np.isfinite(parallel.test_cross_entropy).all()


def test_training_and_sampling_report_their_progress_inside_an_iteration(config, monkeypatch):
    """What the progress display shows while an iteration runs: steps with tokens/s, stories/s."""
    from model_collapse import activity

    monkeypatch.setattr(activity, "REPORT_INTERVAL_S", 0.0)  # every step, not twice a second
    lines: list[str] = []
    setting = LanguageModel(config, [0])
    with activity.listening(lines.append):
        fitted = setting.fit([setting.real_train], np.random.default_rng(0))
        setting.sample(fitted.model, 5, np.random.default_rng(1))
    training = [line for line in lines if line.startswith("training")]
    sampling = [line for line in lines if line.startswith("sampling")]
    steps = int(training[-1].split()[1].split("/")[1])
    assert [int(line.split()[1].split("/")[0]) for line in training] == list(range(1, steps + 1))
    assert all(" tokens/s · ETA " in line for line in training)
    assert [line.split(" · ")[0] for line in sampling] == [f"sampling {n}/5 stories" for n in range(1, 6)]
    assert " stories/s · ETA " in sampling[0] and sampling[-1].endswith("ETA 0:00")
    assert lines.count("") == 2  # each activity clears its line when it ends
    activity.Meter("quiet", 3, "steps").advance()  # nobody listening: nothing to report, nothing fails


def test_diversity_measures_on_stories_counted_by_hand():
    from model_collapse.settings.language_model.diversity import diversity

    stories = [np.array([1, 2, 1, 2, 1, 2]), np.array([3, 4, 5]), np.array([7])]
    measured = diversity(stories)
    # unigrams: 10 tokens, distinct {1,2,3,4,5,7}; bigrams: 5 + 2 = 7, distinct (1,2),(2,1),(3,4),(4,5)
    assert measured["distinct_1"] == pytest.approx(6 / 10)
    assert measured["distinct_2"] == pytest.approx(4 / 7)
    assert measured["distinct_3"] == pytest.approx(3 / 5)  # (1,2,1), (2,1,2), (3,4,5) of 4 + 1
    assert measured["distinct_4"] == pytest.approx(2 / 3)  # only the first story has 4-grams: 3, 2 distinct
    p = np.array([3, 3, 1, 1, 1, 1]) / 10
    assert measured["unigram_entropy"] == pytest.approx(-(p * np.log(p)).sum())
    assert measured["mean_length"] == pytest.approx(10 / 3)
    assert measured["repeated_4grams"] == pytest.approx(1 / 3)  # (1,2,1,2) comes back once of 3
    assert np.isnan(diversity([np.array([5])])["distinct_2"])


def test_language_model_metrics_include_the_diversity_of_its_samples_beside_real_text(config):
    from model_collapse.settings.language_model.diversity import NAMES

    setting = LanguageModel(
        config.model_copy(update={"sampling": config.sampling.model_copy(update={"evaluation_stories": 6})}), [0]
    )
    fitted = setting.fit([setting.real_train], np.random.default_rng(0))
    first, again = setting.evaluate(fitted.model), setting.evaluate(fitted.model)
    assert set(first) == {"test_cross_entropy", *NAMES} == set(LanguageModel.metrics)
    assert first == again  # the same prompts and stream at every evaluation: differences are the model's
    assert 0 < first["distinct_1"][0] <= 1 and 0 <= first["repeated_4grams"][0] <= 1
    assert 1 <= first["mean_length"][0] <= 1 + 12  # a first token and at most max_new_tokens
    assert set(fitted.diagnostics["reference"]) == set(NAMES)
    assert fitted.diagnostics["reference"]["mean_length"] <= 1 + 12  # real stories cut to the samples' length


def test_the_likelihood_score_is_each_documents_mean_log_probability_per_token(config):
    import torch

    setting = LanguageModel(config, [0])
    model = setting.fit([setting.real_train], np.random.default_rng(0)).model
    stories = setting.sample(model, 11, np.random.default_rng(1))  # 11: batches of 8, padded unevenly
    scores = setting.score("likelihood", model, stories)
    assert scores.shape == (1, 11) and (scores < 0).all()
    for i in range(11):  # one document at a time, no padding: the same number
        ids = torch.tensor([[setting.eos, *stories.document(i).tolist(), setting.eos]])
        with torch.no_grad():
            logits = model(input_ids=ids[:, :-1]).logits.float()
        expected = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).mean().item()
        assert scores[0, i] == pytest.approx(expected, abs=1e-5)
    curated = run_chain(
        LanguageModel(
            LanguageModel.Config.model_validate(
                {**config.model_dump(), "curation": {"candidates": 2, "score": "likelihood"}}
            ),
            [0],
        ),
        parse_regime("replace"),
        2,
    )
    kept, candidates = curated[1].metrics["kept_score_mean"][0], curated[1].metrics["candidate_score_mean"][0]
    assert kept > candidates  # the likelier half of the candidates was kept
