"""YAML as model-collapse reads it, for configs, overrides and run directories alike: PyYAML's safe
loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently), and turning
every way a parse can fail (nesting deep enough to exhaust the parser's recursion included) into one
line naming what is wrong and where."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import yaml_problem


class YamlProblem(ValueError):
    """Text that is not YAML this tool reads; the message is one line."""


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<' merges are overridden by the mapping's own keys, as YAML says
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base constructor names it
                    continue
                if first is not key_node.start_mark:
                    raise YamlProblem(
                        f"the key {key!r} is given twice ({_where(first)} and {_where(key_node.start_mark)})"
                    )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The data of ``text``; a ``YamlProblem`` of one line for anything a parse can raise."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a subclass of SafeLoader)
    except YamlProblem:
        raise
    except yaml.YAMLError as error:
        raise YamlProblem(f"not valid YAML: {yaml_problem(error)}") from None
    except RecursionError:
        raise YamlProblem("nested too deeply to read (lists or mappings inside one another)") from None
    except Exception as error:  # the parser's own failures on odd input
        raise YamlProblem(f"not readable as YAML ({type(error).__name__})") from None


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"
