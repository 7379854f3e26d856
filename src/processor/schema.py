"""The event contract (upstream: ../shared/contract/events.md), kept in code.

The upstream contract is the source of truth; this module is the project's copy of it, and
``contract/`` in the repository is this module exported as JSON Schema plus example records
(``python -m processor.schema --export contract``), so that a clone anywhere carries its contract.
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
# Bumped by hand whenever contract_spec() changes (tests/test_schema.py pins each version's fingerprint),
# so that a reader of contract/events.schema.json can tell two contracts apart without hashing.
CONTRACT_VERSION = 1

import copy
import hashlib
import json
import math
import re
from datetime import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandera.pandas as pa

from processor.cli import DataError, UserError, run

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


# Contract type -> MLflow column type (mlflow.types.DataType name). A date-time stays a string: the
# contract wants the ISO text with its offset, which MLflow's datetime type would not keep.
_SIGNATURE_TYPES = {"boolean": "boolean", "integer": "long", "number": "double", "string": "string"}


def signature_columns() -> list[dict[str, Any]]:
    """The columns of a prediction request (the contract's keys but ``label``) in MLflow's ColSpec
    JSON vocabulary: ``{"type": "long", "name": "ext_dir", "required": True}``, in contract order.

    What the registered model's signature declares (processor.serving) and what the gate compares a
    logged model's signature with; kept free of MLflow so that either can read it.
    """
    return [{"type": _SIGNATURE_TYPES[spec["type"]], "name": key, "required": bool(spec["required"])}
            for key, spec in _KEYS.items() if key != "label"]


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
    # The two checks of the schema's own are element-wise: the contract check's fast verdict runs them on
    # plain values, without building a Series per column and request.
    if spec.get("finite"):
        checks.append(pa.Check(math.isfinite, element_wise=True, error=rule))
    if "minimum" in spec and "maximum" in spec:
        checks.append(pa.Check.in_range(spec["minimum"], spec["maximum"], error=rule))
    if "exclusiveMinimum" in spec:
        checks.append(pa.Check.gt(spec["exclusiveMinimum"], error=rule))
    if "minLength" in spec:
        checks.append(pa.Check.str_length(min_value=spec["minLength"], error=rule))
    if spec.get("format") == "date-time":
        checks.append(pa.Check(is_datetime_with_offset, element_wise=True, error=rule))
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


# Pandera's built-in checks (by name) as one vectorised test over a column's non-null values, for
# meets_schema. The schema's own checks are element-wise functions, run on each value as they are.
_FAST_CHECKS: dict[str, Any] = {
    "isin": lambda v, kw: set(v) <= set(kw["allowed_values"]),
    "in_range": lambda v, kw: bool(np.all((np.asarray(v) >= kw["min_value"]) if kw["include_min"]
                                          else (np.asarray(v) > kw["min_value"]))
                                   and np.all((np.asarray(v) <= kw["max_value"]) if kw["include_max"]
                                              else (np.asarray(v) < kw["max_value"]))),
    "greater_than": lambda v, kw: bool(np.all(np.asarray(v) > kw["min_value"])),
    "greater_than_or_equal_to": lambda v, kw: bool(np.all(np.asarray(v) >= kw["min_value"])),
    "str_length": lambda v, kw: (kw["max_value"] is None and kw["exact_value"] is None
                                 and all(len(x) >= kw["min_value"] for x in v)),
}


def meets_schema(schema: pa.DataFrameSchema, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> bool:
    """True when every column (key -> values, None where absent) meets its column of ``schema``
    (presence, nulls, uniqueness, each check), read from the Pandera schema itself and run on the
    values directly; False means: let Pandera validate the frame (processor.contract_check does).

    Only a speed-up: Pandera's lazy validation costs ~20 ms per frame even when it finds nothing, and
    stays the one that decides and words every problem. A check this cannot tell (an unknown built-in)
    counts as failed, so the worst a gap here can do is cost that time, never pass a bad frame. The
    columns' dtypes are the loader's own (processor.contract_check builds the frame from DTYPES) and not re-checked."""
    for key, column in schema.columns.items():
        values = columns.get(key)
        if values is None:
            if column.required:
                return False
            continue
        if isinstance(values, np.ndarray):
            values = values.tolist()
        present = [v for v in values if v is not None]
        if len(present) != len(values) and not column.nullable:
            return False
        if column.unique and len(set(present)) != len(present):
            return False
        if not present:
            continue  # Pandera's checks skip nulls: nothing left to check
        for check in column.checks:
            if check.name in _FAST_CHECKS:
                ok = _FAST_CHECKS[check.name](present, check.statistics)
            elif check.element_wise and not check.statistics:  # the schema's own (processor.schema._checks)
                ok = all(map(check._check_fn, present))
            else:
                ok = False
            if not ok:
                return False
    return True


# ---------------------------------------------------------------------------------------- export
# The project's own example records: one per label, showing the allowed coercions (0/1 flags, 1.0 as
# an integer, optional keys present on some records only). Exported to contract/examples.jsonl.
EXAMPLES: tuple[dict[str, Any], ...] = (
    {"id": "ev-000001", "timestamp": "2024-03-05T13:45:00Z", "symbol": "EURUSD", "ext_dir": 1, "int_dir": 1,
     "ext_choch_up": True, "ext_choch_down": False, "fvg_up": True, "fvg_down": False, "fvg_retest": True,
     "mgann_leg_index": 2, "mgann_leg_first_fvg": True, "pb_wave_strength_ok": True, "wave_strength": 0.64,
     "atr": 0.00112, "session": "london", "label": "long"},
    {"id": "ev-000002", "ext_dir": -1, "int_dir": 0, "ext_choch_up": 0, "ext_choch_down": 1, "fvg_up": 0,
     "fvg_down": 1, "fvg_retest": 0, "mgann_leg_index": 1.0, "mgann_leg_first_fvg": 1, "pb_wave_strength_ok": 1,
     "wave_strength": 0.5, "atr": 12.5, "session": "new_york", "label": "short"},
    {"id": "ev-000003", "timestamp": "2024-03-06T02:10:00+09:00", "symbol": "XAUUSD", "ext_dir": 0, "int_dir": -1,
     "ext_choch_up": False, "ext_choch_down": False, "fvg_up": False, "fvg_down": False, "fvg_retest": False,
     "mgann_leg_index": 0, "mgann_leg_first_fvg": False, "pb_wave_strength_ok": False, "wave_strength": 0,
     "atr": 3.1, "session": "asia", "label": "no_trade"},
)
SCHEMA_FILE = "events.schema.json"
EXAMPLES_FILE = "examples.jsonl"
# Keywords of contract_spec()["keys"] that are plain JSON Schema; the rest (required-ness, uniqueness
# across a file, finiteness, coercions) is said elsewhere in the JSON Schema or only in x-canonical-spec.
_JSON_SCHEMA_WORDS = ("type", "enum", "minimum", "maximum", "exclusiveMinimum", "minLength", "format")


def _json_property(spec: dict[str, Any]) -> dict[str, Any]:
    if spec == _FLAG:
        return {"$ref": "#/$defs/flag"}
    if spec == _DIRECTION:
        return {"$ref": "#/$defs/direction"}
    return {k: copy.deepcopy(spec[k]) for k in _JSON_SCHEMA_WORDS if k in spec}


def json_schema() -> dict[str, Any]:
    """The contract as a JSON Schema (2020-12) document for one record.

    ``x-contract-version`` and ``x-schema-fingerprint`` identify it; ``x-canonical-spec`` is
    :func:`contract_spec` itself, so anyone can recompute the fingerprint from the file alone
    (sha256 of its canonical JSON, see :func:`fingerprint_of`). Rules JSON Schema cannot say (ids
    unique across files, ``label`` required in train/val files only) are in the description.
    """
    spec = contract_spec()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_FILE,
        "title": "Train loop v3 event record",
        "description": ("One JSON Lines record. label is required in training and validation files and "
                        "optional in prediction input. "
                        "Ids are unique within a file and across train and val. Generated by "
                        "`python -m processor.schema --export contract` -- do not edit by hand."),
        "x-contract-version": CONTRACT_VERSION,
        "x-schema-fingerprint": fingerprint_of(spec),
        "type": "object",
        "additionalProperties": spec["additional_keys"],
        "required": [k for k, s in _KEYS.items() if s["required"]],
        "$defs": {
            "flag": {"oneOf": [{"type": "boolean"}, {"type": "integer", "enum": list(_FLAG["accepts_integers"])}]},
            "direction": {"type": "integer", "enum": list(_DIRECTION["enum"])},
        },
        "properties": {key: _json_property(s) for key, s in _KEYS.items()},
        "x-canonical-spec": spec,
    }


def contract_files() -> dict[str, str]:
    """File name -> exact text of the exported contract (what ``contract/`` in the repo must hold)."""
    schema_text = json.dumps(json_schema(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    examples_text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in EXAMPLES)
    return {SCHEMA_FILE: schema_text, EXAMPLES_FILE: examples_text}


def export_contract(directory: str | Path) -> list[Path]:
    """Write :func:`contract_files` into ``directory`` (each file atomically); return the paths."""
    from processor.io import write_text_atomic

    return [write_text_atomic(Path(directory) / name, text) for name, text in contract_files().items()]


def stale_contract_files(directory: str | Path) -> list[str]:
    """Names of the exported files that are missing from ``directory`` or differ from this code."""
    stale = []
    for name, text in contract_files().items():
        path = Path(directory) / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m processor.schema",
                                description="Export the event contract (JSON Schema + example records).")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--export", metavar="DIR", help="write events.schema.json and examples.jsonl into DIR")
    group.add_argument("--check", metavar="DIR", help="exit 1 if DIR does not hold the current export")
    args = p.parse_args(argv)
    return run(lambda: _export(args.export) if args.export else _check(args.check))


def _export(directory: str) -> int:
    try:
        paths = export_contract(directory)
    except OSError as exc:
        raise UserError(f"cannot write {directory}: {exc}") from None
    print(f"contract v{CONTRACT_VERSION} (fingerprint {schema_fingerprint()[:12]}) -> "
          + ", ".join(str(x) for x in paths))
    return 0


def _check(directory: str) -> int:
    stale = stale_contract_files(directory)
    if stale:
        raise DataError(f"{directory}: {', '.join(stale)} not current; run "
                        f"`python -m processor.schema --export {directory}`")
    print(f"{directory}: current (contract v{CONTRACT_VERSION}, fingerprint {schema_fingerprint()[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
