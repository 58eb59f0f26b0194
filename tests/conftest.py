"""What every test shares: the header saying which real components this machine tests with, and the
``slow`` lane (``python -m pytest -m "not slow"`` leaves out the tests of killed processes, Slurm,
Chromium, torchrun and the neural settings' conformance, for quick iterations while developing)."""

from __future__ import annotations

import importlib.util
import shutil


def pytest_report_header(config) -> list[str]:
    def have(found: bool) -> str:
        return "yes" if found else "no (its tests skip, saying so)"

    slurm = shutil.which("slurmctld") is not None or shutil.which("/usr/sbin/slurmctld") is not None
    return [
        f"headless Chromium: {have(shutil.which('chromedriver') is not None)}; Slurm: {have(slurm)}; "
        f"Ray: {have(importlib.util.find_spec('ray') is not None)}; "
        f"RDKit: {have(importlib.util.find_spec('rdkit') is not None)}",
    ]
