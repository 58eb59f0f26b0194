"""Peak resident memory of this process between two moments: the peaks of its anonymous memory (what
the process holds) and of its file pages (mapped files it has read, which the kernel can drop at any
time), each its own.
Shared by the memory benchmarks; Linux only (``/proc/self/status``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def resident() -> tuple[int, int]:
    """(anonymous, file-backed) resident bytes of this process."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["RssAnon"], fields["RssFile"]


class PeakMeter:
    """Samples ``resident()`` every 5 ms in a thread; ``take()`` returns the peaks since the last take."""

    def __init__(self):
        self.peak = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.is_set():
            anonymous, files = resident()
            self.peak = (max(self.peak[0], anonymous), max(self.peak[1], files))
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def take(self) -> tuple[int, int]:
        peak, self.peak = self.peak, resident()
        return peak
