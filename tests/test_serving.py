"""The served model: its signature declares the contract, and every request shape a client can send to
a real ``mlflow models serve`` is answered with a clean HTTP 400 saying what was expected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from conftest import read_jsonl, tracking_at, model_server
from processor.schema import FEATURES
from processor.serving import as_frame
from processor.signature import model_signature

SERVE_MODEL = "serving-tests"
# The request keys in contract order, and the MLflow type each contract type must show as.
REQUEST_KEYS = ["id", *FEATURES, "timestamp", "symbol"]
EXPECTED_TYPES = {"id": "string", "ext_dir": "long", "int_dir": "long", "mgann_leg_index": "long",
                  "wave_strength": "double", "atr": "double", "session": "string", "timestamp": "string",
                  "symbol": "string", **{k: "boolean" for k in ("ext_choch_up", "ext_choch_down", "fvg_up",
                                                                "fvg_down", "fvg_retest", "mgann_leg_first_fvg",
                                                                "pb_wave_strength_ok")}}


def assert_contract_signature(signature: Any) -> None:
    columns = signature.inputs.to_dict()
    assert [c["name"] for c in columns] == REQUEST_KEYS
    assert {c["name"]: c["type"] for c in columns} == EXPECTED_TYPES
    assert [c["name"] for c in columns if not c["required"]] == ["timestamp", "symbol"]
    # Checked by the model: MLflow hands requests over as sent (no casts, no dropped keys).
    assert signature._is_signature_from_type_hint is True


# ------------------------------------------------------------------------------------ fast tier
def test_the_signature_declares_the_contract_keys_and_types():
    assert_contract_signature(model_signature(None))


@pytest.mark.parametrize("given, needle", [
    ([[1, 2, 3]], "inputs[0] is a list, not an event object"),
    ([], "got an empty list (no events)"),
    ("hello", "got str input"),
    ({"id": ["a", "b"], "atr": [1.0]}, "got columns of different lengths [1, 2]"),
])
def test_a_request_that_is_not_events_is_a_request_error(given, needle):
    with pytest.raises(MlflowException) as err:
        as_frame(given)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert needle in err.value.message and 'expected {"inputs": [event, ...]}' in err.value.message


def test_events_keep_their_values_as_sent():
    """No casting on the way in: the contract check must see "true", 1.5 and unknown keys."""
    frame = as_frame([{"id": "a", "fvg_up": "true", "ext_dir": 1.5, "evil": 1}, {"id": "b"}])
    assert frame.loc[0, "fvg_up"] == "true" and frame.loc[0, "ext_dir"] == 1.5 and "evil" in frame.columns
    assert list(as_frame({"id": ["a"], "atr": [2.0]})["atr"]) == [2.0]
    assert list(as_frame({"id": "a", "atr": 2.0})["id"]) == ["a"]  # one event object


# ------------------------------------------------------------------------------ real server (slow)
@pytest.fixture(scope="module")
def served(trained_run, mlflow_server, tmp_path_factory):
    """``mlflow models serve`` of the trained run's model from the registry, once for this module."""
    with tracking_at(mlflow_server) as client:
        mv = mlflow.register_model(f"runs:/{trained_run.run_id}/model", SERVE_MODEL)
        client.set_registered_model_alias(SERVE_MODEL, "champion", mv.version)
    uri = f"models:/{SERVE_MODEL}@champion"
    with model_server(uri, tmp_path_factory.mktemp("serve"), MLFLOW_TRACKING_URI=mlflow_server) as url:
        yield {"url": url, "uri": uri, "tracking": mlflow_server}


def post(url: str, body: str) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def events(sample_dir) -> list[dict[str, Any]]:
    rows = read_jsonl(sample_dir / "val.jsonl")[:3]
    return [{k: v for k, v in r.items() if k != "label"} for r in rows]


@pytest.mark.slow  # trains the session's run
def test_the_champion_s_signature_lists_the_event_features(served):
    with tracking_at(served["tracking"]):
        assert_contract_signature(mlflow.models.get_model_info(served["uri"]).signature)


PANDAS_FORMATS = "Request payload must be a dictionary with 'inputs' key"
SHAPES = {
    # name: (body built from three valid events, what the 400 must say; {id}: the first event's id)
    "tensor_inputs": (lambda ev: {"inputs": [[1, 2, 3]]}, "inputs[0] is a list, not an event object"),
    "instances": (lambda ev: {"instances": ev}, PANDAS_FORMATS),
    "split_missing_columns": (lambda ev: {"dataframe_split": {"columns": ["id", "atr"], "data": [["a", 1.0]]}},
                              PANDAS_FORMATS),
    "records": (lambda ev: {"dataframe_records": ev}, PANDAS_FORMATS),
    "columns_missing": (lambda ev: {"inputs": {"id": ["a"], "atr": [1.0]}}, "row 1 id=a key=ext_dir: required key is missing"),
    "empty_list": (lambda ev: {"inputs": []}, "got an empty list (no events)"),
    "no_inputs": (lambda ev: {}, PANDAS_FORMATS),
    "a_string": (lambda ev: {"inputs": "events"}, "got str input"),
    "huge_bounded_number": (lambda ev: {"inputs": [dict(ev[0], wave_strength=1e308)]},
                            "row 1 id={id} key=wave_strength: must be a finite number with 0 <= x <= 1"),
    "huge_integer": (lambda ev: {"inputs": [dict(ev[0], mgann_leg_index=1e308)]},
                     "row 1 id={id} key=mgann_leg_index: must be an integer"),
    # JSON has no infinity; Python's parser (MLflow's) reads an overflowing literal as one.
    "infinite_atr": (lambda ev: json.dumps({"inputs": [dict(ev[0], atr=1e308)]}).replace("1e+308", "1e999"),
                     "row 1 id={id} key=atr: must be a finite number > 0"),
    "flag_as_text_and_extra_key": (lambda ev: {"inputs": [dict(ev[0], fvg_up="true", evil=1)]},
                                   ("row 1 id={id} key=evil: unexpected key",
                                    "row 1 id={id} key=fvg_up: must be a boolean")),
    "not_json": (lambda ev: "{inputs: [", "valid JSON"),
}


@pytest.mark.slow  # trains the session's run
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_malformed_shape_gets_a_clean_400(served, events, shape):
    build, needle = SHAPES[shape]
    body = build(events)
    status, text = post(served["url"], body if isinstance(body, str) else json.dumps(body))
    assert status == 400, text
    answer = json.loads(text)
    assert "stack_trace" not in answer and answer["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"), answer
    assert "Traceback" not in text
    for want in (needle,) if isinstance(needle, str) else needle:
        assert want.format(id=events[0]["id"]) in answer["message"], answer["message"]


@pytest.mark.slow  # trains the session's run
def test_a_huge_valid_number_is_served(served, events):
    """atr has no upper bound in the contract: 1e308 is an event like any other."""
    status, text = post(served["url"], json.dumps({"inputs": [dict(events[0], atr=1e308), events[1]]}))
    assert status == 200, text
    assert [r["id"] for r in json.loads(text)["predictions"]] == [events[0]["id"], events[1]["id"]]


@pytest.mark.slow  # trains the session's run
def test_a_large_request_with_bad_rows_gets_a_short_answer_problems_first(served, events):
    """MLflow would put the whole request before the problems (Failed to predict data '...'): not here."""
    body = [dict(events[i % 3], id=f"big-{i}") for i in range(1000)]
    for i in range(950, 1000):
        body[i]["session"] = "tokyo"
    status, text = post(served["url"], json.dumps({"inputs": body}))
    assert status == 400 and len(text) < 4000, (status, len(text))
    message = json.loads(text)["message"]
    assert message.startswith("the input breaks the event contract (50 problems):\nrow 951 id=big-950 key=session")
    assert message.endswith("... and 30 more problems") and "Failed to predict" not in message


# ------------------------------------------------------------------------------------ clean output
@pytest.mark.slow  # trains the session's run
def test_loading_a_logged_model_prints_only_the_project_s_lines(trained_run, mlflow_server, events, tmp_path):
    """predict on a runs:/ URI downloads the model (MLflow's artifact bars) and loads the base
    (transformers' weight bar): neither may reach the output."""
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "processor.predict", "--model", f"runs:/{trained_run.run_id}/model",
         "--input", str(source), "--output", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server})
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert len(read_jsonl(out)) == len(events)
    for noise in ("Downloading artifacts", "Loading weights", "it/s]"):
        assert noise not in output, output
    assert f"{len(events)} predictions -> {out}" in output
