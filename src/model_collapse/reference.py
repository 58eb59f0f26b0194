"""The config reference of settings, as Markdown, from their config classes: every field (dotted inside
sections) with its default and description, and every metric with its label. ``model-collapse list
--markdown`` prints it; docs/configs.md's copy is checked against it (``tests/test_cli.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from .curation import offered_scores
from .settings import SETTINGS
from .settings.configs import CurationConfig, StrictConfig, section_of

BEGIN = "<!-- begin: model-collapse list --markdown -->"
END = "<!-- end: model-collapse list --markdown -->"


def config_fields(config_type: type[StrictConfig], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, pydantic field) of every field of a config, sections expanded."""
    for key, field in config_type.model_fields.items():
        if not prefix and key == "curation":
            continue  # every setting's: listed once, in its own table (``curation_markdown``)
        section = section_of(field.annotation)
        if section is not None:
            yield from config_fields(section, f"{prefix}{key}.")
        elif f"{prefix}{key}" != "name":
            yield f"{prefix}{key}", field


def _default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _text(text: str) -> str:
    return text.replace("*", "\\*").replace("_", "\\_")


def _rows(config_type: type[StrictConfig], prefix: str = "") -> list[str]:
    return [
        f"| `{prefix}{key}` | {_default(field)} | {_cell(field.description or '')} |"
        for key, field in config_fields(config_type)
    ]


def reference_markdown(names: Iterable[str]) -> str:
    """The whole reference: the settings ``names``, then the ``curation`` section."""
    return settings_markdown(names) + "\n" + curation_markdown()


def settings_markdown(names: Iterable[str]) -> str:
    """One section per setting: its fields' table, its metrics, the scores curation may rank by."""
    parts = []
    for name in names:
        declared = SETTINGS.declared(name)
        rows = _rows(declared.Config)
        metrics = "; ".join(f"`{metric}`: {_text(info.label)}" for metric, info in declared.metrics.items())
        scores = ", ".join(f"`{score}`" for score in offered_scores(declared)) or "none (reward or verifier only)"
        parts.append(
            "\n".join(
                [
                    f"<details><summary><code>{name}</code></summary>",
                    "",
                    "| field | default | |",
                    "|---|---|---|",
                    *rows,
                    "",
                    f"Metrics: {metrics}.",
                    "",
                    f"Curation scores: {scores}.",
                    "",
                    "</details>",
                ]
            )
        )
    return "\n\n".join(parts) + "\n"


def curation_markdown() -> str:
    """The ``curation`` section every setting's config has."""
    return (
        "\n".join(
            [
                "<details><summary><code>curation</code> (a section of every setting)</summary>",
                "",
                "| field | default | |",
                "|---|---|---|",
                *_rows(CurationConfig, "curation."),
                "",
                "</details>",
            ]
        )
        + "\n"
    )
