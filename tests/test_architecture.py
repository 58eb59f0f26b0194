"""The shape of the code: the imports of ``src/`` point down a fixed order of floors and form no circle,
lazy imports (inside functions) included; and the command's start-up imports only what it needs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "model_collapse"

# Each module's floor: a module imports from its own floor or below, never above. A new module gets a
# line here (and in docs/architecture.md, "Layers"). ``settings.`` covers the whole settings package.
FLOORS = {
    # foundations: no module of the package above them
    "_version": 0, "errors": 0, "atomic": 0, "randomness": 0, "activity": 0, "distributed": 0,
    "yaml_text": 0, "arrayio": 0, "signals": 0, "validation": 0, "provenance": 0, "data": 0, "rewards": 0,
    "threads": 0, "runmarker": 0, "deprecation": 0, "vouched": 0,
    "executors": 0,  # the registry alone: executors live on floor 6
    # the protocol, the settings and the regimes: what a chain is made of
    "settings": 1, "settings.": 1, "regimes": 1, "regimes.": 1, "curation": 1, "contract": 1,
    # what an experiment is; closed forms
    "experiment": 2, "theory": 2, "reference": 2,
    # reading configs, the run directory, the memory estimate
    "config": 3, "rundir": 3, "rundir.": 3, "memory": 3,
    # the chain; reading runs back
    "chain": 4, "results": 4, "status": 4,
    # one chain wherever it runs; the conformance suite
    "outcome": 5, "testing": 5,
    # what executors are given and implement; their options' base
    "executors.protocol": 5, "executors.options": 1,
    # the executors
    "executors.local": 6, "executors.ray_tasks": 6, "executors.slurm_jobs": 6,
    # dispatch and progress
    "runner": 7,
    # figures, reports, trackers
    "plots": 8, "report": 8, "compare": 8, "export": 8,
    # the Python API, the command
    "api": 9, "cli": 10, "__main__": 10, "": 10,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _floor(module: str) -> int | None:
    if module in FLOORS:
        return FLOORS[module]
    for prefix, floor in FLOORS.items():
        if prefix.endswith(".") and module.startswith(prefix):
            return floor
    return None


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in it, under ``if TYPE_CHECKING`` too: an
    import made only for the type checker is an arrow all the same."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()

    def target(node: ast.ImportFrom) -> str | None:
        if node.level == 0:
            name = node.module or ""
            return name.removeprefix("model_collapse").removeprefix(".") if name.startswith("model_collapse") else None
        base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        return ".".join([*base, *([node.module] if node.module else [])])

    class Visitor(ast.NodeVisitor):
        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                if alias.name.startswith("model_collapse"):
                    found.add(alias.name.removeprefix("model_collapse").removeprefix("."))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            name = target(node)
            if name is None:
                return
            for alias in node.names:
                submodule = f"{name}.{alias.name}" if name else alias.name
                found.add(submodule if submodule in modules else name)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {module: _imports(path, module, set(paths)) for module, path in paths.items()}


def test_every_module_has_a_floor_and_imports_only_from_its_floor_or_below():
    graph = _graph()
    unplaced = sorted(module for module in graph if _floor(module) is None)
    assert not unplaced, f"modules without a floor in FLOORS: {unplaced}"
    upward = [
        f"{module} (floor {_floor(module)}) imports {imported} (floor {_floor(imported)})"
        for module, imports in sorted(graph.items())
        for imported in sorted(imports)
        if _floor(imported) > _floor(module)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_imports_form_no_circle():
    graph = _graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported) :] + [imported]
            if imported not in state:
                circle = visit(imported)
                if circle:
                    return circle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            assert circle is None, "an import circle: " + " -> ".join(name or "model_collapse" for name in circle)


def test_the_walker_sees_lazy_imports_and_type_checking_ones(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .plots import x\n"
        "def f():\n    from .chain import run_chain\n    import model_collapse.rundir\n"
    )
    assert _imports(source, "probe", {"plots", "chain", "rundir", "probe"}) == {"chain", "plots", "rundir"}


@pytest.mark.parametrize("arguments", [["--help"], ["run", "--help"], ["no-such-command"]])
def test_the_command_starts_without_numpy_torch_or_the_settings(arguments):
    probe = (
        "import sys\n"
        "from model_collapse.cli import main\n"
        f"sys.argv = ['model-collapse', *{arguments!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'matplotlib', 'torch', 'yaml', 'model_collapse.settings', "
        "'model_collapse.config') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY=\n" in result.stderr, result.stderr


@pytest.mark.parametrize("arguments", [["list"], ["list", "--markdown"]])
def test_listing_the_settings_imports_no_model_code(arguments):
    """``list`` reads the settings' declarations: numpy and pydantic, never PyTorch, RDKit or matplotlib."""
    probe = (
        "import sys\n"
        "from model_collapse.cli import main\n"
        f"sys.argv = ['model-collapse', *{arguments!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'rdkit', 'matplotlib', 'transformers') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "HEAVY=\n" in result.stderr, result.stderr[-2000:]
