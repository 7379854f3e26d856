"""Metrics, bootstrap intervals, confusion-matrix plot and sklearn baselines."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from sklearn.metrics import f1_score

from processor.blocks import ConfusionMatrix
from processor.evaluate import FLAG_FEATURES, baselines, plot_confusion_matrix
from processor.f1 import macro_and_class_f1
from processor.scores import bootstrap_ci, compute_metrics, score
from processor import tuned_tree
from processor.schema import FEATURES, LABELS, SESSIONS
from processor.tuned_tree import Search

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _from_confusion(matrix: list[list[int]], seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffled (y_true, y_pred) pairs whose confusion matrix (rows = true) is ``matrix``."""
    pairs = [(LABELS[i], LABELS[j]) for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(n)]
    np.random.default_rng(seed).shuffle(pairs)
    return [t for t, _ in pairs], [p for _, p in pairs]


def _noisy(n: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < accuracy, t, rng.integers(0, 3, n))
    return t, p


# ---- compute_metrics -------------------------------------------------------------------------

def test_perfect_predictions():
    y = ["long", "short", "no_trade", "no_trade", "long", "no_trade"]
    m = compute_metrics(y, y)
    assert m["val_accuracy"] == 1.0
    assert m["val_macro_f1"] == 1.0
    for label, support in zip(LABELS, (2, 1, 3)):
        assert m["per_class"][label] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": support}
    assert m["confusion_matrix"] == {"labels": list(LABELS), "matrix": [[2, 0, 0], [0, 1, 0], [0, 0, 3]]}


def test_crafted_confusion_matrix():
    matrix = [[5, 2, 1],   # true long
              [1, 6, 3],   # true short
              [0, 2, 8]]   # true no_trade
    y_true, y_pred = _from_confusion(matrix)
    m = compute_metrics(y_true, y_pred)
    # By hand: precision = diagonal / column sum, recall = diagonal / row sum.
    expected = {
        "long": (Fraction(5, 6), Fraction(5, 8), 8),
        "short": (Fraction(6, 10), Fraction(6, 10), 10),
        "no_trade": (Fraction(8, 12), Fraction(8, 10), 10),
    }
    f1s = []
    for label, (prec, rec, support) in expected.items():
        f1 = 2 * prec * rec / (prec + rec)
        f1s.append(f1)
        got = m["per_class"][label]
        assert got["precision"] == pytest.approx(float(prec))
        assert got["recall"] == pytest.approx(float(rec))
        assert got["f1"] == pytest.approx(float(f1))
        assert got["support"] == support
    assert m["val_accuracy"] == pytest.approx(19 / 28)
    assert m["val_macro_f1"] == pytest.approx(float(sum(f1s) / 3))
    assert m["confusion_matrix"]["matrix"] == matrix


def test_confusion_rows_are_true_labels():
    m = compute_metrics(["long"] * 4 + ["no_trade"], ["short"] * 4 + ["no_trade"])
    assert m["confusion_matrix"]["matrix"] == [[0, 4, 0], [0, 0, 0], [0, 0, 1]]
    assert m["per_class"]["long"]["recall"] == 0.0
    assert m["per_class"]["short"]["precision"] == 0.0


def test_absent_class_counts_as_zero_in_macro_f1():
    m = compute_metrics(["long", "short"], ["long", "short"])
    assert m["per_class"]["no_trade"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["val_macro_f1"] == pytest.approx(2 / 3)


def test_class_ids_equal_names_and_output_is_plain_json():
    t, p = _noisy(200, 0.6, seed=1)
    by_id = compute_metrics(t, p)
    by_name = compute_metrics([LABELS[i] for i in t], pd.Series([LABELS[i] for i in p]))
    assert by_id == by_name
    assert json.loads(json.dumps(by_id)) == by_id
    assert type(by_id["val_accuracy"]) is float
    assert type(by_id["per_class"]["long"]["support"]) is int
    assert type(by_id["confusion_matrix"]["matrix"][0][0]) is int


@pytest.mark.parametrize("y_true,y_pred,match", [
    (["long", "buy"], ["long", "long"], "y_true: unknown labels \\['buy'\\]"),
    (["long"], ["long", "short"], "differ in length"),
    ([], [], "zero examples"),
    ([0, 3], [0, 1], "outside"),
])
def test_compute_metrics_rejects_bad_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y_true, y_pred)


# ---- bootstrap_ci ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_vectorised_statistic_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    # Small samples so some resamples miss a class entirely.
    t = rng.integers(0, 3, (50, 8))
    p = rng.integers(0, 3, (50, 8))
    got = macro_and_class_f1(t, p, 3)
    for b in range(t.shape[0]):
        per = f1_score(t[b], p[b], labels=[0, 1, 2], average=None, zero_division=0)
        assert got[1:, b] == pytest.approx(per)
        assert got[0, b] == pytest.approx(f1_score(t[b], p[b], labels=[0, 1, 2], average="macro", zero_division=0))


def test_bootstrap_contains_point_estimate():
    t, p = _noisy(300, 0.6, seed=2)
    m = compute_metrics(t, p)
    ci = bootstrap_ci(t, p)
    assert ci["confidence"] == 0.9 and ci["n_resamples"] == 1000 and ci["method"] == "percentile"
    assert ci["val_macro_f1"]["low"] < m["val_macro_f1"] < ci["val_macro_f1"]["high"]
    for label in LABELS:
        low, high = ci["f1"][label]["low"], ci["f1"][label]["high"]
        assert 0.0 <= low < m["per_class"][label]["f1"] < high <= 1.0
    assert json.loads(json.dumps(ci)) == ci


def test_bootstrap_is_seeded():
    t, p = _noisy(300, 0.6, seed=3)
    assert bootstrap_ci(t, p, seed=7) == bootstrap_ci(t, p, seed=7)
    assert bootstrap_ci(t, p, seed=7) != bootstrap_ci(t, p, seed=8)


def test_bootstrap_narrower_with_more_data_and_lower_confidence():
    def width(ci):
        return ci["val_macro_f1"]["high"] - ci["val_macro_f1"]["low"]

    small = bootstrap_ci(*_noisy(100, 0.6, seed=4))
    large = bootstrap_ci(*_noisy(3000, 0.6, seed=4))
    assert width(large) < width(small) / 2  # ~sqrt(30) narrower in theory
    t, p = _noisy(300, 0.6, seed=5)
    assert width(bootstrap_ci(t, p, confidence=0.5)) < width(bootstrap_ci(t, p, confidence=0.99))


def test_bootstrap_bca_and_degenerate_fallback():
    t, p = _noisy(300, 0.6, seed=6)
    bca = bootstrap_ci(t, p, method="BCa")
    assert bca["method"] == "BCa"
    assert bca["val_macro_f1"]["low"] < compute_metrics(t, p)["val_macro_f1"] < bca["val_macro_f1"]["high"]
    # Perfect predictions: every resample scores 1.0, BCa is undefined -> percentile on the same draws.
    perfect = bootstrap_ci(t, t, method="BCa")
    assert perfect["method"] == "percentile"
    assert perfect["val_macro_f1"] == {"low": 1.0, "high": 1.0}


@pytest.mark.parametrize("kwargs,match", [
    ({"confidence": 1.0}, "confidence"),
    ({"confidence": 0}, "confidence"),
    ({"n_resamples": 0}, "n_resamples"),
    ({"n_resamples": 10.5}, "n_resamples"),
])
def test_bootstrap_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(["long", "short"], ["long", "short"], **kwargs)


def test_bootstrap_needs_two_examples():
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci(["long"], ["long"])


# ---- plot_confusion_matrix -------------------------------------------------------------------

def test_plot_writes_png_atomically(tmp_path):
    cm = score(*_from_confusion([[5, 2, 1], [1, 6, 3], [0, 2, 8]])).confusion
    target = tmp_path / "nested" / "confusion.png"
    out = plot_confusion_matrix(cm, target, title="val")
    assert out == target
    data = target.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000
    image = imread(target)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.05  # not a blank canvas
    assert [f.name for f in target.parent.iterdir()] == ["confusion.png"]  # no temp file left behind
    # Overwriting an existing file works (os.replace).
    plot_confusion_matrix(cm, target)
    assert target.read_bytes()[:8] == PNG_MAGIC


def test_plot_rejects_malformed_matrix(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix(ConfusionMatrix(LABELS, ((1, 2), (3, 4))), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---- baselines -------------------------------------------------------------------------------

def _events(n: int, seed: int, noise: float = 0.1) -> pd.DataFrame:
    """Label = structure direction, except Asia is never traded; ``noise`` of the labels flipped."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "ext_dir": rng.integers(-1, 2, n),
        "int_dir": rng.integers(-1, 2, n),
        **{flag: rng.random(n) < 0.5 for flag in FLAG_FEATURES},
        "mgann_leg_index": rng.integers(0, 12, n),
        "wave_strength": rng.random(n),
        "atr": rng.uniform(0.5, 20.0, n),
        "session": rng.choice(SESSIONS, n),
    })
    label = np.select([df["ext_dir"] == 1, df["ext_dir"] == -1], ["long", "short"], "no_trade").astype(object)
    label[(df["session"] == "asia").to_numpy()] = "no_trade"
    flip = rng.random(n) < noise
    label[flip] = rng.choice(LABELS, flip.sum())
    df["label"] = label
    return df[[*FEATURES, "label"]]


# The tuned tree with a small search (the fast tier); tests/test_tuned_tree.py tests it further.
SMALL = Search(trials=3, folds=3, max_trees=40)


def test_baselines_learn_an_easy_rule_and_are_deterministic():
    train, val = _events(400, seed=0), _events(200, seed=1)
    first = baselines(train, val, seed=0, search=SMALL)
    assert set(first) == {"logistic_regression", "hist_gradient_boosting", "tuned_gbdt"}
    for name, result in first.items():
        extra = {"cv_macro_f1", "params", "search", "seconds"} if name == "tuned_gbdt" else set()
        assert set(result) == {"val_accuracy", "val_macro_f1", "per_class_f1"} | extra
        assert set(result["per_class_f1"]) == set(LABELS)
        # Chance macro-F1 is ~0.33; the rule is learnable up to the 10% label noise.
        assert result["val_macro_f1"] > 0.75
        assert result["val_accuracy"] > 0.75
        assert all(f1 > 0.6 for f1 in result["per_class_f1"].values())
    tuned_tree.clear_cache()  # a real refit, not the memoised one

    def timeless(result):
        return {**result, "tuned_gbdt": {k: v for k, v in result["tuned_gbdt"].items() if k != "seconds"}}

    assert timeless(baselines(train, val, seed=0, search=SMALL)) == timeless(first)
    assert json.loads(json.dumps(first)) == first
    assert set(baselines(train, val, seed=0, names=["logistic_regression"])) == {"logistic_regression"}


def test_baselines_score_low_on_pure_noise():
    """Guards against leakage: unlearnable labels must not score like the easy rule."""
    train, val = _events(400, seed=2, noise=1.0), _events(200, seed=3, noise=1.0)
    for result in baselines(train, val, seed=0, search=SMALL).values():
        assert result["val_macro_f1"] < 0.55


def test_baselines_accept_contract_style_types():
    """0/1 ints for flags and a session missing from train still work."""
    train, val = _events(300, seed=4), _events(100, seed=5)
    train = train[train["session"] != "new_york"].copy()
    for flag in FLAG_FEATURES:
        train[flag] = train[flag].astype(int)
    result = baselines(train, val, seed=1, search=SMALL)
    assert result["logistic_regression"]["val_macro_f1"] > 0.6
    assert result["tuned_gbdt"]["val_macro_f1"] > 0.6


def test_baselines_report_missing_columns():
    train = _events(50, seed=0).drop(columns=["atr"])
    with pytest.raises(ValueError, match="train frame is missing columns \\['atr'\\]"):
        baselines(train, _events(20, seed=1), seed=0)
