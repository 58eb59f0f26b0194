"""The errors a user can cause. The CLI prints them as one line and exits with code 2."""


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
