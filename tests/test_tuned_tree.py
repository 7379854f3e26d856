"""The tuned tree (processor.tuned_tree): tuned on train only, trees chosen by CV macro-F1, offsets, cache."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from processor import tuned_tree
from processor.evaluate import baselines
from processor.schema import LABELS
from processor.tuned_tree import Search, best_offsets
from test_evaluate import _events

# Small enough for the fast tier (a few hundred rows, a handful of trials).
SMALL = Search(trials=4, folds=3, max_trees=40, offsets=False)


@pytest.fixture(autouse=True)
def fresh_cache():
    # Each test fits for real: a cached fit would hide what the test is about.
    tuned_tree.clear_cache()
    yield
    tuned_tree.clear_cache()


def _tuned(train, val, seed=0, search=SMALL):
    return baselines(train, val, seed=seed, names=("tuned_gbdt",), search=search)["tuned_gbdt"]


def test_validation_never_tunes_the_tree():
    """Shuffled val labels: the chosen settings and the CV score are the same; only the val score moves."""
    train, val = _events(300, seed=10), _events(150, seed=11)
    shuffled = val.copy()
    shuffled["label"] = np.random.default_rng(0).permutation(val["label"].to_numpy())
    first = _tuned(train, val)
    tuned_tree.clear_cache()
    second = _tuned(train, shuffled)
    assert second["params"] == first["params"]
    assert second["cv_macro_f1"] == first["cv_macro_f1"]
    assert second["search"] == first["search"]
    assert second["val_macro_f1"] < first["val_macro_f1"] - 0.2  # the shuffle did reach the scoring


def test_block_shape_and_the_tree_learns():
    train, val = _events(300, seed=12), _events(150, seed=13)
    block = _tuned(train, val)
    assert set(block) == {"val_accuracy", "val_macro_f1", "per_class_f1", "cv_macro_f1", "params", "search",
                          "seconds"}
    assert set(block["params"]) == {"n_estimators", "num_leaves", "learning_rate", "min_child_samples",
                                    "reg_lambda", "feature_fraction", "offsets"}
    assert block["params"]["n_estimators"] in SMALL.tree_counts()
    assert block["params"]["offsets"] is None  # SMALL leaves them off
    assert block["val_macro_f1"] > 0.75 and block["cv_macro_f1"] > 0.75


def test_cv_score_is_the_folds_macro_f1_at_the_chosen_tree_count():
    """The reported CV macro-F1 is what an independent refit of the chosen settings scores on the same
    folds: the tree count really is chosen by fold macro-F1 (not by log-loss early stopping)."""
    from sklearn.model_selection import StratifiedKFold

    train, val = _events(300, seed=14), _events(100, seed=15)
    from processor.evaluate import _preprocessor, _xy

    x_df, y_names = _xy(train, "train")
    x = _preprocessor(scale_numeric=False).fit(x_df).transform(x_df)
    y = np.array([LABELS.index(v) for v in y_names])
    tree = tuned_tree.fit(x, y, seed=3, search=SMALL)
    p = dict(tree.params)
    n = p.pop("n_estimators")
    p["colsample_bytree"] = p.pop("feature_fraction")
    scores = []
    for tr, te in StratifiedKFold(3, shuffle=True, random_state=3).split(x, y):
        model = tuned_tree._lgbm(3, n, **p).fit(x[tr], y[tr])
        scores.append(f1_score(y[te], model.predict(x[te]), average="macro"))
    assert tree.cv_macro_f1 == pytest.approx(np.mean(scores), abs=1e-9)


def test_fits_are_deterministic_and_cached_by_their_inputs():
    train, val = _events(200, seed=16), _events(80, seed=17)
    first = _tuned(train, val)
    tuned_tree.clear_cache()
    again = _tuned(train, val)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
    # Cached: the same rows, seed and search give the very same fit, other labels a new one.
    x, y = np.random.default_rng(0).random((90, 4)), np.arange(90) % 3
    assert tuned_tree.fit(x, y, seed=0, search=SMALL) is tuned_tree.fit(x, y, seed=0, search=SMALL)
    assert tuned_tree.fit(x, y, seed=0, search=SMALL) is not tuned_tree.fit(x, y[::-1].copy(), seed=0, search=SMALL)


def test_offsets_only_when_they_pay():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    honest = np.full((600, 3), 0.1)
    honest[np.arange(600), y] = 0.8
    assert best_offsets(y, honest) == ([0.0, 0.0, 0.0], 1.0)
    # Class 0 is always under-confident: its true events show p 0.35 vs 0.45 for class 2.
    shy = honest.copy()
    shy[y == 0] = [0.35, 0.2, 0.45]
    offsets, score = best_offsets(y, shy)
    assert offsets[0] - offsets[2] > np.log(0.45 / 0.35) and score == 1.0


def test_offsets_are_applied_when_asked():
    train, val = _events(300, seed=18), _events(150, seed=19)
    plain = _tuned(train, val)
    block = _tuned(train, val, search=Search(trials=4, folds=3, max_trees=40, offsets=True))  # on by default
    assert isinstance(block["params"]["offsets"], list) and len(block["params"]["offsets"]) == 3
    assert Search().offsets is True
    # One fit serves both: the offsets change only the decision, never the settings or the CV score.
    assert {k: v for k, v in block["params"].items() if k != "offsets"} == {
        k: v for k, v in plain["params"].items() if k != "offsets"}
    assert block["cv_macro_f1"] == plain["cv_macro_f1"]


def test_baselines_refuse_an_unknown_name():
    train, val = _events(60, seed=0), _events(30, seed=1)
    with pytest.raises(ValueError, match="unknown baselines \\['xgboost'\\]"):
        baselines(train, val, seed=0, names=("xgboost",))


def test_a_class_too_small_to_fold_is_a_clear_error():
    x, y = np.random.default_rng(0).random((40, 3)), np.array([0] * 20 + [1] * 19 + [2])
    with pytest.raises(ValueError, match="at least 2 training events of each class"):
        tuned_tree.fit(x, y, seed=0, search=SMALL)
