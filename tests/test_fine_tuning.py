"""The fine-tuning setting: pretrained checkpoints of three architectures, wikitext-2 and HelpSteer2 in
their published layouts, beam search against ``generate``, response masking, the format filter,
resuming inside an iteration, and one line for each thing a user can get wrong."""

import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import (
    TINY_PRETRAINING,
    helpsteer_files,
    invoke,
    tiny_checkpoint,
    tiny_fine_tuning,
    torchrun_command,
    wikitext_files,
)
from model_collapse.errors import ConfigError, ModelCollapseError, NoSamples
from model_collapse.settings import SETTINGS
from model_collapse.settings.fine_tuning.beam_search import beam_continuations
from model_collapse.settings.fine_tuning.data import conversation_text, encode_conversations, well_formed
from model_collapse.settings.fine_tuning.examples import IGNORE, ExampleBatches, Examples
from model_collapse.settings.fine_tuning.pretrained import load_causal_model, load_tokenizer

FineTuning = SETTINGS["fine-tuning"]
ARCHITECTURES = ("gpt2", "opt", "llama")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: tiny_checkpoint(root / name, name) for name in ARCHITECTURES}


@pytest.fixture(scope="module")
def wikitext(tmp_path_factory):
    return wikitext_files(tmp_path_factory.mktemp("wikitext"))


def setting(model_path, data_dir, **fields):
    config = {
        **tiny_fine_tuning(model={"path": str(model_path)}, data_dir=None if data_dir is None else str(data_dir)),
        **fields,
    }
    return FineTuning(FineTuning.Config.model_validate(config), [0])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_beam_search_gives_the_tokens_of_generate_with_five_beams(checkpoints, architecture):
    model = load_causal_model(checkpoints[architecture])
    prompts = torch.randint(5, model.config.vocab_size, (5, 16), generator=torch.Generator().manual_seed(1))
    eos = model.config.eos_token_id
    ours = beam_continuations(model, prompts, 16, num_beams=5, repetition_penalty=3.0, banned=[eos])
    theirs = model.generate(
        prompts,
        attention_mask=torch.ones_like(prompts),
        num_beams=5,
        min_new_tokens=16,
        max_new_tokens=16,
        repetition_penalty=3.0,
        do_sample=False,
        pad_token_id=eos,
    )[:, 16:]
    assert ours.tolist() == theirs.tolist()
    # the penalty matters: without it the continuations differ
    plain = beam_continuations(model, prompts, 16, num_beams=5, repetition_penalty=1.0, banned=[eos])
    assert plain.tolist() != ours.tolist()


def test_both_wikitext_layouts_give_the_same_blocks_cut_from_one_token_stream(checkpoints, wikitext, tmp_path):
    raw = wikitext_files(tmp_path / "raw", layout="raw")
    from_parquet = setting(checkpoints["gpt2"], wikitext, samples=None)
    from_raw = setting(checkpoints["gpt2"], raw, samples=None)
    assert from_parquet.real_train.tokens.tolist() == from_raw.real_train.tokens.tolist()
    blocks = from_parquet.real_train
    assert set(np.diff(blocks.offsets)) == {16} and not blocks.loss_from.any()
    tokenizer = load_tokenizer(checkpoints["gpt2"])
    import pyarrow.parquet as pq

    lines = pq.read_table(wikitext / "wikitext-2-raw-v1" / "train-00000-of-00001.parquet").column("text").to_pylist()
    stream = [t for line in lines for t in tokenizer(line, add_special_tokens=False)["input_ids"]]
    assert blocks.tokens.tolist() == stream[: len(stream) // 16 * 16]  # the remainder is dropped
    # the held-out text is the test split, not validation
    test_text = tokenizer.decode(from_parquet._held_out.parts[0].example(0))
    assert test_text in "".join(
        pq.read_table(wikitext / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet")["text"].to_pylist()
    )


def test_a_conversations_loss_counts_its_response_and_eos_only(checkpoints):
    tokenizer = load_tokenizer(checkpoints["llama"])  # one that opens every text with BOS
    pairs = [conversation_text("Who hunts the whale?", "Ahab."), conversation_text("x " * 300, "too long")]
    examples = encode_conversations(tokenizer, pairs, max_length=64, train_on="response", start=tokenizer.bos_token_id)
    assert len(examples) == 1  # the long one is dropped
    tokens = examples.example(0)
    assert tokens[0] == tokenizer.bos_token_id and tokens[-1] == tokenizer.eos_token_id
    inputs, targets = ExampleBatches([examples], pad=0).batch([0])
    counted = targets[0][targets[0] != IGNORE]
    assert tokenizer.decode(counted) == "Ahab." + tokenizer.eos_token
    assert inputs[0].tolist() == tokens[:-1].tolist()
    # a tokenizer that adds no BOS (GPT-2's) gets one all the same: unconditional samples start there
    gpt2 = load_tokenizer(checkpoints["gpt2"])
    opened = encode_conversations(gpt2, pairs[:1], max_length=64, train_on="response", start=gpt2.bos_token_id)
    assert opened.example(0)[0] == gpt2.bos_token_id and gpt2.decode(opened.example(0)[1:]).startswith("user: Who")
    everything = encode_conversations(tokenizer, pairs[:1], max_length=64, train_on="all", start=tokenizer.bos_token_id)
    assert (ExampleBatches([everything], 0).batch([0])[1] != IGNORE).sum() == len(tokens) - 1


def test_the_format_filter_keeps_what_the_follow_up_keeps():
    assert well_formed("user: hi\nassistant: hello") == ("user: hi\nassistant: ", "user: hi\nassistant: hello")
    assert well_formed("user: hi") is None  # no assistant
    assert well_formed("hi\nassistant: x") is None  # does not start with user:
    assert well_formed("user: a\nassistant: b\nassistant: c") is None  # two turns


def test_examples_select_save_and_load(tmp_path):
    a = Examples.from_sequences([np.array([1, 2, 3]), np.array([4])], np.array([0, 1]))
    b = Examples.from_sequences([np.array([70000, 6])], np.array([1]))  # ids beyond uint16 (Gemma's)
    chosen = Examples.select([a, b], np.array([[2, 0]]))
    assert [chosen.example(i).tolist() for i in range(2)] == [[70000, 6], [1, 2, 3]]
    assert chosen.loss_from.tolist() == [1, 0]
    chosen.save(tmp_path)
    loaded = Examples.load(tmp_path)
    assert loaded.tokens.tolist() == chosen.tokens.tolist() and loaded.loss_from.tolist() == [1, 0]
    np.save(tmp_path / "loss_from.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(ModelCollapseError, match="do not fit"):
        Examples.load(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_fine_tunes_from_its_checkpoint_writes_blocks_and_is_measured(
    checkpoints, wikitext, architecture
):
    chain = setting(checkpoints[architecture], wikitext, training={"batch_size": 4, "epochs": 3, "learning_rate": 3e-3})
    fitted = chain.fit([chain.real_train], np.random.default_rng(0))
    curve = fitted.diagnostics["learning_curve"]
    untrained = chain.evaluate(chain._pretrained())["test_cross_entropy"][0]
    assert curve[-1]["validation_loss"] < untrained  # fine-tuning lowers the held-out loss
    blocks = chain.sample(fitted.model, 8, np.random.default_rng(1))
    assert len(blocks) == 8 and set(np.diff(blocks.offsets)) == {16}
    # beam search is deterministic: block i continues real block i
    again = beam_continuations(
        fitted.model,
        torch.from_numpy(chain.real_train.tokens[:16].astype(np.int64))[None],
        16,
        2,
        3.0,
        [chain._data.eos],
    )
    assert again[0].tolist() == blocks.example(0).tolist()
    metrics = chain.evaluate(fitted.model)
    assert set(metrics) == set(FineTuning.metrics)
    assert metrics["generated_perplexity_q05"][0] <= metrics["generated_perplexity_median"][0]
    assert 0 <= metrics["generated_perplexity_tail"][0] <= 1 and metrics["well_formed"][0] == 1


def test_generated_data_measured_by_the_first_fine_tuned_model_made_once_per_run(checkpoints, wikitext, tmp_path):
    """Shumailov et al.'s measure: the pretrained weights fine-tuned once on the real data (kept in the
    run's shared directory and read back by every chain), and the tail above what that model writes."""
    from model_collapse.randomness import seed_rng

    fields = {
        "training": {"batch_size": 4, "epochs": 3, "learning_rate": 3e-3},
        "sampling": {"new_tokens": 16, "num_beams": 2, "batch_size": 4, "evaluation_samples": 8,
                       "measured_by": "fine-tuned"},
    }  # fmt: skip
    first = setting(checkpoints["gpt2"], wikitext, **fields)
    first.shared = tmp_path / "shared"
    fitted = first.fit([first.real_train], np.random.default_rng(0))
    (saved,) = (tmp_path / "shared").glob("first-fine-tuned-*")
    measuring = load_causal_model(saved)
    expected, _ = first._train([first.real_train], seed_rng(0, "first fine-tuned"))
    for name, weight in expected.state_dict().items():
        assert torch.equal(weight, measuring.state_dict()[name]), name
    pretrained = first._data.original.state_dict()
    assert any(not torch.equal(w, pretrained[n]) for n, w in measuring.state_dict().items())
    references = first._references
    written = first._written(first._measuring_model)[2]
    assert references["tail_threshold"] == pytest.approx(np.quantile(written, 0.95))
    metrics = first.evaluate(fitted.model)
    perplexities = first._written(fitted.model)[2]
    assert metrics["generated_perplexity_tail"][0] == np.mean(perplexities > references["tail_threshold"])
    assert fitted.diagnostics["reference"] == references
    by_pretrained = setting(
        checkpoints["gpt2"], wikitext, **{**fields, "sampling": {**fields["sampling"], "measured_by": "pretrained"}}
    )
    assert by_pretrained._references["generated_perplexity_median"] != references["generated_perplexity_median"]

    def measuring_model_of_another_chain():
        other = setting(checkpoints["gpt2"], wikitext, **fields)
        other.shared = tmp_path / "shared"
        return other._measuring_model.state_dict()

    first._pretrained().save_pretrained(saved)  # another chain reads the saved copy, not a model of its own
    assert all(torch.equal(w, pretrained[n]) for n, w in measuring_model_of_another_chain().items())
    (saved / "model.safetensors").write_bytes(b"")  # one that cannot be read is trained again: the same weights
    assert all(torch.equal(w, expected.state_dict()[n]) for n, w in measuring_model_of_another_chain().items())


@pytest.mark.slow
def test_an_interrupted_fit_and_generation_resume_from_their_scratch_with_the_same_numbers(
    checkpoints, wikitext, tmp_path
):
    training = {"batch_size": 2, "epochs": 2, "learning_rate": 3e-3, "checkpoint_minutes": 0}
    chain = setting(
        checkpoints["opt"], wikitext, training=training, sampling={"new_tokens": 16, "num_beams": 2, "batch_size": 3}
    )
    straight = chain.fit([chain.real_train], np.random.default_rng(0))
    scratch = tmp_path / "scratch"
    # with checkpoints every step, the scratch holds the state of the step before the last, as a run
    # killed just before its last step would have left it
    chain.fit([chain.real_train], np.random.default_rng(0), scratch)
    saved = torch.load(next(scratch.glob("*.pt")), weights_only=True)
    assert 0 < saved["step"] < 8
    resumed = chain.fit([chain.real_train], np.random.default_rng(0), scratch)
    assert resumed.diagnostics["learning_curve"] == straight.diagnostics["learning_curve"]
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(ours, theirs)

    blocks = chain.sample(straight.model, 8, np.random.default_rng(1), scratch)
    assert sorted(p.name for p in scratch.glob("blocks_*")) == ["blocks_00000", "blocks_00001", "blocks_00002"]
    shutil.rmtree(scratch / "blocks_00001")  # never written
    marked = Examples.from_sequences([np.full(16, 7)] * 3, np.zeros(3, dtype=np.int64))
    shutil.rmtree(scratch / "blocks_00000")
    (scratch / "blocks_00000").mkdir()
    marked.save(scratch / "blocks_00000")  # stands in for a finished shard: read back, not redone
    again = chain.sample(straight.model, 8, np.random.default_rng(1), scratch)
    assert again.tokens.tolist() == [7] * 48 + blocks.tokens[48:].tolist()


@pytest.mark.slow
def test_prompt_response_chains_sample_conversations_and_keep_the_well_formed(checkpoints, tmp_path):
    data = helpsteer_files(tmp_path / "helpsteer2", train=12, validation=4)
    chain = setting(
        checkpoints["gpt2"],
        data,
        format="prompt-response",
        samples=12,
        max_length=120,
        training={"batch_size": 4, "epochs": 40, "learning_rate": 1e-2, "final_learning_rate_ratio": 1.0},
        sampling={"method": "sample", "max_new_tokens": 110, "batch_size": 16, "evaluation_samples": 8},
    )
    assert len(chain.real_train) == 12 and not chain.real_train.loss_from.any()  # the loss counts every token
    fitted = chain.fit([chain.real_train], np.random.default_rng(0))
    written = chain.sample(fitted.model, 6, np.random.default_rng(1))
    assert len(written) == 6
    for text in chain.preview(written):
        assert text.startswith("user: ") and text.count("assistant: ") == 1
    metrics = chain.evaluate(fitted.model)
    assert 0 < metrics["well_formed"][0] <= 1
    # an untrained model writes no conversation: one line saying so, after sampling.attempts rounds
    impatient = FineTuning(
        chain.config.model_copy(update={"sampling": chain.config.sampling.model_copy(update={"attempts": 2})}), [0]
    )
    with pytest.raises(NoSamples, match="well-formed samples"):
        impatient.sample(chain._pretrained(), 4, np.random.default_rng(1))


def test_what_a_user_can_get_wrong_is_one_line(checkpoints, wikitext, tmp_path):
    def refused(model_path, data_dir=wikitext, **fields):
        with pytest.raises(ConfigError) as caught:
            setting(model_path, data_dir, **fields).real_train  # noqa: B018
        message = str(caught.value)
        assert "\n" not in message
        return message

    assert "is not a directory" in refused(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no config.json" in refused(tmp_path / "empty")
    foreign = tmp_path / "foreign"
    shutil.copytree(checkpoints["gpt2"], foreign)
    (foreign / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    assert "holds a t5 model, which transformers has no causal language model of" in refused(foreign)
    remote = tmp_path / "remote"
    shutil.copytree(checkpoints["gpt2"], remote)
    fields = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**fields, "auto_map": {"AutoModelForCausalLM": "m.M"}}))
    assert "needs its own code" in refused(remote)
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(checkpoints["gpt2"], no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    assert "no usable tokenizer" in refused(no_tokenizer)
    assert "holds no wikitext-2 train split" in refused(checkpoints["gpt2"], tmp_path)
    assert "holds no HelpSteer2 train split" in refused(
        checkpoints["gpt2"], tmp_path, format="prompt-response", sampling={"method": "sample"}
    )
    short = tiny_checkpoint(tmp_path / "short", "gpt2", positions=24)
    assert "exceeds the model's context of 24 tokens" in refused(short)


def test_bad_fine_tuning_configs_are_refused_before_anything_runs(tmp_path):
    def message(**fields):
        config = {"setting": tiny_fine_tuning(**fields), "regimes": ["replace"], "iterations": 2, "seeds": 1}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        result = invoke("run", path, "--out", tmp_path / "run")
        assert result.exit_code == 2 and not (tmp_path / "run").exists()
        return result.output

    assert "model.path" in message(model={"path": "x", "pretrain": {}})
    assert "needs format 'text'" in message(format="prompt-response", data_dir="x")
    assert "must equal block_size" in message(sampling={"new_tokens": 8})


def test_without_helpsteer2_the_prompt_response_format_reads_the_bundled_passages(checkpoints):
    from model_collapse.settings.fine_tuning.data import bundled_conversations

    pairs = bundled_conversations(["one two three", "Call me Ishmael. Some years ago, never mind how long precisely"])
    assert pairs == [
        ("Continue the passage that begins: Call me Ishmael. Some years ago,", "never mind how long precisely")
    ]
    chain = setting(
        checkpoints["gpt2"], None, format="prompt-response", samples=6, max_length=120,
        sampling={"method": "sample", "max_new_tokens": 60, "batch_size": 4, "evaluation_samples": 4},
    )  # fmt: skip
    assert len(chain.real_train) == 6
    for text in chain.preview(chain.real_train):
        prompt, response = well_formed(text)
        assert prompt.startswith("user: Continue the passage that begins: ") and prompt.endswith("\nassistant: ")
        assert len(response) > len(prompt)


@pytest.mark.slow
def test_a_fine_tuning_run_pretrains_once_into_the_run_directory(tmp_path):
    config = {
        "setting": tiny_fine_tuning(),
        "regimes": ["replace", "keep-real-fraction:0.25"],
        "iterations": 2,
        "seeds": 1,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    result = invoke("run", path, "--out", run, "-q")
    assert result.exit_code == 0, result.output
    (pretrained,) = (run / "shared").iterdir()
    assert (pretrained / "config.json").is_file() and (pretrained / "tokenizer.json").is_file()
    table = invoke("table", run)
    assert table.exit_code == 0 and "generated_perplexity_tail" in table.output
    # every fit records the written sequences' perplexities: Shumailov et al.'s histograms
    diagnostics = json.loads((run / "chains/base/replace/seed-0/iter_0002/diagnostics.json").read_text())
    assert len(diagnostics["generated_perplexity"]) == 4 and min(diagnostics["generated_perplexity"]) > 1
    assert invoke("plot", run).exit_code == 0
    assert (run / "figures" / "distribution_generated_perplexity_base.png").is_file()
    assert "base / replace" not in result.output  # the quiet run drew no progress bars


@pytest.mark.slow
def test_a_fine_tuning_run_under_torchrun_with_two_processes(tmp_path):
    """Two gloo ranks pretrain, fine-tune (the first fine-tuned measuring model too), write by beam
    search in shards and evaluate together, as one process does; rank 0 alone writes the run."""
    import subprocess

    import pandas as pd

    generation = {"new_tokens": 16, "num_beams": 2, "batch_size": 4, "evaluation_samples": 4}
    config = {
        "setting": tiny_fine_tuning(
            model={"pretrain": {**TINY_PRETRAINING, "preset": "llama-tiny"}},  # no dropout (masks differ by rank)
            sampling={**generation, "measured_by": "fine-tuned"},
        ),
        "regimes": ["replace", "accumulate"],
        "iterations": 2,
        "seeds": 1,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = torchrun_command("-m", "model_collapse", "run", str(path), "--out", str(tmp_path / "parallel"), "-q")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert invoke("run", path, "--out", tmp_path / "single", "-q").exit_code == 0
    parallel, single = (pd.read_csv(io.StringIO(invoke("table", tmp_path / d).output)) for d in ("parallel", "single"))
    assert len(parallel) == len(single) == 4 and np.isfinite(parallel.test_cross_entropy).all()
    # the same optimisation split over two processes (pretraining included), so the same first model
    first = lambda frame: frame[frame.iteration == 1].set_index("regime").test_cross_entropy  # noqa: E731
    pd.testing.assert_series_equal(first(parallel), first(single), rtol=1e-4)
    # the blocks are written in shards taken by the ranks in turn and gathered: all 8, as one process writes them
    written = {
        d: Examples.load(tmp_path / d / "chains" / "base" / "accumulate" / "seed-0" / "iter_0002" / "synthetic")
        for d in ("parallel", "single")
    }
    assert len(written["parallel"]) == 8 and set(np.diff(written["parallel"].offsets)) == {16}
    np.testing.assert_array_equal(written["parallel"].tokens, written["single"].tokens)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "parallel" / "shared").iterdir()) == ["first", "pretrained"]


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.slow
def test_shumailov_config_runs_end_to_end_on_a_tiny_model_and_tiny_wikitext(checkpoints, wikitext, tmp_path):
    run = tmp_path / "run"
    result = invoke(
        "run", CONFIGS / "shumailov_opt125m_wikitext2.yaml", "--out", run, "-q",
        f"setting.model.path={checkpoints['opt']}", f"setting.data_dir={wikitext}", "setting.device=cpu",
        "setting.block_size=16", "setting.samples=8", "setting.test_samples=8",
        "setting.sampling.new_tokens=16", "setting.sampling.evaluation_samples=4",
        "setting.training.epochs=[1,2]", "iterations=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(invoke("table", run).output)))
    # both protocols and their cross terms, two iterations each
    assert {(r["regime"], r["training.epochs"]) for r in rows} == {
        (regime, epochs) for regime in ("replace", "keep-real-fraction:0.1") for epochs in ("1", "2")
    }
    assert len(rows) == 8 and all(np.isfinite(float(r["test_perplexity"])) for r in rows)
    assert {r["real_fraction"] for r in rows if r["iteration"] == "2"} == {"0.0", "0.125"}  # round(0.1 * 8) = 1


# The HelpSteer2 configs' fields scaled to a tiny model, 12 conversations and a CPU (it learns the format)
TINY_SFT = (
    "setting.device=cpu", "setting.max_length=120", "setting.training.batch_size=4",
    "setting.training.micro_batch_size=2", "setting.training.epochs=40", "setting.training.learning_rate=1e-2",
    "setting.training.warmup_fraction=0", "setting.sampling.max_new_tokens=110", "setting.sampling.batch_size=16",
    "setting.sampling.evaluation_samples=8",
)  # fmt: skip


def tiny_sft_run(config: str, checkpoints, tmp_path, *overrides) -> tuple[Path, list[dict]]:
    """A shipped HelpSteer2 config run on a tiny GPT-2 and 12 conversations, one seed: its directory and table."""
    data = helpsteer_files(tmp_path / "helpsteer2", train=12, validation=4)
    run = tmp_path / "run"
    result = invoke(
        "run", CONFIGS / config, "--out", run, "-q", f"setting.model.path={checkpoints['gpt2']}",
        f"setting.data_dir={data}", *TINY_SFT, "seeds=1", *overrides,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, list(csv.DictReader(io.StringIO(invoke("table", run).output)))


@pytest.mark.slow
def test_sft_config_runs_end_to_end_on_a_tiny_model_and_tiny_helpsteer2(checkpoints, tmp_path):
    _, rows = tiny_sft_run("sft_helpsteer2.yaml", checkpoints, tmp_path, "iterations=2")
    assert {(r["regime"], r["iteration"]) for r in rows} == {
        (regime, iteration) for regime in ("replace", "accumulate", "accumulate-subsample") for iteration in "12"
    }
    assert {r["train_size"] for r in rows if r["iteration"] == "2"} == {"12", "24"}
    assert all(0 < float(r["well_formed"]) <= 1 for r in rows)


@pytest.mark.slow
def test_value_of_synthetic_config_runs_its_grid_end_to_end_on_a_tiny_model(checkpoints, tmp_path):
    run, rows = tiny_sft_run(
        "sft_helpsteer2_value_of_synthetic.yaml", checkpoints, tmp_path,
        "regimes=[{name: real-synthetic, real: [4, 12], synthetic: [0, 6]}]",
    )  # fmt: skip
    data = tmp_path / "helpsteer2"
    second = {r["regime"]: r for r in rows if r["iteration"] == "2"}
    assert {label: (int(r["train_size"]), float(r["real_fraction"])) for label, r in second.items()} == {
        "real-synthetic:4+0": (4, 1.0), "real-synthetic:4+6": (10, 0.4),
        "real-synthetic:12+0": (12, 1.0), "real-synthetic:12+6": (18, 12 / 18),
    }  # fmt: skip
    firsts = [p / "iter_0001" / "metrics.npz" for p in sorted((run / "chains" / "base").glob("*/seed-0"))]
    assert len(firsts) == 4 and len({p.stat().st_ino for p in firsts}) == 1  # one first iteration, shared
    assert invoke("plot", run).exit_code == 0
    assert (run / "figures" / "test_cross_entropy_by_real_and_synthetic.png").is_file()
    refused = invoke(
        "run", CONFIGS / "sft_helpsteer2_value_of_synthetic.yaml", "--out", tmp_path / "more", "-q",
        f"setting.model.path={checkpoints['gpt2']}", f"setting.data_dir={data}", "setting.device=cpu",
        "setting.max_length=120", "setting.sampling.max_new_tokens=110", "setting.sampling.evaluation_samples=8",
        "seeds=1",
        "regimes=[real-synthetic:4+2, real-synthetic:13+2]",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "real-synthetic:13+2 trains on the first 13 real samples, but the real training set holds 12" in (
        refused.output
    )
    assert not list((tmp_path / "more").rglob("iter_0001"))  # named before the shared first iteration was fitted
    status = invoke("status", tmp_path / "more").output
    assert "2 chains: 2 failed" in status and "the first iteration its regimes share failed: regime" in status


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_lora_trains_only_the_adapted_layers_and_merges_them_into_a_plain_checkpoint(
    checkpoints, wikitext, architecture, tmp_path
):
    pytest.importorskip("peft")
    training = {"batch_size": 4, "epochs": 2, "learning_rate": 1e-2, "checkpoint_minutes": 0}
    chain = setting(checkpoints[architecture], wikitext, lora={"rank": 4}, training=training)
    pretrained = chain._pretrained()
    fitted = chain.fit([chain.real_train], np.random.default_rng(0))
    curve = fitted.diagnostics["learning_curve"]
    assert curve[-1]["validation_loss"] < chain.evaluate(pretrained)["test_cross_entropy"][0]
    before, after = dict(pretrained.named_parameters()), dict(fitted.model.named_parameters())
    assert set(before) == set(after)  # merged: no adapter parameters are left
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapted = {"gpt2": ("c_attn",), "llama": ("q_proj", "v_proj")}[architecture]  # peft's defaults
    assert changed and all(any(part in name for part in adapted) for name in changed)
    chain.save_model(fitted.model, tmp_path / "model")
    assert not list((tmp_path / "model").glob("adapter_*"))
    loaded = chain.load_model(tmp_path / "model")
    assert all(torch.equal(p, q) for p, q in zip(loaded.parameters(), fitted.model.parameters()))
    # a fit interrupted mid-training resumes from its scratch with the same adapters
    scratch = tmp_path / "scratch"
    chain.fit([chain.real_train], np.random.default_rng(0), scratch)
    assert list(scratch.glob("*.pt"))
    resumed = chain.fit([chain.real_train], np.random.default_rng(0), scratch)
    assert resumed.diagnostics["learning_curve"] == curve
    assert all(torch.equal(p, q) for p, q in zip(resumed.model.parameters(), fitted.model.parameters()))


def test_the_footprint_reads_a_checkpoints_size_and_shape_from_its_files(checkpoints, wikitext, tmp_path):
    from model_collapse.settings.fine_tuning.config import model_dimensions

    for architecture, path in checkpoints.items():
        config = FineTuning.Config.model_validate(
            {**tiny_fine_tuning(model={"path": str(path)}, data_dir=str(wikitext)), "device": "cpu"}
        )
        family, parameters, width, layers, heads = model_dimensions(config)
        model = load_causal_model(path)
        assert family == architecture and width == model.config.hidden_size
        assert layers == model.config.num_hidden_layers and heads == model.config.num_attention_heads
        stored = model.num_parameters()
        assert stored <= parameters < 1.05 * stored + 10_000, architecture  # the files' headers besides
        on_cpu = FineTuning.footprint(config)
        on_gpu = FineTuning.footprint(config.model_copy(update={"device": "cuda"}))
        assert on_gpu.fixed_bytes == 4 * parameters and on_gpu.activation_bytes == 0  # the original model alone
        assert on_cpu.fixed_bytes == 20 * parameters and on_cpu.activation_bytes > 0  # the trained copy too
    # a directory that is not (yet) a checkpoint: no estimate, and the setting says what is wrong
    empty = FineTuning.Config.model_validate(
        tiny_fine_tuning(model={"path": str(tmp_path / "nothing")}, data_dir=str(wikitext))
    )
    assert FineTuning.footprint(empty) is None


def tiny_bert(directory: Path, saved_as: str = "BertForMaskedLM") -> Path:
    """A BERT checkpoint as save_pretrained writes one (a masked LM: not a causal one), with a tokenizer."""
    from transformers import BertConfig, BertForMaskedLM

    source = tiny_checkpoint(directory.parent / f"{directory.name}-tokenizer", "gpt2")
    config = BertConfig(vocab_size=300, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    BertForMaskedLM(config).save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, directory / name)
    fields = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**fields, "architectures": [saved_as]}))
    return directory


def test_the_checkpoint_and_data_files_are_checked_before_the_run_directory_is_written(checkpoints, wikitext, tmp_path):
    """Checked in a worker, the run directory existed already, and the corrected command into the same --out
    was refused; now every one of these is one line, exit 2, and nothing written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def refused(setting_fields) -> str:
        raw = {"setting": tiny_fine_tuning(**setting_fields), "regimes": ["replace"], "iterations": 2, "seeds": 1}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(raw))
        result = invoke("run", path, "--out", tmp_path / "run", "-q")
        assert result.exit_code == 2 and not (tmp_path / "run").exists(), result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        return result.stderr.strip()

    def with_path(path, data_dir=wikitext, **fields):
        return refused(
            {"model": {"path": str(path)}, "data_dir": None if data_dir is None else str(data_dir), **fields}
        )

    assert with_path(tmp_path / "missing").endswith("is not a directory")
    bert = tiny_bert(tmp_path / "bert")
    assert with_path(bert) == (
        f"error: setting.model.path: {bert} holds a BertForMaskedLM, not a causal language model (BertLMHeadModel)"
    )
    t5 = tmp_path / "t5"
    shutil.copytree(checkpoints["gpt2"], t5)
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    assert (
        with_path(t5) == f"error: setting.model.path: {t5} holds a t5 model, which transformers has no causal "
        "language model of"
    )
    # a class of no task transformers lists (a multimodal model's, say) is left to the loader, not refused
    from model_collapse.settings.fine_tuning.pretrained import check_model_directory

    renamed = tmp_path / "renamed"
    shutil.copytree(checkpoints["gpt2"], renamed)
    fields = json.loads((renamed / "config.json").read_text())
    (renamed / "config.json").write_text(json.dumps({**fields, "architectures": ["GPT2ForConditionalGeneration"]}))
    assert check_model_directory(renamed)["model_type"] == "gpt2"
    short = tiny_checkpoint(tmp_path / "short", "gpt2", positions=24)
    assert with_path(short).endswith("block_size + sampling.new_tokens = 32 exceeds the model's context of 24 tokens")
    assert with_path(checkpoints["gpt2"], tmp_path / "no-data").endswith(f"{tmp_path / 'no-data'} is not a directory")
    assert "holds no wikitext-2 train split" in with_path(checkpoints["gpt2"], tmp_path)
    # the same config, corrected, runs into the same --out
    good = {"setting": tiny_fine_tuning(model={"path": str(checkpoints["gpt2"])}, data_dir=str(wikitext))}
    (tmp_path / "good.yaml").write_text(yaml.safe_dump({**good, "regimes": ["replace"], "iterations": 2, "seeds": 1}))
    assert invoke("run", tmp_path / "good.yaml", "--out", tmp_path / "run", "-q").exit_code == 0
    # files that are there but hold nothing usable: one line naming the file (read in the chain)
    empty = wikitext_files(tmp_path / "empty-raw", layout="raw")
    (empty / "wiki.train.raw").write_text("\n \n")
    numbers = wikitext_files(tmp_path / "numbers")
    train = numbers / "wikitext-2-raw-v1" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), train)
    for data_dir, message in (
        (empty, f"{empty / 'wiki.train.raw'} holds no text: an empty wikitext-2 train split"),
        (numbers, f"{train}: its text column holds no strings (int), not wikitext-2's lines"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            setting(checkpoints["gpt2"], data_dir).real_train  # noqa: B018


def test_helpsteer2_records_with_a_null_prompt_or_response_are_refused_naming_them(checkpoints, tmp_path):
    """They became the text "None" and were trained on."""
    import gzip

    data = helpsteer_files(tmp_path / "helpsteer2", train=6, validation=2)
    with gzip.open(data / "train.jsonl.gz", "rt") as lines:
        records = [json.loads(line) for line in lines]
    records[3]["response"] = None
    with gzip.open(data / "train.jsonl.gz", "wt") as out:
        out.writelines(json.dumps(record) + "\n" for record in records)
    with pytest.raises(ConfigError) as caught:
        setting(checkpoints["gpt2"], data, format="prompt-response", sampling={"method": "sample"}).real_train  # noqa: B018
    assert str(caught.value) == f"{data / 'train.jsonl.gz'}: record 4 has null for its response, not a text"


class _Planted:
    """An object whose unpickling creates a file: what a pickled weights file may run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_weights_file_is_never_unpickled_and_says_so(checkpoints, wikitext, tmp_path):
    """torch's own message advised weights_only=False; the line says the file is never unpickled."""
    pickled = tmp_path / "pickled"
    shutil.copytree(checkpoints["gpt2"], pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    torch.save({"transformer.wte.weight": _Planted(tmp_path / "ran")}, pickled / "pytorch_model.bin")
    with pytest.raises(ConfigError) as caught:
        setting(pickled, wikitext).real_train  # noqa: B018
    assert str(caught.value) == (
        f"{pickled} holds no usable causal language model: its weights file holds objects other than tensors "
        "(a pickle), which model-collapse never unpickles; save the model with save_pretrained (safetensors)"
    )
    assert not (tmp_path / "ran").exists()
