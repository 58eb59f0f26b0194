"""SIGTERM (a scheduler's, ``kill``'s, a driver stopping its workers) stops a run as Ctrl-C does: it
raises ``Terminated``, on which a chain commits what it has computed and the driver stops its workers."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .errors import Terminated


def raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler: raises ``Terminated`` once and ignores further SIGTERMs, so that the
    cleanup it starts (committing, stopping workers) is not itself interrupted."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextlib.contextmanager
def terminate_like_ctrl_c() -> Iterator[None]:
    """``raise_terminated`` on SIGTERM while inside, on the main thread (the only one signals reach)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
