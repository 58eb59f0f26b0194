"""Language-model building blocks: corpora, the tokenizer and the paper's model presets."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from model_collapse.errors import ModelCollapseError, RunDirectoryError
from model_collapse.settings.language_model.corpus import load_documents
from model_collapse.settings.language_model.models import PRESETS, build_model
from model_collapse.settings.language_model.tokenizer import END_OF_TEXT, cache_key, cached_tokenizer, train_tokenizer


@pytest.mark.parametrize(
    "preset,parameters",
    [("gpt2-9m", 8_890_880), ("llama-12m", 12_488_960), ("llama-42m", 41_755_136), ("llama-126m", 125_553_408)],
)
def test_presets_have_the_papers_parameter_counts(preset, parameters):
    with torch.device("meta"):
        model = build_model(preset, vocab_size=8000, special_token_id=0)
    assert model.num_parameters() == parameters


def test_gpt2_9m_ties_its_embeddings_and_llama_does_not():
    with torch.device("meta"):
        gpt2, llama = build_model("gpt2-9m", 8000, 0), build_model("llama-12m", 8000, 0)
    assert gpt2.get_input_embeddings().weight is gpt2.get_output_embeddings().weight
    assert llama.get_input_embeddings().weight is not llama.get_output_embeddings().weight
    assert gpt2.config.n_positions == 2048


def test_dropout_is_set_everywhere_the_architecture_has_it_or_left_at_its_default():
    import torch.nn as nn

    from model_collapse.settings.language_model.models import dropout_overrides

    def rates(model):
        return {m.p for m in model.modules() if isinstance(m, nn.Dropout)} | {
            getattr(model.config, "attention_dropout", None)
        } - {None}

    assert rates(build_model("gpt2-tiny", 60, 0)) == {0.1}
    assert rates(build_model("gpt2-tiny", 60, 0, **dropout_overrides("gpt2-tiny", 0.0))) == {0.0}
    llama = build_model("llama-tiny", 60, 0, **dropout_overrides("llama-tiny", 0.2))
    assert llama.config.attention_dropout == 0.2
    assert dropout_overrides("gpt2-9m", None) == {}


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_checkpoints_load_with_from_pretrained(preset, tmp_path):
    torch.manual_seed(0)
    model = build_model(preset, vocab_size=300, special_token_id=0).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokens = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, model(tokens).logits)
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("gpt5", 300, 0)
    assert set(PRESETS) >= {"gpt2-9m", "llama-12m", "llama-42m", "llama-126m"}


def test_bundled_corpus_is_real_text_split_into_documents():
    train, validation = load_documents("moby-dick", "train"), load_documents("moby-dick", "validation")
    assert sum(map(len, train)) + sum(map(len, validation)) > 1_000_000
    assert len(train) > 2000 and len(validation) > 100
    assert not set(train) & set(validation)
    assert any(d.startswith("Call me Ishmael.") for d in train + validation)
    assert load_documents("moby-dick", "validation") == validation  # a fixed split


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(load_documents("moby-dick", "train"), vocab_size=8000)


def test_tokenizer_has_8000_tokens_and_one_special_token(tokenizer):
    assert len(tokenizer) == 8000
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.pad_token == END_OF_TEXT
    assert tokenizer.convert_tokens_to_ids(END_OF_TEXT) == tokenizer.eos_token_id


@pytest.mark.parametrize(
    "text",
    [
        "Once upon a time, there was a little girl named Lily.",
        "naïve café — 😀 日本語\n\ttabs  and  spaces ",
        "",
        "<|endoftext|> inside",
    ],
)
def test_tokenizer_round_trips_any_text(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_tokenizer_round_trips_the_validation_split(tokenizer):
    for document in load_documents("moby-dick", "validation"):
        assert tokenizer.decode(tokenizer(document)["input_ids"]) == document
    # it compresses: real English costs well under one token per 3 characters
    text = " ".join(load_documents("moby-dick", "validation"))
    assert len(tokenizer(text)["input_ids"]) < len(text) / 3


def test_tokenizer_is_trained_once_and_cached(tmp_path):
    corpus = {"source": "moby-dick"}
    key = cache_key(corpus, 500)
    assert key == cache_key(dict(corpus), 500) and key != cache_key(corpus, 600)
    calls = []

    def documents():
        calls.append(1)
        return load_documents("moby-dick", "train")[:200]

    first = cached_tokenizer(tmp_path, key, documents, vocab_size=500)
    second = cached_tokenizer(tmp_path, key, documents, vocab_size=500)
    assert len(calls) == 1
    assert first.get_vocab() == second.get_vocab() and len(second) == 500
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directory left behind"
    (tmp_path / key / "tokenizer.json").write_text("{broken")
    with pytest.raises(RunDirectoryError, match="corrupted tokenizer cache"):
        cached_tokenizer(tmp_path, key, documents, vocab_size=500)


def test_documents_from_local_files(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("First story.\n\nSecond story.\n")
    assert load_documents("files", "train", {"train": str(lines)}) == ["First story.", "Second story."]

    separated = tmp_path / "stories.txt"
    separated.write_text("One day,\na dog ran.\n<|endoftext|>\nThe end.\n<|endoftext|>\n")
    assert load_documents("files", "train", {"train": str(separated)}, separator="<|endoftext|>") == [
        "One day,\na dog ran.",
        "The end.",
    ]

    jsonl = tmp_path / "stories.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["A.", "B.", " "])))
    assert load_documents("files", "validation", {"validation": str(jsonl)}) == ["A.", "B."]

    parquet = tmp_path / "stories.parquet"
    pd.DataFrame({"text": ["Red.", "Blue."]}).to_parquet(parquet)
    assert load_documents("files", "train", {"train": str(parquet)}) == ["Red.", "Blue."]

    pd.DataFrame({"story": ["x"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ModelCollapseError, match="no 'text' field"):
        load_documents("files", "train", {"train": str(tmp_path / "other.parquet")})
    with pytest.raises(ModelCollapseError, match="does not exist"):
        load_documents("files", "train", {"train": str(tmp_path / "missing.txt")})
    with pytest.raises(ModelCollapseError, match="needs a file for the validation split"):
        load_documents("files", "validation", {"train": str(lines)})


def test_tinystories_from_a_local_copy_of_the_hugging_face_data_set(tmp_path, monkeypatch):
    """The data set's own layout: data/train-0000N-of-0000M-<hash>.parquet and data/validation-....parquet,
    a text column; read without network and without writing a cache outside the run."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a cache written anyway would land here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "TinyStories" / "data"
    data.mkdir(parents=True)
    shards = [["Once upon a time.", "Tom ran."], ["Lily sang.", " "]]
    for i, texts in enumerate(shards):
        pd.DataFrame({"text": texts}).to_parquet(data / f"train-0000{i}-of-00002-abc{i}.parquet")
    pd.DataFrame({"text": ["The end."]}).to_parquet(data / "validation-00000-of-00001-def.parquet")
    copy = str(tmp_path / "TinyStories")
    assert load_documents("tinystories", "train", data_dir=copy) == ["Once upon a time.", "Tom ran.", "Lily sang."]
    assert load_documents("tinystories", "validation", data_dir=copy) == ["The end."]
    assert not (tmp_path / "home").exists()
    with pytest.raises(ModelCollapseError, match="holds no TinyStories validation split"):
        load_documents("tinystories", "validation", data_dir=str(tmp_path / "home"))
    (data / "validation-00000-of-00001-def.parquet").write_bytes(b"not parquet")
    with pytest.raises(ModelCollapseError, match="cannot read .* as parquet"):
        load_documents("tinystories", "validation", data_dir=copy)


def test_tinystories_offline_says_what_to_do_instead(tmp_path):
    code = (
        "from model_collapse.settings.language_model.corpus import load_documents\n"
        "from model_collapse.errors import ModelCollapseError\n"
        "try:\n    load_documents('tinystories', 'validation')\n"
        "except ModelCollapseError as error:\n    print(error)\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120)
    assert "cannot load roneneldan/TinyStories" in result.stdout
    assert "dataset: files" in result.stdout
