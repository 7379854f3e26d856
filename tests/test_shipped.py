"""The fast tier's guard of what ships: a tiny random package (conftest ``tiny_package``, built in
seconds, no training) read back through every in-process prediction path (PackagedModel, the predict
CLI, the pyfunc's predict), each compared with numbers computed here by hand:

    probabilities = softmax((logits + prior bias) / temperature)
    abstained     = top probability < min_confidence (the package's own unless a caller gives one)
    drift         = PSI of the batch against the packed training profile, refused only above max_psi
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from scipy.special import softmax

import shipped
from conftest import read_jsonl
from processor import drift
from processor.data import load_events
from processor.oversample import oversample
from processor.predict import check_frame
from processor.predict import main as predict_main
from processor.schema import LABELS

PROB_KEYS = [f"p_{name}" for name in LABELS]


def write_events(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def probs_of(rows) -> np.ndarray:
    return np.array([[r[k] for k in PROB_KEYS] for r in rows])


def assert_ships(rows, pkg: shipped.TinyPackage, abstained=None) -> None:
    """``rows`` (any path's output) are the hand-computed shipment of ``pkg.events``."""
    abstained = pkg.abstained if abstained is None else abstained
    assert [r["id"] for r in rows] == [e["id"] for e in pkg.events]
    np.testing.assert_allclose(probs_of(rows), pkg.expected, atol=1e-5)
    assert [bool(r["abstained"]) for r in rows] == abstained
    assert [r["label"] for r in rows] == ["no_trade" if a else LABELS[i]
                                          for i, a in zip(pkg.expected.argmax(axis=1), abstained)]


@pytest.fixture(scope="module")
def pyfunc(tiny_package):
    """The registered model's code (processor.serving) loaded in-process, as MLflow loads it."""
    from processor.serving import ZIP_ARTIFACT, EventClassifierPyfunc

    model = EventClassifierPyfunc()
    model.load_context(SimpleNamespace(artifacts={ZIP_ARTIFACT: str(tiny_package.zip_path)}))
    yield model
    model._model.close()


@pytest.fixture(scope="module")
def shifted(tiny_package) -> list[dict]:
    """The val events with atr tripled and every session asia: two features drift, the rest do not."""
    return [{**e, "atr": e["atr"] * 3, "session": "asia"} for e in tiny_package.events]


# ------------------------------------------------------------------------------------ the numbers
def test_the_chosen_values_move_the_probabilities(tiny_package):
    # Otherwise the tests below could not tell a dropped temperature or bias from a kept one.
    plain = softmax(tiny_package.logits, axis=1)
    for other in (plain, softmax(tiny_package.logits + shipped.LOGIT_BIAS, axis=1),
                  softmax(tiny_package.logits / shipped.TEMPERATURE, axis=1),
                  softmax(tiny_package.logits / shipped.TEMPERATURE + shipped.LOGIT_BIAS, axis=1),
                  softmax((tiny_package.logits - shipped.LOGIT_BIAS) / shipped.TEMPERATURE, axis=1)):
        assert np.abs(other - tiny_package.expected).max() > 1e-2
    assert 0 < sum(tiny_package.abstained) < len(tiny_package.events) / 2


def test_packaged_model_ships_biased_then_tempered_probabilities(tiny_package, tiny_packaged):
    assert tiny_packaged.temperature == shipped.TEMPERATURE
    np.testing.assert_allclose(tiny_packaged.predict_proba(tiny_package.events), tiny_package.expected, atol=1e-5)


def test_packaged_model_abstains_at_its_own_min_confidence(tiny_package, tiny_packaged):
    assert tiny_packaged.min_confidence == tiny_package.min_confidence
    assert_ships(tiny_packaged.predict(tiny_package.events), tiny_package)
    # A caller's threshold wins over the package's: 0 never abstains.
    assert_ships(tiny_packaged.predict(tiny_package.events, min_confidence=0.0), tiny_package,
                 abstained=[False] * len(tiny_package.events))


def test_predict_cli_ships_the_hand_computed_rows(tiny_package, tmp_path):
    events = write_events(tmp_path / "events.jsonl", tiny_package.events)
    assert predict_main(["--model", str(tiny_package.zip_path), "--input", str(events),
                         "--output", str(tmp_path / "a.jsonl"), "--batch-size", "7"]) == 0
    assert_ships(read_jsonl(tmp_path / "a.jsonl"), tiny_package)
    # (--min-confidence reaching the model is the slow tier's test_predict_cli_abstains_exactly_at_the_flag:
    # one load of the zip per CLI call is the cost of this file.)


def test_pyfunc_ships_the_hand_computed_rows(tiny_package, pyfunc):
    frame = pd.DataFrame(tiny_package.events)
    assert_ships(pyfunc.predict(None, frame).to_dict(orient="records"), tiny_package)
    assert_ships(pyfunc.predict(None, frame, params={"min_confidence": 0.0}).to_dict(orient="records"),
                 tiny_package, abstained=[False] * len(frame))


# -------------------------------------------------------------------------------------- the drift
def hand_psi(train: list[dict], batch: list[dict], feature: str) -> float:
    """PSI of one feature, as processor.drift documents it: deciles of the training values (open
    outer bins) or the training categories plus an empty "other", shares floored at 1e-4."""
    t = pd.DataFrame(train)[feature]
    b = pd.DataFrame(batch)[feature]
    if feature == "atr":
        edges = np.unique(np.quantile(t.to_numpy(float), np.linspace(0, 1, 11)[1:-1]))
        e = np.bincount(np.searchsorted(edges, t, side="right"), minlength=len(edges) + 1) / len(t)
        a = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1) / len(b)
    else:
        cats = sorted(t.unique())
        e = np.array([(t == c).mean() for c in cats] + [0.0])
        a = np.array([(b == c).mean() for c in cats] + [float((~b.isin(cats)).mean())])
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def test_drift_is_measured_against_the_packed_training_profile(tiny_package, tiny_packaged, shifted, tmp_path):
    # The training split against its own profile: nothing moved.
    assert max(tiny_packaged.drift(tiny_package.train_events).psi.values()) == pytest.approx(0.0, abs=1e-12)
    report_path = tmp_path / "drift.json"
    assert predict_main(["--model", str(tiny_package.zip_path), "--input",
                         str(write_events(tmp_path / "shifted.jsonl", shifted)), "--output",
                         str(tmp_path / "out.jsonl"), "--drift-report", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for feature in ("atr", "session"):
        want = hand_psi(tiny_package.train_events, shifted, feature)
        assert want > 1.0 and report["psi"][feature] == pytest.approx(want, rel=1e-9), feature
    assert set(report["over_warn"]) == {"atr", "session"} and report["warn_at"] == shipped.PSI_WARN


def test_max_psi_at_exactly_the_batch_s_psi_is_served_through_the_cli(tiny_package, shifted, tmp_path):
    events = write_events(tmp_path / "shifted.jsonl", shifted)
    limit = drift.check(tiny_package.serving["feature_profile"], load_events(events, labeled=False)).max_psi
    below = float(np.nextafter(limit, 0.0))
    assert predict_main(["--model", str(tiny_package.zip_path), "--input", str(events),
                         "--output", str(tmp_path / "a.jsonl"), "--max-psi", repr(limit)]) == 0
    assert predict_main(["--model", str(tiny_package.zip_path), "--input", str(events),
                         "--output", str(tmp_path / "b.jsonl"), "--max-psi", repr(below)]) == 1
    assert not (tmp_path / "b.jsonl").exists()


def test_max_psi_at_exactly_the_batch_s_psi_is_served_through_the_pyfunc(tiny_package, pyfunc, shifted):
    frame = pd.DataFrame(shifted)
    limit = drift.check(tiny_package.serving["feature_profile"], check_frame(frame)).max_psi
    assert len(pyfunc.predict(None, frame, params={"max_psi": limit})) == len(frame)
    with pytest.raises(MlflowException, match="PSI > max_psi") as err:
        pyfunc.predict(None, frame, params={"max_psi": float(np.nextafter(limit, 0.0))})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


# ------------------------------------------------------------------------------------ oversampling
def test_oversampling_touches_the_training_rows_only(sample_dir):
    # What the train loop relies on: oversample() sees the training frame and returns rows of it;
    # the val frame is loaded separately and keeps its natural mix.
    train = load_events(sample_dir / "train.jsonl")
    val = load_events(sample_dir / "val.jsonl")
    val_before = val.copy()
    result = oversample(train, seed=0)
    assert result.applied and len(result.frame) > len(train)
    assert set(result.frame["id"]) == set(train["id"]) and not set(result.frame["id"]) & set(val["id"])
    pd.testing.assert_frame_equal(val, val_before)
    val_shares = val["label"].value_counts(normalize=True)
    assert min(val_shares) < 0.25  # the natural mix, not the oversampled thirds
