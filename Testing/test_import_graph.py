"""The layers of the core, read from its source: training sits above the task packages, the CLI above
training, no two of spineseg's packages (or top-level modules) import each other in a circle, and no two of
its files do.

Every ``import`` statement counts, including those inside functions: a lazy import hides a dependency
from the import system, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "SpineSegExtension" / "spineseg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str:
    """The graph node of a module: its subpackage (spineseg.vertebrae), its top-level module (spineseg.io),
    or the root package itself."""
    return ".".join(module.split(".")[:2])


def _imported_modules(path: Path) -> set[str]:
    """The spineseg modules that ``path`` imports, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for statement in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(statement, ast.Import):
            found.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            if statement.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - statement.level + 1])
                base = f"{base}.{statement.module}" if statement.module else base
            else:
                base = statement.module
            # ``from spineseg import io`` imports the module spineseg.io; ``from .io import read`` imports spineseg.io.
            found.update(f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                         for alias in statement.names)
    return {name for name in found if name == "spineseg" or name.startswith("spineseg.")}


def _is_module(name: str) -> bool:
    path = PACKAGE_ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer node, imported node) -> the importing modules, for every import between two nodes."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _module_name(path)
        for target in _imported_modules(path):
            if _node(source) != _node(target):
                edges.setdefault((_node(source), _node(target)), []).append(f"{source} -> {target}")
    return edges


EDGES = _edges()


def _imports(importer: str, imported: str) -> list[str]:
    """The imports from node ``importer`` (a package with its submodules, or a module) into node ``imported``."""
    return EDGES.get((importer, imported), [])


def _cycle_from(start: str, edges: Iterable[tuple[str, str]]) -> list[str] | None:
    """A shortest chain of ``edges`` from ``start`` back to itself, or None."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for source, target in edges:
            if source != node:
                continue
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return None


def test_the_graph_is_read_from_the_source():
    # Guards the reader itself: known imports are found, relative and absolute, inside functions too.
    assert "spineseg.training.trainer -> spineseg.model_store" in _imports("spineseg.training", "spineseg.model_store")
    assert "spineseg.cli -> spineseg.training.command" in _imports("spineseg.cli", "spineseg.training")
    assert _imports("spineseg.training", "spineseg.vertebrae") and _imports("spineseg.training", "spineseg.discs")
    assert _cycle_from("a", [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == ["a", "b", "c", "a"]
    assert _cycle_from("a", [("a", "b"), ("b", "c"), ("c", "b")]) is None  # b and c form the cycle, not a
    cli = PACKAGE_ROOT / "cli.py"
    assert "spineseg.training.command" in _module_level_imports(cli)
    assert "spineseg.jobs" not in _module_level_imports(cli) and "spineseg.jobs" in _imported_modules(cli)


@pytest.mark.parametrize("task", ["spineseg.vertebrae", "spineseg.discs"])
def test_task_packages_do_not_import_training(task):
    assert _imports(task, "spineseg.training") == []


# What a prediction runs: the task packages, the networks and the modules of the job path.
INFERENCE = ["spineseg.vertebrae", "spineseg.discs", "spineseg.networks", "spineseg.tasks", "spineseg.jobs",
             "spineseg.cli", "spineseg.writers", "spineseg.pictures", "spineseg.model_store", "spineseg.checks",
             "spineseg.io", "spineseg.publish", "spineseg.results", "spineseg.summary", "spineseg.geometry",
             "spineseg.volume", "spineseg.labels", "spineseg.anatomy", "spineseg.progress", "spineseg.errors"]


def _module_level_imports(path: Path) -> set[str]:
    """The spineseg modules ``path`` imports when it is imported: statements outside functions (the lazy imports
    of a command, such as ``spineseg train`` in cli.py, run only when it is chosen)."""
    tree = ast.parse(path.read_text(), str(path))
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(statement) for function in functions for statement in ast.walk(function)}
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for statement in ast.walk(tree):
        if id(statement) in inner:
            continue
        if isinstance(statement, ast.Import):
            found.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                parent = ".".join(package.split(".")[:len(package.split(".")) - statement.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.update(f"{base}.{alias.name}" for alias in statement.names)
            found.add(base)
    return found


@pytest.mark.parametrize("node", INFERENCE)
def test_inference_does_not_import_training_or_evaluation_when_loaded(node):
    # Training and evaluation code (losses, samplers, scores, the real validation scans) is not what a prediction
    # runs; a lazy import inside a command (cli.py's `spineseg train`) is allowed, a module-level one is not.
    paths = [path for path in PACKAGE_ROOT.rglob("*.py") if _node(_module_name(path)) == node]
    assert paths, node
    found = {f"{_module_name(path)} -> {name}" for path in paths for name in _module_level_imports(path)
             if name.startswith(("spineseg.training", "spineseg.evaluation"))}
    assert found - COMMAND_LINE_OF_TRAINING == set()


# The CLI defines `spineseg train`'s arguments with the training command's own function; that module loads
# nothing of training but argparse (the trainer is imported when `train` is chosen).
COMMAND_LINE_OF_TRAINING = {"spineseg.cli -> spineseg.training.command",
                            "spineseg.cli -> spineseg.training.command.add_arguments"}


def test_the_training_command_line_loads_no_training_code():
    loaded = _module_level_imports(PACKAGE_ROOT / "training" / "command.py")
    assert {name for name in loaded if name.startswith("spineseg.")} <= {
        "spineseg.choices", "spineseg.choices.DeviceChoice", "spineseg.choices.Task", "spineseg.errors",
        *(f"spineseg.errors.{name}" for name in ("EXIT_OK", "CancelledError", "InputError", "SpineSegError",
                                                  "error_line", "exit_code"))}


def test_training_does_not_import_the_cli():
    assert _imports("spineseg.training", "spineseg.cli") == []


def test_no_import_cycles_between_packages():
    nodes = {node for edge in EDGES for node in edge}
    cycles = {node: cycle for node in sorted(nodes) if (cycle := _cycle_from(node, EDGES))}
    assert not cycles, {node: [_imports(a, b) for a, b in zip(cycle, cycle[1:])] for node, cycle in cycles.items()}


@pytest.mark.parametrize("task", ["spineseg.vertebrae", "spineseg.discs", "spineseg.networks"])
def test_inference_does_not_import_the_phantoms(task):
    assert _imports(task, "spineseg.phantoms") == []


def _module_edges() -> dict[tuple[str, str], None]:
    """(importer module, imported module) for every import between two of spineseg's files."""
    edges: dict[tuple[str, str], None] = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _module_name(path)
        for target in _imported_modules(path):
            if source != target:
                edges[(source, target)] = None
    return edges


def test_no_import_cycles_between_files():
    # A circle inside one package is still a circle: neither file can be read, tested or moved without the other.
    edges = list(_module_edges())
    assert ("spineseg.training.cache", "spineseg.cachedir") in edges  # the reader sees file-level imports
    nodes = sorted({node for edge in edges for node in edge})
    cycles = {node: " -> ".join(cycle) for node in nodes if (cycle := _cycle_from(node, edges))}
    assert not cycles, cycles


def test_the_task_packages_hold_only_what_a_prediction_runs():
    # Every module of the task packages and the networks is loaded by a prediction (from the tasks' specs and
    # pipelines); losses, samplers, scores and real-scan readers belong to spineseg.training and spineseg.evaluation.
    edges = list(_module_edges())
    reached, queue = set(), ["spineseg.vertebrae.task", "spineseg.vertebrae.pipeline", "spineseg.discs.task",
                             "spineseg.discs.pipeline", "spineseg.model_store"]
    while queue:
        module = queue.pop()
        if module not in reached:
            reached.add(module)
            queue += [target for source, target in edges if source == module]
    held = {_module_name(path) for package in ("vertebrae", "discs", "networks")
            for path in (PACKAGE_ROOT / package).glob("*.py") if path.name != "__init__.py"}
    assert held - reached == set()
