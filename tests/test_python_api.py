"""The Python API as a newcomer uses it: the README's example pasted into a file and run with ``python
file.py`` or on standard input, a setting class defined in the script itself, and the API's arguments
checked as the command line checks its own."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model_collapse.threads import available_cores

ROOT = Path(__file__).resolve().parents[1]
CORES = available_cores()


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


RAW = {"setting": {"name": "discrete", "samples": 8}, "regimes": ["replace"], "iterations": 3, "seeds": 2}


def test_the_api_takes_keywords_after_its_first_argument(tmp_path):
    import model_collapse

    with pytest.raises(TypeError, match="positional"):
        model_collapse.run(RAW, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_hooks_hear_each_step_and_a_damaged_record_names_its_way_forward_in_python_too(tmp_path):
    """The command line's messages and exit codes come through these hooks (``cli._CommandLine``); a
    caller of the Python API may bring its own."""
    import model_collapse
    from model_collapse.api import Hooks
    from model_collapse.errors import RunDirectoryError

    class Recorder(Hooks):
        def __init__(self):
            self.steps, self.lines = [], []

        def guard(self, action, resumable=None):
            self.steps.append(resumable.command if resumable else None)
            return action()

        def say(self, line):
            self.lines.append(line)

    hooks = Recorder()
    run = model_collapse.run(RAW, out=tmp_path / "run", workers=1, hooks=hooks)
    assert hooks.steps[-1] == f"model-collapse resume {run.directory}" and None in hooks.steps
    table = run.table()
    (commit,) = (run.directory / "chains" / "base" / "replace").glob("iter_*")
    (commit / "metrics.npz").write_bytes(b"not an archive")
    with pytest.raises(RunDirectoryError, match=re.escape(f"resume {run.directory} --recompute-damaged` moves")):
        model_collapse.resume(run.directory, workers=1)
    hooks = Recorder()
    assert model_collapse.resume(run.directory, workers=1, recompute_damaged=True, hooks=hooks).table().equals(table)
    assert hooks.lines == [
        f"base / replace: iterations 1-3 moved to {next((run.directory / 'damaged').iterdir())}"
        f"/chains/base/replace, to be computed again"
    ]


@pytest.mark.parametrize(
    "arguments,message",
    [
        (
            {"overrides": "seeds=5"},
            "overrides='seeds=5': expected a list of 'dotted.key=value' strings, not one string "
            "(overrides=['seeds=5'])",
        ),
        ({"overrides": [5]}, "overrides: 5 is not a 'dotted.key=value' string"),
        ({"overrides": 5}, "overrides=5: expected a list of 'dotted.key=value' strings"),
        ({"workers": "two"}, "workers='two': expected a whole number >= 1 (or None for the default)"),
        ({"workers": 0}, "workers=0: expected a whole number >= 1 (or None for the default)"),
        ({"workers": True}, "workers=True: expected a whole number >= 1 (or None for the default)"),
        ({"threads": 0}, "threads=0: expected a whole number >= 1 (or None for the default)"),
        ({"threads": 1.5}, "threads=1.5: expected a whole number >= 1 (or None for the default)"),
        ({"threads": 10**6}, f"threads=1000000: more threads per chain than the {CORES} cores this process may use"),
        ({"executor": 3}, "executor=3: expected a name (a string) or None"),
        ({"executor": "cloud"}, "--executor 'cloud': choose one of local, ray, slurm"),
        ({"out": 3}, "out=3: expected a path (a string or pathlib.Path)"),
    ],
)
def test_the_apis_arguments_are_checked_with_one_line_errors(tmp_path, arguments, message):
    """As the command line checks its own: a string of overrides was iterated by character, workers=0
    accepted, others raised a raw AttributeError or TypeError."""
    import model_collapse
    from model_collapse.errors import ConfigError

    arguments = {"out": tmp_path / "run", **arguments}
    with pytest.raises(ConfigError) as refused:
        model_collapse.run(RAW, **arguments)
    assert str(refused.value) == message
    assert not (tmp_path / "run").exists()


def test_resume_and_open_check_their_arguments_too(tmp_path):
    import model_collapse
    from model_collapse.errors import ConfigError

    run = model_collapse.run(RAW, out=tmp_path / "run", workers=1)
    with pytest.raises(ConfigError, match=r"^workers=0: expected a whole number >= 1"):
        model_collapse.resume(run.directory, workers=0)
    with pytest.raises(ConfigError, match=r"^run_directory=None: expected the path of a run directory$"):
        model_collapse.open(None)
    assert model_collapse.resume(str(run.directory), workers=1, threads=1).table().equals(run.table())


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--threads", "1000000"], f"threads=1000000: more threads per chain than the {CORES} cores"),
        (["threads=1000000"], f"threads: 1000000: more threads per chain than the {CORES} cores"),
        (["threads=0"], "threads: Input should be greater than 0 (got 0)"),
    ],
)
def test_a_thread_budget_beyond_the_cores_is_refused_before_anything_is_written(workdir, arguments, message):
    """A hundred thousand threads per chain exhausted the process's memory map inside the chain."""
    command = [sys.executable, "-m", "model_collapse", "run", "configs/quickstart.yaml", "--out", "run", *arguments]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and not (workdir / "run").exists()
