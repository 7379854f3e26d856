"""The event contract (../shared/contract/events.md), kept in code.

The contract is the source of truth; this module is the project's copy of it.
"""

from __future__ import annotations

# The 13 feature keys, in contract order.
FEATURES: tuple[str, ...] = (
    "ext_dir", "int_dir", "ext_choch_up", "ext_choch_down", "fvg_up", "fvg_down", "fvg_retest",
    "mgann_leg_index", "mgann_leg_first_fvg", "pb_wave_strength_ok", "wave_strength", "atr", "session",
)
# Class ids follow this order everywhere (model head, confusion matrix rows, metrics).
LABELS: tuple[str, ...] = ("long", "short", "no_trade")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
SESSIONS: tuple[str, ...] = ("asia", "london", "new_york")
OPTIONAL_KEYS: tuple[str, ...] = ("timestamp", "symbol")

import copy
import hashlib
import json
import re
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

# Every key a record may carry: id first, then the features, then the other optional keys.
ALL_KEYS: tuple[str, ...] = ("id", *FEATURES, "label", *OPTIONAL_KEYS)

# Canonical description of the contract, in JSON-Schema vocabulary so it can be compared key by key
# with events.schema.json. Only ints, strings, bools and lists appear, so the JSON dump behind
# schema_fingerprint() is byte-identical on every Python version. Everything below (the Pandera schema,
# the loader's per-record type checks, the test strategies) is derived from this one table.

# Flags: JSON true/false, or the integers 0/1 -- and, as for every integer in JSON Schema, 0.0/1.0.
_FLAG: dict[str, Any] = {"type": "boolean", "required": True, "accepts_integers": [0, 1], "integral_floats": True}
_DIRECTION: dict[str, Any] = {"type": "integer", "required": True, "enum": [-1, 0, 1], "integral_floats": True}
_KEYS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "required": True, "minLength": 1, "unique": True},
    "ext_dir": _DIRECTION,
    "int_dir": _DIRECTION,
    "ext_choch_up": _FLAG,
    "ext_choch_down": _FLAG,
    "fvg_up": _FLAG,
    "fvg_down": _FLAG,
    "fvg_retest": _FLAG,
    "mgann_leg_index": {"type": "integer", "required": True, "minimum": 0, "maximum": 100,
                        "integral_floats": True},
    "mgann_leg_first_fvg": _FLAG,
    "pb_wave_strength_ok": _FLAG,
    "wave_strength": {"type": "number", "required": True, "minimum": 0, "maximum": 1, "finite": True},
    "atr": {"type": "number", "required": True, "exclusiveMinimum": 0, "finite": True},
    "session": {"type": "string", "required": True, "enum": list(SESSIONS)},
    # Required only in labeled files (train/val); validated whenever present.
    "label": {"type": "string", "required": False, "required_when_labeled": True, "enum": list(LABELS)},
    "timestamp": {"type": "string", "required": False, "format": "date-time"},
    "symbol": {"type": "string", "required": False, "minLength": 1},
}

# Pandas dtypes of the loaded frame. Optional string columns stay object so that a missing value is None.
DTYPES: dict[str, str] = {
    "line": "int64",
    **{k: {"boolean": "bool", "integer": "int64", "number": "float64", "string": "str"}[s["type"]]
       for k, s in _KEYS.items()},
    "timestamp": "object",
    "symbol": "object",
}

# RFC 3339 date-time (what JSON Schema's "date-time" format means): seconds required, offset required.
_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def contract_spec() -> dict[str, Any]:
    """The canonical, JSON-serialisable description of the event contract.

    ``features`` and ``labels`` are ordered (feature order and class ids matter); ``keys`` maps every
    allowed key to its type, required-ness and allowed values/ranges. A gate can diff two of these.
    """
    return {
        "contract": "events",
        "format": "jsonl",
        "features": list(FEATURES),
        "labels": list(LABELS),
        "additional_keys": False,
        "nullable_keys": [],
        "keys": copy.deepcopy(_KEYS),
    }


def fingerprint_of(spec: dict[str, Any]) -> str:
    """sha256 (hex) of a contract description, canonically JSON-encoded (sorted keys, no whitespace,
    ASCII): independent of dict insertion order and of the Python version."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def schema_fingerprint() -> str:
    """Fingerprint of this code's contract (:func:`contract_spec`); store it with models and data reports."""
    return fingerprint_of(contract_spec())


def is_datetime_with_offset(value: str) -> bool:
    """True when ``value`` is an RFC 3339 / ISO-8601 date-time with a UTC offset (``Z`` or ``+09:00``)."""
    if not isinstance(value, str) or not _DATETIME_RE.fullmatch(value):
        return False
    try:
        # The regex pins the shape; fromisoformat rejects impossible dates and offsets (Feb 30, +25:00).
        datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def describe_rule(key: str) -> str:
    """What the contract allows for ``key``, phrased for error messages ("must be ...")."""
    spec = _KEYS[key]
    kind = spec["type"]
    if "enum" in spec:
        return "must be one of " + ", ".join(json.dumps(v) for v in spec["enum"])
    if kind == "boolean":
        return "must be a boolean (true/false, or 0/1)"
    if kind == "integer":
        return f"must be an integer with {spec['minimum']} <= x <= {spec['maximum']}"
    if kind == "number":
        if "exclusiveMinimum" in spec:
            return f"must be a finite number > {spec['exclusiveMinimum']}"
        return f"must be a finite number with {spec['minimum']} <= x <= {spec['maximum']}"
    if spec.get("format") == "date-time":
        return "must be an ISO-8601 date-time with UTC offset, e.g. 2024-03-05T13:45:00Z or +09:00"
    if "minLength" in spec:
        return "must be a non-empty string"
    return "must be a string"


def _checks(key: str) -> list[pa.Check]:
    """Pandera checks for the value rules of ``key``; each check's error text is the user-facing message."""
    spec = _KEYS[key]
    rule = describe_rule(key)
    checks: list[pa.Check] = []
    if "enum" in spec:
        checks.append(pa.Check.isin(spec["enum"], error=rule))
    if spec.get("finite"):
        checks.append(pa.Check(lambda s: pd.Series(np.isfinite(s.to_numpy()), index=s.index), error=rule))
    if "minimum" in spec and "maximum" in spec:
        checks.append(pa.Check.in_range(spec["minimum"], spec["maximum"], error=rule))
    if "exclusiveMinimum" in spec:
        checks.append(pa.Check.gt(spec["exclusiveMinimum"], error=rule))
    if "minLength" in spec:
        checks.append(pa.Check.str_length(min_value=spec["minLength"], error=rule))
    if spec.get("format") == "date-time":
        checks.append(pa.Check(lambda s: s.map(is_datetime_with_offset).astype(bool), error=rule))
    return checks


def event_schema(labeled: bool) -> pa.DataFrameSchema:
    """The contract as a Pandera schema for a frame produced by :func:`processor.data.load_events`.

    Strict: no columns beyond the contract's keys plus the loader's ``line`` bookkeeping column.
    ``labeled=True`` (train/val files): ``label`` is required. ``labeled=False`` (prediction input,
    "the same records without label"): ``label`` is optional; when a file still carries labels they
    must be valid -- the JSON Schema allows ``label`` on every record -- and the loader then drops them.

    Type rules that a pandas frame can no longer express (JSON ``true`` vs ``1`` vs ``"true"``,
    ``2.0`` vs ``2.5``, a missing key vs ``null``) are enforced record by record by the loader; this
    schema pins the resulting dtypes and checks values (ranges, categories, uniqueness, formats).
    """
    columns: dict[str, pa.Column] = {
        "line": pa.Column("int64", pa.Check.ge(1), required=False),
    }
    for key, spec in _KEYS.items():
        required = bool(spec["required"] or (labeled and spec.get("required_when_labeled")))
        columns[key] = pa.Column(
            DTYPES[key] if DTYPES[key] != "object" else str,
            _checks(key),
            nullable=not required,
            required=required,
            unique=bool(spec.get("unique")),
            report_duplicates="all",
        )
    return pa.DataFrameSchema(columns, strict=True, ordered=False, name="events" + ("" if labeled else "-unlabeled"))
