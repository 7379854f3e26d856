"""The gate's documentation names every check it can run, and nowhere states how many there are
(checks get added; a count in prose goes stale)."""

from __future__ import annotations

import ast
import re

from conftest import REPO

GATE_SRC = REPO / "src" / "processor" / "gate"
README = REPO / "gates" / "README.md"
NUMBER = r"(two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|\d+)"
COUNT = re.compile(rf"\b(the|all) {NUMBER}( shipping)? (checks|pass)\b|\b{NUMBER} (shipping )?checks\b", re.I)


def check_names() -> set[str]:
    """Every name a CheckResult is built with in the gate's source."""
    names = set()
    for path in GATE_SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CheckResult" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value)
    return names


def test_every_check_is_in_the_readme_table_and_the_help() -> None:
    from processor.gate import cli

    names = check_names()
    assert {"class_balance", "artifacts", "schema"} <= names  # the scan itself finds the checks
    readme = README.read_text(encoding="utf-8")
    assert not [n for n in names if f"| `{n}`" not in readme], "checks missing from gates/README.md"
    assert not [n for n in names if f"\n  {n} " not in cli.__doc__], "checks missing from the gate's --help"


def test_no_check_count_in_prose() -> None:
    texts = {README: README.read_text(encoding="utf-8")}
    texts.update({p: p.read_text(encoding="utf-8") for p in GATE_SRC.glob("*.py")})
    found = [f"{p.relative_to(REPO)}: {m.group(0)!r}" for p, text in texts.items() for m in COUNT.finditer(text)]
    assert not found, found
