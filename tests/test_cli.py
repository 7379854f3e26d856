"""Every command-line entry point ends the same way (processor.cli): a mistake is one ``error:`` line
on stderr and exit 2, never a stack trace."""

from __future__ import annotations

import ast

import pytest

from conftest import REPO, run_modules

SRC = REPO / "src"
PACKAGE = SRC / "processor"

# Each entry point with arguments that parse but cannot be acted on (run in an empty directory that
# holds one plain file, "blocker").
ENTRY_POINTS: dict[str, list[str]] = {
    "processor.train_loop": ["-m", "processor.train_loop", "--config", "missing.yaml"],
    "processor.predict": ["-m", "processor.predict", "--model", "missing.zip", "--input", "missing.jsonl",
                          "--output", "out.jsonl"],
    "processor.validate": ["-m", "processor.validate", "missing.jsonl"],
    "demo_kit.sample_data": ["-m", "demo_kit.sample_data", "--out", "data", "--n", "-10"],
    "processor.gate": ["-m", "processor.gate", "--output-dir", "missing_dir"],
    "gates/gate.py": [str(REPO / "gates" / "gate.py"), "--output-dir", "missing_dir"],
    "processor.tune": ["-m", "processor.tune", "--config", "missing.yaml"],
    "processor.tune.cli": ["-m", "processor.tune.cli", "--config", "missing.yaml"],
    "processor.tune.dashboard": ["-m", "processor.tune.dashboard", "--storage", "sqlite:///missing.db"],
    "demo_kit.qwen_standin": ["-m", "demo_kit.qwen_standin", "--out", "blocker", "--size", "tiny"],
    "demo_kit": ["-m", "demo_kit"],  # not the repository root
    "processor.schema": ["-m", "processor.schema", "--export", "blocker/contract"],
}


def _runnable_modules() -> set[str]:
    """Modules that run as commands: ``if __name__ == "__main__"`` or a package's ``__main__.py``."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts)
        if path.name == "__main__.py":
            found.add(module.removesuffix(".__main__"))
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                found.add(module)
    return found


def test_every_entry_point_is_covered() -> None:
    assert _runnable_modules() <= set(ENTRY_POINTS), sorted(_runnable_modules() - set(ENTRY_POINTS))


@pytest.fixture(scope="module")
def mistakes(tmp_path_factory) -> dict[str, dict]:
    """Every entry point's exit code and stderr, each run from its own empty directory (all in one child
    interpreter: conftest.run_modules)."""
    root = tmp_path_factory.mktemp("entry-points")
    dirs = [root / entry.replace("/", "_") for entry in ENTRY_POINTS]
    for work in dirs:
        work.mkdir()
        (work / "blocker").write_text("a file, not a directory\n", encoding="utf-8")
    argvs = [argv[1:] if argv[0] == "-m" else argv for argv in ENTRY_POINTS.values()]
    procs = run_modules(*argvs, cwds=dirs)
    return {entry: {"code": proc.returncode, "stderr": proc.stderr, "data_written": (work / "data").exists()}
            for entry, proc, work in zip(ENTRY_POINTS, procs, dirs)}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_mistake_is_one_error_line_and_exit_2(entry: str, mistakes: dict[str, dict]) -> None:
    got = mistakes[entry]
    assert got["code"] == 2, got["stderr"][-2000:]
    assert "Traceback" not in got["stderr"]
    errors = [line for line in got["stderr"].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and len(errors[0]) > len("error: "), got["stderr"][-2000:]
    assert not got["data_written"]  # nothing half-written


def test_only_processor_cli_words_the_error_line() -> None:
    # Commands raise UserError/DataError; processor.cli.run prints "error: ..." and picks the exit code.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("error:"):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not offenders, offenders
