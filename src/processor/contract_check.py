"""The event contract's check (../shared/contract/events.md) of parsed records, located to file, line,
id and key, so that every problem of a file or a request is reported at once.

Two passes:

1. Record by record, only what a DataFrame can no longer tell apart: JSON syntax, NaN/Infinity
   literals, missing vs extra keys, ``null``, and the JSON type of each value (``true`` vs ``1`` vs
   ``"true"``; ``2.0`` vs ``2.5``; ``bool`` is a subclass of ``int`` in Python, so ``true`` is caught
   explicitly). These checks run column-wise with a fast path when a whole column has the right type.
2. Pandera (``processor.schema.event_schema``), lazily on the whole frame: ranges, categories,
   formats, uniqueness of ids, strictness and the output dtypes. A frame in which a quick pass over
   the same schema (``processor.schema.meets_schema``) finds nothing wrong skips it (~20 ms).

Cells that failed pass 1 are filled with a valid placeholder before pass 2, so one wrong cell is
reported once and does not hide problems in the other columns of its row.

Files are read by :mod:`processor.data`; :func:`check_records` checks in-memory rows (a request's
events, a DataFrame) exactly as the file loader checks the same records.
"""

from __future__ import annotations

import functools
import json
import math
from itertools import repeat
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from processor.cli import DataError
from processor.schema import (ALL_KEYS, DTYPES, FEATURES, contract_spec, describe_rule, event_schema,
                              meets_schema)

__all__ = [
    "ContractError",
    "Problem",
    "build_frame",
    "check_columns",
    "check_records",
    "frame_schema",
    "parse_lines",
    "schema_problems",
    "sort_problems",
]

_SPEC: dict[str, dict[str, Any]] = contract_spec()["keys"]
_MISSING = object()
_INT64_MAX = 2**63 - 1
_MAX_SHOWN = 50  # problems printed by str(ContractError); .problems always holds all of them


@dataclass(frozen=True)
class Problem:
    """One contract violation, located as precisely as the input allows."""

    file: str
    line: int | None
    id: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file if self.line is None else f"{self.file}:{self.line}"]
        if self.id is not None:
            # Quote ids that would otherwise blur into the rest of the line.
            shown = self.id if self.id.isprintable() and " " not in self.id else json.dumps(self.id)
            parts.append(f"id={shown}")
        if self.key is not None:
            parts.append(f"key={self.key}")
        return " ".join(parts) + ": " + self.message

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with keys file, line, id, key, message (for JSON reports)."""
        return asdict(self)


class ContractError(DataError):
    """Data that break the contract. ``.problems`` holds every problem found (sorted by file order, line)."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(self.report())

    def report(self, max_shown: int | None = _MAX_SHOWN) -> str:
        """Human-readable report; shows at most ``max_shown`` problems (None: all) plus a count."""
        n = len(self.problems)
        files = len({p.file for p in self.problems})
        head = f"{n} problem{'s' if n != 1 else ''} in {files} file{'s' if files != 1 else ''} " \
               "(the data do not meet the event contract):"
        shown = self.problems if max_shown is None else self.problems[:max_shown]
        lines = [head, *(f"  {p}" for p in shown)]
        if len(shown) < n:
            lines.append(f"  ... and {n - len(shown)} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


# ---------------------------------------------------------------------------------------------- parsing


class _NonFinite:
    """Stand-in for a NaN/Infinity literal: parsed, so that the problem is reported with its key."""

    __slots__ = ("literal",)

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


class _DuplicateKey(ValueError):
    pass


def _pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicated keys silently; a record saying two things is an error.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return obj


_JSON_WS = " \t\r\n"  # JSON's whitespace; str.strip() alone would also eat e.g. NBSP
_DECODER = json.JSONDecoder(parse_constant=_NonFinite, object_pairs_hook=_pairs_to_dict)


def parse_lines(lines: list[tuple[int, str]], file: str, problems: list[Problem]) -> tuple[list[dict], list[int]]:
    """The JSON object of each (line number, text) and its line number; a line that is not one JSON object
    (syntax, a key twice, nesting, not an object) becomes a problem instead. NaN/Infinity parse, to be
    reported with their key."""
    recs: list[dict] = []
    line_nos: list[int] = []
    decode = _DECODER.decode
    scan = _DECODER.scan_once
    for no, text in lines:
        try:
            # Fast path: the C scanner on the stripped line skips json's per-call Python overhead.
            # Anything unusual (error, trailing data) goes through decode() for the exact message.
            body = text.strip(_JSON_WS)
            try:
                obj, end = scan(body, 0)
                ok = end == len(body)
            except (StopIteration, json.JSONDecodeError):
                ok = False
            if not ok:
                obj = decode(text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, no, None, None, f"invalid JSON: {exc.msg} (column {exc.colno})"))
            continue
        except _DuplicateKey as exc:
            problems.append(Problem(file, no, None, str(exc), "key appears more than once in the record"))
            continue
        except RecursionError:
            problems.append(Problem(file, no, None, None, "invalid JSON: nested too deeply"))
            continue
        except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
            problems.append(Problem(file, no, None, None, f"invalid JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(file, no, None, None,
                                    f"each line must be a JSON object, got {_json_type(obj)}"))
            continue
        recs.append(obj)
        line_nos.append(no)
    return recs, line_nos


# ------------------------------------------------------------------------------------- per-record checks


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, _NonFinite)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any) -> str:
    """A value as it appeared in JSON (true, null, "x", 2.5), shortened for reports."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fill_value(key: str, line: int) -> Any:
    """A valid stand-in for a cell already reported, so Pandera does not report it a second time."""
    spec = _SPEC[key]
    if key == "id":
        return f"\x00<no valid id on line {line}>"  # unique, so uniqueness is not disturbed
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec["type"]
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        value = spec.get("minimum", spec.get("exclusiveMinimum", -1) + 1)
        return float(value) if kind == "number" else int(value)
    return None


def _check_int(v: Any) -> tuple[bool, Any]:
    t = type(v)
    if t is int:
        return (-_INT64_MAX <= v <= _INT64_MAX), v
    if t is float and math.isfinite(v) and v.is_integer() and abs(v) <= _INT64_MAX:
        return True, int(v)
    return False, None


def _check_column(key: str, values: Sequence[Any], required: bool, line_nos: list[int],
                  bad: list[tuple[int, str]]) -> Sequence[Any] | np.ndarray:
    """Check the JSON types of one column; append (row, message) to ``bad``; return cleaned values.

    Missing keys are skipped here (reported once by the key check); cleaned values of bad cells are
    valid placeholders.
    """
    kind = _SPEC[key]["type"]
    fast = _fast_column(kind, values)
    if fast is not None:
        return fast
    rule = describe_rule(key)
    out: list[Any] = []
    for row, v in enumerate(values):
        if v is _MISSING:
            out.append(_fill_value(key, line_nos[row]) if required else None)
            continue
        clean, msg = _check_value(kind, rule, v)
        if msg is None:
            out.append(clean)
        else:
            bad.append((row, msg))
            out.append(_fill_value(key, line_nos[row]))
    return out


def _fast_column(kind: str, values: Sequence[Any]) -> Sequence[Any] | np.ndarray | None:
    """The column as is or as an array when every value has an allowed JSON type and value, with no
    per-value Python work; None otherwise (None and the _MISSING marker always fall through)."""
    types = set(map(type, values))
    if kind == "boolean" and types <= {bool, int, float} and set(values) <= {0, 1}:
        # True == 1 == 1.0 in Python sets, so this admits exactly true/false, 0/1 and 0.0/1.0.
        return np.asarray(values, dtype=bool)
    if kind == "string" and types == {str}:
        return values
    if kind == "number" and types <= {float, int}:
        try:
            return np.asarray(values, dtype=np.float64)
        except OverflowError:
            return None  # an integer too big for a float; the per-value path says which
    if kind == "integer" and types <= {float, int}:
        if types == {int}:
            if -_INT64_MAX <= min(values) and max(values) <= _INT64_MAX:
                return np.asarray(values, dtype=np.int64)
            return None
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError:
            return None
        # Below 2**53 a float holds every integer exactly, so 2.0 -> 2 loses nothing.
        if np.isfinite(arr).all() and (arr == np.trunc(arr)).all() and np.abs(arr).max() < 2.0**53:
            return arr.astype(np.int64)
    return None


def _check_value(kind: str, rule: str, v: Any) -> tuple[Any, str | None]:
    """One present value of a column of JSON type ``kind``: (cleaned value, None), or (None, what was
    wrong, after ``rule``)."""
    t = type(v)
    if kind == "boolean":
        if t is bool:
            return v, None
        if (t is int or t is float) and v in (0, 1):
            return bool(v), None
    elif kind == "integer":
        ok, clean = _check_int(v)
        if ok:
            return clean, None
        if t is int or (t is float and math.isfinite(v) and v.is_integer()):
            return None, f"{rule}, got {_show(v)} (out of range)"
    elif kind == "number":
        if t is float:
            return v, None
        if t is int:
            try:
                return float(v), None
            except OverflowError:
                return None, f"{rule}, got {_show(v)} (too large)"
    elif kind == "string" and t is str:
        return v, None
    if v is None:
        return None, "must not be null"
    if t is _NonFinite:
        return None, f"{rule}, got {v.literal} (NaN and Infinity are not allowed)"
    if kind == "integer" and t is float:
        return None, f"{rule}, got {_show(v)} ({'not an integer' if math.isfinite(v) else 'not finite'})"
    if kind in ("integer", "number") and t is bool:
        return None, f"{rule}, got boolean {_show(v)} (booleans are not numbers)"
    return None, f"{rule}, got {_json_type(v)} {_show(v)}"


def check_columns(recs: Sequence[Mapping[str, Any]], line_nos: list[int], file: str, labeled: bool,
                   problems: list[Problem]) -> tuple[dict[str, Sequence[Any] | np.ndarray], list[str | None]]:
    """Pass 1 over parsed records: keys, then each column's JSON types (problems appended). Returns the
    cleaned columns (bad cells hold placeholders) and each record's id (None where not a usable id)."""
    ids: list[str | None] = [v if type(v) is str and v else None for v in (r.get("id") for r in recs)]
    required = {k for k, s in _SPEC.items() if s["required"] or (labeled and s.get("required_when_labeled"))}
    allowed = set(ALL_KEYS)
    for row, rec in enumerate(recs):
        keys = rec.keys()
        if keys >= required and keys <= allowed:
            continue
        for key in sorted(required - keys, key=ALL_KEYS.index):
            problems.append(Problem(file, line_nos[row], ids[row], key, "required key is missing"))
        for key in sorted(keys - allowed):
            problems.append(Problem(file, line_nos[row], ids[row], key,
                                    "unexpected key (the contract allows no extra keys)"))

    # Transpose records into columns in one pass (about twice as fast as one dict.get pass per key).
    missing = repeat(_MISSING)  # endless: map() stops at the end of ALL_KEYS
    table = zip(*[tuple(map(r.get, ALL_KEYS, missing)) for r in recs])
    columns: dict[str, Sequence[Any] | np.ndarray] = {}
    for key, values in zip(ALL_KEYS, table):
        if key == "label" and not labeled and all(v is _MISSING for v in values):
            continue  # prediction input without labels: nothing to check
        bad: list[tuple[int, str]] = []
        columns[key] = _check_column(key, values, key in required, line_nos, bad)
        problems.extend(Problem(file, line_nos[row], ids[row], key, msg) for row, msg in bad)
    return columns, ids


# ------------------------------------------------------------------------------------- the frame's pass


def build_frame(columns: dict[str, Sequence[Any] | np.ndarray], line_nos: list[int]) -> pd.DataFrame:
    """The checked columns as a frame in the contract's dtypes, with each record's line."""
    data: dict[str, Any] = {"line": np.asarray(line_nos, dtype=np.int64)}
    for key, values in columns.items():
        dtype = DTYPES[key]
        if dtype in ("object", "str"):
            data[key] = pd.Series(values, dtype=dtype)
        else:
            data[key] = np.asarray(values, dtype=dtype)
    return pd.DataFrame(data)


@functools.cache
def frame_schema(labeled: bool) -> pa.DataFrameSchema:
    return event_schema(labeled)


def schema_problems(frame: pd.DataFrame, labeled: bool, file: str, ids: list[str | None]) -> list[Problem]:
    """Pass 2: Pandera's failures on the frame, each located to its line and the record's id."""
    try:
        frame_schema(labeled).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    lines = frame["line"].to_numpy()
    dup_lines: dict[str, list[int]] = {}
    if (cases["check"] == "field_uniqueness").any():
        dupes = frame.loc[frame["id"].duplicated(keep=False), ["id", "line"]]
        for rid, line in zip(dupes["id"], dupes["line"]):
            dup_lines.setdefault(rid, []).append(int(line))
    problems: list[Problem] = []
    for context, column, check, value, index in zip(cases["schema_context"], cases["column"], cases["check"],
                                                    cases["failure_case"], cases["index"]):
        key = None if context == "DataFrameSchema" or pd.isna(column) else str(column)
        if index is None or pd.isna(index):
            # Column-level failures (dtype, strictness) would be a bug in build_frame, not in the data;
            # still reported rather than swallowed.
            problems.append(Problem(file, None, None, key, f"{check}: {value}"))
            continue
        row = int(index)
        line = int(lines[row])
        if check == "field_uniqueness":
            others = [str(n) for n in dup_lines.get(value, []) if n != line]
            msg = (f"duplicate id, also on line{'s' if len(others) > 1 else ''} {', '.join(others)}"
                   if others else "duplicate id")
        else:
            msg = f"{check}, got {_show(value.item() if hasattr(value, 'item') else value)}"
        problems.append(Problem(file, line, ids[row], key, msg))
    return problems


def sort_problems(problems: list[Problem]) -> list[Problem]:
    """In file order: by line, then by the key's place in the contract (whole-record problems first)."""
    order = {k: i for i, k in enumerate(ALL_KEYS)}
    return sorted(problems, key=lambda p: (p.line or 0, order.get(p.key or "", -1 if p.key is None else 99),
                                           p.key or "", p.message))


# ------------------------------------------------------------------------------------------- in memory


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _json_default(value: Any) -> Any:
    # DataFrames hold numpy scalars and timestamps; the contract judges their JSON form.
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        return value.item()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def check_records(rows: Sequence[Mapping[str, Any]], *, source: str, labeled: bool = False
                  ) -> list[dict[str, Any]]:
    """Check in-memory events (a request's event objects, a DataFrame's rows) against the contract,
    exactly as :func:`processor.data.load_events` checks the JSONL file holding the same records, one per line, and
    return them as ``[{"id", *FEATURES}]`` with plain Python values. No file is written.

    Each row stands for the JSON record it would be written as: a missing cell (``None``, NaN, ``pd.NA``)
    is an absent key, as a DataFrame shows a key some records lack. Rows of plain JSON values (str,
    bool, int, finite float) are checked as they are; a row holding anything else (numpy scalars,
    Infinity, timestamps, lists, ...) goes through its JSON text and the file loader's parser, so it
    reads exactly as from the file. Raises :class:`ContractError`; each problem's ``file`` is
    ``source`` and its ``line`` the 1-based row position.
    """
    problems: list[Problem] = []
    recs: list[Mapping[str, Any]] = []
    line_nos: list[int] = []
    odd: list[tuple[int, str]] = []
    for no, row in enumerate(rows, start=1):
        rec = {}
        for key, v in row.items():
            t = type(v)
            if t is str or t is bool or t is int or (t is float and math.isfinite(v)):
                rec[key] = v
            elif not _is_missing(v):
                break
        else:
            recs.append(rec)
            line_nos.append(no)
            continue
        record = {k: v for k, v in row.items() if not _is_missing(v)}
        odd.append((no, json.dumps(record, default=_json_default, ensure_ascii=False, allow_nan=True)))
    if odd:
        parsed, parsed_nos = parse_lines(odd, source, problems)
        merged = sorted(zip([*line_nos, *parsed_nos], [*recs, *parsed]), key=lambda pair: pair[0])
        line_nos, recs = [n for n, _ in merged], [r for _, r in merged]
    if not recs:
        if not problems:
            problems.append(Problem(source, None, None, None, "no records"))
        raise ContractError(sort_problems(problems))
    columns, ids = check_columns(recs, line_nos, source, labeled, problems)
    if problems or not meets_schema(frame_schema(labeled), columns):
        problems.extend(schema_problems(build_frame(columns, line_nos), labeled, source, ids))
    if problems:
        raise ContractError(sort_problems(problems))
    out = [columns[k].tolist() if isinstance(columns[k], np.ndarray) else columns[k] for k in ("id", *FEATURES)]
    return [dict(zip(("id", *FEATURES), values)) for values in zip(*out)]
