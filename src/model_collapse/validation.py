"""pydantic's validation errors as the tool's one line: each problem as ``where: what`` (a config key
dotted from the top), all of them joined by semicolons."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .errors import ConfigError


def _problem(error: ErrorDetails, prefix: tuple = ()) -> str:
    where = (*prefix, *error["loc"])
    if error["type"] == "moved":  # keys of the earlier flat layout: say where each lives now
        at = "".join(f"{part}." for part in where)
        return "; ".join(f"{at}{key}: moved to {at}{place}" for key, place in error["ctx"]["moves"])
    if error["type"] == "boolean_for_number":
        where = (*where, error["ctx"]["key"])
    location = ".".join(str(part) for part in where) or "config"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key"
    if error["type"] == "missing":
        return f"{location}: missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("value_error", "boolean_for_number"):
        return f"{location}: {message}"
    return f"{location}: {message} (got {error['input']!r})"


def validation_error(error: ValidationError, prefix: tuple = ()) -> ConfigError:
    return ConfigError("; ".join(_problem(e, prefix) for e in error.errors()))
