"""The package layers hold: what each layer may import, and that importing the contracts
stays light. Read from the source with `ast`, so a new import anywhere is checked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = sorted([*ROOT.glob("libs/*/driftloop_*"), *ROOT.glob("services/*/driftloop_*")])

# layer → the layers it may import (besides itself)
ALLOWED = {
    "driftloop_common.contracts": set(),
    "driftloop_common.ml": {"driftloop_common.contracts"},
    "driftloop_common.runtime": {"driftloop_common.contracts"},
    "driftloop_common.storage": {
        "driftloop_common.contracts",
        "driftloop_common.ml",
        "driftloop_common.runtime.logs",  # masking secrets in MLflow errors
    },
    "driftloop_common.genesys": {"driftloop_common.contracts", "driftloop_common.runtime"},
    "driftloop_common.families": {
        "driftloop_common.contracts",
        "driftloop_common.ml",
        "driftloop_common.storage",
    },
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            parts = path.relative_to(package.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (a function-local import counts too);
    `from package import module` counts as importing the module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            names.update(submodules or {node.module})
    return names


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = []
    for module, path in MODULES.items():
        if _layer(module) != layer:
            continue
        for imported in imports_of(path):
            target = _layer(imported)
            if not imported.startswith("driftloop") or target == layer:
                continue
            if not any(
                imported == a or imported.startswith(a + ".") or target == a for a in ALLOWED[layer]
            ):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_services_and_the_shared_library_never_import_the_local_runners_or_each_other() -> None:
    wrong = []
    for module, path in MODULES.items():
        top = module.split(".")[0]
        if top in {"driftloop_cli", "driftloop_local", "driftloop_synthetic"}:
            continue
        for imported in imports_of(path):
            other = imported.split(".")[0]
            if other.startswith("driftloop_") and other not in {top, "driftloop_common"}:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_importing_the_contracts_loads_no_web_kafka_or_ml_library() -> None:
    code = (
        "import sys\n"
        "import driftloop_common\n"
        "from driftloop_common.contracts import events, topics, errors\n"
        "heavy = {'fastapi', 'aiokafka', 'uvicorn', 'torch', 'mlflow', 'sklearn'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_only_the_kafka_adapter_and_the_loop_import_aiokafka() -> None:
    importers = {
        module
        for module, path in MODULES.items()
        if any(name.split(".")[0] == "aiokafka" for name in imports_of(path))
    }
    assert importers == {"driftloop_common.runtime.kafka", "driftloop_common.runtime.loop"}


def test_no_import_cycle_between_modules() -> None:
    graph = {m: imports_of(p) & MODULES.keys() - {m} for m, p in MODULES.items()}
    cycles = []
    state: dict[str, str] = {}  # "open" while on the current path, then "done"

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(" → ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
