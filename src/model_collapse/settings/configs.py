"""The typed configs of settings: ``StrictConfig`` (what every config section is), ``SettingConfig``
(the base of every setting's config) and its ``curation`` section (``CurationConfig``).

Curation (sample more candidates than the regime asks for, score them, keep some:
``model_collapse.curation`` does it between sampling and the regime) sits in the setting's config, not
beside the regimes, because what can score a setting's samples is the setting's to say
(``Capabilities.scores``), and so that it sweeps like any setting field: ``sweep: {curation.candidates: [1,
4, 16]}``. It is null unless a config writes it, and left out of the config's data then, so that a
config without it describes the same chains as before it existed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..vouched import is_import_path


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return any(_admits_bool(argument) for argument in get_args(annotation))


class StrictConfig(BaseModel):
    """A config model that refuses what pydantic would quietly coerce: unknown keys, infinite or NaN
    numbers, and booleans where a number is expected (``iterations: true`` is not 1).

    ``moved`` maps keys of an earlier config layout to their place now (``learning_rate`` ->
    ``training.learning_rate``): such a key is refused with a message naming where it went."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    moved: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _no_moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # keys of the earlier layout (also a key that is now a section, ``model``, holding a plain value)
            moves = [
                (key, cls.moved[key])
                for key, value in data.items()
                if key in cls.moved and (key not in cls.model_fields or not isinstance(value, dict))
            ]
            if moves:
                raise PydanticCustomError("moved", "keys moved: {moves}", {"moves": moves})
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
                    raise PydanticCustomError(
                        "boolean_for_number",
                        "expected {kind}, got the boolean {value}",
                        {"key": key, "kind": _kind(field.annotation), "value": str(value).lower()},
                    )
        return data


def _kind(annotation: Any) -> str:
    """What a field takes, in words, for the message refusing a boolean in it."""
    text = str(annotation)
    if "int" in text or "float" in text:
        return "a number"
    return "a string" if "str" in text else "a value that is not a boolean"


def section_of(annotation: Any) -> type[StrictConfig] | None:
    """The section type a field holds (``curation``: a section or null), or None for a plain field."""
    options = [a for a in get_args(annotation) if a is not type(None)] if get_args(annotation) else [annotation]
    if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], StrictConfig):
        return options[0]
    return None


def field_of(config_type: type[StrictConfig], dotted: str) -> Any:
    """The pydantic field a dotted key (``training.learning_rate``) names inside a config with sections,
    or None when it names none."""
    *sections, leaf = dotted.split(".")
    for part in sections:
        field = config_type.model_fields.get(part)
        section = section_of(field.annotation) if field is not None else None
        if section is None:
            return None
        config_type = section
    return config_type.model_fields.get(leaf)


# package.module:function, as settings named by import path are written
_FUNCTION_NAME = re.compile(r"[A-Za-z_][\w.-]*")  # one an installed package registers


class CurationConfig(StrictConfig):
    """How a chain curates its synthetic batches: ``candidates`` draws per kept sample, scored by one of
    ``score`` (the setting's own scores), ``reward`` or ``verifier`` (a user's function), kept by
    ``keep``. Higher scores are better."""

    candidates: PositiveInt = Field(
        1, title="m", description="m: candidates drawn per synthetic sample the regime asks for (1: the plain loop)"
    )
    score: str | None = Field(
        None,
        description="a score the setting computes: likelihood (under the model that drew the candidates), "
        "oracle (under the real data's distribution), importance (oracle - likelihood) or one of its own "
        "(model-collapse list shows them)",
    )
    reward: str | None = Field(
        None,
        description="a function of a batch of candidates, one reward per candidate: package.module:function, or "
        "the name an installed package registers (entry-point group model_collapse.curation_functions)",
    )
    verifier: str | None = Field(
        None, description="as reward, for a verifier's verdicts (1 accepts, 0 rejects) or its confidence"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments the reward or verifier function is called with"
    )
    keep: Literal["top", "threshold", "weighted"] = Field(
        "top",
        description="top: the best of all candidates; threshold: those scoring at least threshold; weighted: "
        "each kept sample one of its m candidates, drawn with probability proportional to exp(score / temperature)",
    )
    threshold: float | None = Field(None, description="keep: threshold: the score a candidate must reach")
    temperature: PositiveFloat = Field(1.0, title="τ", description="keep: weighted: τ, in units of the score")
    noise: NonNegativeFloat = Field(
        0.0, title="noise", description="standard deviation of Gaussian noise on the scores a choice sees"
    )
    flip: float = Field(0.0, ge=0, le=1, description="keep: threshold: the probability that a verdict is flipped")
    warn_after_seconds: float = Field(
        300.0,
        ge=1.0,  # (a warning a second at most: a smaller interval would flood the log)
        description="a reward or verifier still running after this long is named in a warning (again every as "
        "long), with the chain and iteration that wait on it",
    )

    @property
    def scored_by(self) -> str:
        """The score, reward or verifier that ranks candidates, as the config names it."""
        return next(value for value in (self.score, self.reward, self.verifier) if value is not None)

    @property
    def scorer_key(self) -> str:
        """Which of ``score``, ``reward`` and ``verifier`` the config sets."""
        return next(key for key in ("score", "reward", "verifier") if getattr(self, key) is not None)

    @model_validator(mode="after")
    def _consistent(self) -> CurationConfig:
        given = [key for key in ("score", "reward", "verifier") if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none of them"
            raise ValueError(f"set exactly one of score, reward and verifier (found {found})")
        for key in ("reward", "verifier"):
            value = getattr(self, key)
            if value is not None and not (is_import_path(value) or _FUNCTION_NAME.fullmatch(value)):
                raise ValueError(
                    f"{key}: expected a function as package.module:function or a registered name, got {value!r}"
                )
        if self.score is not None and ":" in self.score:
            raise ValueError(f"score: a score of the setting; a function goes in reward or verifier: {self.score!r}")
        if self.options and self.score is not None:
            raise ValueError("options: keyword arguments are for a reward or verifier function")
        if (self.keep == "threshold") != (self.threshold is not None):
            raise ValueError("threshold: give it with keep: threshold, and only then")
        if self.flip and self.keep != "threshold":
            raise ValueError("flip: flips the verdicts of keep: threshold")
        if self.temperature != 1.0 and self.keep != "weighted":
            raise ValueError("temperature: weights the choice of keep: weighted")
        return self


def renamed_keys(data: dict[str, Any], renamed: Mapping[str, str], warn: bool) -> dict[str, Any]:
    """``data`` (a setting's mapping) with every key ``renamed`` lists under its name now; a key given
    under both names is refused. ``warn``: a deprecation warning for each (a config the user wrote)."""
    from ..deprecation import deprecated

    found = [(old, new) for old, new in renamed.items() if _has(data, old)]
    if not found:
        return data
    data = copy.deepcopy(data)
    for old, new in found:
        if _has(data, new):
            raise ValueError(f"{old}: the earlier name of {new}, which is given too: keep {new}")
        *parents, last = old.split(".")
        holder = data
        for part in parents:
            holder = holder[part]
        value = holder.pop(last)
        *parents, last = new.split(".")
        holder = data
        for part in parents:
            holder = holder.setdefault(part, {})
        holder[last] = value
        if warn:
            deprecated(f"setting.{old} is now setting.{new}: write that (the old name goes in the next release)")
    return data


def _has(data: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


class SettingConfig(StrictConfig):
    """Base of every setting's typed config. Unknown keys are errors, never ignored.

    Data fields sit at the top; a setting with many options groups the rest into sections (``model``,
    ``training``, ``sampling``), each a ``StrictConfig`` of its own that the code receives as is."""

    name: str
    curation: CurationConfig | None = Field(
        None, description="sample more, keep some: see the Curation section (null: every sample kept)"
    )
    # keys an earlier model-collapse spelled otherwise (dotted, below ``setting``), to their name now: one
    # config vocabulary for every setting. Such a key still works, with one deprecation warning naming
    # the new key; a run directory that records it is read as it is, without one.
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        return renamed_keys(data, cls.renamed, warn=True) if isinstance(data, dict) else data

    @model_serializer(mode="wrap")
    def _without_absent_curation(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if isinstance(data, dict) and "curation" in data:
            curation = data.pop("curation")
            if curation is not None:  # without it, a config reads as it did before curation existed
                data["curation"] = curation  # last, after the setting's own fields
        return data
