"""The evaluate phase of a training run, in one place: :func:`evaluate_run` scores the shipped
predictions on val (processor.scores: accuracy, macro-F1, per-class scores, bootstrap CIs) beside the
classic baselines (:func:`fit_baselines`, here, which processor.baseline_job runs while the LLM trains; the
tuned tree from processor.tuned_tree), measures calibration and abstention (processor.calibrate) and the
val split's drift (processor.drift), reads the per-epoch history off the Trainer (processor.trainer), and
says which figures the run shows. It returns metrics.json's pieces as
their typed records (processor.blocks); the run's recorder writes the figures.

Class order is always ``processor.schema.LABELS`` (rows of the confusion matrix are the true class).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from processor import drift, tuned_tree
from processor.blocks import BaselineScore, Bootstrap, ConfusionMatrix, EpochRow, ValDrift
from processor.calibrate import TrustResult, evaluate_trust
from processor.config import Config
from processor.io import write_png_atomic
from processor.names import BASELINES
from processor.record import ShippedHead
from processor.schema import FEATURES, LABEL2ID, LABELS, SESSIONS
from processor.scores import Scores, bootstrap_intervals, score, to_names

# How the 13 contract features are fed to the sklearn baselines.
CATEGORICAL_FEATURES: tuple[str, ...] = ("session",)
NUMERIC_FEATURES: tuple[str, ...] = ("ext_dir", "int_dir", "mgann_leg_index", "wave_strength", "atr")
FLAG_FEATURES: tuple[str, ...] = tuple(
    f for f in FEATURES if f not in CATEGORICAL_FEATURES and f not in NUMERIC_FEATURES
)

def plot_confusion_matrix(cm: ConfusionMatrix, path: Path, title: str = "Confusion matrix (validation)") -> Path:
    """Write ``cm`` (processor.scores.score's) to a PNG with the counts written in the cells; rows are the
    true class. The file appears complete or not at all."""
    labels = list(cm.labels)
    matrix = np.asarray(cm.matrix, dtype=np.int64)
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


def plot_learning_curve(history: Sequence[EpochRow], path: Path, *, best_epoch: int | None = None,
                        baseline_f1: float | None = None, baseline_label: str = "GBDT baseline",
                        title: str = "Learning curve") -> Path:
    """Per-epoch train loss (left axis) and val macro-F1 (right axis) to a PNG, with the restored best
    epoch and, when given, a baseline's macro-F1 (``baseline_label``) as reference lines. Written atomically."""
    if not history:
        raise ValueError("learning curve needs at least one evaluated epoch")
    epochs = [int(row.epoch) for row in history]
    fig = Figure(figsize=(6.4, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    losses = [row.train_loss for row in history]
    ax.plot(epochs, [np.nan if v is None else v for v in losses], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (focal)", color="tab:blue")
    ax.set_xticks(epochs)
    f1_ax = ax.twinx()
    f1_ax.plot(epochs, [row.val["macro_f1"] for row in history], "s-", color="tab:orange", label="val macro-F1")
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
    return x, to_names(df["label"].to_numpy(), LABELS, f"{what} label")


def baselines(train_df: pd.DataFrame, val_df: pd.DataFrame, *, seed: int, names: Sequence[str] = BASELINES,
              search: tuned_tree.Search = tuned_tree.Search()) -> dict[str, dict[str, Any]]:
    """:func:`fit_baselines` as plain dicts: ``{model: {"val_accuracy", "val_macro_f1", "per_class_f1":
    {label: f1}}}``; ``tuned_gbdt`` adds ``cv_macro_f1``, ``params``, ``search`` and ``seconds``."""
    scored = fit_baselines(train_df, val_df, seed=seed, names=names, search=search)
    return {name: score.to_dict() for name, score in scored.items()}


def fit_baselines(train_df: pd.DataFrame, val_df: pd.DataFrame, *, seed: int, names: Sequence[str] = BASELINES,
                  search: tuned_tree.Search = tuned_tree.Search()) -> dict[str, BaselineScore]:
    """Fit the classic models ``names`` (of :data:`BASELINES`) on the 13 features of ``train_df`` and
    score them on ``val_df``.

    A reference point for the LM: ``logistic_regression`` (one-hot session, standardised numeric
    features, raw 0/1 flags), ``hist_gradient_boosting`` (sklearn's defaults) and ``tuned_gbdt``
    (LightGBM tuned by CV on ``train_df`` only, ``search`` says how hard; processor.tuned_tree), all
    with balanced class weights. Returns metrics.json's ``baselines`` records, by model.
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
    out: dict[str, BaselineScore] = {}
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


def _scored(y_val: np.ndarray, predicted: Any, **extra: Any) -> BaselineScore:
    s = score(y_val, predicted)
    return BaselineScore(val_accuracy=s.accuracy, val_macro_f1=s.macro_f1,
                         per_class_f1={label: s.per_class[label].f1 for label in LABELS}, extra=extra)


def _tuned_gbdt(x_train: pd.DataFrame, y_train: np.ndarray, x_val: pd.DataFrame, y_val: np.ndarray, *,
                seed: int, search: tuned_tree.Search) -> BaselineScore:
    """Tuned on the training split alone: validation only scores the refitted tree."""
    features = _preprocessor(scale_numeric=False).fit(x_train)
    tree = tuned_tree.fit(features.transform(x_train), np.array([LABEL2ID[v] for v in y_train]), seed=seed,
                          search=search)
    predicted = np.asarray(LABELS, dtype=object)[tree.predict(features.transform(x_val), offsets=search.offsets)]
    return _scored(y_val, predicted, cv_macro_f1=tree.cv_macro_f1,
                   params={**tree.params, "offsets": tree.offsets if search.offsets else None},
                   search={"trials": search.trials, "folds": search.folds, "max_trees": search.max_trees,
                           "cv_macro_f1_offsets": tree.cv_macro_f1_offsets},
                   seconds=tree.seconds)


# ------------------------------------------------------------------------------ the evaluate phase
# The figures every run shows beside metrics.json; calibration adds its two (processor.calibrate).
PLOTS = ("confusion_matrix.png", "learning_curve.png")
# A figure: what draws it at a given path (the run's recorder chooses the path and writes it).
Draw = Callable[[Path], Path]


@dataclass
class Evaluation:
    """What the evaluate phase measured, as metrics.json's blocks (typed records where the block has
    one), the temperature that ships, and the run's figures by file name."""

    scores: Scores
    bootstrap: Bootstrap
    baselines: dict[str, BaselineScore] | None  # None: eval.baselines is empty
    epoch_history: list[EpochRow]
    best_epoch: int
    epochs_run: int
    drift: ValDrift
    trust: TrustResult  # calibration, abstention, the temperature
    plots: dict[str, Draw] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        return self.trust.temperature

    def metrics_fields(self) -> dict[str, Any]:
        """The fields of processor.record.Metrics that this phase fills."""
        s = self.scores
        return {"val_accuracy": s.accuracy, "val_macro_f1": s.macro_f1, "per_class": s.per_class,
                "confusion_matrix": s.confusion, "bootstrap": self.bootstrap, "best_epoch": self.best_epoch,
                "epochs_run": self.epochs_run, "epoch_history": tuple(self.epoch_history), "drift": self.drift,
                "calibration": self.trust.calibration, "abstention": self.trust.abstention,
                "baselines": self.baselines}


def evaluate_run(cfg: Config, logits: Any, *, head: ShippedHead, baselines: dict[str, BaselineScore] | None,
                 val: pd.DataFrame, profile: Mapping[str, Any], trainer: Any, metric: str) -> Evaluation:
    """Score the restored best model's val ``logits`` as they ship (``head``: prior correction; the
    temperature keeps the argmax) with their bootstrap CIs, beside the classic ``baselines`` fitted on
    the same split (fit_baselines' result, by processor.baseline_job); calibration and abstention (the
    temperature cross-fitted over val folds); val's drift from the training ``profile``; the per-epoch
    history and best epoch by ``metric`` (the Trainer's name) from ``trainer``. Writes nothing: the figures
    are returned for the recorder."""
    from processor.trainer import best_epoch, epoch_history

    y_true = list(val["label"])
    probs = head.probabilities(logits, logits=True)
    y_pred = [LABELS[i] for i in probs.argmax(axis=1)]
    history = epoch_history(trainer.state.log_history)
    t = cfg.trust
    trust = evaluate_trust(probs, y_true, calibrate=t.calibrate, folds=t.calibration_folds, n_bins=t.ece_bins,
                           grid=t.abstention_grid, min_confidence=t.min_confidence, seed=cfg.seed)
    done = Evaluation(
        scores=score(y_true, y_pred),
        bootstrap=bootstrap_intervals(y_true, y_pred, confidence=cfg.eval.confidence,
                                      n_resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed),
        baselines=baselines,
        epoch_history=history,
        best_epoch=best_epoch(trainer.state, history, metric),
        epochs_run=int(round(trainer.state.epoch or 0)),
        drift=drift.psi(profile, val).val_drift(),  # sanity: val should look like train
        trust=trust)
    done.plots = {**_figures(cfg.model, done), **trust.plots}
    return done


def _figures(model: str, done: Evaluation) -> dict[str, Draw]:
    """The confusion matrix and the learning curve, with a baseline's macro-F1 as the reference line:
    the tuned tree, the rival a quant would ship; the default tree when the tuned one was not fitted."""
    fitted = done.baselines or {}
    name = next((n for n in ("tuned_gbdt", "hist_gradient_boosting")
                 if n in fitted and fitted[n].val_macro_f1 is not None), "")
    reference = fitted[name].val_macro_f1 if name else None
    macro_f1 = done.scores.macro_f1
    return {
        PLOTS[0]: lambda path: plot_confusion_matrix(done.scores.confusion, path,
                                                     title=f"{model} val (macro-F1 {macro_f1:.3f})"),
        PLOTS[1]: lambda path: plot_learning_curve(done.epoch_history, path, best_epoch=done.best_epoch,
                                                   baseline_f1=reference, baseline_label=f"{name} baseline",
                                                   title=f"{model}: train loss and val macro-F1 per epoch"),
    }
