"""The errors a user can cause. The CLI prints them as one line and exits with code 2."""

from typing import Any


class ModelCollapseError(Exception):
    """Bad input: a config, a command-line argument or a file the tool cannot use."""


class ConfigError(ModelCollapseError):
    """A config that does not validate."""


class RunDirectoryError(ModelCollapseError):
    """A run directory (or a file in it) that is missing, corrupted or not ours."""


class ResourceError(ModelCollapseError):
    """The machine ran out of something (disk space, memory) or a worker was killed: the run
    directory is intact and ``resume`` continues it."""


class Terminated(BaseException):
    """The process received SIGTERM: handled like Ctrl-C (a BaseException, so that no ``except
    Exception`` on the way swallows it)."""


def yaml_problem(error: Any) -> str:
    """PyYAML's message in one line: what is wrong and where (its own spans several lines)."""
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or type(error).__name__
    mark = getattr(error, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)
