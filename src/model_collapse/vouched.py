"""Import paths the user vouches for: one allow-list for every kind of code a run may name by import
path (a setting, a curation function).

Importing a module runs its code, so model-collapse imports a path only when the user names it: in the
config they run, or for a run directory that names it, with ``--allow-import PATH`` (``allow_import=``
in Python; ``--setting``, the earlier flag for a setting, is its alias). A run directory alone never
makes model-collapse import code.
"""

from __future__ import annotations

import re

from .errors import ConfigError

_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_VOUCHED: set[str] = set()


def is_import_path(name: str) -> bool:
    """Whether ``name`` is an import path (``package.module:name``) rather than a registered name."""
    return bool(_IMPORT_PATH.fullmatch(name))


def vouch(path: str, flag: str = "--allow-import") -> str:
    """Let this process import ``path``, wherever it is read from later (a run directory included);
    ``flag`` names the option it came from, for the message that refuses a path that is none."""
    if not isinstance(path, str) or not is_import_path(path):
        raise ConfigError(f"{flag} {path!r}: expected an import path, package.module:name")
    _VOUCHED.add(path)
    return path


def vouched(path: str) -> bool:
    """Whether the user vouched for ``path`` in this process."""
    return path in _VOUCHED
