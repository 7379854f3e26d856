"""The shape of the package: what the served model imports, and no import cycle between modules."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "processor"

# Never part of the served model: data generation, the demo-base builder, tuning, training.
NOT_SERVED = ("processor.sample_data", "processor.rules", "processor.tiny_base", "processor.tune",
              "processor.train_loop", "processor.trainer", "processor.oversample", "processor.loss")
# The pyfunc (processor.serving) imports these inside load_context/predict; processor.package imports
# processor.model inside load_packaged_model. Importing them is what loading and predicting imports.
SERVED_AT_LOAD = ("processor.model",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules ``path`` imports anywhere in the file (module level or inside functions:
    a lazy import is still a dependency). ``from processor import x`` counts as processor.x when x is
    a module; importing processor.a.b depends on processor.a.b, not on processor.a's __init__."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    found.add(target)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    known = set(modules())
    graph = {name: imported(path, known) for name, path in modules().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one() -> None:
    # The checker itself: a graph with a cycle must be reported, or the test above proves nothing.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_served_model_imports_no_training_tuning_or_data_generation() -> None:
    serving = PACKAGE / "serving.py"
    lazy = sorted(imported(serving, set(modules())) | set(SERVED_AT_LOAD))
    code = ("import importlib, json, sys\n"
            "import processor.serving\n"
            f"for name in {lazy!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('processor'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "processor.package" in loaded  # what the pyfunc loads is in the closure measured here
    offending = [m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_SERVED)]
    assert not offending, f"the served model imports {offending}"


def test_the_gate_imports_torch_only_to_verify_a_zip() -> None:
    # `gates/gate.py --help`, a bad checks file or an unknown run answer without loading torch.
    code = "import sys, processor.gate\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
