"""The docs stay true to the code: every command in README.md and docs/ names a real module, flag, make
target, MLproject parameter and file; every link between the pages resolves; the README stays a short
tour whose pipeline table names every module; and the short commands actually run.

Flags are checked against each module's own ``--help`` (the parser the user meets), taken once per
module in one child process: importing torch and MLflow once instead of once per module keeps this in
the fast tier.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "processor"
DEMO_KIT = REPO / "src" / "demo_kit"
README = REPO / "README.md"
PAGES = (README, *sorted((REPO / "docs").glob("*.md")), REPO / "gates" / "README.md")
README_MAX_LINES = 200
GATE_SCRIPT = "gates/gate.py"

FENCE = re.compile(r"^\s*(```|~~~)")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
COMMAND_START = re.compile(r"(?:^|\s)(?:\S*python(?:\.exe)?\s|mlflow run\s|make\s|torchrun\s|accelerate launch\s)")
CONFIG_FILE = re.compile(r"(?<![\w./-])((?:configs|gates)/[\w./-]+\.ya?ml)\b")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO).as_posix()}:{self.line}: {self.text}"


def _blocks(page: Path) -> list[tuple[int, str, bool]]:
    """(line number, text, inside a fenced code block) for every line of a page."""
    rows, fenced = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        rows.append((number, line, fenced))
    return rows


def _strip_comment(text: str) -> str:
    # A shell comment starts with " #"; "#" inside a word (a URL's anchor) is not one.
    return re.split(r"(?:^|\s)#", text, maxsplit=1)[0].rstrip()


PROSE_COMMAND = re.compile(r"(?:\w+=\S+\s+)*(?:\S*python |mlflow run |make |torchrun |accelerate launch )")


def commands(page: Path) -> list[Command]:
    """Every command of a page: the lines of its fenced blocks (continuation lines joined, also a
    synopsis's indented ``[--option]`` lines) and the inline code spans of its prose that start like a
    command (a span may wrap onto the next line)."""
    found: list[Command] = []
    pending, start, prose, prose_start = "", 0, [], 0

    def flush_prose() -> None:
        text = "\n".join(prose)
        for m in INLINE_CODE.finditer(text):
            span = " ".join(m.group(1).split())
            if PROSE_COMMAND.match(span):
                found.append(Command(page, prose_start + text.count("\n", 0, m.start()), span))
        prose.clear()

    for number, line, fenced in _blocks(page):
        if not fenced:
            if not prose:
                prose_start = number
            prose.append(line)
            continue
        flush_prose()
        text = _strip_comment(line)
        if not pending:
            start = number
        if text.endswith(("\\", "^")):
            pending += text[:-1] + " "
            continue
        text, pending = (pending + text).strip(), ""
        if text.startswith(("[", "--")) and found and found[-1].page == page and found[-1].line < number:
            found[-1] = Command(page, found[-1].line, f"{found[-1].text} {text}")
        elif text and COMMAND_START.search(" " + text):
            found.append(Command(page, start, text))
    flush_prose()
    return found


ALL_COMMANDS = [c for page in PAGES for c in commands(page)]


BENCH_SCRIPT = r"python(?:\.exe)?\s+(benchmarks/\w+\.py)"


def _target(cmd: Command) -> str | None:
    """What a command runs: ``processor.X`` for ``-m processor.X`` (``demo_kit.X`` likewise), the gate
    script, a benchmark script (``benchmarks/X.py``: the commands behind the docs' figures), else None."""
    m = re.search(r"-m\s+((?:processor|demo_kit)(?:\.\w+)*)", cmd.text)
    if m:
        return m.group(1)
    m = re.search(BENCH_SCRIPT, cmd.text)
    if m:
        return m.group(1)
    if re.search(r"python(?:\.exe)?\s+\S*gates[/\\]gate\.py", cmd.text):
        return GATE_SCRIPT
    return None


def _after_target(cmd: Command) -> str:
    """The command's own arguments: what follows the module (torchrun's flags come before it)."""
    m = re.search(r"-m\s+(?:processor|demo_kit)(?:\.\w+)*|gates[/\\]gate\.py|" + BENCH_SCRIPT, cmd.text)
    return cmd.text[m.end():] if m else cmd.text


def _module_file(module: str) -> Path | None:
    """The file ``python -m module`` runs: ``X.py`` or ``X/__main__.py`` under src/."""
    base = REPO / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


PROCESSOR_COMMANDS = [c for c in ALL_COMMANDS if _target(c)]
TARGETS = sorted({_target(c) for c in PROCESSOR_COMMANDS if (REPO / _target(c)).is_file() or _module_file(_target(c))})

# One child process runs ``--help`` of every documented entry point as ``python -m`` would
# (run_module / run_path as __main__), and reports exit code and output per target.
HELP_RUNNER = r"""
import contextlib, io, json, runpy, sys, traceback
targets, report = json.loads(sys.argv[1]), sys.argv[2]
out = {}
for target in targets:
    stdout, stderr, code = io.StringIO(), io.StringIO(), None
    sys.argv = [target, "--help"]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            if target.endswith(".py"):
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code or 0
    except BaseException:
        code, stderr = 1, io.StringIO(stderr.getvalue() + traceback.format_exc())
    out[target] = {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()[-3000:]}
with open(report, "w", encoding="utf-8") as f:
    json.dump(out, f)
"""


def child_env() -> dict[str, str]:
    """This tree's src/ first, whichever checkout the interpreter's editable install points at."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    return env


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, dict]:
    report = tmp_path_factory.mktemp("help") / "help.json"
    done = subprocess.run([sys.executable, "-c", HELP_RUNNER, json.dumps(TARGETS), str(report)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and report.is_file(), done.stderr[-3000:]
    return json.loads(report.read_text(encoding="utf-8"))


def help_flags(help_text: str) -> set[str]:
    """The options a parser accepts, from its help: the usage block and the option lines (not the prose
    of the description or epilog, which may mention flags of other commands)."""
    usage, _, rest = help_text.partition("\n\n")
    flags = set(FLAG.findall(usage))
    for line in rest.splitlines():
        if re.match(r"^ {1,6}-", line):
            flags |= set(FLAG.findall(re.split(r"\s{2,}", line.strip())[0]))
    return flags


def test_pages_have_commands_to_check():
    # The extraction itself must find the documented commands, or every other test passes vacuously.
    assert len(PROCESSOR_COMMANDS) >= 20, [c.where() for c in PROCESSOR_COMMANDS]
    assert any(c.text.startswith("make ") for c in ALL_COMMANDS)
    assert any(c.text.startswith("mlflow run") for c in ALL_COMMANDS)


@pytest.mark.parametrize("cmd", PROCESSOR_COMMANDS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_documented_module_exists(cmd: Command):
    target = _target(cmd)
    exists = (REPO / target).is_file() if target.endswith(".py") else _module_file(target) is not None
    assert exists, f"no such entry point: {cmd.where()}"


@pytest.mark.parametrize("target", TARGETS)
def test_help_runs(helps, target: str):
    got = helps[target]
    assert got["code"] == 0 and "usage:" in got["stdout"], (
        f"`python {'-m ' if target != GATE_SCRIPT else ''}{target} --help` failed (exit {got['code']}):\n"
        f"{got['stderr']}")


@pytest.mark.parametrize("cmd", PROCESSOR_COMMANDS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_documented_flags_exist(helps, cmd: Command):
    target = _target(cmd)
    if target not in helps:
        pytest.fail(f"no such entry point: {cmd.where()}")
    accepted = help_flags(helps[target]["stdout"])
    assert accepted, f"`{target} --help` printed no options (exit {helps[target]['code']}): {cmd.where()}"
    unknown = sorted(set(FLAG.findall(_after_target(cmd))) - accepted)
    assert not unknown, f"{', '.join(unknown)} not in `{target} --help`: {cmd.where()}"


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {t for line in text.splitlines() if (m := re.match(r"^([\w.-]+)\s*:(?!=)", line))
            for t in [m.group(1)]}


MAKE_COMMANDS = [c for c in ALL_COMMANDS if c.text.startswith("make ")]


@pytest.mark.parametrize("cmd", MAKE_COMMANDS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_make_targets_exist(cmd: Command):
    wanted = [w for w in cmd.text.split()[1:] if not w.startswith("-") and "=" not in w]
    missing = sorted(set(wanted) - make_targets())
    assert wanted and not missing, f"Makefile has no target {', '.join(missing)}: {cmd.where()}"


MLFLOW_RUNS = [c for c in ALL_COMMANDS if c.text.startswith("mlflow run")]


@pytest.mark.parametrize("cmd", MLFLOW_RUNS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_mlflow_run_parameters_exist(cmd: Command):
    entry_points = yaml.safe_load((REPO / "MLproject").read_text(encoding="utf-8"))["entry_points"]
    words = shlex.split(cmd.text.replace("...", ""))
    entry = "main"
    params = []
    for i, word in enumerate(words):
        if word in ("-e", "--entry-point") and i + 1 < len(words):
            entry = words[i + 1]
        if word in ("-P", "--param-list") and i + 1 < len(words):
            params.append(words[i + 1].split("=", 1)[0])
    assert entry in entry_points, f"MLproject has no entry point {entry!r}: {cmd.where()}"
    declared = set(entry_points[entry].get("parameters", {}))
    unknown = sorted(set(params) - declared)
    assert not unknown, f"not parameters of MLproject's {entry!r}: {', '.join(unknown)}: {cmd.where()}"


FILE_COMMANDS = [c for c in ALL_COMMANDS if CONFIG_FILE.search(c.text)]


@pytest.mark.parametrize("cmd", FILE_COMMANDS, ids=lambda c: f"{c.page.name}:{c.line}")
def test_documented_config_files_exist(cmd: Command):
    missing = [f for f in CONFIG_FILE.findall(cmd.text) if not (REPO / f).is_file()]
    assert not missing, f"no such file {', '.join(missing)}: {cmd.where()}"


# ------------------------------------------------------------------------------------------------
# Links
# ------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces become hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line, fenced in _blocks(page):
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            seen.setdefault(f"{base}-{n}" if n else base, 1)
    return set(seen)


def links(page: Path) -> list[tuple[int, str]]:
    return [(number, target) for number, line, fenced in _blocks(page) if not fenced
            for target in LINK.findall(line)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve(page: Path):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        rel = dest.relative_to(REPO).as_posix() if dest.is_relative_to(REPO) else str(dest)
        if not dest.exists():
            broken.append(f"{number}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{number}: {target} (no heading #{anchor} in {rel})")
    assert not broken, f"{page.relative_to(REPO).as_posix()}:\n" + "\n".join(broken)


def test_every_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for _, t in links(README) if not re.match(r"^[a-z]+:", t)}
    orphans = [p.relative_to(REPO).as_posix() for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"pages the README does not link: {orphans}"


# ------------------------------------------------------------------------------------------------
# The README: short, and its pipeline table names every module
# ------------------------------------------------------------------------------------------------
def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}: the rest goes to docs/)"


def pipeline_rows(heading: str = "## The pipeline") -> list[set[str]]:
    """The backticked names in the module column of each row of the README's table under ``heading``."""
    text = README.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    column = header.index("module")
    return [set(INLINE_CODE.findall(cells[column])) for cells in rows[2:]]


def modules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}


def test_pipeline_table_names_every_module():
    rows = pipeline_rows()
    named = set().union(*rows)
    missing = sorted(modules(PACKAGE) - named)
    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    for sub in subpackages:
        row = next((r for r in rows if f"{sub}/" in r), None)
        if row is None:
            missing.append(f"{sub}/")
            continue
        missing += [f"{sub}/{m}" for m in sorted(modules(PACKAGE / sub) - row)]
    assert not missing, f"README's pipeline table does not name: {', '.join(missing)}"
    # And it names nothing that is gone (a renamed module must not linger in the table).
    known = modules(PACKAGE) | {f"{s}/" for s in subpackages}
    inner = set().union(*(modules(PACKAGE / s) for s in subpackages))
    stale = sorted(n for n in named if re.fullmatch(r"[a-z_]+/?", n) and n not in known | inner)
    assert not stale, f"README's pipeline table names modules that do not exist: {', '.join(stale)}"


def test_demo_kit_table_names_every_module_and_only_those():
    named = set().union(*pipeline_rows("## The demo kit"))
    assert modules(DEMO_KIT) <= named, f"README's demo-kit table does not name: {modules(DEMO_KIT) - named}"
    stale = {n for n in named if re.fullmatch(r"[a-z_]+", n)} - modules(DEMO_KIT)
    assert not stale, f"README's demo-kit table names modules that are not in src/demo_kit: {stale}"


# ------------------------------------------------------------------------------------------------
# Counts that go stale: the number of shipping checks
# ------------------------------------------------------------------------------------------------
NUMBER = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|\d+)"
CHECK_COUNT = re.compile(rf"\b{NUMBER}\s+(?:shipping\s+|gate\s+)?checks\b|\ball\s+{NUMBER}\s+pass", re.I)


def test_no_page_states_a_number_of_shipping_checks():
    """Checks are added (and made optional) over time; a count in prose goes stale with each one. The
    docs say "the shipping checks" and list them from gates/ship_checks.yaml and the gate's --help."""
    sources = [*PAGES, *sorted((PACKAGE / "gate").glob("*.py")), *sorted((REPO / "gates").glob("*.yaml"))]
    stated = []
    for src in sources:
        text = src.read_text(encoding="utf-8")  # whole text: a phrase may wrap onto the next line
        for m in CHECK_COUNT.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            stated.append(f"{src.relative_to(REPO).as_posix()}:{line}: {' '.join(m.group(0).split())}")
    assert not stated, "a count of shipping checks:\n" + "\n".join(stated)


# ------------------------------------------------------------------------------------------------
# The short commands, run: the contract check, and the sample data whose figures the docs quote
# ------------------------------------------------------------------------------------------------
def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=600, **kwargs)


def documented(module: str, flag: str) -> Command:
    found = [c for c in PROCESSOR_COMMANDS if _target(c) == module and flag in c.text and c.text.startswith("python")]
    assert found, f"no documented `python -m {module} ... {flag}` command"
    return found[0]


def required_part(cmd: Command) -> str:
    """A synopsis without its optional ``[...]`` parts: the command as the defaults run it."""
    return re.sub(r"\[[^\]]*\]", "", cmd.text)


def test_documented_contract_check_runs():
    cmd = documented("processor.schema", "--check")
    done = run(shlex.split(cmd.text)[1:])
    assert done.returncode == 0, f"{cmd.where()}\n{done.stdout}{done.stderr}"


def test_documented_sample_data_figures(tmp_path):
    """`python -m demo_kit.sample_data --out data` as documented (into a temporary directory), then the
    documented split check on its files; the shares and the ceiling docs/contract.md quotes are the
    ones the command writes."""
    cmd = documented("demo_kit.sample_data", "--out data")
    words = shlex.split(required_part(cmd))
    words[words.index("--out") + 1] = str(tmp_path)
    made = run(words[1:])
    assert made.returncode == 0, made.stderr
    card = json.loads((tmp_path / "data_card.json").read_text(encoding="utf-8"))
    shares, ceiling = card["train"]["shares"], card["bayes_ceiling"]
    text = (REPO / "docs" / "contract.md").read_text(encoding="utf-8")
    quoted = [f"{label} {share:.1%}".replace("%", " %") for label, share in shares.items()] + [f"{ceiling:.3f}"]
    missing = [q for q in quoted if q not in text]
    assert not missing, f"docs/contract.md does not quote what `{cmd.text}` writes: {missing}"

    check = documented("processor.validate", "--train")
    text = required_part(check).replace("data/", f"{tmp_path.as_posix()}/")  # the files just written
    done = run(shlex.split(text)[1:])
    assert done.returncode == 0, f"{check.where()}\n{done.stdout}{done.stderr}"
