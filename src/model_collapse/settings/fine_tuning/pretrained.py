"""Reading a pretrained causal language model and its tokenizer from a local directory, refusing in one
line what cannot be one: a missing directory, one without a model's config, weights or tokenizer, a model
that is not a causal LM, or one whose code is not part of transformers (``trust_remote_code`` is never
set: a run does not execute code it downloaded or found)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import ConfigError


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def check_model_directory(directory: Path) -> dict[str, Any]:
    """One line naming what makes ``directory`` no Hugging Face causal language model's directory, read
    from its files alone (no weights loaded); its config.json's fields."""
    if not directory.is_dir():
        raise ConfigError(f"setting.model.path: {directory} is not a directory")
    config = directory / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"setting.model.path: {directory} holds no config.json (a directory save_pretrained wrote is expected)"
        )
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"setting.model.path: {config} is not JSON ({_first_line(error)})") from None
    if not isinstance(fields, dict) or "model_type" not in fields:
        raise ConfigError(f"setting.model.path: {config} names no model_type: not a transformers model")
    if fields.get("auto_map"):
        raise ConfigError(
            f"setting.model.path: {directory} needs its own code (auto_map in config.json); model-collapse runs "
            "only architectures that transformers ships"
        )
    _check_causal(directory, fields)
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        # AutoTokenizer would make an empty one from the model's type rather than refuse
        raise ConfigError(f"setting.model.path: {directory} holds no usable tokenizer: no tokenizer.json")
    return fields


def _check_causal(directory: Path, fields: dict[str, Any]) -> None:
    """A checkpoint of a causal language model: its model type has one in transformers, and the classes
    it was saved as (``architectures``) are not all of another task (a BERT saved as BertForMaskedLM is
    not one; a class transformers lists for no task is left to the loader)."""
    from transformers.models.auto import modeling_auto as auto

    model_type = fields["model_type"]
    causal = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if causal is None:
        raise ConfigError(
            f"setting.model.path: {directory} holds a {model_type} model, which transformers has no causal "
            "language model of"
        )
    other_tasks = {
        name
        for mapping in (
            auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
            auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
            auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
            auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
            auto.MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES,
            auto.MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES,
            auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        )
        for name in mapping.values()
    } - set(auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    saved = fields.get("architectures")
    if isinstance(saved, list) and saved and set(map(str, saved)) <= other_tasks:
        raise ConfigError(
            f"setting.model.path: {directory} holds a {', '.join(map(str, saved))}, not a causal language model "
            f"({causal})"
        )


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as error:  # transformers raises several types, some with long messages
        raise ConfigError(f"setting.model.path: {directory} holds no usable tokenizer: {_first_line(error)}") from None
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"setting.model.path: the tokenizer in {directory} has no EOS token")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"setting.model.path: the tokenizer in {directory} is a slow one; a fast (tokenizer.json) one is needed"
        )
    return tokenizer


def load_causal_model(directory: Path, error_type: type[Exception] = ConfigError):
    """The model in ``directory``, in float32 on the CPU (training autocasts on a GPU), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, trust_remote_code=False)
    except Exception as error:  # transformers raises several types, some with long messages
        if _refused_pickle(error):  # torch's own message advises weights_only=False: never, here
            raise error_type(
                f"{directory} holds no usable causal language model: its weights file holds objects other than "
                "tensors (a pickle), which model-collapse never unpickles; save the model with "
                "save_pretrained (safetensors)"
            ) from None
        raise error_type(f"{directory} holds no usable causal language model: {_first_line(error)}") from None
    return model.eval()


def _refused_pickle(error: BaseException | None) -> bool:
    """Whether loading failed because torch's weights-only unpickler met an object that is not a tensor."""
    import pickle

    while error is not None:
        if isinstance(error, pickle.UnpicklingError) or "Weights only load failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def context_length(fields: dict[str, Any]) -> int:
    """The longest sequence a model's positions take, from its config's fields (GPT-2: n_positions; most:
    max_position_embeddings); unbounded when it names none."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 2**31
