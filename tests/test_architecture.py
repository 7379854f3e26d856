"""The shape of the code: the product never imports the demo kit, what the served model imports, no import
cycle between modules, and how long the longest chain of imports is."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "processor"  # the product: train loop, serving, predict, gate, tune
DEMO = SRC / "demo_kit"  # sample data, rule sets, the demo base, the Qwen stand-in, `make demo`

# Never part of the served model: the demo kit, tuning, training.
NOT_SERVED = ("demo_kit", "processor.tune", "processor.train_loop", "processor.trainer", "processor.oversample",
              "processor.loss")
# The longest chain of imports between modules of src/, function-level imports and package __init__s
# counted: 17 before the demo kit left the product, 15 after, 10 once tracking named the pyfunc's file
# instead of importing it, the record took its probability transforms from a leaf (processor.probs), the
# sweep's report stopped importing the trial's code (processor.tune.context) and a trial's verdict came
# from gate.checks rather than the gate's CLI. A ratchet: it may shrink, not grow. What is left is the
# gate's spine (gate -> gate.cli -> gate.describe -> gate.checks -> gate.evidence -> package -> drift ->
# config -> serialize -> bins).
MAX_CHAIN = 10
# The pyfunc (processor.serving) imports these inside load_context/predict; processor.package imports
# processor.model inside load_packaged_model. Importing them is what loading and predicting imports.
SERVED_AT_LOAD = ("processor.model",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in (PACKAGE, DEMO) for p in sorted(package.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imported(path, known) for name, path in modules().items()}


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


def reach(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports directly or through others, each with one chain that gets there."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt not in chains:
                chains[nxt] = chains[node] + [nxt]
                todo.append(nxt)
    return chains


def longest_chain(graph: dict[str, set[str]]) -> list[str]:
    """The longest path of imports in an acyclic ``graph``, as the modules along it."""
    best: dict[str, list[str]] = {}

    def from_(node: str) -> list[str]:
        if node not in best:
            best[node] = [node] + max((from_(n) for n in sorted(graph.get(node, ()))), key=len, default=[])
        return best[node]

    return max((from_(n) for n in sorted(graph)), key=len)


def test_the_product_imports_no_demo_module() -> None:
    # Module level or inside a function: qwen-tiny is reached by name (processor.model.LOCAL_BUILDERS).
    graph = import_graph()
    product = [name for name in graph if name.split(".")[0] == "processor"]
    assert "processor.train_loop" in product and "demo_kit.tiny_base" in graph  # both sides are measured
    offending = {name: chain for start in product for name, chain in reach(graph, start).items()
                 if name.split(".")[0] == "demo_kit"}
    assert not offending, "the product imports the demo kit: " + "; ".join(
        " -> ".join(chain) for chain in offending.values())


def test_reach_and_longest_chain_follow_every_edge() -> None:
    # The checkers themselves, or the tests above and below prove nothing.
    assert reach({"a": {"b"}, "b": {"c"}, "c": set()}, "a")["c"] == ["a", "b", "c"]
    assert longest_chain({"a": {"b", "d"}, "b": {"c"}, "c": set(), "d": set()}) == ["a", "b", "c"]


def test_local_base_builders_name_functions_that_exist() -> None:
    # The product's one way to the demo base is text; a rename in the demo kit must not leave it dangling.
    from processor.model import LOCAL_BUILDERS, local_builder
    from processor.names import TINY_BASE_ID

    assert LOCAL_BUILDERS[TINY_BASE_ID].startswith("demo_kit.")
    assert all(callable(local_builder(base_id)) for base_id in LOCAL_BUILDERS)


def test_without_the_demo_kit_qwen_tiny_is_a_usage_error(monkeypatch) -> None:
    import pytest

    from processor.model import ModelNotAvailableError, resolve_model

    for name in ("demo_kit", "demo_kit.tiny_base"):  # what `import demo_kit...` sees when it is not installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModelNotAvailableError, match="'demo_kit', which is not importable"):
        resolve_model("qwen-tiny")


def test_the_longest_import_chain_is_short() -> None:
    chain = longest_chain(import_graph())
    assert len(chain) <= MAX_CHAIN, f"{len(chain)} modules: " + " -> ".join(chain)


def test_tracking_logs_the_pyfunc_by_a_file_that_is_the_pyfunc() -> None:
    # tracking names serving.py by path (no import): a rename must not leave the logged model pointing nowhere.
    from processor.names import PYFUNC_MODULE

    assert "set_model(" in (PACKAGE / PYFUNC_MODULE).read_text(encoding="utf-8")


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
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
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('processor', 'demo_kit'))))\n")
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
