"""The scores of predictions against the true labels: accuracy, macro-F1, per-class precision/recall/F1,
the confusion matrix, and paired bootstrap confidence intervals for the F1s.

Below the Trainer (its per-epoch eval scores with :func:`compute_metrics`) and the evaluate phase
(processor.evaluate), so neither imports the other. The dict forms are plain Python for JSON and
MLflow; the typed forms are metrics.json's records (processor.blocks). Class order is always
``processor.schema.LABELS`` (rows of the confusion matrix are the true class).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import DegenerateDataWarning, bootstrap
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from processor.f1 import macro_and_class_f1
from processor.blocks import Bootstrap, ClassScores, ConfusionMatrix, Interval
from processor.schema import LABELS

ArrayLike = Sequence[Any] | np.ndarray | pd.Series


def to_names(y: ArrayLike, labels: Sequence[str], what: str) -> np.ndarray:
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
    t = to_names(y_true, labels, "y_true")
    p = to_names(y_pred, labels, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    if len(t) == 0:
        raise ValueError("cannot compute metrics on zero examples")
    return t, p


@dataclass(frozen=True)
class Scores:
    """metrics.json's point estimates: ``val_accuracy``, ``val_macro_f1``, ``per_class``, ``confusion_matrix``."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: ConfusionMatrix

    def to_dict(self) -> dict[str, Any]:
        return {"val_accuracy": self.accuracy, "val_macro_f1": self.macro_f1,
                "per_class": {name: scores.to_dict() for name, scores in self.per_class.items()},
                "confusion_matrix": self.confusion.to_dict()}


def score(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str] = LABELS) -> Scores:
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
    per_class = {name: ClassScores(precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]),
                                   support=int(support[i]))
                 for i, name in enumerate(labels)}
    return Scores(accuracy=float(accuracy_score(t, p)),
                  macro_f1=float(f1_score(t, p, labels=labels, average="macro", zero_division=0)),
                  per_class=per_class,
                  confusion=ConfusionMatrix(tuple(labels), tuple(tuple(int(v) for v in row) for row in cm)))


def compute_metrics(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """:func:`score` as metrics.json writes it: ``{"val_accuracy", "val_macro_f1", "per_class": {label:
    {"precision", "recall", "f1", "support"}}, "confusion_matrix": {"labels", "matrix"}}``."""
    return score(y_true, y_pred, labels).to_dict()


def bootstrap_intervals(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: Sequence[str] = LABELS,
    confidence: float = 0.90,
    n_resamples: int = 1000,
    seed: int = 0,
    method: str = "percentile",
) -> Bootstrap:
    """Paired bootstrap confidence intervals (``scipy.stats.bootstrap``) for macro-F1 and per-class F1.

    Events are resampled with their prediction (``paired=True``). ``method`` is passed to scipy;
    ``"percentile"`` (default) is always defined. If ``"BCa"`` or ``"basic"`` is asked for and the
    interval comes out NaN (degenerate bootstrap distribution, e.g. perfect predictions), the same
    resamples are re-used for a percentile interval and ``"method"`` in the result says so.

    Returns metrics.json's ``bootstrap`` record (:func:`bootstrap_ci`: the same as a dict).
    """
    _check_settings(confidence, n_resamples)
    labels = list(labels)
    t, p = _pair(y_true, y_pred, labels)
    if len(t) < 2:
        raise ValueError("bootstrap needs at least 2 examples")
    index = {name: i for i, name in enumerate(labels)}
    t_ids = np.array([index[v] for v in t], dtype=np.int64)
    p_ids = np.array([index[v] for v in p], dtype=np.int64)

    def statistic(t_s: np.ndarray, p_s: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy always resamples along the last axis for paired data; axis is part of its protocol.
        return macro_and_class_f1(np.moveaxis(t_s, axis, -1), np.moveaxis(p_s, axis, -1), len(labels))

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

    def interval(i: int) -> Interval:
        return Interval(low=float(low[i]), high=float(high[i]))

    return Bootstrap(confidence=float(confidence), n_resamples=int(n_resamples), method=used,
                     val_macro_f1=interval(0), f1={name: interval(i + 1) for i, name in enumerate(labels)})


def _check_settings(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")


def bootstrap_ci(y_true: ArrayLike, y_pred: ArrayLike, **kwargs: Any) -> dict[str, Any]:
    """:func:`bootstrap_intervals` as ``{"confidence", "n_resamples", "method", "val_macro_f1": {"low",
    "high"}, "f1": {label: {"low", "high"}}}``."""
    return bootstrap_intervals(y_true, y_pred, **kwargs).to_dict()
