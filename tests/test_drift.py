"""Drift at predict time: the training profile, PSI per feature, and what predict / the pyfunc / serving
do with it (warn; refuse with --max-psi / params max_psi)."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processor import drift
from demo_kit.sample_data import generate
from processor.schema import FEATURES


def sample(n: int, seed: int) -> pd.DataFrame:
    data = generate(n=n, seed=seed)
    return pd.DataFrame(data.train + data.val)


@pytest.fixture(scope="module")
def profile() -> dict:
    return drift.fit_profile(sample(5000, seed=0))


# ------------------------------------------------------------------------------------------ unit
def test_profile_is_json_and_covers_every_feature(profile):
    assert json.loads(json.dumps(profile, allow_nan=False)) == profile
    assert list(profile["features"]) == list(FEATURES)
    for name, entry in profile["features"].items():
        assert sum(entry["shares"]) == pytest.approx(1.0), name
        if entry["kind"] == "bins":
            assert entry["edges"] == sorted(set(entry["edges"])), name
            assert len(entry["shares"]) == len(entry["edges"]) + 1 <= drift.N_BINS + 1
        else:
            assert entry["shares"][-1] == 0.0  # the "other" bucket: nothing unseen in training
    assert {n for n, e in profile["features"].items() if e["kind"] == "bins"} == {
        "wave_strength", "atr", "mgann_leg_index"}
    assert profile["features"]["session"]["categories"] == ["asia", "london", "new_york"]


def test_psi_is_zero_on_the_training_data_and_small_on_a_fresh_sample(profile):
    same = drift.psi(profile, sample(5000, seed=0))
    assert same.checked and max(same.psi.values()) == pytest.approx(0.0, abs=1e-12)
    fresh = drift.psi(profile, sample(5000, seed=1))
    assert set(fresh.psi) == set(FEATURES)
    assert fresh.max_psi < 0.02, fresh.psi
    assert fresh.warnings == {}


def test_psi_flags_a_shifted_feature_and_only_that_one(profile):
    shifted = sample(2000, seed=2)
    shifted["atr"] *= 3
    report = drift.psi(profile, shifted)
    assert list(report.warnings) == ["atr"] and report.psi["atr"] > 0.2
    asia = sample(2000, seed=3)
    asia["session"] = "asia"
    assert list(drift.psi(profile, asia).warnings) == ["session"]


def test_bins_are_interpolated_quantiles_and_an_edge_value_falls_in_the_upper_bin():
    # Drift's edges interpolate (the serializer's are training values): profiles written by earlier
    # versions must keep counting new batches in the same bins.
    frame = sample(300, seed=2)
    atr = frame["atr"].to_numpy(dtype=np.float64)
    expected = np.unique(np.quantile(atr, np.linspace(0.0, 1.0, drift.N_BINS + 1)[1:-1]))
    entry = drift.fit_profile(frame)["features"]["atr"]
    assert entry["edges"] == pytest.approx(list(expected), rel=0, abs=0)
    at_edge = pd.Series([entry["edges"][0]] * 4)
    shares = drift._shares(entry, at_edge, "atr")
    assert shares[1] == 1.0 and shares[0] == 0.0


def test_empty_bins_are_floored_not_infinite():
    # A bin empty in the batch, and one empty on both sides (adds exactly 0).
    value = drift.psi_value(np.array([0.0, 1.0, 0.0]), np.array([0.5, 0.5, 0.0]))
    eps = drift.EPS
    want = (eps - 0.5) * math.log(eps / 0.5) + 0.5 * math.log(1.0 / 0.5)
    assert math.isfinite(value) and value == pytest.approx(want)


def test_a_category_unseen_in_training_lands_in_other():
    train = sample(1000, seed=4)
    train = train[train["session"] != "asia"]
    profile = drift.fit_profile(train)
    assert profile["features"]["session"]["categories"] == ["london", "new_york"]
    batch = sample(1000, seed=5)
    report = drift.psi(profile, batch)
    assert "session" in report.warnings
    # The records form (check_frame's output) counts the same as the frame.
    assert drift.psi(profile, batch.to_dict(orient="records")).psi == pytest.approx(report.psi)


def test_a_value_beyond_the_training_range_falls_in_an_outer_bin(profile):
    batch = sample(500, seed=6)
    batch["wave_strength"] = 1.0  # at the contract's maximum: the last, open-ended bin
    assert drift.psi(profile, batch).psi["wave_strength"] > 0.2


def test_too_few_events_is_said_and_never_over_a_limit(profile):
    few = sample(drift.MIN_EVENTS - 1 + 10, seed=7).head(drift.MIN_EVENTS - 1)
    few["atr"] *= 100
    report = drift.psi(profile, few)
    assert report.too_few and not report.checked and report.over(0.0) == {}
    assert "too few events for a drift check" in report.note
    enough = sample(drift.MIN_EVENTS + 10, seed=7).head(drift.MIN_EVENTS)
    assert drift.psi(profile, enough).checked


def test_a_model_without_a_profile_is_reported_not_an_error():
    report = drift.check(None, sample(200, seed=8))
    assert report.no_profile and not report.checked and report.over(0.0) == {}
    assert "no feature profile in this model" in report.note
    assert json.loads(json.dumps(report.to_dict()))["note"] == report.note


def test_the_profile_carries_its_warning_level(profile):
    shifted = sample(500, seed=9)
    shifted["atr"] *= 1.3
    value = drift.psi(profile, shifted).psi["atr"]
    strict = drift.fit_profile(sample(5000, seed=0), psi_warn=value / 2)
    assert drift.psi(strict, shifted).warn_at == value / 2
    assert "atr" in drift.psi(strict, shifted).warnings
    assert "atr" not in drift.psi(strict, shifted, warn_at=value * 2).warnings


def test_max_psi_must_be_a_non_negative_number(tmp_path, capsys):
    from processor.predict import main

    for bad in ("-0.1", "nan", "inf", "high"):
        with pytest.raises(SystemExit) as exc:
            main(["--model", "m.zip", "--input", "in.jsonl", "--output", "out.jsonl", "--max-psi", bad])
        assert exc.value.code == 2
        assert "--max-psi" in capsys.readouterr().err


# ------------------------------------------------------------------------- with a trained model
def write_events(path: Path, frame: pd.DataFrame) -> Path:
    rows = frame.drop(columns=["label"], errors="ignore").to_dict(orient="records")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def val_frame(sample_dir) -> pd.DataFrame:
    """The trained run's validation split: the same distribution as its training split."""
    frame = pd.read_json(sample_dir / "val.jsonl", lines=True, dtype=False, convert_dates=False)
    assert len(frame) >= drift.MIN_EVENTS
    return frame


@pytest.fixture
def shifted_file(val_frame, tmp_path) -> Path:
    shifted = val_frame.copy()
    shifted["atr"] = shifted["atr"] * 3
    return write_events(tmp_path / "shifted.jsonl", shifted)


def without_profile(zip_path: Path, out: Path) -> Path:
    """A copy of the package as it was before drift profiles: serving.json without one, manifest redone."""
    from processor.io import sha256_bytes
    from processor.package import MANIFEST

    with zipfile.ZipFile(zip_path) as src:
        members = {n: src.read(n) for n in src.namelist() if n != MANIFEST and not n.endswith("/")}
    serving = json.loads(members["serving.json"])
    del serving["feature_profile"]
    members["serving.json"] = json.dumps(serving).encode()
    manifest = {"format_version": 1, "files": {n: sha256_bytes(b) for n, b in members.items()}}
    with zipfile.ZipFile(out, "w") as dst:
        for name, blob in members.items():
            dst.writestr(name, blob)
        dst.writestr(MANIFEST, json.dumps(manifest))
    return out


@pytest.mark.slow  # trains the session's run
def test_the_package_carries_the_training_profile(trained_run):
    with zipfile.ZipFile(trained_run.zip_path) as zf:
        serving = json.loads(zf.read("serving.json"))
    profile = serving["feature_profile"]
    assert set(profile["features"]) == set(FEATURES)  # serving.json is written with sorted keys
    # Fitted on the training split as loaded: oversampling duplicates did not count.
    assert trained_run.metrics["class_balance"]["applied"]
    assert profile["n_events"] == trained_run.metrics["data"]["n_train"] < trained_run.metrics["data"]["n_train_fit"]
    val = trained_run.metrics["drift"]
    assert set(val["val_psi"]) == set(FEATURES) and val["max_psi"] == max(val["val_psi"].values())


@pytest.mark.slow  # trains the session's run
def test_predict_refuses_drifted_input_with_max_psi(trained_run, shifted_file, tmp_path, capsys):
    # The predict CLI's main in process (a child interpreter would only import torch again).
    from processor.predict import main as predict_main

    out, report = tmp_path / "out.jsonl", tmp_path / "drift.json"
    code = predict_main(["--model", str(trained_run.zip_path), "--input", str(shifted_file), "--output", str(out),
                         "--max-psi", "0.2", "--drift-report", str(report)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "max_psi 0.2" in err and "atr=" in err and "no predictions written" in err
    assert "Traceback" not in err
    assert not out.exists()
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["refused"] is True and "atr" in written["over_warn"] and written["psi"]["atr"] > 0.2


@pytest.mark.slow  # trains the session's run
def test_predict_warns_on_drift_and_still_predicts_without_max_psi(trained_run, shifted_file, val_frame, tmp_path,
                                                                  capsys):
    from processor.predict import main

    out = tmp_path / "out.jsonl"
    assert main(["--model", str(trained_run.zip_path), "--input", str(shifted_file), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "PSI > 0.2" in err and "\n  atr " in err  # the summary and the per-feature table
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(val_frame)

    # Undrifted input (the run's own validation split) passes the same limit, and nothing is printed.
    plain = write_events(tmp_path / "val.jsonl", val_frame)
    report = tmp_path / "drift.json"
    assert main(["--model", str(trained_run.zip_path), "--input", str(plain), "--output", str(out),
                 "--max-psi", "0.2", "--drift-report", str(report)]) == 0
    assert "PSI" not in capsys.readouterr().err
    written = json.loads(report.read_text(encoding="utf-8"))
    assert written["checked"] and written["refused"] is False and set(written["psi"]) == set(FEATURES)


@pytest.mark.slow  # trains the session's run
def test_too_few_events_and_old_packages_are_reported_not_refused(trained_run, val_frame, tmp_path, capsys):
    from processor.predict import main

    few = val_frame.head(drift.MIN_EVENTS - 1).copy()
    few["atr"] = few["atr"] * 100
    few_file = write_events(tmp_path / "few.jsonl", few)
    out = tmp_path / "out.jsonl"
    assert main(["--model", str(trained_run.zip_path), "--input", str(few_file), "--output", str(out),
                 "--max-psi", "0"]) == 0
    assert "too few events for a drift check" in capsys.readouterr().err
    assert out.exists()

    old = without_profile(trained_run.zip_path, tmp_path / "old.zip")
    shifted = val_frame.copy()
    shifted["atr"] = shifted["atr"] * 3
    assert main(["--model", str(old), "--input", str(write_events(tmp_path / "shifted.jsonl", shifted)),
                 "--output", str(tmp_path / "old-out.jsonl"), "--max-psi", "0.2"]) == 0
    assert "no feature profile in this model" in capsys.readouterr().err


@pytest.mark.slow  # trains the session's run
def test_pyfunc_refuses_a_drifted_batch_with_the_max_psi_param(tracking, trained_run, val_frame, shifted_file,
                                                               tmp_path, caplog):
    import logging

    import mlflow
    from mlflow.exceptions import MlflowException

    from processor.predict import main

    uri = f"runs:/{trained_run.run_id}/model"
    assert mlflow.models.get_model_info(uri).signature.params.to_dict()[0]["name"] == "max_psi"
    model = mlflow.pyfunc.load_model(uri)
    shifted = val_frame.drop(columns=["label"]).copy()
    shifted["atr"] = shifted["atr"] * 3
    with pytest.raises(MlflowException, match=r"PSI > max_psi 0\.2 .*atr=") as err:
        model.predict(shifted, params={"max_psi": 0.2})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="max_psi must be a number >= 0") as err:
        model.predict(shifted, params={"max_psi": -1.0})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with caplog.at_level(logging.WARNING):
        got = model.predict(shifted)  # no limit: predictions, and a logged warning
    assert len(got) == len(shifted)
    assert any("input drift" in r.getMessage() and "atr" in r.getMessage() for r in caplog.records)
    assert len(model.predict(val_frame.drop(columns=["label"]), params={"max_psi": 0.2})) == len(val_frame)

    # The CLI reads the same profile through the URI.
    out = tmp_path / "out.jsonl"
    assert main(["--model", uri, "--input", str(shifted_file), "--output", str(out), "--max-psi", "0.2"]) == 1
    assert not out.exists()
