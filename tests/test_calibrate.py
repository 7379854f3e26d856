"""Calibration and abstention: ECE/Brier against hand-computed values, temperature scaling and its
cross-fitting, abstention at the threshold; then the trained run end to end (metrics.json, the zip,
the pyfunc, the predict CLI)."""

from __future__ import annotations

import json
import zipfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from scipy.special import softmax

from conftest import assert_png_has_content, read_jsonl
from processor import calibrate
from processor.calibrate import (abstain, abstention_table, apply_temperature, brier_score, cross_fit,
                                 expected_calibration_error, fit_temperature, nll, reliability_bins)
from processor.data import load_events
from processor.probs import apply_prior_bias
from processor.package import predict_texts, prediction_rows
from processor.predict import main as predict_main
from processor.schema import FEATURES, LABELS
from processor.serialize import Serializer

PROB_KEYS = [f"p_{name}" for name in LABELS]


# -------------------------------------------------------------------------------------- measurement
# Four events, 10 bins. Tops 0.9 (right) and 0.85 (wrong) share the bin (0.8, 0.9]: mean confidence
# 0.875, accuracy 0.5. Tops 0.5 (right) and 0.45 (wrong) share (0.4, 0.5]: 0.475 and 0.5.
# ECE = 2/4 * |0.5 - 0.875| + 2/4 * |0.5 - 0.475| = 0.1875 + 0.0125 = 0.2
HAND_PROBS = np.array([[0.9, 0.05, 0.05], [0.85, 0.1, 0.05], [0.25, 0.5, 0.25], [0.45, 0.3, 0.25]])
HAND_Y = np.array([0, 1, 1, 2])


def test_ece_matches_the_hand_computed_value():
    assert expected_calibration_error(HAND_PROBS, HAND_Y, n_bins=10) == pytest.approx(0.2, abs=1e-12)
    bins = reliability_bins(HAND_PROBS, HAND_Y, n_bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 2, 0, 0, 0, 2, 0]
    assert (bins[4]["confidence"], bins[4]["accuracy"]) == (pytest.approx(0.475), 0.5)
    assert (bins[8]["confidence"], bins[8]["accuracy"]) == (pytest.approx(0.875), 0.5)
    # Labels as names give the same answer as class ids.
    assert expected_calibration_error(HAND_PROBS, [LABELS[i] for i in HAND_Y]) == pytest.approx(0.2, abs=1e-12)


def test_ece_weights_each_bin_by_its_event_count():
    # Three events in (0.8, 0.9] (tops 0.9 right, 0.85 wrong, 0.82 right: accuracy 2/3, mean confidence
    # 2.57/3) and one in (0.4, 0.5] (top 0.5, right). Weighted by count:
    # 3/4 * |2/3 - 2.57/3| + 1/4 * |1 - 0.5| = 3/4 * 0.19 + 0.125 = 0.2675 (equal weights would give 0.345).
    probs = np.array([[0.9, 0.05, 0.05], [0.85, 0.1, 0.05], [0.1, 0.82, 0.08], [0.5, 0.3, 0.2]])
    y = [0, 1, 1, 0]
    counts = {i: b["count"] for i, b in enumerate(reliability_bins(probs, y, n_bins=10)) if b["count"]}
    assert counts == {4: 1, 8: 3}
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.2675, abs=1e-12)


def test_ece_bins_are_closed_on_the_right():
    # A top of exactly 0.5 belongs to (0.4, 0.5], not (0.5, 0.6]; 0.4 to (0.3, 0.4].
    bins = reliability_bins(np.array([[0.5, 0.5, 0.0], [0.4, 0.35, 0.25]]), [0, 0], n_bins=10)
    assert [b["count"] for b in bins][3:6] == [1, 1, 0]
    # One bin: ECE is |accuracy - mean confidence| over everything: |1/2 - 0.45|.
    assert expected_calibration_error(np.array([[0.5, 0.5, 0.0], [0.4, 0.35, 0.25]]), [0, 1], n_bins=1) == \
        pytest.approx(0.05)


def test_perfectly_confident_and_right_has_zero_ece_and_brier():
    probs = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probs, [0, 1, 2, 1]) == 0.0
    assert brier_score(probs, [0, 1, 2, 1]) == 0.0


def test_brier_matches_the_hand_computed_value():
    # Event 1: (0.9-1)^2 + 0.05^2 + 0.05^2 = 0.015; event 2: 0.85^2 + (0.1-1)^2 + 0.05^2 = 1.535;
    # event 3: 0.25^2 + 0.5^2 + 0.25^2 = 0.375; event 4: 0.45^2 + 0.3^2 + (0.25-1)^2 = 0.855. Mean 0.695.
    assert brier_score(HAND_PROBS, HAND_Y) == pytest.approx(0.695, abs=1e-12)


def test_inputs_that_are_not_probabilities_are_refused():
    with pytest.raises(ValueError, match="summing to 1"):
        brier_score(np.array([[0.5, 0.6, 0.1]]), [0])
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(np.array([0.5, 0.5]), [0])
    with pytest.raises(ValueError, match="one label per event"):
        nll(HAND_PROBS, [0, 1])


# ------------------------------------------------------------------------------ temperature scaling
def synthetic(n: int, sharpen: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits); the model reports softmax(sharpen * logits): sharpen > 1 is
    over-confident and the right temperature is ``sharpen``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, 3))
    true = softmax(logits, axis=1)
    y = np.array([rng.choice(3, p=row) for row in true])
    return softmax(sharpen * logits, axis=1), y, logits


def test_temperature_lowers_nll_and_ece_of_an_over_confident_model():
    probs, y, _ = synthetic(3000, sharpen=3.0, seed=0)
    t = fit_temperature(probs, y)
    assert 2.0 < t < 4.5  # near the sharpening that made the model over-confident
    calibrated = apply_temperature(probs, t)
    assert nll(calibrated, y) < nll(probs, y)
    assert expected_calibration_error(calibrated, y) < expected_calibration_error(probs, y)
    assert (calibrated.argmax(1) == probs.argmax(1)).all()  # a temperature never changes the call
    # And an under-confident model gets T < 1.
    soft, y_soft, _ = synthetic(3000, sharpen=0.4, seed=1)
    assert fit_temperature(soft, y_soft) < 1.0


def test_fitted_temperature_is_the_nll_minimum():
    probs, y, _ = synthetic(500, sharpen=2.0, seed=2)
    t = fit_temperature(probs, y)
    best = nll(apply_temperature(probs, t), y)
    for other in (t * 0.9, t * 1.1):
        assert nll(apply_temperature(probs, other), y) > best


def test_temperature_on_probabilities_equals_temperature_on_logits():
    probs, _, logits = synthetic(50, sharpen=1.0, seed=3)
    np.testing.assert_allclose(apply_temperature(probs, 2.5), softmax(logits / 2.5, axis=1), atol=1e-12)
    assert apply_temperature(probs, 1.0) is probs  # T = 1 (a zip without a temperature) changes nothing
    with pytest.raises(ValueError, match="temperature must be"):
        apply_temperature(probs, 0.0)


def test_cross_fit_never_fits_on_the_events_it_calibrates(monkeypatch):
    probs, y, _ = synthetic(200, sharpen=3.0, seed=4)
    row_of = {row.tobytes(): i for i, row in enumerate(probs)}  # rows are distinct: identify them
    fitted_on: list[set[int]] = []
    real_fit = calibrate.fit_temperature

    def spy(p, labels):
        fitted_on.append({row_of[row.tobytes()] for row in np.asarray(p, dtype=np.float64)})
        return real_fit(p, labels)

    monkeypatch.setattr(calibrate, "fit_temperature", spy)
    cf = cross_fit(probs, y, folds=5, seed=0)
    assert len(fitted_on) == len(cf.temperatures) == 5
    everyone = set(range(len(y)))
    for k, used in enumerate(fitted_on):
        held = set(np.flatnonzero(cf.fold == k).tolist())
        assert held and used == everyone - held  # fitted on exactly the other folds
        idx = sorted(held)
        np.testing.assert_allclose(cf.probs[idx], apply_temperature(probs[idx], cf.temperatures[k]))
    # Stratified: every fold holds every class.
    for k in range(5):
        assert set(y[cf.fold == k]) == {0, 1, 2}


def test_cross_fit_uses_fewer_folds_when_the_val_set_is_tiny(tmp_path):
    probs = softmax(np.random.default_rng(6).normal(size=(5, 3)), axis=1)
    assert len(cross_fit(probs, [0, 0, 0, 1, 2], folds=5, seed=0).temperatures) == 3
    # One event per class: nothing to fit a fold's temperature on. Training still ends, uncalibrated.
    result = calibrate.evaluate_trust(probs[:3], [0, 1, 2], calibrate=True, folds=5, n_bins=10, grid=[0.5],
                                      min_confidence=None, seed=0, out_dir=tmp_path)
    assert (result.temperature, result.calibration.method) == (1.0, "none")
    assert "too few validation events" in result.calibration.skipped


# ---------------------------------------------------------------------------------------- abstention
def test_abstention_flips_exactly_at_the_threshold():
    probs = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.6, 0.3, 0.1]])
    # Top exactly equal to the threshold: kept.
    assert abstain(probs, 0.5).tolist() == [False, False, False]
    assert abstain(probs, np.nextafter(0.5, 1.0)).tolist() == [True, True, False]
    assert abstain(probs, None).tolist() == [False, False, False]
    rows = prediction_rows(["a", "b", "c"], probs, np.nextafter(0.5, 1.0))
    assert [(r["label"], r["abstained"]) for r in rows] == [("no_trade", True), ("no_trade", True), ("long", False)]
    assert [r[k] for r in rows for k in PROB_KEYS] == probs.ravel().tolist()  # probabilities untouched
    assert [(r["label"], r["abstained"]) for r in prediction_rows(["a", "b", "c"], probs, 0.5)] == \
        [("long", False), ("short", False), ("long", False)]
    with pytest.raises(ValueError, match=r"min_confidence must be a number in \[0, 1\]"):
        abstain(probs, 1.5)


def test_abstention_table_matches_hand_counts():
    # Calls at no threshold: long (0.9, right), long (0.55, wrong), short (0.7, right), short (0.45, wrong);
    # one no_trade call (0.8). Threshold 0.5 drops the short at 0.45; 0.6 also the long at 0.55.
    probs = np.array([[0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.2, 0.7, 0.1], [0.3, 0.45, 0.25], [0.1, 0.1, 0.8]])
    y = ["long", "no_trade", "short", "long", "no_trade"]
    table = abstention_table(probs, y, [0.5, 0.6, 0.95])
    base = table["no_threshold"]
    assert (base["n_calls"], base["precision_long"], base["precision_short"], base["coverage"]) == (4, 0.5, 0.5, 1.0)
    at = {r["min_confidence"]: r for r in table["grid"]}
    assert (at[0.5]["n_long"], at[0.5]["n_short"], at[0.5]["coverage"]) == (2, 1, 0.75)
    assert (at[0.5]["precision_long"], at[0.5]["precision_short"], at[0.5]["n_abstained"]) == (0.5, 1.0, 1)
    assert (at[0.6]["n_calls"], at[0.6]["coverage"], at[0.6]["precision_long"]) == (2, 0.5, 1.0)
    assert at[0.6]["n_abstained"] == 2
    # No call kept: coverage 0 and no precision (None, not 0).
    assert (at[0.95]["coverage"], at[0.95]["precision_long"], at[0.95]["precision_short"]) == (0.0, None, None)


def test_pngs_are_written(tmp_path):
    probs, y, _ = synthetic(300, sharpen=3.0, seed=5)
    result = calibrate.evaluate_trust(probs, y, calibrate=True, folds=5, n_bins=10, grid=[0.4, 0.6, 0.8],
                                      min_confidence=None, seed=0, out_dir=tmp_path)
    assert [p.name for p in result.pngs] == ["reliability_diagram.png", "abstention.png"]
    for png in result.pngs:
        assert_png_has_content(png)
    # The "after" figures are out-of-fold: the packaged temperature is not what scored them.
    out_of_fold = cross_fit(probs, y, folds=5, seed=0).probs
    assert result.calibration.ece_after == expected_calibration_error(out_of_fold, y)
    assert result.calibration.temperature == fit_temperature(probs, y)
    off = calibrate.evaluate_trust(probs, y, calibrate=False, folds=5, n_bins=10, grid=[0.5], min_confidence=0.5,
                                   seed=0, out_dir=tmp_path / "off")
    assert off.temperature == 1.0 and off.calibration.method == "none" and "ece_after" not in off.calibration.to_dict()


def test_a_zip_from_before_calibration_predicts_as_before(tiny_package, tiny_packaged):
    """serving.json without calibration, prior correction or min_confidence (an older zip): the
    classifier's softmax unchanged and no abstention; with only a temperature: softmax(logits / T)."""
    from processor.package import PackagedModel

    old_serving = {k: v for k, v in tiny_packaged.serving.items()
                   if k not in ("calibration", "prior_correction", "min_confidence")}
    old = PackagedModel(model=tiny_packaged.model, tokenizer=tiny_packaged.tokenizer, serving=old_serving, metrics={})
    assert (old.temperature, old.min_confidence) == (1.0, None)
    rows = old.predict(tiny_package.events)
    np.testing.assert_allclose([[r[k] for k in PROB_KEYS] for r in rows], softmax(tiny_package.logits, axis=1),
                               atol=1e-5)
    assert not any(r["abstained"] for r in rows)
    new = PackagedModel(model=tiny_packaged.model, tokenizer=tiny_packaged.tokenizer, metrics={},
                        serving={**old_serving, "calibration": {"temperature": 1.7}, "min_confidence": 0.6})
    assert (new.temperature, new.min_confidence) == (1.7, 0.6)
    want = softmax(tiny_package.logits / 1.7, axis=1)
    rows = new.predict(tiny_package.events)
    np.testing.assert_allclose([[r[k] for k in PROB_KEYS] for r in rows], want, atol=1e-5)
    assert [r["abstained"] for r in rows] == (want.max(axis=1) < 0.6).tolist()


# ------------------------------------------------------------------------------- the trained run
def zip_member(path, name: str) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(name))


@pytest.fixture(scope="module")
def val_events(sample_dir) -> list[dict]:
    return load_events(sample_dir / "val.jsonl")[["id", *FEATURES]].head(60).to_dict(orient="records")


@pytest.mark.slow
def test_run_reports_calibration_and_abstention(trained_run, tracking, packaged, sample_dir):
    m = json.loads((trained_run.output_dir / "metrics.json").read_text())
    cal = m["calibration"]
    assert cal["method"] == "temperature_scaling" and cal["n_bins"] == 10
    assert "cross-fitted over 5 stratified val folds" in cal["fitting"]
    for key in ("ece_before", "ece_after", "brier_before", "brier_after", "nll_before", "nll_after", "temperature"):
        assert isinstance(cal[key], float), key
    assert len(cal["fold_temperatures"]) == 5
    # The before-figures are those of the zip's val probabilities without the temperature. The packaged
    # temperature is fitted on all of val with T = 1 among its candidates, so on val it cannot raise
    # the NLL (the *_after figures are out-of-fold: no such bound holds for them).
    val = load_events(sample_dir / "val.jsonl")
    y = [LABELS.index(name) for name in val["label"]]
    shipped = packaged.predict_proba(val[["id", *FEATURES]].to_dict(orient="records")).astype(np.float64)
    before = apply_temperature(shipped, 1.0 / cal["temperature"])
    assert nll(before, y) == pytest.approx(cal["nll_before"], rel=1e-4)
    assert brier_score(before, y) == pytest.approx(cal["brier_before"], rel=1e-4)
    assert nll(shipped, y) <= cal["nll_before"] + 1e-9
    ab = m["abstention"]
    assert ab["min_confidence"] is None
    assert [r["min_confidence"] for r in ab["grid"]] == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert [r["n_calls"] for r in ab["grid"]] == sorted((r["n_calls"] for r in ab["grid"]), reverse=True)
    for png in ("reliability_diagram.png", "abstention.png"):
        assert_png_has_content(trained_run.output_dir / png)
    run = MlflowClient(tracking).get_run(trained_run.run_id)
    assert {"reliability_diagram.png", "abstention.png"} <= {a.path for a in MlflowClient(tracking).list_artifacts(
        trained_run.run_id)}
    assert run.data.metrics["temperature"] == pytest.approx(cal["temperature"])
    assert run.data.metrics["val_ece_after"] == pytest.approx(cal["ece_after"])
    assert run.data.metrics["val_brier_before"] == pytest.approx(cal["brier_before"])


@pytest.mark.slow
def test_zip_applies_the_stored_prior_correction_then_temperature(trained_run, packaged, sample_dir, val_events):
    serving = zip_member(trained_run.zip_path, "serving.json")
    t = serving["calibration"]["temperature"]
    assert t == trained_run.metrics["calibration"]["temperature"] and t != 1.0
    # The bias is alpha * log of the class shares of the training file as loaded (before oversampling).
    alpha = serving["prior_correction"]["alpha"]
    counts = pd.read_json(sample_dir / "train.jsonl", lines=True)["label"].value_counts()
    shares = np.array([counts[n] for n in LABELS]) / counts.sum()
    bias = np.array(serving["prior_correction"]["logit_bias"])
    assert alpha > 0 and np.allclose(bias, alpha * np.log(shares))
    texts = Serializer.fit(load_events(sample_dir / "train.jsonl")).render_all(val_events)
    raw = predict_texts(trained_run.model, trained_run.tokenizer, texts, max_length=48)  # as the head gives it
    want = softmax((np.log(raw.astype(np.float64)) + bias) / t, axis=1)
    np.testing.assert_allclose(packaged.predict_proba(val_events), want, atol=1e-5)
    assert not np.allclose(raw, want, atol=1e-3)  # bias and temperature do change the probabilities


def test_prior_bias_is_alpha_log_prior_added_to_the_logits():
    counts = [10, 30, 60]
    assert calibrate.prior_logit_bias(counts, 0.0) is None
    np.testing.assert_allclose(calibrate.prior_logit_bias(counts, 1.0), np.log([0.1, 0.3, 0.6]))
    np.testing.assert_allclose(calibrate.prior_logit_bias(counts, 0.5), 0.5 * np.log([0.1, 0.3, 0.6]))
    logits = np.array([[3.0, 0.0, 1.0], [0.2, 0.1, 0.0]])
    bias = calibrate.prior_logit_bias(counts, 1.0)
    got = apply_prior_bias(softmax(logits, axis=1), bias)
    np.testing.assert_allclose(got, softmax(logits + bias, axis=1), atol=1e-12)
    assert softmax(logits, axis=1).argmax(1).tolist() == [0, 0]
    assert got.argmax(1).tolist() == [0, 2]  # the rare class keeps a clear call, loses a close one
    plain = softmax(logits, axis=1)
    np.testing.assert_array_equal(apply_prior_bias(plain, None), plain)  # no bias: unchanged
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="prior correction must be in"):
            calibrate.prior_logit_bias(counts, bad)
    with pytest.raises(ValueError, match="positive count for every class"):
        calibrate.prior_logit_bias([0, 5, 5], 0.5)


def test_early_stopping_metrics_judge_the_corrected_predictions():
    from types import SimpleNamespace

    from processor.record import ShippedHead
    from processor.trainer import trainer_metrics

    logits = np.array([[1.0, 0.0, 0.9], [0.0, 1.0, 0.9], [0.0, 0.0, 1.0]])
    pred = SimpleNamespace(predictions=logits, label_ids=np.array([2, 2, 2]))  # all no_trade
    assert trainer_metrics(pred, ShippedHead())["accuracy"] == pytest.approx(1 / 3)
    bias = calibrate.prior_logit_bias([10, 10, 80], 1.0)  # no_trade is 80 % of the events
    assert trainer_metrics(pred, ShippedHead(logit_bias=tuple(bias)))["accuracy"] == pytest.approx(1.0)


@pytest.mark.slow
def test_pyfunc_returns_the_zip_probabilities_and_abstains_at_the_param(trained_run, tracking, packaged, val_events):
    model = mlflow.pyfunc.load_model(f"runs:/{trained_run.run_id}/model")
    assert {p.name: p.default for p in model.metadata.get_params_schema().params} == {"min_confidence": None,
                                                                                      "max_psi": None}
    frame = pd.DataFrame([{k: e[k] for k in ("id", *FEATURES)} for e in val_events])
    plain = model.predict(frame)  # the model's default threshold: none for this run
    want = packaged.predict_proba(frame.to_dict(orient="records"))
    np.testing.assert_allclose(plain[PROB_KEYS].to_numpy(), want, atol=1e-5)
    assert not plain["abstained"].any()
    top = plain[PROB_KEYS].to_numpy().max(axis=1)
    threshold = float(np.sort(top)[len(top) // 2])  # one event's top exactly
    got = model.predict(frame, params={"min_confidence": threshold})
    assert got["abstained"].tolist() == (top < threshold).tolist()
    assert (top == threshold).any() and not got.loc[top == threshold, "abstained"].any()  # equal: kept
    assert (got.loc[got["abstained"], "label"] == "no_trade").all()
    np.testing.assert_array_equal(got[PROB_KEYS].to_numpy(), plain[PROB_KEYS].to_numpy())
    with pytest.raises(MlflowException, match=r"min_confidence must be a number in \[0, 1\]") as err:
        model.predict(frame.head(2), params={"min_confidence": 1.5})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.slow
def test_predict_cli_abstains_exactly_at_the_flag(trained_run, tracking, sample_dir, val_events, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({k: e[k] for k in ("id", *FEATURES)}) + "\n" for e in val_events))
    for model in (str(trained_run.zip_path), f"runs:/{trained_run.run_id}/model"):
        assert predict_main(["--model", model, "--input", str(events), "--output", str(tmp_path / "a.jsonl")]) == 0
        plain = read_jsonl(tmp_path / "a.jsonl")
        assert not any(r["abstained"] for r in plain)
        top = [max(r[k] for k in PROB_KEYS) for r in plain]
        threshold = sorted(top)[len(top) // 2]
        assert predict_main(["--model", model, "--input", str(events), "--output", str(tmp_path / "b.jsonl"),
                             "--min-confidence", repr(threshold)]) == 0
        rows = read_jsonl(tmp_path / "b.jsonl")
        assert [r["abstained"] for r in rows] == [t < threshold for t in top], model
        assert [r["label"] for r in rows] == [("no_trade" if t < threshold else p["label"])
                                              for t, p in zip(top, plain)]
        assert [[r[k] for k in PROB_KEYS] for r in rows] == [[r[k] for k in PROB_KEYS] for r in plain]
    for bad in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(SystemExit) as exit_:
            predict_main(["--model", str(trained_run.zip_path), "--input", str(events),
                          "--output", str(tmp_path / "c.jsonl"), "--min-confidence", bad])
        assert exit_.value.code == 2
        assert "expected a number in [0, 1]" in capsys.readouterr().err
