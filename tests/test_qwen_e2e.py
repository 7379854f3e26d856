"""The real-Qwen path end to end on the tiny stand-in (Qwen's vocabulary and special tokens, a bf16
checkpoint, random weights), with a real MLflow server: train from the command line -> metrics.json ->
model_final.zip -> shipping gate -> registered pyfunc -> predict. Random weights score nothing, so the
gate's quality floors are lowered (lenient_checks); every mechanical check still runs."""

from __future__ import annotations

import json
import re
import uuid
import zipfile

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from conftest import REPO, run_module
from processor import gate
from processor.data import load_events
from processor.schema import FEATURES, LABELS

pytestmark = pytest.mark.slow


@pytest.mark.long
def test_train_gate_register_predict_on_the_qwen_standin(tracking, qwen_standin_dir, sample_dir, lenient_checks,
                                                         tmp_path):
    out = tmp_path / "out"
    proc = run_module("processor.train_loop", "--config", str(REPO / "configs" / "tiny.yaml"),
                      "--model", str(qwen_standin_dir), "--train-file", str(sample_dir / "train.jsonl"),
                      "--val-file", str(sample_dir / "val.jsonl"), "--output-dir", str(out), "--max-epochs", "1",
                      "--experiment-name", "tests-qwen-standin", "data.template=qwen-v1", "training.max_length=16",
                      "training.precision=auto", "eval.baselines=false", "eval.bootstrap_resamples=200",
                      timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = re.search(r"^mlflow run: ([0-9a-f]{32})", proc.stdout, re.M).group(1)

    # metrics.json: the text costs 13 tokens under the stand-in's (Qwen's) vocabulary, nothing truncated.
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["tokens_per_event"] == len(FEATURES) == 13
    assert 0.0 <= metrics["val_macro_f1"] <= 1.0
    with zipfile.ZipFile(out / "model_final.zip") as zf:
        serving = json.loads(zf.read("serving.json"))
    assert serving["serialization"]["template"] == "qwen-v1"

    name = f"qwen-standin-{uuid.uuid4().hex[:8]}"
    assert gate.main(["--run-id", run_id, "--model-name", name, "--checks", str(lenient_checks)]) == 0
    client = MlflowClient(tracking)
    assert client.get_model_version_by_alias(name, "champion").run_id == run_id

    events = load_events(sample_dir / "val.jsonl", labeled=False)[["id", *FEATURES]].head(20)
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(events)
    probs = served[[f"p_{label}" for label in LABELS]].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert list(served["id"]) == list(events["id"])
    assert set(served["label"]) <= set(LABELS)
