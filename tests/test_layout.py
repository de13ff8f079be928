"""The layout shows the architecture: each folder of ``rlplug/`` is a floor, and no module
imports a floor above it or takes part in an import cycle (imports inside functions
count; ``if TYPE_CHECKING:`` blocks do not). ``import rlplug`` plus ``get_registry()``
stays free of TRL, transformers and datasets."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlplug"

FLOORS: dict[str, int] = {"core": 0, "components": 1, "trl": 2, "app": 3, "demo": 4, "testing": 5}
"""Floor of each sub-package, lowest first. The root modules (the public surface
``rlplug/__init__.py``, the ``rlplug`` command and ``__main__``) stand above all of them:
they compose the floors, and no floor imports them."""
TOP = max(FLOORS.values()) + 1


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], TOP) if len(parts) > 1 else TOP


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(source: str, module: str, known: set[str]) -> set[str]:
    """The rlplug modules ``source`` imports, lazily or not, by statement or import_module("...")."""
    package = module if module in known and _is_package(module, known) else module.rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("rlplug"):
            found.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                resolve(full if full in known else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            resolve(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    found.discard(module)
    return found


def _is_package(module: str, known: set[str]) -> bool:
    return any(other.startswith(module + ".") for other in known)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    known = set(sources)
    return {module: imported_modules(source, module, known) for module, source in sources.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if floor_of(target) > floor_of(module)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def package_sources() -> dict[str, str]:
    return {module_name(path, PACKAGE): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_a_floor_above_it():
    graph = import_graph(package_sources())
    assert "rlplug.core.plugins" in graph and "rlplug.trl.grpo" in graph
    assert not upward_imports(graph)


def test_there_is_no_import_cycle():
    assert not cycles(import_graph(package_sources()))


def test_every_folder_is_a_known_floor():
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    assert folders == set(FLOORS)


def test_negative_control_an_upward_import_and_a_cycle_are_found():
    sources = {
        "rlplug": "",
        "rlplug.core": "",
        "rlplug.core.registry": "def f():\n    from rlplug.app.train import main\n",
        "rlplug.core.plugins": "import importlib\nimportlib.import_module('rlplug.core.resolve')\n",
        "rlplug.core.resolve": "from rlplug.core import plugins\n",
        "rlplug.core.rollout": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rlplug.demo import tiny\n",
        "rlplug.app": "",
        "rlplug.app.train": "",
        "rlplug.demo": "",
        "rlplug.demo.tiny": "",
    }
    graph = import_graph(sources)
    assert upward_imports(graph) == ["rlplug.core.registry (floor 0) imports rlplug.app.train (floor 3)"]
    assert cycles(graph) == [["rlplug.core.plugins", "rlplug.core.resolve"]]


def test_import_rlplug_and_the_registry_import_no_trl_transformers_or_datasets():
    probe = (
        "import sys, rlplug\n"
        "registry = rlplug.get_registry()\n"
        "assert 'grpo' in registry.names('algorithms') and 'online' in registry.names('trainer_kinds')\n"
        "print(','.join(sorted(m for m in ('trl', 'transformers', 'datasets') if m in sys.modules)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
    # Negative control: the probe sees a heavy import when one happens.
    heavy = probe.replace("import sys, rlplug\n", "import sys, rlplug, datasets\n")
    assert subprocess.run([sys.executable, "-c", heavy], capture_output=True, text=True, check=True).stdout.strip() == "datasets"
