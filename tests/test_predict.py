"""Prediction and serving: the contract check of DataFrames, the batch CLI (zip and registry URIs),
``mlflow.pyfunc.load_model(...).predict`` and a real ``mlflow models serve`` answering HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from conftest import CONTRACT_DIR, read_jsonl, run_modules, tracking_at
from processor.contract_check import ContractError
from processor.data import load_events
from processor.predict import FRAME_SOURCE, check_frame, main
from processor.schema import FEATURES, LABELS

CONTRACT_EXAMPLES = CONTRACT_DIR / "examples.jsonl"
PREDICT_MODEL = "predict-tests"
PROB_KEYS = [f"p_{name}" for name in LABELS]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def champion_uri(trained_run, mlflow_server) -> str:
    """The trained run's pyfunc model registered with alias champion (directly: the gate has its own tests)."""
    with tracking_at(mlflow_server) as client:
        mv = mlflow.register_model(f"runs:/{trained_run.run_id}/model", PREDICT_MODEL)
        client.set_registered_model_alias(PREDICT_MODEL, "champion", mv.version)
    return f"models:/{PREDICT_MODEL}@champion"


@pytest.fixture(scope="session")
def events_file(sample_dir, tmp_path_factory) -> Path:
    """40 validation events without labels, one with the optional keys."""
    rows = [json.loads(line) for line in (sample_dir / "val.jsonl").read_text(encoding="utf-8").splitlines()[:40]]
    for row in rows:
        row.pop("label", None)
    rows[0].update(timestamp="2024-03-05T13:45:00Z", symbol="EURUSD")
    path = tmp_path_factory.mktemp("predict-input") / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def expected_rows(trained_run, path: Path) -> list[dict[str, Any]]:
    """The rows every path must return for ``path``, computed by hand (not by packaged.predict, which
    would share a wrong formula with the paths): the in-memory trained model's logits one event at a
    time, softmax((logits + prior bias) / temperature) with the zip's numbers, abstention below its
    min_confidence."""
    import zipfile

    import numpy as np
    from scipy.special import softmax

    import shipped
    from processor.serialize import Serializer

    with zipfile.ZipFile(trained_run.zip_path) as zf:
        serving = json.loads(zf.read("serving.json"))
    events = load_events(path, labeled=False)[["id", *FEATURES]].to_dict(orient="records")
    texts = Serializer.from_dict(serving["serialization"]).render_all(events)
    logits = shipped.hand_logits(trained_run.model, trained_run.tokenizer, texts, serving["max_length"])
    bias = (serving.get("prior_correction") or {}).get("logit_bias") or 0.0
    probs = softmax((logits + np.asarray(bias)) / serving["calibration"]["temperature"], axis=1)
    floor = serving.get("min_confidence")
    rows = []
    for event, p in zip(events, probs):
        abstained = floor is not None and p.max() < floor
        rows.append({"id": event["id"], "label": "no_trade" if abstained else LABELS[int(p.argmax())],
                     **{k: float(v) for k, v in zip(PROB_KEYS, p)}, "abstained": bool(abstained)})
    return rows


def assert_same_predictions(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["label"] for r in got] == [r["label"] for r in want]
    for g, w in zip(got, want):
        assert set(g) == {"id", "label", *PROB_KEYS, "abstained"}
        assert bool(g["abstained"]) is w["abstained"]
        assert [g[k] for k in PROB_KEYS] == pytest.approx([w[k] for k in PROB_KEYS], abs=1e-5)
        assert sum(g[k] for k in PROB_KEYS) == pytest.approx(1.0, abs=1e-5)
        assert g["label"] == LABELS[max(range(3), key=lambda i: g[PROB_KEYS[i]])]


# ---------------------------------------------------------------------------------------- check_frame
def test_check_frame_accepts_what_the_file_loader_accepts():
    records = [json.loads(line) for line in CONTRACT_EXAMPLES.read_text(encoding="utf-8").splitlines()]
    frame = pd.DataFrame(records)  # 0/1 flags, 1.0 as an int, optional keys missing on some rows
    got = check_frame(frame)
    want = load_events(CONTRACT_EXAMPLES, labeled=False)[["id", *FEATURES]].to_dict(orient="records")
    assert got == want
    assert all(type(r["ext_choch_up"]) is bool and type(r["mgann_leg_index"]) is int for r in got)


def test_check_frame_names_row_and_key_of_every_problem():
    records = [json.loads(line) for line in CONTRACT_EXAMPLES.read_text(encoding="utf-8").splitlines()]
    frame = pd.DataFrame(records).drop(columns="label")
    frame.loc[1, "atr"] = -1.0
    frame.loc[2, "session"] = "tokyo"
    frame.loc[0, "wave_strength"] = None  # a missing cell = an absent key
    with pytest.raises(ContractError) as err:
        check_frame(frame)
    found = {(p.file, p.line, p.id, p.key) for p in err.value.problems}
    assert found == {(FRAME_SOURCE, 1, "ev-000001", "wave_strength"), (FRAME_SOURCE, 2, "ev-000002", "atr"),
                     (FRAME_SOURCE, 3, "ev-000003", "session")}
    assert "dataframe row:2 id=ev-000002 key=atr" in str(err.value)


def test_check_frame_rejects_extra_columns_and_empty_frames():
    frame = pd.DataFrame([json.loads(CONTRACT_EXAMPLES.read_text(encoding="utf-8").splitlines()[0])])
    frame["extra"] = 1
    with pytest.raises(ContractError, match="key=extra: unexpected key"):
        check_frame(frame)
    with pytest.raises(ContractError, match="no events"):
        check_frame(frame.iloc[:0])


# --------------------------------------------------------------------------------------- predict CLI
@pytest.mark.slow  # trains the session's run
def test_predict_cli_with_the_zip_ships_the_hand_computed_rows(trained_run, events_file, tmp_path):
    out = tmp_path / "sub" / "preds.jsonl"
    assert main(["--model", str(trained_run.zip_path), "--input", str(events_file), "--output", str(out),
                 "--batch-size", "16"]) == 0
    assert_same_predictions(read_jsonl(out), expected_rows(trained_run, events_file))


@pytest.mark.slow  # trains the session's run
def test_bad_input_is_exit_1_with_line_numbers_and_no_output(trained_run, events_file, tmp_path, capsys):
    lines = events_file.read_text(encoding="utf-8").splitlines()
    bad3, bad5 = json.loads(lines[2]), json.loads(lines[4])
    bad3["atr"] = -2
    del bad5["session"]
    lines[2], lines[4] = json.dumps(bad3), json.dumps(bad5)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "preds.jsonl"
    assert main(["--model", str(trained_run.zip_path), "--input", str(bad), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3 id={bad3['id']} key=atr" in err
    assert f"{bad}:5 id={bad5['id']} key=session: required key is missing" in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


@pytest.mark.slow  # trains the session's run
def test_predict_usage_errors_are_exit_2_without_traceback(trained_run, events_file, tmp_path):
    import zipfile

    out = tmp_path / "preds.jsonl"
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(trained_run.zip_path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            blob = src.read(name)
            dst.writestr(name, blob + b" " if name == "label_map.json" else blob)
    cases = {
        "no such file": ["--model", str(tmp_path / "missing.zip"), "--input", str(events_file)],
        "missing.jsonl: no such file": ["--model", str(trained_run.zip_path), "--input", str(tmp_path / "missing.jsonl")],
        "label_map.json: sha256 does not match": ["--model", str(tampered), "--input", str(events_file)],
        "expected a positive integer": ["--model", str(trained_run.zip_path), "--input", str(events_file),
                                        "--batch-size", "0"],
    }
    # `python -m processor.predict` once per case, the four in one child interpreter (conftest.run_modules).
    procs = run_modules(*[["processor.predict", *args, "--output", str(out)] for args in cases.values()], timeout=300)
    for (needle, args), proc in zip(cases.items(), procs):
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()


# -------------------------------------------------------------------------------- registry and serving
@pytest.mark.slow  # trains the session's run
def test_pyfunc_model_from_the_registry_predicts_dataframes(tracking, champion_uri, trained_run, events_file):
    model = mlflow.pyfunc.load_model(champion_uri)
    frame = load_events(events_file, labeled=False)[["id", *FEATURES]]
    got = model.predict(frame)
    assert isinstance(got, pd.DataFrame)
    assert_same_predictions(got.to_dict(orient="records"), expected_rows(trained_run, events_file))
    bad = frame.head(3).copy()
    bad.loc[1, "session"] = "tokyo"
    with pytest.raises(MlflowException, match=r"\nrow 2 id=\S+ key=session: must be one of") as err:
        model.predict(bad)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


# Run where `processor` cannot be imported: every sys.path entry holding it (the editable install's
# src/) is dropped before anything else is imported. What the model needs must come with the model.
ISOLATED_PREDICT = r"""
import importlib.util, json, sys
from pathlib import Path

at_start = {name.split(".")[0] for name in sys.modules}  # the interpreter's own (site, .pth hooks)
sys.path[:] = [p for p in sys.path if not (Path(p or ".").resolve() / "processor").is_dir()]
assert importlib.util.find_spec("processor") is None, "processor is still importable"
import mlflow
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
frame = pd.DataFrame(json.loads(Path(sys.argv[2]).read_text(encoding="utf-8")))
rows = model.predict(frame).to_dict(orient="records")
loaded = {name.split(".")[0] for name in sys.modules} - at_start - {"processor"}  # processor: the model's copy
print(json.dumps({"rows": rows, "processor_file": sys.modules["processor"].__file__, "modules": sorted(loaded)}))
"""


def _requirement_closure(requirements: list[str]) -> set[str]:
    """Distribution names in ``requirements`` and everything they (optionally) depend on."""
    import importlib.metadata as md
    import re

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    seen: set[str] = set()
    todo = [re.split(r"[=<>!~; \[]", r, maxsplit=1)[0] for r in requirements]
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            deps = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        # Optional extras count too: a library may import an optional dependency only when it is
        # installed (pandera imports hypothesis for its data strategies), and then it is not needed.
        todo.extend(re.split(r"[=<>!~; \[(]", d, maxsplit=1)[0] for d in deps)
    return seen


@pytest.mark.slow
def test_registered_model_loads_and_predicts_without_the_project(tracking, champion_uri, trained_run, events_file,
                                                                 tmp_path):
    """The champion in a process where `processor` is not importable and every cache is empty: the
    code, the adapter and the demo base all come from the model, and it predicts like the zip."""
    import importlib.metadata as md
    import re

    frame = load_events(events_file, labeled=False)[["id", *FEATURES]]
    frame_file = tmp_path / "frame.json"
    frame_file.write_text(frame.to_json(orient="records"), encoding="utf-8")
    caches = {name: tmp_path / name for name in ("processor-cache", "hf-home", "hf-hub-cache")}
    for path in caches.values():
        path.mkdir()
    env = {**os.environ, "PROCESSOR_CACHE_DIR": str(caches["processor-cache"]), "HF_HOME": str(caches["hf-home"]),
           "HF_HUB_CACHE": str(caches["hf-hub-cache"]), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", ISOLATED_PREDICT, champion_uri, str(frame_file)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert_same_predictions(answer["rows"], expected_rows(trained_run, events_file))
    # The code came from the model, and nothing was built or downloaded into a cache.
    assert "/code/processor/" in Path(answer["processor_file"]).as_posix()
    assert [p for c in caches.values() for p in c.rglob("*") if p.is_file()] == []
    # requirements.txt covers every third-party distribution the model imported (directly or as a
    # dependency of a listed one): a serving host installs only that file.
    requirements = Path(mlflow.pyfunc.get_model_dependencies(champion_uri)).read_text().split()
    closure = _requirement_closure(requirements)
    dists = md.packages_distributions()
    used = {re.sub(r"[-_.]+", "-", d).lower() for m in answer["modules"] for d in dists.get(m, [])}
    assert used - closure == set(), f"imported but not in the model's requirements: {sorted(used - closure)}"


@pytest.mark.slow  # trains the session's run
def test_predict_cli_with_a_registry_uri(tracking, champion_uri, trained_run, events_file, tmp_path):
    out = tmp_path / "preds.jsonl"
    assert main(["--model", champion_uri, "--input", str(events_file), "--output", str(out)]) == 0
    assert_same_predictions(read_jsonl(out), expected_rows(trained_run, events_file))


@pytest.mark.slow
def test_predict_cli_with_a_runs_uri(tracking, trained_run, events_file, tmp_path):
    out = tmp_path / "preds.jsonl"
    assert main(["--model", f"runs:/{trained_run.run_id}/model", "--input", str(events_file),
                 "--output", str(out)]) == 0
    assert_same_predictions(read_jsonl(out), expected_rows(trained_run, events_file))


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow  # trains the session's run
def test_mlflow_models_serve_answers_http(tracking, champion_uri, trained_run, events_file, sample_dir, tmp_path):
    from conftest import model_server

    with model_server(champion_uri, tmp_path) as url:
        records = read_jsonl(events_file)[:8]
        status, answer = _post(url, {"inputs": records})
        assert status == 200, answer
        want = expected_rows(trained_run, events_file)[:8]
        assert_same_predictions(answer["predictions"], want)

        # The min_confidence param: an event whose top probability is below it is abstained (no_trade).
        tops = [max(r[k] for k in PROB_KEYS) for r in want]
        threshold = sum(sorted(tops)[3:5]) / 2  # between two events' tops: clear of float noise
        status, answer = _post(url,
                               {"inputs": records, "params": {"min_confidence": threshold}})
        assert status == 200, answer
        assert [r["abstained"] for r in answer["predictions"]] == [t < threshold for t in tops]
        assert {r["label"] for r in answer["predictions"] if r["abstained"]} == {"no_trade"}
        status, answer = _post(url,
                               {"inputs": records, "params": {"min_confidence": 2.0}})
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        assert "min_confidence must be a number in [0, 1]" in answer["message"]

        # Input that breaks the contract: HTTP 400 naming every problem by row, id and key; no traceback.
        broken = [dict(records[0]), dict(records[1]), dict(records[2])]
        broken[0].update(ext_dir=7, atr=-1)
        broken[1].update(wave_strength=1.5, session="tokyo", evil=1, ext_choch_up="true")
        del broken[2]["fvg_up"]
        status, answer = _post(url, {"inputs": broken})
        assert status == 400, answer
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        message = answer["message"]
        ids = [r["id"] for r in broken]
        expected = [(1, "ext_dir", "must be one of -1, 0, 1"), (1, "atr", "must be a finite number > 0"),
                    (2, "wave_strength", "must be a finite number with 0 <= x <= 1"),
                    (2, "session", 'must be one of "asia", "london", "new_york"'),
                    (2, "ext_choch_up", "must be a boolean"),
                    (3, "fvg_up", "required key is missing")]
        for row, key, what in expected:
            assert f"\nrow {row} id={ids[row - 1]} key={key}: {what}" in message, message
        assert "tokyo" in message  # the unknown category itself is named
        assert "Traceback" not in json.dumps(answer) and "stack_trace" not in answer
        # The extra key is named too: the signature is checked by the model, so MLflow does not drop
        # unknown keys before the contract check sees them (nor cast "true" to a flag's True).
        assert f"\nrow 2 id={ids[1]} key=evil: unexpected key" in message, message

        # Drift (processor.drift): a batch whose atr moved is refused under the max_psi param, naming the
        # feature; without the param it is served.
        shifted = [{**{k: v for k, v in r.items() if k != "label"}, "atr": r["atr"] * 3}
                   for r in read_jsonl(sample_dir / "val.jsonl")]
        body = {"inputs": shifted, "params": {"max_psi": 0.2}}
        status, answer = _post(url, body)
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        assert "PSI > max_psi 0.2" in answer["message"] and "atr=" in answer["message"], answer
        status, answer = _post(url, {"inputs": shifted})
        assert status == 200 and len(answer["predictions"]) == len(shifted), answer
