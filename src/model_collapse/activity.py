"""What a running chain tells the user: progress inside one iteration, and log messages.

A language-model iteration at paper size trains for hours and samples millions of stories; a bar that
moves once per iteration says nothing meanwhile. A setting counts such work with a ``Meter`` (training
steps with tokens per second, sampled stories per second), which hands one line to whoever listens -
the progress display of ``runner.py``, in the chain's own process or through its worker's pipe - at most
every ``REPORT_INTERVAL_S``. Nobody listening (the engine used as a library) costs a clock read.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

REPORT_INTERVAL_S = 0.5

_listener: Callable[[str], None] | None = None
_chain: str | None = None  # the label of the chain this process runs, for messages that name it


@contextlib.contextmanager
def in_chain(label: str) -> Iterator[None]:
    """Messages from inside the block (a warning of a setting or a curation) belong to chain ``label``."""
    global _chain
    previous, _chain = _chain, label
    try:
        yield
    finally:
        _chain = previous


def chain_prefix() -> str:
    """``chain <label>: `` inside ``in_chain``, for a message that names its chain; else nothing."""
    return f"chain {_chain}: " if _chain is not None else ""


@contextlib.contextmanager
def listening(listener: Callable[[str], None]) -> Iterator[None]:
    """Send every meter's lines to ``listener`` while inside (an empty line: the activity ended)."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


def _count(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Meter:
    """``what`` done ``done`` of ``total`` ``unit``s, e.g. ``training 120/660 steps · 12.3k tokens/s ·
    ETA 3:02``. ``rate_unit`` names what ``advance``'s ``amount`` counts (tokens); without it the rate
    is of ``unit``s. Work already done before this process (a resumed training) counts towards
    ``done`` but not towards the rate."""

    def __init__(self, what: str, total: int, unit: str, rate_unit: str | None = None, done: int = 0):
        self.what, self.total, self.unit, self.rate_unit = what, total, unit, rate_unit
        self.done, self._started_at_done, self._amount = done, done, 0.0
        self._start = self._reported = time.monotonic()

    def advance(self, count: int = 1, amount: float = 0.0) -> None:
        self.done += count
        self._amount += amount
        if _listener is None:
            return
        now = time.monotonic()
        if now - self._reported >= REPORT_INTERVAL_S:
            self._reported = now
            _listener(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else time.monotonic()) - self._start, 1e-9)
        fresh = self.done - self._started_at_done
        parts = [f"{self.what} {self.done}/{self.total} {self.unit}"]
        if fresh > 0:
            rate = (self._amount if self.rate_unit else fresh) / elapsed
            parts.append(f"{_count(rate)} {self.rate_unit or self.unit}/s")
            parts.append(f"ETA {_clock((self.total - self.done) * elapsed / fresh)}")
        return " · ".join(parts)

    def close(self) -> None:
        if _listener is not None:
            _listener("")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, so that rich's progress display (which
    redirects it) and test runners (which capture it) see the messages."""

    model_collapse = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def show_messages(quiet: bool) -> None:
    """Send the package's log messages (a training run resuming from its checkpoint, say) to stderr:
    notices unless ``quiet``, warnings always. Called in the driver and in every worker."""
    logger = logging.getLogger("model_collapse")
    if not any(getattr(handler, "model_collapse", False) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
