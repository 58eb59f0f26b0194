"""Language-model training and sampling: packing, loss masking, the schedule, the KV cache."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import torchrun_command
from model_collapse.settings.language_model.config import TrainingSection
from model_collapse.settings.language_model.corpus import load_documents
from model_collapse.settings.language_model.loss import CausalLanguageModelLoss
from model_collapse.settings.language_model.models import build_model
from model_collapse.settings.language_model.packing import TokenCorpus, pack
from model_collapse.settings.language_model.sampling import draw, generate, next_token_distribution, story_prompts
from model_collapse.settings.language_model.tokenizer import train_tokenizer
from model_collapse.settings.language_model.training import cross_entropy, learning_rate_factor, train

BOS = EOS = 0


def test_packing_puts_documents_back_to_back_and_masks_cross_document_targets():
    corpus = TokenCorpus.from_documents([[5, 6, 7], [8], [9, 10]])
    blocks = pack(corpus, block_size=4, bos=0, eos=1)
    np.testing.assert_array_equal(blocks.inputs, [[0, 5, 6, 7], [1, 0, 8, 1], [0, 9, 10, 1]])
    np.testing.assert_array_equal(blocks.targets, [[5, 6, 7, 1], [-100, 8, 1, -100], [9, 10, 1, -100]])


def test_every_document_token_and_eos_is_a_target_exactly_once():
    rng = np.random.default_rng(0)
    documents = [list(rng.integers(2, 50, size=rng.integers(0, 30))) for _ in range(40)]
    corpus = TokenCorpus.from_documents(documents)
    order = rng.permutation(len(documents))
    blocks = pack(corpus, 16, bos=0, eos=1, order=order)
    targets = blocks.targets[blocks.targets != -100]
    expected = [t for i in order for t in [*documents[i], 1]]
    np.testing.assert_array_equal(targets, expected)


def test_token_corpus_round_trips_through_memory_mapped_files(tmp_path):
    corpus = TokenCorpus.from_documents([[1, 2], [3], [4, 5, 6], []])
    assert [corpus.document(i).tolist() for i in range(len(corpus))] == [[1, 2], [3], [4, 5, 6], []]
    corpus.save(tmp_path)
    loaded = TokenCorpus.load(tmp_path)
    assert isinstance(loaded.tokens, np.memmap)
    np.testing.assert_array_equal(loaded.tokens, corpus.tokens)
    np.testing.assert_array_equal(loaded.offsets, corpus.offsets)


def test_packing_several_parts_equals_packing_their_concatenation():
    rng = np.random.default_rng(1)
    documents = [list(rng.integers(2, 50, size=rng.integers(0, 20))) for _ in range(30)]
    parts = [
        TokenCorpus.from_documents(documents[:7]),
        TokenCorpus.from_documents(documents[7:20]),
        TokenCorpus.from_documents(documents[20:]),
    ]
    order = rng.permutation(30)
    together = pack(TokenCorpus.from_documents(documents), 8, bos=0, eos=1, order=order)
    apart = pack(parts, 8, bos=0, eos=1, order=order)
    assert len(apart) == len(together)
    np.testing.assert_array_equal(apart.inputs, together.inputs)
    np.testing.assert_array_equal(apart.targets, together.targets)
    inputs, targets = apart.batch([3, 0])
    np.testing.assert_array_equal(inputs, together.inputs[[3, 0]])
    assert len(apart.limited(2)) == 2


def test_learning_rate_schedule_warms_up_then_decays_to_the_final_ratio():
    factors = [learning_rate_factor(s, 100, 10, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert learning_rate_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_cross_entropy_takes_only_unmasked_targets():
    torch.manual_seed(0)
    model = build_model("gpt2-tiny", vocab_size=40, special_token_id=EOS).eval()  # no dropout
    corpus = TokenCorpus.from_documents([[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]])
    blocks = pack(corpus, 8, bos=BOS, eos=EOS)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(blocks.inputs)).logits
    targets = torch.from_numpy(blocks.targets)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep]).item()
    assert cross_entropy(model, blocks, batch_size=1, device=torch.device("cpu")) == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def small_corpus():
    train_documents = load_documents("moby-dick", "train")[:600]
    validation_documents = load_documents("moby-dick", "validation")[:40]
    tokenizer = train_tokenizer(train_documents, vocab_size=400)
    encode = lambda docs: TokenCorpus.from_documents(tokenizer(docs, add_special_tokens=False)["input_ids"])  # noqa: E731
    return tokenizer, encode(train_documents), encode(validation_documents)


@pytest.mark.slow
def test_training_lowers_the_validation_loss_and_is_deterministic(small_corpus):
    tokenizer, train_corpus, validation_corpus = small_corpus
    eos = tokenizer.eos_token_id
    blocks, validation = pack(train_corpus, 64, eos, eos), pack(validation_corpus, 64, eos, eos)
    options = TrainingSection(batch_size=16, learning_rate=3e-3, evaluations_per_epoch=3)
    curves = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("llama-tiny", len(tokenizer), eos)
        before = cross_entropy(model, validation, 16, torch.device("cpu"))
        curves.append(train(model, blocks, validation, options, np.random.default_rng(0), torch.device("cpu")))
    assert before == pytest.approx(math.log(len(tokenizer)), rel=0.05)  # an untrained model is near uniform
    assert curves[0][-1]["validation_loss"] < before - 1.0
    assert len(curves[0]) >= 3 and curves[0][-1]["epoch"] == 1.0
    assert curves[0] == curves[1]


def test_micro_batches_accumulate_to_the_gradient_of_the_whole_batch(small_corpus):
    tokenizer, train_corpus, validation_corpus = small_corpus
    eos = tokenizer.eos_token_id
    blocks, validation = pack(train_corpus, 64, eos, eos).limited(24), pack(validation_corpus, 64, eos, eos).limited(4)
    models = {}
    for micro in (None, 5):  # 16 = 5 + 5 + 5 + 1: uneven pieces, and a short last batch of 8
        torch.manual_seed(0)
        models[micro] = build_model("llama-tiny", len(tokenizer), eos)
        options = TrainingSection(batch_size=16, micro_batch_size=micro, learning_rate=3e-3, evaluations_per_epoch=1)
        train(models[micro], blocks, validation, options, np.random.default_rng(0), torch.device("cpu"))
    for whole, pieces in zip(models[None].parameters(), models[5].parameters()):
        # Adam moves each weight by about the learning rate (3e-3) a step, so a wrong sum would show
        torch.testing.assert_close(pieces, whole, rtol=1e-3, atol=1e-4)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(models[None].parameters(), build_model("llama-tiny", len(tokenizer), eos).parameters())
    ]
    assert any(changed)


class Interrupted(Exception):
    pass


def test_interrupted_training_resumes_at_the_saved_step_and_ends_as_if_never_stopped(small_corpus, tmp_path):
    tokenizer, train_corpus, validation_corpus = small_corpus
    eos = tokenizer.eos_token_id
    blocks, validation = pack(train_corpus, 64, eos, eos).limited(64), pack(validation_corpus, 64, eos, eos).limited(4)
    # gpt2 has dropout (torch's random state must be restored); two epochs (the data order must be too)
    options = TrainingSection(batch_size=8, learning_rate=3e-3, epochs=2, evaluations_per_epoch=3, checkpoint_minutes=0)
    steps_run = []
    original_batch = blocks.batch
    blocks.batch = lambda indices: (steps_run.append(1), original_batch(indices))[1]

    def run(on_evaluation=None, directory=None, options=options):
        torch.manual_seed(0)
        model = build_model("gpt2-tiny", len(tokenizer), eos)
        steps_run.clear()
        curve = train(
            model, blocks, validation, options, np.random.default_rng(0), torch.device("cpu"), on_evaluation, directory
        )
        return model, curve

    uninterrupted, expected_curve = run()
    total_steps = len(steps_run)

    def stop_at_the_fourth_evaluation(point):
        if point["epoch"] > 1.2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run(stop_at_the_fourth_evaluation, tmp_path)
    stopped_after = len(steps_run)
    assert total_steps / 2 < stopped_after < total_steps  # stopped in the second epoch
    resumed, curve = run(directory=tmp_path)
    assert len(steps_run) == total_steps - (stopped_after - 1)  # the checkpoint is the step before the stop
    assert curve == expected_curve
    for (name, a), b in zip(resumed.state_dict().items(), uninterrupted.state_dict().values()):
        assert torch.equal(a, b), name

    # a checkpoint of another run (here another learning rate) is not resumed from
    other = options.model_copy(update={"learning_rate": 1e-3})
    run(directory=tmp_path, options=other)
    assert len(steps_run) == total_steps


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])  # tied and untied output layers
def test_chunked_loss_equals_cross_entropy_of_the_logits_with_the_same_gradients(preset):
    torch.manual_seed(0)
    model = build_model(preset, vocab_size=300, special_token_id=EOS).eval()  # eval: no dropout, same function twice
    inputs = torch.randint(0, 300, (5, 33))
    targets = torch.roll(inputs, -1, dims=1)
    targets[:, -1] = -100
    targets[1, :7] = -100  # masked targets, including a whole run of them
    reference = F.cross_entropy(
        model(input_ids=inputs).logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    reference.backward()
    expected = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss, count = CausalLanguageModelLoss(model, rows=16)(inputs, targets)  # 165 rows: 11 chunks, the last one short
    loss.backward()
    assert int(count) == 5 * 32 - 7
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(
            parameter.grad, expected[name], rtol=1e-4, atol=1e-6 * expected[name].abs().max().item()
        )
    with torch.no_grad():
        assert CausalLanguageModelLoss(model, rows=7)(inputs, targets)[0].item() == pytest.approx(
            reference.item(), rel=1e-6
        )
    # a frozen output layer (LoRA) gets no gradient, and the layers below the same ones
    model.zero_grad(set_to_none=True)
    model.get_output_embeddings().weight.requires_grad_(False)
    CausalLanguageModelLoss(model, rows=16)(inputs, targets)[0].backward()
    assert model.get_output_embeddings().weight.grad is None
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(
                parameter.grad, expected[name], rtol=1e-4, atol=1e-6 * expected[name].abs().max().item()
            )


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_kv_cache_sampling_equals_uncached_sampling(preset):
    torch.manual_seed(0)
    model = build_model(preset, vocab_size=60, special_token_id=EOS)
    prompts = story_prompts([7, 8, 9, 10, 11, 12], 6, bos=BOS)
    outputs = [
        generate(model, prompts, 40, EOS, torch.Generator().manual_seed(3), temperature=1.0, use_cache=cache)
        for cache in (True, False)
    ]
    assert outputs[0] == outputs[1]
    for prompt, story in zip(prompts.tolist(), outputs[0]):
        assert story[:2] == prompt  # the prompt's first token stays in the story
        assert EOS not in story[2:] and len(story) <= 2 + 40


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_continuous_batching_equals_uncached_sampling_as_slots_refill(preset):
    # A 6-token vocabulary makes EOS likely, so stories end at many different steps: slots refill
    # mid-batch, the cache is compacted (longest story 2 + 12 tokens) and idle slots are dropped.
    torch.manual_seed(1)
    model = build_model(preset, vocab_size=6, special_token_id=EOS)
    prompts = story_prompts(list(range(1, 6)) * 8, 40, bos=BOS)
    outputs = [
        generate(model, prompts, 12, EOS, torch.Generator().manual_seed(4), batch_size=6, use_cache=cache)
        for cache in (True, False)
    ]
    assert outputs[0] == outputs[1]
    lengths = {len(story) for story in outputs[0]}
    assert min(lengths) == 2 and max(lengths) == 14 and len(lengths) > 5
    for prompt, story in zip(prompts.tolist(), outputs[0]):
        assert story[:2] == prompt and EOS not in story[2:]


@pytest.mark.parametrize("preset, seed", [("gpt2-tiny", 4), ("llama-tiny", 3)])  # seeds whose stories end unevenly
def test_greedy_continuous_batching_matches_hugging_face_generate_story_by_story(preset, seed):
    torch.manual_seed(seed)
    model = build_model(preset, vocab_size=12, special_token_id=EOS).eval()
    prompts = story_prompts(list(range(1, 12)) * 2, 22, bos=BOS)
    ours = generate(model, prompts, 20, EOS, torch.Generator().manual_seed(0), top_k=1, batch_size=5)
    for prompt, story in zip(prompts, ours):
        with torch.no_grad():
            theirs = model.generate(
                prompt[None],
                do_sample=False,
                max_new_tokens=20,
                eos_token_id=EOS,
                pad_token_id=EOS,
                attention_mask=torch.ones_like(prompt[None]),
            )[0].tolist()
        ended = EOS in theirs[2:]
        assert story == (theirs[: theirs.index(EOS, 2)] if ended else theirs)
    assert any(len(story) < 22 for story in ours) and any(len(story) == 22 for story in ours)


def test_inverse_cdf_draws_follow_the_distribution_and_never_pick_a_zero():
    probabilities = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(40_000, 1)
    tokens = draw(probabilities, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=5).double() / len(tokens)
    assert frequencies[1] == 0 and frequencies[4] == 0  # zero mass, also the last token
    standard_error = (probabilities[0] * (1 - probabilities[0]) / len(tokens)).sqrt()
    assert bool(((frequencies - probabilities[0].double()).abs() <= 4 * standard_error + 1e-12).all())
    unnormalised = torch.tensor([[2.0, 6.0]]).repeat(20_000, 1)  # top-k/top-p leave sums below 1: scale is irrelevant
    share = draw(unnormalised, torch.Generator().manual_seed(1)).double().mean()
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 20_000)


def test_sampling_stops_at_eos_and_respects_top_k_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    np.testing.assert_allclose(
        next_token_distribution(logits, 1.0, None, None)[0], torch.softmax(logits, -1)[0], rtol=1e-6
    )
    assert next_token_distribution(logits, 1.0, 1, None)[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    top_two = next_token_distribution(logits, 1.0, 2, None)[0]
    assert top_two[2] == top_two[3] == 0 and top_two.sum() == pytest.approx(1.0)
    p = torch.softmax(logits, -1)[0]
    nucleus = next_token_distribution(logits, 1.0, None, float(p[0] + p[1] - 1e-3))[0]  # needs tokens 0 and 1
    assert nucleus[2] == 0 and nucleus[0] > 0 and nucleus[1] > 0
    cold = next_token_distribution(logits, 0.3, None, None)[0]
    assert cold[0] > torch.softmax(logits, -1)[0][0]
    with pytest.raises(ValueError):
        next_token_distribution(logits, 0.0, None, None)

    torch.manual_seed(0)
    model = build_model("gpt2-tiny", vocab_size=30, special_token_id=EOS)
    with torch.no_grad():  # final hidden state = a long vector along EOS's embedding: EOS always wins
        eos_embedding = model.lm_head.weight[EOS]
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(1e4 * eos_embedding / eos_embedding.norm() ** 2)
    stories = generate(model, story_prompts(None, 4, bos=BOS), 50, EOS, torch.Generator().manual_seed(0))
    assert stories == [[BOS]] * 4


DATA_PARALLEL_SCRIPT = """
import sys, numpy as np, torch, torch.distributed as dist
from model_collapse.settings.language_model.loss import CausalLanguageModelLoss
from model_collapse.settings.language_model.models import build_model
from model_collapse.settings.language_model.packing import TokenCorpus, pack
from model_collapse.settings.language_model.config import TrainingSection
from model_collapse.settings.language_model.training import train
from model_collapse import distributed

dist.init_process_group("gloo")
rng = np.random.default_rng(5)
corpus = TokenCorpus.from_documents([list(rng.integers(2, 60, size=rng.integers(1, 40))) for _ in range(120)])
blocks, validation = pack(corpus, 16, 0, 1), pack(corpus, 16, 0, 1).limited(4)
torch.manual_seed(0)
model = build_model("llama-tiny", vocab_size=60, special_token_id=1)
curve = train(model, blocks, validation, TrainingSection(batch_size=7, learning_rate=3e-3, evaluations_per_epoch=2),
              np.random.default_rng(0), torch.device("cpu"))
if dist.get_rank() == 0:
    torch.save({"state": model.state_dict(), "curve": curve}, sys.argv[1])
del model  # its parameters' hooks hold DDP's reducer and the gloo group: free them while the group runs
distributed.finish()
"""


@pytest.mark.slow
def test_data_parallel_training_over_two_processes_equals_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo) follows the single-process optimisation."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(DATA_PARALLEL_SCRIPT)
    command = torchrun_command(str(script), str(tmp_path / "parallel.pt"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "single.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **__import__("os").environ,
            "WORLD_SIZE": "1",
            "RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": command[command.index("--master_port") + 1],
        },
    )
    assert single.returncode == 0, single.stderr[-3000:]
    parallel, alone = torch.load(tmp_path / "parallel.pt"), torch.load(tmp_path / "single.pt")
    for name, value in alone["state"].items():
        torch.testing.assert_close(parallel["state"][name], value, rtol=1e-4, atol=1e-4)
    for a, b in zip(parallel["curve"], alone["curve"]):
        assert a["step"] == b["step"]
        assert a["validation_loss"] == pytest.approx(b["validation_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_a_training_state_holding_objects_is_refused_in_one_line_and_never_run(tmp_path, caplog):
    """A ``training_state.pt`` someone else wrote, holding a pickled payload: refused (never unpickled),
    said in one line without torch's advice to load it with ``weights_only=False``."""
    import os
    import pickle

    from model_collapse.settings.training_state import TrainingState

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    state = TrainingState(tmp_path, 10.0, {"run": 1})
    torch.save({"fingerprint": state.fingerprint, "model": Payload()}, tmp_path / TrainingState.FILE)
    with caplog.at_level("WARNING", logger="model_collapse"):
        assert state.load() is None
    assert not (tmp_path / "ran").exists()
    (message,) = [record.getMessage() for record in caplog.records]
    assert "refused training state" in message and "weights_only" not in message and "\n" not in message
    (tmp_path / TrainingState.FILE).write_bytes(pickle.dumps([1, 2])[:5])  # truncated: another one line
    caplog.clear()
    with caplog.at_level("WARNING", logger="model_collapse"):
        assert state.load() is None
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
