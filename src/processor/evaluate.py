"""Validation metrics, bootstrap confidence intervals, confusion-matrix plot and classic baselines.

Everything returned is plain Python (``float``/``int``/``str``/``list``/``dict``) so it can go to
JSON and MLflow as-is. Class order is always ``processor.schema.LABELS`` (rows of the confusion
matrix are the true class).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import DegenerateDataWarning, bootstrap
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from processor import tuned_tree
from processor.io import write_png_atomic
from processor.names import BASELINES
from processor.schema import FEATURES, LABELS, SESSIONS

# How the 13 contract features are fed to the sklearn baselines.
CATEGORICAL_FEATURES: tuple[str, ...] = ("session",)
NUMERIC_FEATURES: tuple[str, ...] = ("ext_dir", "int_dir", "mgann_leg_index", "wave_strength", "atr")
FLAG_FEATURES: tuple[str, ...] = tuple(
    f for f in FEATURES if f not in CATEGORICAL_FEATURES and f not in NUMERIC_FEATURES
)

ArrayLike = Sequence[Any] | np.ndarray | pd.Series


def _to_names(y: ArrayLike, labels: Sequence[str], what: str) -> np.ndarray:
    """Label names as an object array; integer inputs are class ids indexing ``labels``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        bad = sorted({int(v) for v in arr if not 0 <= v < len(labels)})
        if bad:
            raise ValueError(f"{what}: class ids {bad[:5]} are outside 0..{len(labels) - 1}")
        return np.asarray(labels, dtype=object)[arr]
    arr = arr.astype(object)
    unknown = sorted({str(v) for v in arr.tolist() if v not in labels})
    if unknown:
        raise ValueError(f"{what}: unknown labels {unknown[:5]}; expected one of {list(labels)}")
    return arr


def _pair(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    t = _to_names(y_true, labels, "y_true")
    p = _to_names(y_pred, labels, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    return t, p


def compute_metrics(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Accuracy, macro-F1 over all ``labels`` (absent classes count as F1 0), per-class
    precision/recall/F1/support and the confusion matrix (rows = true class, columns = predicted).

    ``y_true``/``y_pred`` hold label names, or integer class ids indexing ``labels``.
    """
    labels = list(labels)
    t, p = _pair(y_true, y_pred, labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=labels, average=None, zero_division=0
    )
    cm = confusion_matrix(t, p, labels=labels)
    return {
        "val_accuracy": float(accuracy_score(t, p)),
        "val_macro_f1": float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "matrix": [[int(v) for v in row] for row in cm]},
    }


def _macro_and_class_f1(t: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    """Vectorised F1 over the last axis: returns ``[macro, f1_0, ..., f1_{K-1}]`` stacked on axis 0.

    Same definition as sklearn with ``zero_division=0``: ``F1_k = 2 TP / (2 TP + FP + FN)``, 0 when the
    class is neither present nor predicted. Written by hand only because sklearn scores one resample
    per call, which is ~100x slower for 1000 resamples.
    """
    per_class = []
    for k in range(n_classes):
        is_t, is_p = t == k, p == k
        tp = np.sum(is_t & is_p, axis=-1)
        denom = np.sum(is_t, axis=-1) + np.sum(is_p, axis=-1)
        per_class.append(np.divide(2.0 * tp, denom, out=np.zeros(np.shape(tp)), where=denom > 0))
    f1 = np.stack(per_class, axis=0)
    return np.concatenate([f1.mean(axis=0, keepdims=True), f1], axis=0)


def bootstrap_ci(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: Sequence[str] = LABELS,
    confidence: float = 0.90,
    n_resamples: int = 1000,
    seed: int = 0,
    method: str = "percentile",
) -> dict[str, Any]:
    """Paired bootstrap confidence intervals (``scipy.stats.bootstrap``) for macro-F1 and per-class F1.

    Events are resampled with their prediction (``paired=True``). ``method`` is passed to scipy;
    ``"percentile"`` (default) is always defined. If ``"BCa"`` or ``"basic"`` is asked for and the
    interval comes out NaN (degenerate bootstrap distribution, e.g. perfect predictions), the same
    resamples are re-used for a percentile interval and ``"method"`` in the result says so.

    Returns ``{"confidence", "n_resamples", "method", "val_macro_f1": {"low", "high"},
    "f1": {label: {"low", "high"}}}``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    labels = list(labels)
    t, p = _pair(y_true, y_pred, labels)
    if len(t) < 2:
        raise ValueError("bootstrap needs at least 2 examples")
    index = {name: i for i, name in enumerate(labels)}
    t_ids = np.array([index[v] for v in t], dtype=np.int64)
    p_ids = np.array([index[v] for v in p], dtype=np.int64)

    def statistic(t_s: np.ndarray, p_s: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy always resamples along the last axis for paired data; axis is part of its protocol.
        return _macro_and_class_f1(np.moveaxis(t_s, axis, -1), np.moveaxis(p_s, axis, -1), len(labels))

    kwargs = dict(paired=True, vectorized=True, confidence_level=confidence, axis=-1)
    with warnings.catch_warnings():
        # A degenerate distribution makes BCa divide by zero and warn; the NaN it yields is handled
        # below, so the warnings would only be noise (or errors under ``-W error``).
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DegenerateDataWarning)
        res = bootstrap(
            (t_ids, p_ids), statistic, n_resamples=n_resamples, method=method,
            rng=np.random.default_rng(seed), **kwargs,
        )
    used = method
    low, high = np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)
    if np.isnan(low).any() or np.isnan(high).any():
        # Re-using the bootstrap distribution costs no new resamples and keeps the seed's draws.
        res = bootstrap(
            (t_ids, p_ids), statistic, n_resamples=0, method="percentile",
            bootstrap_result=res, rng=np.random.default_rng(seed), **kwargs,
        )
        used = "percentile"
        low, high = np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)

    def interval(i: int) -> dict[str, float]:
        return {"low": float(low[i]), "high": float(high[i])}

    return {
        "confidence": float(confidence),
        "n_resamples": int(n_resamples),
        "method": used,
        "val_macro_f1": interval(0),
        "f1": {name: interval(i + 1) for i, name in enumerate(labels)},
    }


def plot_confusion_matrix(cm: dict[str, Any], path: Path, title: str = "Confusion matrix (validation)") -> Path:
    """Write ``cm`` (as returned in ``compute_metrics()["confusion_matrix"]``) to a PNG with the
    counts written in the cells; rows are the true class. The file appears complete or not at all."""
    labels = [str(v) for v in cm["labels"]]
    matrix = np.asarray(cm["matrix"], dtype=np.int64)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix has shape {matrix.shape}, expected {len(labels)}x{len(labels)}")
    path = Path(path)

    # Figure + Agg canvas instead of pyplot: no global figure state, safe in threads and loops.
    fig = Figure(figsize=(1.6 * len(labels) + 2.2, 1.4 * len(labels) + 1.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()

    write_png_atomic(fig, path)
    return path


def plot_learning_curve(history: Sequence[dict[str, Any]], path: Path, *, best_epoch: int | None = None,
                        baseline_f1: float | None = None, baseline_label: str = "GBDT baseline",
                        title: str = "Learning curve") -> Path:
    """Per-epoch train loss (left axis) and val macro-F1 (right axis) to a PNG, with the restored best
    epoch and, when given, a baseline's macro-F1 (``baseline_label``) as reference lines. Written atomically."""
    if not history:
        raise ValueError("learning curve needs at least one evaluated epoch")
    epochs = [int(row["epoch"]) for row in history]
    fig = Figure(figsize=(6.4, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    losses = [row.get("train_loss") for row in history]
    ax.plot(epochs, [np.nan if v is None else v for v in losses], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (focal)", color="tab:blue")
    ax.set_xticks(epochs)
    f1_ax = ax.twinx()
    f1_ax.plot(epochs, [row["val_macro_f1"] for row in history], "s-", color="tab:orange", label="val macro-F1")
    if baseline_f1 is not None:
        f1_ax.axhline(baseline_f1, color="tab:green", linestyle="--", label=f"{baseline_label} {baseline_f1:.3f}")
    if best_epoch is not None:
        f1_ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    f1_ax.set_ylabel("val macro-F1", color="tab:orange")
    handles = ax.get_legend_handles_labels()[0] + f1_ax.get_legend_handles_labels()[0]
    f1_ax.legend(handles=handles, loc="lower right", fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    write_png_atomic(fig, path)
    return Path(path)


def _preprocessor(scale_numeric: bool) -> ColumnTransformer:
    return ColumnTransformer(
        [
            # Fixed categories: a session missing from train still gets its column, so train and val
            # encode identically.
            ("session", OneHotEncoder(categories=[list(SESSIONS)], sparse_output=False), list(CATEGORICAL_FEATURES)),
            ("numeric", StandardScaler() if scale_numeric else "passthrough", list(NUMERIC_FEATURES)),
            ("flags", "passthrough", list(FLAG_FEATURES)),
        ],
        sparse_threshold=0.0,
    )


def _xy(df: pd.DataFrame, what: str) -> tuple[pd.DataFrame, np.ndarray]:
    missing = [c for c in (*FEATURES, "label") if c not in df.columns]
    if missing:
        raise ValueError(f"{what} frame is missing columns {missing}")
    x = df[list(FEATURES)].copy()
    for col in (*NUMERIC_FEATURES, *FLAG_FEATURES):
        x[col] = x[col].astype(np.float64)
    x["session"] = x["session"].astype(object)
    return x, _to_names(df["label"].to_numpy(), LABELS, f"{what} label")


def baselines(train_df: pd.DataFrame, val_df: pd.DataFrame, *, seed: int, names: Sequence[str] = BASELINES,
              search: tuned_tree.Search = tuned_tree.Search()) -> dict[str, dict[str, Any]]:
    """Fit the classic models ``names`` (of :data:`BASELINES`) on the 13 features of ``train_df`` and
    score them on ``val_df``.

    A reference point for the LM: ``logistic_regression`` (one-hot session, standardised numeric
    features, raw 0/1 flags), ``hist_gradient_boosting`` (sklearn's defaults) and ``tuned_gbdt``
    (LightGBM tuned by CV on ``train_df`` only, ``search`` says how hard; processor.tuned_tree), all
    with balanced class weights. Returns ``{model: {"val_accuracy", "val_macro_f1", "per_class_f1":
    {label: f1}}}``; ``tuned_gbdt`` adds ``cv_macro_f1``, ``params`` and ``seconds``.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; expected some of {list(BASELINES)}")
    x_train, y_train = _xy(train_df, "train")
    x_val, y_val = _xy(val_df, "val")
    if len(set(y_train.tolist())) < 2:
        raise ValueError("baselines need at least two classes in the training labels")
    models: dict[str, Pipeline] = {
        "logistic_regression": Pipeline([
            ("features", _preprocessor(scale_numeric=True)),
            ("model", LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)),
        ]),
        "hist_gradient_boosting": Pipeline([
            ("features", _preprocessor(scale_numeric=False)),
            ("model", HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)),
        ]),
    }
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "tuned_gbdt":
            out[name] = _tuned_gbdt(x_train, y_train, x_val, y_val, seed=seed, search=search)
            continue
        pipe = models[name]
        # One thread: at ~1,000 rows parallelism gains nothing, and OpenMP threads spinning on a busy
        # 2-core machine (alongside torch) made the boosted tree ~20x slower (1.4 s vs 32 s measured).
        with threadpool_limits(limits=1):
            pipe.fit(x_train, y_train)
            predicted = pipe.predict(x_val)
        out[name] = _scored(y_val, predicted)
    return out


def _scored(y_val: np.ndarray, predicted: Any) -> dict[str, Any]:
    m = compute_metrics(y_val, predicted)
    return {
        "val_accuracy": m["val_accuracy"],
        "val_macro_f1": m["val_macro_f1"],
        "per_class_f1": {label: m["per_class"][label]["f1"] for label in LABELS},
    }


def _tuned_gbdt(x_train: pd.DataFrame, y_train: np.ndarray, x_val: pd.DataFrame, y_val: np.ndarray, *,
                seed: int, search: tuned_tree.Search) -> dict[str, Any]:
    """Tuned on the training split alone: validation only scores the refitted tree."""
    features = _preprocessor(scale_numeric=False).fit(x_train)
    ids = {name: i for i, name in enumerate(LABELS)}
    tree = tuned_tree.fit(features.transform(x_train), np.array([ids[v] for v in y_train]), seed=seed,
                          search=search)
    predicted = np.asarray(LABELS, dtype=object)[tree.predict(features.transform(x_val), offsets=search.offsets)]
    return {**_scored(y_val, predicted), "cv_macro_f1": tree.cv_macro_f1,
            "params": {**tree.params, "offsets": tree.offsets if search.offsets else None},
            "search": {"trials": search.trials, "folds": search.folds, "max_trees": search.max_trees,
                       "cv_macro_f1_offsets": tree.cv_macro_f1_offsets},
            "seconds": tree.seconds}
