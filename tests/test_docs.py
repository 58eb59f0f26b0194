"""The documentation: the site builds with ``mkdocs build --strict`` (every page in the nav, every link
and every API reference resolves), the README's links lead to pages that exist, and the tutorial notebook
runs from top to bottom as a reader would run it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_link_of_the_readme_leads_to_a_file_of_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)#]+)", readme) if not t.startswith("http")]
    assert targets and all((ROOT / target).exists() for target in targets), targets


def test_the_site_builds_strictly_with_its_api_reference(tmp_path):
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", ROOT / "mkdocs.yml", "-d", site],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("Capabilities", "Presentation", "parametrize_with_checks", "Hooks", "Regime"):
        assert 'id="model_collapse.' in api and name in api, name
    assert (site / "tutorial.ipynb").exists() and (site / "configs" / "index.html").exists()


@pytest.mark.slow
def test_the_tutorial_notebook_runs_from_top_to_bottom(tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a failing cell (its own checks are asserts) raises CellExecutionError
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "runs" / "tutorial" / "report.html").exists()
