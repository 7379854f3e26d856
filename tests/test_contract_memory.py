"""The in-memory contract check (processor.contract_check.check_records, behind predict.check_frame and the
served model) against the file-based one it replaced: the same records give the same problems (file,
line, id, key, message) or the same checked events, over the loader's malformed cases and fuzzed records.

The reference, ``via_file``, is the old serving path itself (with the old path's own helpers, now in
processor.contract_check): each row written as the JSON record it
stands for (a missing cell is an absent key) to a JSONL file and loaded by ``load_events``; what it
accepts is also run through the Pandera schema directly, since both paths skip Pandera when the
fast verdict (schema.meets_schema) finds nothing wrong.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor import contract_check
from processor.contract_check import ContractError, _is_missing, _json_default, check_records
from processor.data import load_events
from processor.predict import FRAME_SOURCE, check_frame
from processor.schema import FEATURES, LABELS, meets_schema
from test_validate import BAD_CASES, broken_events, event, valid_events

SOURCE = "request row"


def via_file(rows: list[dict[str, Any]], labeled: bool = False) -> list[dict[str, Any]] | list[tuple]:
    """The old path: rows -> JSONL file -> load_events. Checked events, or the problems as tuples."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                record = {k: v for k, v in row.items() if not _is_missing(v)}
                fh.write(json.dumps(record, default=_json_default, ensure_ascii=False, allow_nan=True) + "\n")
        try:
            frame = load_events(path, labeled=labeled)
        except ContractError as exc:
            return [(SOURCE, p.line, p.id, p.key, p.message) for p in exc.problems]
    # Both paths skip Pandera when schema.meets_schema finds nothing wrong: Pandera itself must agree.
    contract_check.frame_schema(labeled).validate(frame, lazy=True)
    return frame[["id", *FEATURES]].to_dict(orient="records")


def in_memory(rows: list[dict[str, Any]], labeled: bool = False) -> list[dict[str, Any]] | list[tuple]:
    try:
        return check_records(rows, source=SOURCE, labeled=labeled)
    except ContractError as exc:
        return [(p.file, p.line, p.id, p.key, p.message) for p in exc.problems]


def assert_same(rows: list[dict[str, Any]], labeled: bool = False) -> Any:
    want = via_file(rows, labeled)
    got = in_memory(rows, labeled)
    assert got == want
    # Same values and the same Python types (1 vs 1.0 vs True would serialize differently).
    if want and isinstance(want[0], dict):
        assert [{k: type(v) for k, v in r.items()} for r in got] == [{k: type(v) for k, v in r.items()} for r in want]
    return got


# -------------------------------------------------------------------------- the loader's bad cases
# The cases that are records (the rest are broken JSON text, which in-memory input cannot hold); the
# label cases also as labeled input, where a label is required.
RECORD_CASES = [(*c, False) for c in BAD_CASES if not isinstance(c[1](event(3)), str)]
RECORD_CASES += [(*c[:4], True) for c in RECORD_CASES if "label" in c[0]]


@pytest.mark.parametrize(("case", "mutate", "key", "fragment", "labeled"), RECORD_CASES,
                         ids=[c[0] + ("-labeled" if c[4] else "") for c in RECORD_CASES])
def test_each_malformed_case_gets_the_file_loader_s_problems(case, mutate, key, fragment, labeled):
    rows = [event(1), event(2), mutate(event(3)), event(4, session="asia")]
    got = assert_same(rows, labeled)
    if not case.startswith("null-") and not (case.endswith("label") and not labeled):
        # A null cell is an absent key in memory, as in a DataFrame: "required key is missing" or fine.
        assert any(p[3] == key and fragment in p[4] for p in got), got


@pytest.mark.parametrize("value, literal", [(math.inf, "Infinity"), (-math.inf, "-Infinity"),
                                            (np.float32(math.inf), "Infinity")])
def test_infinity_reads_as_the_file_s_literal(value, literal):
    got = assert_same([event(1), event(2, atr=value)])
    assert [p[1:4] for p in got] == [(2, "ev-000002", "atr")] and f"got {literal}" in got[0][4]


def test_values_a_file_cannot_hold_read_as_their_json_text():
    rows = [event(1, mgann_leg_index=np.int64(3), atr=np.float64(0.5), fvg_up=np.bool_(True)),
            event(2, timestamp=pd.Timestamp("2024-03-05T13:45:00Z")),  # str(): a space, still RFC 3339
            event(3, session=("london",)), event(4, atr=[1.0, math.inf]), event(5, symbol={1: "a", "1": "b"})]
    got = assert_same(rows)
    assert {p[1] for p in got} == {3, 4, 5}


def test_duplicate_ids_name_every_other_line():
    # Nothing else wrong: only Pandera's uniqueness check can find these.
    rows = [event(1), event(2), event(1), event(3), event(1, atr=2.0)]
    got = assert_same(rows)
    assert [p[4] for p in got if p[1] == 1] == ["duplicate id, also on lines 3, 5"], got


def test_a_frame_is_checked_as_the_file_of_its_rows():
    rows = [event(1), event(2, fvg_up=0, mgann_leg_index=2.0), {**event(3), "symbol": None}, event(4, atr=0.0)]
    frame = pd.DataFrame(rows)  # ints and None: mgann_leg_index becomes float, symbol a NaN
    with pytest.raises(ContractError) as err:
        check_frame(frame)
    assert [(p.file, p.line, p.key) for p in err.value.problems] == [(FRAME_SOURCE, 4, "atr")]
    expected = via_file(frame.to_dict(orient="records"))
    assert [(p.line, p.id, p.key, p.message) for p in err.value.problems] == [e[1:] for e in expected]
    good = frame.iloc[:3]
    assert check_frame(good) == via_file(good.to_dict(orient="records"))


def test_the_fast_verdict_passes_valid_columns_and_fails_each_value_rule():
    """check_records skips Pandera only when schema.meets_schema says the columns meet the schema; it must say
    so for valid events (or every request pays Pandera's ~20 ms) and never for a broken value."""
    def passes(rows: list[dict[str, Any]]) -> bool:
        problems: list[Any] = []
        columns, _ = contract_check.check_columns(rows, list(range(1, len(rows) + 1)), SOURCE, False, problems)
        assert not problems
        return meets_schema(contract_check.frame_schema(False), columns)

    assert passes([event(1), event(2, timestamp="2024-03-06T02:10:00+09:00")])
    for change in ({"ext_dir": 2}, {"mgann_leg_index": 101}, {"wave_strength": 1.5}, {"atr": 0.0},
                   {"session": "tokyo"}, {"label": "maybe"}, {"id": ""}, {"symbol": ""},
                   {"timestamp": "yesterday"}, {"id": "ev-000001"}):
        assert not passes([event(1), event(2, **change)]), change


# ----------------------------------------------------------------------------------------- fuzzed
@st.composite
def request_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1-4 records: valid or with one field broken, some with cells set missing, ids sometimes repeated."""
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        row = draw(st.one_of(valid_events(), broken_events().map(lambda case: case[0])))
        if draw(st.booleans()):
            row.pop("label", None)
        if draw(st.integers(0, 5)) == 0:
            row[draw(st.sampled_from(sorted(row)))] = draw(st.sampled_from([None, math.nan]))
        if rows and draw(st.integers(0, 3)) == 0:
            row["id"] = rows[0].get("id")
        rows.append(row)
    return rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_rows(), st.booleans())
def test_fuzzed_records_get_the_file_loader_s_verdict_and_problems(rows, labeled):
    assert_same(rows, labeled)


@pytest.mark.long
@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_rows(), st.booleans())
def test_many_fuzzed_records_get_the_file_loader_s_verdict_and_problems(rows, labeled):
    assert_same(rows, labeled)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_rows())
def test_fuzzed_frames_get_the_file_loader_s_verdict_and_problems(rows):
    frame = pd.DataFrame(rows)
    want = via_file(frame.to_dict(orient="records"))
    try:
        got: Any = check_frame(frame)
    except ContractError as exc:
        got = [(SOURCE, p.line, p.id, p.key, p.message) for p in exc.problems]
    assert got == want


def test_labels_are_checked_only_when_present_and_never_returned():
    rows = [event(1), {k: v for k, v in event(2).items() if k != "label"}]
    got = assert_same(rows)
    assert [r["id"] for r in got] == ["ev-000001", "ev-000002"] and all("label" not in r for r in got)
    assert set(LABELS) >= {event(1)["label"]}


def test_a_served_answer_lists_the_first_problems_then_counts_the_rest():
    from processor.serving import MAX_PROBLEMS_SHOWN, ServingError, check_events, contract_message

    rows = [event(i, session="tokyo") for i in range(1, MAX_PROBLEMS_SHOWN + 6)]
    with pytest.raises(ContractError) as err:
        check_events(rows)
    lines = contract_message(err.value.problems).splitlines()
    assert lines[0] == f"the input breaks the event contract ({MAX_PROBLEMS_SHOWN + 5} problems):"
    assert lines[1].startswith("row 1 id=ev-000001 key=session: must be one of")
    assert len(lines) == MAX_PROBLEMS_SHOWN + 2 and lines[-1] == "... and 5 more problems"
    # MLflow's scoring server assigns "Failed to predict data '<request>'. Error: ..." to .message.
    error = ServingError("\n".join(lines))
    error.message = f"Failed to predict data '{rows}'. \nError: {error.message}"
    assert error.message == "\n".join(lines) and json.loads(error.serialize_as_json())["message"] == error.message
