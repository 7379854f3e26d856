"""The honest rival: a LightGBM tree tuned by cross-validation on the training split only.

The default ``hist_gradient_boosting`` baseline is a tree nobody would ship; a quant would tune one.
:func:`fit` does that in a few CPU seconds: Optuna (seeded TPE) picks ``num_leaves``, ``learning_rate``,
``min_child_samples``, ``reg_lambda`` and ``feature_fraction`` by stratified k-fold CV macro-F1 on the
training rows it is given, and the number of trees by the same CV macro-F1: each fold is fitted once
at ``max_trees`` and scored at several tree counts (``predict_proba(num_iteration=k)``). Early stopping
on log-loss is not used: on this data it stopped at ~20 trees and CV macro-F1 fell (issue 26). Then one
refit on all the training rows. Class weights are balanced, as for the other baselines.

Per-class decision offsets (added to the log-probabilities, chosen on the out-of-fold probabilities of
the chosen settings) are always measured (``cv_macro_f1_offsets``) and applied unless
``eval.tuned_offsets`` is false: on the selection seeds they raised the tuned tree's mean val macro-F1
over 27 splits from 0.784 to 0.792 (docs/quality.md, benchmarks/results/trees_selection.json).

Validation rows never reach this module: the caller passes training features and labels only, and the
val-blind test (tests/test_tuned_tree.py) shuffles val labels and checks that nothing here changes.

A fit is a pure function of (rows, labels, seed, search settings), so results are memoised per process
(:data:`_CACHE`, keyed by a hash of exactly those): a sweep's trials share one training split and seed,
and each worker fits the tuned tree once instead of once per trial.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from processor.probs import log_probs
from processor.f1 import macro_and_class_f1

# Fractions of max_trees at which each fold's fit is scored (the number of trees is chosen among them).
TREE_FRACTIONS = (1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0)
# Log-probability offsets tried per class (the last class stays at 0: only differences matter).
OFFSET_GRID = np.round(np.linspace(-1.0, 1.0, 21), 2)
_CACHE: dict[str, TunedTree] = {}
_CACHE_SIZE = 8


@dataclass(frozen=True)
class Search:
    """How hard to tune: Optuna trials, CV folds, the most trees, and whether offsets are applied."""

    # The defaults of eval.tuned_* (processor.config reads them from here): ~6 CPU-s at 1,300 events.
    trials: int = 20
    folds: int = 3
    max_trees: int = 200
    offsets: bool = True

    def tree_counts(self) -> list[int]:
        return sorted({max(1, round(self.max_trees * f)) for f in TREE_FRACTIONS})


@dataclass
class TunedTree:
    model: Any  # lightgbm.LGBMClassifier fitted on all the training rows
    params: dict[str, Any]  # the chosen hyper-parameters, n_estimators included
    cv_macro_f1: float  # mean over folds at the chosen settings, no offsets
    offsets: list[float]  # per class, in label order, chosen on the out-of-fold probabilities
    cv_macro_f1_offsets: float  # the same out-of-fold probabilities scored with those offsets
    seconds: float
    search: Search = field(default_factory=Search)
    classes: Any = None  # the caller's class ids, by column (a class absent from training has none)

    def predict(self, x: np.ndarray, *, offsets: bool = False) -> np.ndarray:
        """Class ids, with the per-class offsets added to the log-probabilities when ``offsets``."""
        log_p = log_probs(self.model.predict_proba(x))
        return np.asarray(self.classes)[(log_p + (np.asarray(self.offsets) if offsets else 0.0)).argmax(axis=1)]


def _lgbm(seed: int, n_estimators: int, **params: Any) -> Any:
    import lightgbm as lgb

    # Seeded, deterministic and on one thread: the same rows give the same tree on any machine, and
    # threads spinning on a busy 2-core machine cost more than they gain at ~1,000 rows.
    return lgb.LGBMClassifier(n_estimators=n_estimators, class_weight="balanced", random_state=seed,
                              deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1, **params)


def _suggest(trial: Any) -> dict[str, Any]:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 4, 32, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 80, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        # LightGBM's feature_fraction (colsample_bytree is its sklearn alias).
        "colsample_bytree": trial.suggest_float("feature_fraction", 0.5, 1.0),
    }


def macro_f1_rows(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each row of ``pred`` (shape (m, n)) against ``y`` (n,), as sklearn with
    zero_division=0 (processor.f1): the offset grid scores hundreds of candidates."""
    return macro_and_class_f1(y, pred, n_classes)[0]


def best_offsets(y: np.ndarray, proba: np.ndarray) -> tuple[list[float], float]:
    """Per-class log-probability offsets maximising macro-F1 on ``proba`` (zeros unless one pays)."""
    n_classes = proba.shape[1]
    log_p = log_probs(proba)
    grids = np.meshgrid(*([OFFSET_GRID] * (n_classes - 1)), indexing="ij")
    cands = np.stack([g.ravel() for g in grids] + [np.zeros(grids[0].size)], axis=1)  # (m, K)
    scores = macro_f1_rows(y, (log_p[None, :, :] + cands[:, None, :]).argmax(axis=2), n_classes)
    zero = macro_f1_rows(y, log_p.argmax(axis=1)[None, :], n_classes)[0]
    i = int(scores.argmax())
    if scores[i] <= zero:
        return [0.0] * n_classes, float(zero)
    return [float(v) for v in cands[i]], float(scores[i])


def _key(x: np.ndarray, y: np.ndarray, seed: int, search: Search) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64)):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(repr((seed, search)).encode())
    return h.hexdigest()


def clear_cache() -> None:
    _CACHE.clear()


def fit(x: np.ndarray, y: np.ndarray, *, seed: int, search: Search = Search()) -> TunedTree:
    """Tune on (``x``, ``y``) = the training split's encoded features and class ids, then refit on it.
    Offsets are measured either way; whether they are applied is the caller's (``predict(offsets=)``)."""
    search = replace(search, offsets=False)  # not part of the fit: one cached fit serves both uses
    key = _key(x, y, seed, search)
    if key in _CACHE:
        return _CACHE[key]
    classes, y_ids = np.unique(np.asarray(y, dtype=np.int64), return_inverse=True)
    if len(classes) < 2:
        raise ValueError("the tuned tree needs at least two classes in the training labels")
    if np.bincount(y_ids).min() < 2:
        # Folds of one event per class leave a class out of some fold's training rows.
        raise ValueError(f"the tuned tree needs at least 2 training events of each class, got counts "
                         f"{dict(zip(classes.tolist(), np.bincount(y_ids).tolist()))}")
    # Fitted on 0..K-1 so fold scores, offsets and probability columns line up; predict maps back.
    result = _fit(np.asarray(x, dtype=np.float64), y_ids.astype(np.int64), seed, search)
    result.classes = classes
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = result
    return result


def _fit(x: np.ndarray, y: np.ndarray, seed: int, search: Search) -> TunedTree:
    import optuna
    from scipy.special import softmax
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    n_classes = int(y.max()) + 1
    smallest = int(np.bincount(y).min())
    folds = list(StratifiedKFold(n_splits=max(2, min(search.folds, smallest)), shuffle=True,
                                 random_state=seed).split(x, y))
    counts = search.tree_counts()
    oof: dict[int, np.ndarray] = {}

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial)
        proba = np.zeros((len(counts), len(y), n_classes))
        for train_idx, test_idx in folds:
            model = _lgbm(seed, counts[-1], **params).fit(x[train_idx], y[train_idx])
            # Raw scores of consecutive slices of trees, summed: every count from one pass over the trees.
            raw = np.zeros((len(test_idx), n_classes))
            for j, (start, stop) in enumerate(zip([0, *counts[:-1]], counts)):
                raw += model.predict_proba(x[test_idx], raw_score=True, start_iteration=start,
                                           num_iteration=stop - start)
                proba[j, test_idx] = softmax(raw, axis=1)
        # Macro-F1 per fold, averaged, at each tree count: the count is chosen by the score we report.
        per_count = np.mean([macro_f1_rows(y[t], proba[:, t].argmax(axis=2), n_classes) for _, t in folds], axis=0)
        j = int(per_count.argmax())  # ties: the fewest trees
        trial.set_user_attr("n_estimators", counts[j])
        oof[trial.number] = proba[j]
        return float(per_count[j])

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the run's log
    try:
        with threadpool_limits(limits=1):
            study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
            study.optimize(objective, n_trials=search.trials)
            best = study.best_trial
            chosen = _suggest(optuna.trial.FixedTrial(best.params))
            n_trees = int(best.user_attrs["n_estimators"])
            offsets, cv_offsets = best_offsets(y, oof[best.number])
            model = _lgbm(seed, n_trees, **chosen).fit(x, y)
    finally:
        optuna.logging.set_verbosity(verbosity)
    params = {"n_estimators": n_trees, **best.params}
    return TunedTree(model=model, params=params, cv_macro_f1=float(best.value), offsets=offsets,
                     cv_macro_f1_offsets=cv_offsets,
                     seconds=round(time.perf_counter() - started, 2), search=search)
