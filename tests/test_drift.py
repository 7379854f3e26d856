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
from processor.sample_data import generate
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
    report = drift.check({"format_version": 1}, sample(200, seed=8))
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
