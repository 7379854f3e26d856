"""Loading and validating event files: every kind of bad input is reported with file, line and key."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.contract_check import ContractError, Problem
from processor.data import (
    UsageError,
    check_disjoint_ids,
    inspect_events,
    load_events,
    load_split,
    records,
)
from processor.schema import ALL_KEYS, FEATURES, LABELS, contract_spec
from processor.serialize import render_events
from processor.validate import main, validate_paths

from conftest import CONTRACT_DIR, run_modules

BASE: dict[str, Any] = {
    "id": "ev-000001", "timestamp": "2024-03-05T13:45:00Z", "symbol": "EURUSD",
    "ext_dir": 1, "int_dir": 1, "ext_choch_up": True, "ext_choch_down": False, "fvg_up": True,
    "fvg_down": False, "fvg_retest": True, "mgann_leg_index": 2, "mgann_leg_first_fvg": True,
    "pb_wave_strength_ok": True, "wave_strength": 0.64, "atr": 0.00112, "session": "london", "label": "long",
}


def event(i: int, **changes: Any) -> dict[str, Any]:
    ev = {**BASE, "id": f"ev-{i:06d}", "label": LABELS[i % 3]}
    ev.update(changes)
    return ev


def write_jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    """Rows are dicts (dumped as JSON) or raw text lines (written as is)."""
    text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of the command (argparse's own usage errors exit via SystemExit)."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def without(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(ev: dict[str, Any]) -> dict[str, Any]:
        ev = dict(ev)
        del ev[key]
        return ev
    return mutate


def setting(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda ev: {**ev, key: value}


def raw(text: str) -> Callable[[dict[str, Any]], str]:
    return lambda ev: text


def raw_value(key: str, literal: str) -> Callable[[dict[str, Any]], str]:
    """The event with ``key`` set to a raw JSON literal (NaN, Infinity) json.dumps would not write."""
    def mutate(ev: dict[str, Any]) -> str:
        return json.dumps({**ev, key: "@@"}).replace('"@@"', literal)
    return mutate


# (case id, mutation of the record on line 3, expected key, expected message fragment)
BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str | None, str]] = [
    ("missing-key", without("atr"), "atr", "required key is missing"),
    ("missing-feature-flag", without("fvg_retest"), "fvg_retest", "required key is missing"),
    ("missing-id", without("id"), "id", "required key is missing"),
    ("extra-key", setting("volume", 12), "volume", "unexpected key"),
    ("string-for-int", setting("ext_dir", "1"), "ext_dir", 'got string "1"'),
    ("string-true-for-bool", setting("fvg_up", "true"), "fvg_up", 'got string "true"'),
    ("two-for-bool", setting("fvg_up", 2), "fvg_up", "got number 2"),
    ("half-for-bool", setting("fvg_down", 0.5), "fvg_down", "got number 0.5"),
    ("true-for-int", setting("ext_dir", True), "ext_dir", "got boolean true"),
    ("true-for-leg-index", setting("mgann_leg_index", True), "mgann_leg_index", "got boolean true"),
    ("false-for-number", setting("atr", False), "atr", "got boolean false"),
    ("2.5-for-int", setting("mgann_leg_index", 2.5), "mgann_leg_index", "got 2.5 (not an integer)"),
    ("ext_dir-2", setting("ext_dir", 2), "ext_dir", "must be one of -1, 0, 1, got 2"),
    ("int_dir--2.0", setting("int_dir", -2.0), "int_dir", "got -2"),
    ("leg-101", setting("mgann_leg_index", 101), "mgann_leg_index", "0 <= x <= 100, got 101"),
    ("leg--1", setting("mgann_leg_index", -1), "mgann_leg_index", "0 <= x <= 100, got -1"),
    ("leg-huge", setting("mgann_leg_index", 10**30), "mgann_leg_index", "out of range"),
    ("wave-1.5", setting("wave_strength", 1.5), "wave_strength", "0 <= x <= 1, got 1.5"),
    ("wave-negative", setting("wave_strength", -0.01), "wave_strength", "got -0.01"),
    ("atr-0", setting("atr", 0), "atr", "> 0, got 0.0"),
    ("atr-negative", setting("atr", -1.0), "atr", "> 0, got -1.0"),
    ("atr-overflow", raw_value("atr", "1e999"), "atr", "got Infinity"),
    ("session-tokyo", setting("session", "tokyo"), "session", 'must be one of "asia", "london", "new_york"'),
    ("session-case", setting("session", "London"), "session", 'got "London"'),
    ("nan-literal", raw_value("wave_strength", "NaN"), "wave_strength", "got NaN"),
    ("infinity-literal", raw_value("atr", "Infinity"), "atr", "got Infinity"),
    ("minus-infinity-literal", raw_value("atr", "-Infinity"), "atr", "got -Infinity"),
    ("number-as-string", setting("atr", "0.5"), "atr", 'got string "0.5"'),
    ("null-feature", setting("atr", None), "atr", "must not be null"),
    ("null-flag", setting("fvg_up", None), "fvg_up", "must not be null"),
    ("null-optional", setting("symbol", None), "symbol", "must not be null"),
    ("array-value", setting("session", ["london"]), "session", "got array"),
    ("unknown-label", setting("label", "maybe"), "label", 'must be one of "long", "short", "no_trade"'),
    ("null-label", setting("label", None), "label", "must not be null"),
    ("missing-label", without("label"), "label", "required key is missing"),
    ("empty-id", setting("id", ""), "id", "non-empty string"),
    ("numeric-id", setting("id", 17), "id", "got number 17"),
    ("empty-symbol", setting("symbol", ""), "symbol", "non-empty string"),
    ("timestamp-no-offset", setting("timestamp", "2024-03-05T13:45:00"), "timestamp", "with UTC offset"),
    ("timestamp-garbage", setting("timestamp", "yesterday"), "timestamp", 'got "yesterday"'),
    ("timestamp-impossible", setting("timestamp", "2024-02-30T13:45:00Z"), "timestamp", "with UTC offset"),
    ("timestamp-epoch", setting("timestamp", 1709646300), "timestamp", "got number"),
    ("duplicate-key", raw('{"id": "ev-000002", "atr": 1.0, "atr": 2.0}'), "atr", "more than once"),
    ("invalid-json", raw('{"id": "ev-000002", "atr": 1.0,'), None, "invalid JSON"),
    ("trailing-data", raw(json.dumps(BASE) + " x"), None, "invalid JSON"),
    ("not-an-object", raw("[1, 2, 3]"), None, "must be a JSON object, got array"),
    ("bare-string", raw('"hello"'), None, "must be a JSON object, got string"),
    ("5000-digit-number", raw_value("atr", "9" * 5000), None, "invalid JSON: Exceeds the limit"),
    ("deeply-nested", raw_value("session", "[" * 100_000 + "]" * 100_000), None, "nested too deeply"),
]


@pytest.mark.parametrize(("case", "mutate", "key", "fragment"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_reported_with_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
    mutate: Callable[[dict[str, Any]], Any], key: str | None, fragment: str,
) -> None:
    # Line 2 is blank: reported line numbers must count it.
    path = write_jsonl(tmp_path / "train.jsonl", [event(1), "", mutate(event(2)), event(3)])
    report = tmp_path / "report.json"
    code, out, err = run_main([str(path), "--report-json", str(report)], capsys)
    assert code == 1, (case, out, err)
    problems = json.loads(report.read_text(encoding="utf-8"))["problems"]
    assert problems, case
    # One broken field gives exactly one problem, on line 3 (no double reports from the two passes).
    assert len(problems) == 1, problems
    [problem] = problems
    assert problem["file"] == str(path)
    assert problem["line"] == 3
    assert problem["key"] == key
    assert fragment in problem["message"]
    location = f"{path}:3"
    assert location in err and fragment in err
    if key is not None:
        assert f"key={key}" in err
    assert "Traceback" not in err


def test_several_problems_in_one_file_are_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[Any] = [
        event(1, atr=-1.0, session="tokyo", fvg_up="true"),
        event(2),
        "{not json",
        event(4, mgann_leg_index=101),
        {k: v for k, v in event(5).items() if k != "label"} | {"extra": 1},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(ContractError) as info:
        load_events(path)
    found = {(p.line, p.key) for p in info.value.problems}
    assert found == {(1, "atr"), (1, "session"), (1, "fvg_up"), (3, None), (4, "mgann_leg_index"),
                     (5, "label"), (5, "extra")}
    ids = {p.line: p.id for p in info.value.problems}
    assert ids[1] == "ev-000001" and ids[4] == "ev-000004" and ids[3] is None
    code, _, err = run_main([str(path)], capsys)
    assert code == 1
    for line, key in found:
        assert f"{path}:{line}" in err
        if key:
            assert f"key={key}" in err


def test_duplicate_id_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [event(1), event(2), event(1, label="short")])
    with pytest.raises(ContractError) as info:
        load_events(path)
    problems = info.value.problems
    assert [(p.line, p.key, p.id) for p in problems] == [(1, "id", "ev-000001"), (3, "id", "ev-000001")]
    assert "also on line 3" in problems[0].message
    assert "also on line 1" in problems[1].message
    code, _, err = run_main([str(path)], capsys)
    assert code == 1 and f"{path}:3 id=ev-000001 key=id" in err


def test_id_in_train_and_val(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [event(1), event(2), event(3)])
    val = write_jsonl(tmp_path / "val.jsonl", [event(4), event(2)])
    # Each file is fine on its own.
    assert validate_paths([train]) == [] and validate_paths([val]) == []
    report = tmp_path / "r.json"
    code, _, err = run_main([str(train), str(val), "--report-json", str(report)], capsys)
    assert code == 1
    [problem] = json.loads(report.read_text(encoding="utf-8"))["problems"]
    assert problem == {"file": str(val), "line": 2, "id": "ev-000002", "key": "id",
                       "message": problem["message"]}
    assert f"{train}:2" in problem["message"]
    assert f"{val}:2 id=ev-000002 key=id" in err
    with pytest.raises(ContractError) as info:
        load_split(train, val)
    assert [(p.file, p.line) for p in info.value.problems] == [(str(val), 2)]


def test_check_disjoint_ids_direct(tmp_path: Path) -> None:
    a = load_events(write_jsonl(tmp_path / "a.jsonl", [event(1), event(2)]))
    b = load_events(write_jsonl(tmp_path / "b.jsonl", [event(3), event(1)]))
    c = load_events(write_jsonl(tmp_path / "c.jsonl", [event(2), event(3), event(5)]))
    problems = check_disjoint_ids({"a.jsonl": a, "b.jsonl": b, "c.jsonl": c})
    assert [(p.file, p.line, p.id) for p in problems] == [
        ("b.jsonl", 2, "ev-000001"), ("c.jsonl", 1, "ev-000002"), ("c.jsonl", 2, "ev-000003")]
    assert "a.jsonl:1" in problems[0].message and "b.jsonl:1" in problems[2].message
    assert check_disjoint_ids({"a.jsonl": a, "c2.jsonl": load_events(tmp_path / "c.jsonl").iloc[2:]}) == []


def test_load_split_reports_problems_of_both_files_at_once(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [event(1, atr=0), event(2)])
    val = write_jsonl(tmp_path / "val.jsonl", [event(3, session="tokyo"), event(2)])
    with pytest.raises(ContractError) as info:
        load_split(train, val)
    assert {(Path(p.file).name, p.line, p.key) for p in info.value.problems} == {
        ("train.jsonl", 1, "atr"), ("val.jsonl", 1, "session"), ("val.jsonl", 2, "id")}


def test_load_split_returns_both_frames(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [event(i) for i in range(6)])
    val = write_jsonl(tmp_path / "val.jsonl", [event(i) for i in range(6, 9)])
    tr, va = load_split(train, val)
    assert list(tr["id"]) == [f"ev-{i:06d}" for i in range(6)]
    assert list(va["label"]) == ["long", "short", "no_trade"]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n\t\n"], ids=["empty", "blank-lines-only"])
def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(ContractError) as info:
        load_events(path)
    [problem] = info.value.problems
    assert problem.line is None and problem.key is None and "no records" in problem.message
    code, _, err = run_main([str(path)], capsys)
    assert code == 1 and "no records" in err


def test_blank_lines_are_ignored_and_line_numbers_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.jsonl"
    lines = ["", json.dumps(event(1)), "   ", json.dumps(event(2)), "\t", json.dumps(event(3)), "", ""]
    path.write_text("\r\n".join(lines), encoding="utf-8")  # CRLF too
    df = load_events(path)
    assert list(df["line"]) == [2, 4, 6]
    code, out, _ = run_main([str(path)], capsys)
    assert code == 0
    assert "3 records (long 1, short 1, no_trade 1)" in out


def test_non_utf8_line_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.jsonl"
    good = json.dumps(event(1)).encode()
    bad = json.dumps(event(2, symbol="EUR-USD")).encode().replace(b"EUR-USD", b"EUR\xffUSD")
    path.write_bytes(good + b"\n" + bad + b"\n" + json.dumps(event(3)).encode() + b"\n")
    with pytest.raises(ContractError) as info:
        load_events(path)
    [problem] = info.value.problems
    assert problem.line == 2 and "UTF-8" in problem.message
    code, _, err = run_main([str(path)], capsys)
    assert code == 1 and f"{path}:2" in err and "UTF-8" in err


def test_latin1_file_is_rejected_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(event(1, symbol="DAX€"), ensure_ascii=False).encode("cp1252") + b"\n")
    with pytest.raises(ContractError, match="UTF-8"):
        load_events(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(event(1)).encode() + b"\n")
    assert list(load_events(path)["id"]) == ["ev-000001"]


def test_contract_examples_pass_with_allowed_coercions(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONTRACT_DIR / "examples.jsonl"
    df = load_events(path)
    assert list(df.columns) == ["line", "id", *FEATURES, "label", "timestamp", "symbol"]
    for flag in ("ext_choch_up", "ext_choch_down", "fvg_up", "fvg_down", "fvg_retest",
                 "mgann_leg_first_fvg", "pb_wave_strength_ok"):
        assert df[flag].dtype == np.dtype(bool), flag
    for col in ("ext_dir", "int_dir", "mgann_leg_index", "line"):
        assert df[col].dtype == np.dtype("int64"), col
    for col in ("wave_strength", "atr"):
        assert df[col].dtype == np.dtype("float64"), col
    # Line 2 writes flags as 0/1 and mgann_leg_index as 1.0.
    row = df.iloc[1]
    assert row["mgann_leg_index"] == 1 and row["ext_choch_down"] is np.True_ and row["ext_choch_up"] is np.False_
    assert row["timestamp"] is None and row["symbol"] is None
    assert list(df["label"]) == ["long", "short", "no_trade"]
    assert df.loc[2, "timestamp"] == "2024-03-06T02:10:00+09:00"
    code, out, err = run_main([str(path)], capsys)
    assert code == 0 and err == ""
    assert "3 records (long 1, short 1, no_trade 1)" in out


def test_integral_floats_and_01_flags_are_coerced_exactly(tmp_path: Path) -> None:
    rows = [event(1, ext_dir=-1.0, mgann_leg_index=100.0, fvg_up=1, fvg_down=0, fvg_retest=1.0, atr=3,
                  wave_strength=1)]
    df = load_events(write_jsonl(tmp_path / "t.jsonl", rows))
    rec = records(df)[0]
    assert rec["ext_dir"] == -1 and type(rec["ext_dir"]) is int
    assert rec["mgann_leg_index"] == 100 and type(rec["mgann_leg_index"]) is int
    assert rec["fvg_up"] is True and rec["fvg_down"] is False and rec["fvg_retest"] is True
    assert rec["atr"] == 3.0 and type(rec["atr"]) is float
    assert rec["wave_strength"] == 1.0 and type(rec["wave_strength"]) is float


def test_records_round_trip_into_serialization(tmp_path: Path) -> None:
    rows = [event(i, ext_choch_up=bool(i % 2), atr=0.5 + i) for i in range(4)]
    df = load_events(write_jsonl(tmp_path / "t.jsonl", rows))
    recs = records(df)
    assert recs == [{k: r[k] for k in FEATURES} for r in rows]
    assert all(type(v) in (bool, int, float, str) for r in recs for v in r.values())
    assert render_events(recs) == render_events(rows)


def test_optional_columns_are_filled_with_none(tmp_path: Path) -> None:
    rows = [{k: v for k, v in event(1).items() if k not in ("timestamp", "symbol")}, event(2)]
    df = load_events(write_jsonl(tmp_path / "t.jsonl", rows))
    assert df["timestamp"].tolist() == [None, BASE["timestamp"]]
    assert df["symbol"].tolist() == [None, "EURUSD"]


def test_unlabeled_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unlabeled = write_jsonl(tmp_path / "predict.jsonl",
                            [{k: v for k, v in event(i).items() if k != "label"} for i in range(3)])
    df = load_events(unlabeled, labeled=False)
    assert "label" not in df.columns and len(df) == 3
    code, out, _ = run_main([str(unlabeled), "--unlabeled"], capsys)
    assert code == 0 and "3 records (unlabeled)" in out
    # The same file is not a training file: every line lacks its label.
    with pytest.raises(ContractError) as info:
        load_events(unlabeled)
    assert [(p.line, p.key) for p in info.value.problems] == [(1, "label"), (2, "label"), (3, "label")]
    # Labels on prediction input are allowed (and dropped), but must still be valid labels.
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [event(1), {k: v for k, v in event(2).items() if k != "label"}])
    assert "label" not in load_events(mixed, labeled=False).columns
    bad = write_jsonl(tmp_path / "bad.jsonl", [event(1, label="maybe")])
    code, _, err = run_main([str(bad), "--unlabeled"], capsys)
    assert code == 1 and f"{bad}:1 id=ev-000001 key=label" in err


def test_report_json_written_atomically_when_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [event(i) for i in range(5)])
    out_dir = tmp_path / "reports"
    out_dir.mkdir()
    report = out_dir / "report.json"
    report.write_text("stale", encoding="utf-8")
    code, _, _ = run_main([str(path), "--report-json", str(report)], capsys)
    assert code == 0
    payload = json.loads(report.read_text(encoding="utf-8"))
    assert payload["valid"] is True and payload["problems"] == [] and payload["labeled"] is True
    [entry] = payload["files"]
    assert entry["path"] == str(path) and entry["records"] == 5
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["class_counts"] == {"long": 2, "short": 2, "no_trade": 1}
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.json"]  # no temp file left behind


def test_contract_error_caps_display_but_keeps_every_problem(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [event(i, atr=-1.0) for i in range(60)])
    with pytest.raises(ContractError) as info:
        load_events(path)
    assert len(info.value.problems) == 60
    text = str(info.value)
    assert text.startswith("60 problems in 1 file")
    assert "... and 10 more" in text
    assert f"{path}:50 " in text and f"{path}:51 " not in text
    assert f"{path}:60 " in info.value.report(max_shown=None)


def test_problem_str_format() -> None:
    p = Problem("data/train.jsonl", 17, "ev-000123", "atr", "must be > 0, got -1.0")
    assert str(p) == "data/train.jsonl:17 id=ev-000123 key=atr: must be > 0, got -1.0"
    assert str(Problem("data/train.jsonl", None, None, None, "no records")) == "data/train.jsonl: no records"
    assert str(Problem("f.jsonl", 3, "a b", None, "x")) == 'f.jsonl:3 id="a b": x'


def test_inspection_of_a_broken_file_keeps_real_ids_only(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [event(1), event(2, id=5), event(3, atr=0)])
    result = inspect_events([path])
    frame = result.frames[str(path)]
    assert frame is not None and not result.valid
    assert frame["id"].isna().tolist() == [False, True, False]


# ----------------------------------------------------------------------------------------- usage errors


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_jsonl(tmp_path / "train.jsonl", [event(1)])
    cases = [
        [str(tmp_path / "missing.jsonl")],
        [str(tmp_path)],
        [str(good), "--bogus-flag"],
        [],
        [str(good), "--report-json", str(tmp_path / "no-such-dir" / "r.json")],
        [str(good), "--report-json", str(tmp_path)],
        [str(good), str(tmp_path / "." / "train.jsonl")],
    ]
    for args in cases:
        code, _, err = run_main(args, capsys)
        assert code == 2, (args, err)
        assert "Traceback" not in err and err.strip(), args
    assert not (tmp_path / "no-such-dir").exists()


def test_load_events_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_events(tmp_path / "missing.jsonl")
    with pytest.raises(UsageError, match="directory"):
        load_events(tmp_path)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_unreadable_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [event(1)])
    path.chmod(0)
    try:
        code, _, err = run_main([str(path)], capsys)
    finally:
        path.chmod(0o600)
    assert code == 2 and "cannot read" in err


def test_read_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Root can read anything, so simulate the OS refusing: the mapping to exit 2 is what is tested.
    path = write_jsonl(tmp_path / "train.jsonl", [event(1)])

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    code, _, err = run_main([str(path)], capsys)
    assert code == 2 and "cannot read (Permission denied)" in err and "Traceback" not in err


def test_validate_paths_collects_problems_of_all_files(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [event(1, atr=0), event(2)])
    b = write_jsonl(tmp_path / "b.jsonl", [event(2), event(3, session="tokyo")])
    problems = validate_paths([a, b], labeled=True)
    assert [(Path(p.file).name, p.line, p.key) for p in problems] == [
        ("a.jsonl", 1, "atr"), ("b.jsonl", 2, "session"), ("b.jsonl", 1, "id")]


# ------------------------------------------------------------------------------------------ subprocess


def test_cli_subprocess_exit_codes(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "train.jsonl", [event(i) for i in range(3)])
    bad = write_jsonl(tmp_path / "val.jsonl", [event(10), event(11, ext_dir=True), "NaN", event(0)])
    # `python -m processor.validate ...` four times, in one child interpreter (conftest.run_modules).
    ok, broken, missing, no_file = run_modules(["processor.validate", str(good)], ["processor.validate", str(good), str(bad)],
                                               ["processor.validate", str(tmp_path / "nope.jsonl")],
                                               ["processor.validate", "--unlabeled"], timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "3 records (long 1, short 1, no_trade 1)" in ok.stdout

    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    assert f"{bad}:2 id=ev-000011 key=ext_dir" in broken.stderr
    assert f"{bad}:3:" in broken.stderr  # not a JSON object
    assert f"{bad}:4 id=ev-000000 key=id" in broken.stderr  # also in train

    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "no such file" in missing.stderr
    assert no_file.returncode == 2 and "Traceback" not in no_file.stderr


# ------------------------------------------------------------------------------------- property-based

_SPEC = contract_spec()["keys"]
_TZ = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def _timestamp() -> st.SearchStrategy[str]:
    def fmt(dt: datetime, spec: str, zulu: bool) -> str:
        text = dt.isoformat(timespec=spec)
        return text[:-6] + "Z" if zulu and text.endswith("+00:00") else text
    return st.builds(fmt, st.datetimes(timezones=_TZ), st.sampled_from(["seconds", "milliseconds", "microseconds"]),
                     st.booleans())


def _valid_value(key: str) -> st.SearchStrategy[Any]:
    spec = _SPEC[key]
    kind = spec["type"]
    if kind == "boolean":
        return st.one_of(st.booleans(), st.sampled_from([0, 1, 0.0, 1.0]))
    if kind == "integer":
        ints = (st.sampled_from(spec["enum"]) if "enum" in spec
                else st.integers(spec["minimum"], spec["maximum"]))
        return st.one_of(ints, ints.map(float))
    if kind == "number":
        if "exclusiveMinimum" in spec:
            lo = spec["exclusiveMinimum"]
            return st.one_of(st.floats(min_value=lo, exclude_min=True, allow_nan=False, allow_infinity=False),
                             st.integers(min_value=lo + 1, max_value=10**6))
        return st.one_of(st.floats(spec["minimum"], spec["maximum"], allow_nan=False),
                         st.integers(spec["minimum"], spec["maximum"]))
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    if spec.get("format") == "date-time":
        return _timestamp()
    return st.text(min_size=spec.get("minLength", 0), max_size=20)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    ev = {}
    for key in ALL_KEYS:
        if _SPEC[key]["required"] or key == "label" or draw(st.booleans()):
            ev[key] = draw(_valid_value(key))
    return ev


def _wrong_type(key: str) -> st.SearchStrategy[Any]:
    """A JSON value of a type the contract does not allow for ``key``."""
    kind = _SPEC[key]["type"]
    containers = st.sampled_from([[], [1], {}, {"v": 1}])
    if kind == "boolean":
        return st.one_of(st.sampled_from(["true", "false", "1", "0", ""]), containers)
    if kind == "integer":
        non_integral = st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not v.is_integer())
        return st.one_of(st.booleans(), st.sampled_from(["1", "0", "-1"]), non_integral, containers)
    if kind == "number":
        return st.one_of(st.booleans(), st.sampled_from(["0.5", "1", "NaN"]), containers,
                         st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    return st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), containers)


def _out_of_range(key: str) -> st.SearchStrategy[Any]:
    """A value of an allowed JSON type but outside the allowed values of ``key``."""
    spec = _SPEC[key]
    kind = spec["type"]
    if kind == "boolean":
        return st.one_of(st.integers().filter(lambda v: v not in (0, 1)),
                         st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v not in (0, 1)))
    if kind == "integer":
        if "enum" in spec:
            outside = st.integers(-10**6, 10**6).filter(lambda v: v not in spec["enum"])
        else:
            outside = st.one_of(st.integers(max_value=spec["minimum"] - 1),
                                st.integers(min_value=spec["maximum"] + 1))
        return st.one_of(outside, outside.map(float).filter(lambda v: abs(v) < 2**53))
    if kind == "number":
        finite = {"allow_nan": False, "allow_infinity": False}
        if "exclusiveMinimum" in spec:
            return st.one_of(st.floats(max_value=spec["exclusiveMinimum"], **finite),
                             st.integers(max_value=spec["exclusiveMinimum"]))
        return st.one_of(st.floats(max_value=spec["minimum"], exclude_max=True, **finite),
                         st.floats(min_value=spec["maximum"], exclude_min=True, **finite),
                         st.integers(min_value=spec["maximum"] + 1))
    if "enum" in spec:
        return st.text(max_size=12).filter(lambda s: s not in spec["enum"])
    if spec.get("format") == "date-time":
        naive = st.datetimes().map(lambda d: d.isoformat(timespec="seconds"))
        return st.one_of(naive, st.sampled_from(["", "now", "2024-13-01T00:00:00Z", "2024-03-05", "13:45:00Z"]))
    return st.just("")  # below minLength


@st.composite
def broken_events(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid event with exactly one field broken; returns (event, the key a report must name)."""
    ev = draw(valid_events())
    kind = draw(st.sampled_from(["drop", "extra", "null", "wrong_type", "out_of_range"]))
    if kind == "extra":
        extra = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in ALL_KEYS))
        ev[extra] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=5)))
        return ev, extra
    if kind == "drop":
        key = draw(st.sampled_from([k for k in ALL_KEYS if _SPEC[k]["required"] or k == "label"]))
        del ev[key]
        return ev, key
    key = draw(st.sampled_from(ALL_KEYS))
    if kind == "null":
        ev[key] = None
    else:
        ev[key] = draw(_wrong_type(key) if kind == "wrong_type" else _out_of_range(key))
    return ev, key


def _load_one(ev: dict[str, Any]) -> Any:
    # Hypothesis reruns the test body many times; a function-scoped tmp_path would be shared by all runs.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.jsonl"
        path.write_text(json.dumps(ev, ensure_ascii=False) + "\n", encoding="utf-8")
        return load_events(path)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_events())
def test_property_valid_records_pass(ev: dict[str, Any]) -> None:
    df = _load_one(ev)
    [rec] = records(df)
    for key in FEATURES:
        assert rec[key] == ev[key]  # 1.0 == 1 == True: the value survives, only the JSON type changes
    assert df.loc[0, "label"] == ev["label"] and df.loc[0, "id"] == ev["id"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_events())
def test_property_one_broken_field_is_rejected_naming_that_key(case: tuple[dict[str, Any], str]) -> None:
    ev, key = case
    with pytest.raises(ContractError) as info:
        _load_one(copy.deepcopy(ev))
    problems = info.value.problems
    assert problems
    assert all(p.key == key and p.line == 1 for p in problems), [str(p) for p in problems]
