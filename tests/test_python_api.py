"""The Python API as a newcomer uses it: the README's example pasted into a file and run with ``python
file.py`` or on standard input, a setting class defined in the script itself, and the API's arguments
checked as the command line checks its own."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The README's first Python example, as a user copies it."""
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(import model_collapse\n.*?)```", text, re.S).group(1)


@pytest.fixture()
def workdir(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def python(*arguments, cwd, **kwargs):
    return subprocess.run([sys.executable, *arguments], cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_the_readmes_python_example_runs_as_a_script(workdir, how):
    """Spawned workers never run the unguarded script again (they did, each calling ``run`` anew)."""
    example = readme_example()
    assert 'model_collapse.run("configs/quickstart.yaml", out="runs/quickstart")' in example
    if how == "file":
        (workdir / "example.py").write_text(example)
        result = python("example.py", cwd=workdir)
    else:
        result = python("-", cwd=workdir, input=example)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    run = workdir / "runs" / "quickstart"
    assert (run / "report.html").exists() and (run / "figures" / "test_error.png").exists()
    assert "3 chains: 3 done; 90 of 90 iterations committed" in result.stdout
    assert len(list((run / "chains" / "base").iterdir())) == 3


SCRIPT_SETTING = """
import model_collapse
from model_collapse.settings.discrete import Discrete, DiscreteConfig


class RenamedConfig(DiscreteConfig):
    name: str = "renamed"


class Renamed(Discrete):
    name = "renamed"
    Config = RenamedConfig


raw = {"setting": {"name": Renamed, "samples": 8}, "regimes": ["replace", "accumulate"], "iterations": 3, "seeds": 2}
frame = model_collapse.run(raw, out="runs/script", workers=2).table()
baseline = model_collapse.run({**raw, "setting": {"name": "discrete", "samples": 8}}, out="runs/base", workers=2)
assert frame.drop(columns="setting").equals(baseline.table().drop(columns="setting"))
print(sorted(set(frame["setting"])))
"""


def test_a_setting_class_defined_in_the_script_runs_in_this_process_saying_so(workdir):
    (workdir / "script.py").write_text(SCRIPT_SETTING)
    result = python("script.py", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['__main__:Renamed']"
    assert result.stderr.strip() == (
        "note: the chains run in this process, one at a time: the setting Renamed is defined in __main__ "
        "(a notebook or a script), which worker processes cannot import"
    )
