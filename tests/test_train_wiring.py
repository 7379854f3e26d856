"""The train loop's wiring, in the fast tier: one epoch of the real train loop on 150 events over the
tiny random base of ``tiny_package`` (no qwen-tiny build, no MLflow), then what it wrote is compared
with what it must have been built from: val as loaded (never oversampled), the drift profile and the
prior bias of the training split as loaded, the threshold and temperature that ship."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from conftest import REPO, tiny_config
from processor import drift
from processor.calibrate import prior_logit_bias
from processor.data import load_events
from processor.schema import LABELS

MIN_CONFIDENCE = 0.4


@pytest.fixture(scope="module")
def one_epoch(tiny_package, tmp_path_factory):
    from demo_kit.sample_data import write_sample_data
    from processor.train_loop import train

    data = tmp_path_factory.mktemp("wiring-data")
    write_sample_data(data, n=150, seed=3)
    cfg = tiny_config(data, tmp_path_factory.mktemp("wiring") / "out", **{
        "model": str(tiny_package.base_dir), "lora.r": 2, "lora.alpha": 4, "training.epochs": 1,
        "mlflow.enabled": False, "eval.baselines": False, "eval.bootstrap_resamples": 100,
        "trust.min_confidence": MIN_CONFIDENCE})
    result = train(cfg)
    with zipfile.ZipFile(result.zip_path) as zf:
        serving = json.loads(zf.read("serving.json"))
    return result, serving, load_events(data / "train.jsonl"), load_events(data / "val.jsonl")


def test_val_is_scored_as_loaded_never_oversampled(one_epoch):
    result, _, train, val = one_epoch
    m = result.metrics
    assert m["class_balance"]["applied"] is True  # the training split was oversampled ...
    assert m["data"]["n_train_fit"] > m["data"]["n_train"] == len(train)
    counts = {name: int((val["label"] == name).sum()) for name in LABELS}
    assert m["data"]["n_val"] == len(val) and m["data"]["val_counts"] == counts  # ... and val was not
    assert {name: m["per_class"][name]["support"] for name in LABELS} == counts
    assert sum(map(sum, m["confusion_matrix"]["matrix"])) == len(val)


def test_drift_profile_and_prior_bias_come_from_the_training_split_as_loaded(one_epoch):
    result, serving, train, _ = one_epoch
    assert serving["feature_profile"] == json.loads(json.dumps(drift.fit_profile(train, psi_warn=0.2)))
    counts = [int((train["label"] == name).sum()) for name in LABELS]
    alpha = serving["prior_correction"]["alpha"]
    assert alpha > 0
    np.testing.assert_allclose(serving["prior_correction"]["logit_bias"], prior_logit_bias(counts, alpha))


def test_what_ships_is_what_was_measured(one_epoch):
    result, serving, _, _ = one_epoch
    assert serving["min_confidence"] == MIN_CONFIDENCE == result.metrics["abstention"]["min_confidence"]
    assert serving["calibration"]["temperature"] == result.metrics["calibration"]["temperature"]


@pytest.mark.parametrize("gamma, weights, mae", [(0.7, "auto", 0.0), (2.5, "none", 1.5)])
def test_the_trainer_holds_the_loss_the_config_asks_for(tiny_package, sample_dir, tmp_path, gamma, weights, mae):
    """The focal loss inside the Trainer the train loop builds (not the config's echo in metrics.json)
    has the configured gamma and MAE term, and "auto" class weights from the class counts it trains on."""
    from sklearn.utils.class_weight import compute_class_weight

    from processor.recorder import NullRecorder
    from processor.encode import encode
    from processor.train_loop import build_model, build_trainer, prepare_data

    cfg = tiny_config(sample_dir, tmp_path / "out", **{
        "model": str(tiny_package.base_dir), "lora.r": 2, "lora.alpha": 4, "mlflow.enabled": False,
        "loss.gamma": gamma, "loss.class_weights": weights, "loss.mae": mae})
    rec = NullRecorder(tmp_path)
    data = prepare_data(cfg, rec)
    built = build_model(cfg, rec)
    encoded = encode(cfg, built.tokenizer, train=data.train, fit=data.fit, val=data.val)
    trainer = build_trainer(cfg, tmp_path / "out", data, built, encoded, rec)
    assert trainer.focal.gamma == gamma and trainer.focal.mae == mae
    if weights == "none":
        assert trainer.focal.weight is None
    else:
        want = compute_class_weight("balanced", classes=np.array(LABELS), y=data.fit["label"].to_numpy())
        np.testing.assert_allclose(trainer.focal.weight.numpy(), want, rtol=1e-6)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_this_machine_lacks_is_a_usage_error(tiny_package, sample_dir, tmp_path, capsys):
    from processor.train_loop import main

    code = main(["--config", str(REPO / "configs" / "tiny.yaml"), "--model", str(tiny_package.base_dir),
                 "--train-file", str(sample_dir / "train.jsonl"), "--val-file", str(sample_dir / "val.jsonl"),
                 "--device", "cuda", "--no-mlflow", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA device is available" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoints").exists()
