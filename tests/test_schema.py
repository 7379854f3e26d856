"""The in-code contract (processor.schema), its export in the repo (contract/), and the upstream copy
(../shared/contract, compared only when it is present)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Any

import pandas as pd
import pandera.pandas as pa
import pytest

from processor.data import load_events
from processor.schema import (
    ALL_KEYS,
    CONTRACT_VERSION,
    EXAMPLES,
    FEATURES,
    LABELS,
    OPTIONAL_KEYS,
    SESSIONS,
    contract_files,
    contract_spec,
    event_schema,
    fingerprint_of,
    is_datetime_with_offset,
    main as schema_main,
    schema_fingerprint,
    stale_contract_files,
)

from conftest import CONTRACT_DIR, UPSTREAM_CONTRACT_DIR, needs_upstream

# Each released contract version and its fingerprint. A change to contract_spec() fails
# test_contract_version_is_bumped_with_the_spec until CONTRACT_VERSION is bumped and added here.
RELEASED_FINGERPRINTS = {1: "c62f75e5b666534e0ac4ab853090f8ec6bbf7a0abd7637c4f1b7cbf52cff4e0a"}


@pytest.fixture(scope="module")
def json_schema() -> dict[str, Any]:
    return json.loads((CONTRACT_DIR / "events.schema.json").read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/"), ref
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    return _resolve(target, root)


def _normalise_json_property(prop: dict[str, Any]) -> dict[str, Any]:
    """events.schema.json property -> the vocabulary of contract_spec()['keys'] (minus required-ness)."""
    if "oneOf" in prop:
        # The flag pattern: a boolean, or an integer restricted to 0/1.
        branches = {b["type"]: b for b in prop["oneOf"]}
        assert set(branches) == {"boolean", "integer"}, prop
        assert set(branches["boolean"]) == {"type"}, prop
        return {"type": "boolean", "accepts_integers": branches["integer"]["enum"]}
    return {k: v for k, v in prop.items() if k != "description"}


def test_property_names_required_and_strictness_agree(json_schema: dict[str, Any]) -> None:
    spec = contract_spec()
    assert set(json_schema["properties"]) == set(spec["keys"]) == set(ALL_KEYS)
    assert set(json_schema["required"]) == {k for k, s in spec["keys"].items() if s["required"]}
    assert json_schema["additionalProperties"] is False
    assert spec["additional_keys"] is False
    # Feature order is part of the contract (serialization, model input): the JSON lists them in order.
    assert [k for k in json_schema["required"] if k != "id"] == list(FEATURES) == spec["features"]


@pytest.mark.parametrize("key", ALL_KEYS)
def test_each_key_agrees_with_json_schema(json_schema: dict[str, Any], key: str) -> None:
    published = _normalise_json_property(_resolve(json_schema["properties"][key], json_schema))
    ours = {k: v for k, v in contract_spec()["keys"][key].items()
            if k not in ("required", "required_when_labeled", "unique", "finite", "integral_floats")}
    assert ours == published
    kind = contract_spec()["keys"][key]["type"]
    if kind in ("integer", "boolean"):
        # JSON Schema counts 2.0 as an integer; the contract's coercion rule says the same.
        assert contract_spec()["keys"][key]["integral_floats"] is True
    if kind == "number":
        # JSON cannot carry NaN/Infinity, so the published schema implies finiteness.
        assert contract_spec()["keys"][key]["finite"] is True


def test_enums_match_constants(json_schema: dict[str, Any]) -> None:
    props = json_schema["properties"]
    assert tuple(props["label"]["enum"]) == LABELS  # class ids follow this order
    assert tuple(props["session"]["enum"]) == SESSIONS
    assert set(OPTIONAL_KEYS) | {"label"} == set(props) - set(json_schema["required"])


def test_contract_examples_validate_with_the_pandera_schema() -> None:
    df = load_events(CONTRACT_DIR / "examples.jsonl")
    assert sorted(df["label"]) == sorted(LABELS)
    event_schema(labeled=True).validate(df)  # raises if the loader's output drifts from the schema


# ------------------------------------------------------------------------- the export in contract/
def test_committed_contract_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert stale_contract_files(CONTRACT_DIR) == [], "run `python -m processor.schema --export contract`"
    assert schema_main(["--check", str(CONTRACT_DIR)]) == 0
    assert "current (contract v" in capsys.readouterr().out


def test_exported_schema_carries_version_and_a_recomputable_fingerprint(json_schema: dict[str, Any]) -> None:
    assert json_schema["x-contract-version"] == CONTRACT_VERSION
    assert json_schema["x-schema-fingerprint"] == schema_fingerprint()
    # The file alone is enough to recompute the fingerprint a run or a gate reports.
    assert fingerprint_of(json_schema["x-canonical-spec"]) == json_schema["x-schema-fingerprint"]
    assert json_schema["x-canonical-spec"] == contract_spec()


def test_contract_version_is_bumped_with_the_spec() -> None:
    assert RELEASED_FINGERPRINTS.get(CONTRACT_VERSION) == schema_fingerprint(), (
        "contract_spec() changed: bump processor.schema.CONTRACT_VERSION, add it to RELEASED_FINGERPRINTS "
        "and re-export contract/")


def test_export_cli_writes_the_files_and_check_finds_stale_ones(tmp_path, capsys) -> None:
    out = tmp_path / "contract"
    assert schema_main(["--export", str(out)]) == 0
    assert {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()} == contract_files()
    assert schema_main(["--check", str(out)]) == 0
    (out / "examples.jsonl").write_text("{}\n", encoding="utf-8")
    (out / "events.schema.json").unlink()
    capsys.readouterr()
    assert schema_main(["--check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "events.schema.json, examples.jsonl not current" in err and "--export" in err


def test_examples_file_holds_the_project_examples() -> None:
    rows = [json.loads(line) for line in (CONTRACT_DIR / "examples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == [dict(r) for r in EXAMPLES]
    assert sorted(r["label"] for r in rows) == sorted(LABELS)


# -------------------------------------------------------------------------- against upstream
@needs_upstream
def test_repo_schema_agrees_with_upstream(json_schema: dict[str, Any]) -> None:
    upstream = json.loads((UPSTREAM_CONTRACT_DIR / "events.schema.json").read_text(encoding="utf-8"))
    # Every keyword upstream states is stated identically here; ours only adds x-* and a description.
    assert {k: json_schema.get(k) for k in upstream} == upstream
    assert set(json_schema) - set(upstream) <= {"description", "x-contract-version", "x-schema-fingerprint",
                                                "x-canonical-spec"}


@needs_upstream
def test_repo_examples_equal_upstream_examples() -> None:
    ours = (CONTRACT_DIR / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    theirs = (UPSTREAM_CONTRACT_DIR / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in ours] == [json.loads(x) for x in theirs]


def test_fingerprint_is_canonical_sha256() -> None:
    spec = contract_spec()
    fp = schema_fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    expected = hashlib.sha256(
        json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    ).hexdigest()
    assert fp == expected


def _reverse_order(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reverse_order(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reverse_order(v) for v in obj]
    return obj


def test_fingerprint_ignores_dict_order_but_not_content() -> None:
    spec = contract_spec()
    assert list(_reverse_order(spec)) != list(spec)
    assert fingerprint_of(_reverse_order(spec)) == schema_fingerprint()
    changed = contract_spec()
    changed["keys"]["atr"]["exclusiveMinimum"] = 1
    assert fingerprint_of(changed) != schema_fingerprint()
    reordered_features = contract_spec()
    reordered_features["features"] = list(reversed(reordered_features["features"]))
    assert fingerprint_of(reordered_features) != schema_fingerprint()


def test_contract_spec_returns_a_copy() -> None:
    spec = contract_spec()
    spec["keys"]["session"]["enum"].append("tokyo")
    assert "tokyo" not in contract_spec()["keys"]["session"]["enum"]


def test_fingerprint_does_not_depend_on_hash_seed() -> None:
    code = "from processor.schema import schema_fingerprint; print(schema_fingerprint())"
    outputs = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(proc.stdout.strip())
    assert outputs == {schema_fingerprint()}


def test_unlabeled_schema_makes_label_optional() -> None:
    df = load_events(CONTRACT_DIR / "examples.jsonl")
    without_label = df.drop(columns="label")
    event_schema(labeled=False).validate(without_label)
    with pytest.raises((pa.errors.SchemaError, pa.errors.SchemaErrors), match="label"):
        event_schema(labeled=True).validate(without_label)


def test_schema_is_strict_and_checks_values() -> None:
    df = load_events(CONTRACT_DIR / "examples.jsonl")
    with pytest.raises((pa.errors.SchemaError, pa.errors.SchemaErrors), match="extra"):
        event_schema(labeled=True).validate(df.assign(extra=1))
    bad = df.copy()
    bad.loc[0, "session"] = "tokyo"
    bad.loc[1, "atr"] = 0.0
    with pytest.raises(pa.errors.SchemaErrors) as info:
        event_schema(labeled=True).validate(bad, lazy=True)
    failed = set(zip(info.value.failure_cases["column"], info.value.failure_cases["index"]))
    assert failed == {("session", 0), ("atr", 1)}
    wrong_dtype = df.assign(ext_dir=df["ext_dir"].astype("float64"))
    with pytest.raises((pa.errors.SchemaError, pa.errors.SchemaErrors), match="ext_dir"):
        event_schema(labeled=True).validate(wrong_dtype)
    assert isinstance(df["session"].dtype, pd.StringDtype) or df["session"].dtype == object


@pytest.mark.parametrize("value", [
    "2024-03-05T13:45:00Z", "2024-03-06T02:10:00+09:00", "2024-03-05T13:45:00.123456-05:30",
    "2024-03-05 13:45:00+00:00", "2024-03-05t13:45:00z",
])
def test_datetime_with_offset_accepts(value: str) -> None:
    assert is_datetime_with_offset(value)


@pytest.mark.parametrize("value", [
    "2024-03-05T13:45:00", "2024-03-05", "13:45:00Z", "2024-02-30T13:45:00Z", "2024-03-05T13:45:00+25:00",
    "2024-03-05T13:45Z", "yesterday", "", "2024-03-05T13:45:00+0900", " 2024-03-05T13:45:00Z",
])
def test_datetime_with_offset_rejects(value: str) -> None:
    assert not is_datetime_with_offset(value)
