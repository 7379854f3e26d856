"""Can a trader trust the probabilities: calibration (ECE, Brier, temperature scaling) and abstention.

Calibration is measured on the validation probabilities: top-label expected calibration error (ECE)
over equal-width confidence bins, the multi-class Brier score and the negative log-likelihood.
Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` (``T > 1`` softens
over-confident probabilities); it never changes the argmax, so the reported macro-F1 is untouched.

How the temperature is fitted without scoring on the events it was fitted on (:func:`cross_fit`):
the validation events are split into stratified folds and each fold's probabilities are calibrated
with a temperature fitted on the OTHER folds; ECE/Brier/NLL "after" and the abstention table are
computed on these out-of-fold probabilities. The temperature that ships in ``model_final.zip`` is
then fitted on all validation events, and is scored on none of them.

Why cross-fitting rather than a calibration slice carved from train (before oversampling): a slice
takes events away from the model and from the oversampling of the minority classes, which are the
long/short calls a trader acts on. Cross-fitting keeps every training event for the model and uses
every validation event for the shipped temperature, and still scores no event with a temperature
that saw it.

Abstention (:func:`abstain`): when the top probability is below ``min_confidence`` the prediction
becomes ``no_trade`` and is flagged ``abstained``. A top probability exactly equal to the threshold
is kept (not abstained). The run never picks the threshold: it reports, for a grid, what each
threshold would keep (:func:`abstention_table`), and the user chooses (config, ``--min-confidence``,
the pyfunc's ``min_confidence`` param).

Only numpy/scipy at import time: ``processor.package`` (and so the served model) imports this module;
sklearn and matplotlib are imported by the functions that need them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from processor.blocks import Abstention, AbstentionRow, Calibration
from processor.io import write_png_atomic
from processor.probs import apply_temperature
from processor.probs import log_probs as _log_probs
from processor.schema import LABEL2ID, LABELS

# Search range of log T: T in [0.05, 20] covers any sane model; a bound hit is reported as such.
LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
# The classes whose calls a trader acts on; no_trade is the "do nothing" answer.
CALLS: tuple[str, ...] = ("long", "short")


# ------------------------------------------------------------------------------------------ inputs
def _check(probs: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (n_events, n_classes >= 2), got {p.shape}")
    sums = p.sum(axis=1, keepdims=True)
    if not np.allclose(sums, 1.0, atol=1e-4) or (p < 0).any():
        raise ValueError("probs must be probabilities: rows of non-negative numbers summing to 1")
    if y is None:
        return p, None
    ids = np.asarray([LABEL2ID[v] if isinstance(v, str) else v for v in np.asarray(y).tolist()], dtype=np.int64)
    if ids.shape != (p.shape[0],):
        raise ValueError(f"y must hold one label per event ({p.shape[0]}), got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= p.shape[1]):
        raise ValueError(f"class ids must be in 0..{p.shape[1] - 1}")
    return p, ids


def _renormalised(p: np.ndarray) -> np.ndarray:
    # A float32 softmax sums to 1 within ~1e-7, and sklearn's scorers warn at that already.
    return p / p.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------- measurement
def reliability_bins(probs: Any, y: Any, n_bins: int = 10) -> list[dict[str, Any]]:
    """Top-label reliability per equal-width confidence bin ``(lo, hi]`` (the first also holds 0):
    ``lo, hi, count, confidence`` (mean top probability), ``accuracy`` (share of correct argmax);
    the last two are None for an empty bin."""
    p, ids = _check(probs, y)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == ids)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True: bin i is (edges[i], edges[i+1]], so a confidence of exactly 0.5 falls in (0.4, 0.5].
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for i in range(n_bins):
        inside = which == i
        n = int(inside.sum())
        rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": n,
                     "confidence": float(conf[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def expected_calibration_error(probs: Any, y: Any, n_bins: int = 10) -> float:
    """Top-label ECE: sum over bins of (events in bin / events) * |accuracy - mean confidence|."""
    bins = reliability_bins(probs, y, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        raise ValueError("ECE needs at least one event")
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def brier_score(probs: Any, y: Any) -> float:
    """Multi-class Brier score: mean over events of sum over classes of (p - one-hot)^2, in [0, 2]."""
    from sklearn.metrics import brier_score_loss

    p, ids = _check(probs, y)
    # scale_by_half=False: the multi-class definition (sklearn's "auto" would halve it for 2 classes).
    return float(brier_score_loss(ids, _renormalised(p), labels=list(range(p.shape[1])), scale_by_half=False))


def nll(probs: Any, y: Any) -> float:
    """Mean negative log-likelihood of the true class."""
    from sklearn.metrics import log_loss

    p, ids = _check(probs, y)
    return float(log_loss(ids, _renormalised(p), labels=list(range(p.shape[1]))))


# ------------------------------------------------------------------------------ prior correction
def prior_logit_bias(train_counts: Any, alpha: float) -> np.ndarray | None:
    """``alpha * log(prior)`` per class, from the class counts of the training split BEFORE oversampling;
    None when ``alpha`` is 0.

    Oversampling trains the model as if every class were a third of the events; the data it is
    applied to keep their real mix. Adding ``log(prior)`` to the logits (logit adjustment) undoes
    that prior shift (``alpha`` 1: the best decision for accuracy); macro-F1 values the minority classes
    more than accuracy does, so a fraction of it may serve better (``training.prior_correction``).
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"prior correction must be in [0, 1], got {alpha!r}")
    if alpha == 0:
        return None
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts <= 0).any():
        raise ValueError(f"prior correction needs a positive count for every class, got {train_counts!r}")
    return alpha * np.log(counts / counts.sum())


# ------------------------------------------------------------------------------ temperature scaling
def fit_temperature(probs: Any, y: Any) -> float:
    """The T minimising the NLL of ``softmax(log p / T)`` on ``(probs, y)``; searched over log T
    (bounded Brent, T in [0.05, 20]) so T stays positive and the search is symmetric in T and 1/T."""
    p, ids = _check(probs, y)
    if len(ids) == 0:
        raise ValueError("cannot fit a temperature on zero events")
    z = _log_probs(p)
    rows = np.arange(len(ids))

    def loss(log_t: float) -> float:
        return float(-log_softmax(z / math.exp(log_t), axis=1)[rows, ids].mean())

    res = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def cross_fit_folds(y: Any, folds: int) -> int:
    """How many stratified folds ``y`` allows: at most ``folds``, and no more than the most frequent
    class's count (sklearn's StratifiedKFold refuses more); below 2, cross-fitting is impossible."""
    counts = np.bincount(np.asarray(y, dtype=np.int64)) if len(y) else np.zeros(1, dtype=np.int64)
    return int(min(folds, counts.max()))


@dataclass
class CrossFit:
    probs: np.ndarray  # each event calibrated with a temperature fitted on the other folds
    fold: np.ndarray  # fold index of each event
    temperatures: list[float]  # per fold: the temperature applied to that fold's events


def cross_fit(probs: Any, y: Any, folds: int = 5, seed: int = 0) -> CrossFit:
    """Out-of-fold temperature scaling over stratified folds (sklearn ``StratifiedKFold``, shuffled
    with ``seed``): every event's calibrated probabilities come from a temperature that never saw it.
    Fewer folds than asked when the events are too few (at least one event per fold is needed)."""
    from sklearn.model_selection import StratifiedKFold

    p, ids = _check(probs, y)
    n_splits = cross_fit_folds(ids, folds)
    if n_splits < 2:
        raise ValueError(f"cross-fitting needs 2 folds and a class with 2 events, got {folds} folds and "
                         f"class counts {np.bincount(ids).tolist()}")
    out = np.empty_like(p)
    fold_of = np.full(len(ids), -1, dtype=np.int64)
    temperatures = []
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A class rarer than the fold count cannot be in every fold; the split is still valid.
        warnings.filterwarnings("ignore", message="The least populated class in y has only")
        splits = list(splitter.split(np.zeros(len(ids)), ids))
    for k, (fit_idx, held_idx) in enumerate(splits):
        t = fit_temperature(p[fit_idx], ids[fit_idx])
        out[held_idx] = apply_temperature(p[held_idx], t)
        fold_of[held_idx] = k
        temperatures.append(t)
    return CrossFit(probs=out, fold=fold_of, temperatures=temperatures)


# ---------------------------------------------------------------------------------------- abstention
def check_min_confidence(value: Any) -> float | None:
    """None, or a number in [0, 1] as float; ValueError with a one-line reason otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"min_confidence must be a number in [0, 1], got {value!r}")
    return float(value)


def abstain(probs: Any, min_confidence: float | None) -> np.ndarray:
    """Boolean mask of the events abstained on: top probability strictly below ``min_confidence``
    (equal is kept). None abstains on nothing."""
    p, _ = _check(probs)
    threshold = check_min_confidence(min_confidence)
    if threshold is None:
        return np.zeros(len(p), dtype=bool)
    return p.max(axis=1) < threshold


def predicted_labels(probs: Any, min_confidence: float | None, labels: Sequence[str] = LABELS
                     ) -> tuple[list[str], np.ndarray]:
    """Argmax labels with abstained events turned into ``no_trade``, and the abstained mask."""
    p, _ = _check(probs)
    mask = abstain(p, min_confidence)
    names = np.where(mask, "no_trade", np.asarray(labels, dtype=object)[p.argmax(axis=1)]).tolist()
    return names, mask


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def abstention_table(probs: Any, y: Any, grid: Sequence[float], labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """:func:`abstention_rows` as ``{"no_threshold": row, "grid": [row, ...]}``, each row a dict."""
    base, rows = abstention_rows(probs, y, grid, labels)
    return {"no_threshold": base.to_dict(), "grid": [r.to_dict() for r in rows]}


def abstention_rows(probs: Any, y: Any, grid: Sequence[float], labels: Sequence[str] = LABELS
                    ) -> tuple[AbstentionRow, tuple[AbstentionRow, ...]]:
    """For each threshold in ``grid``: ``coverage`` (long/short calls kept / long/short calls with
    no threshold), precision of long and of short among the kept calls (None when there are none),
    and the counts; first the same row without abstention, for reference."""
    from sklearn.metrics import precision_score

    p, ids = _check(probs, y)
    truth = [labels[i] for i in ids]
    calls = list(CALLS)

    def row(threshold: float | None) -> AbstentionRow:
        pred, mask = predicted_labels(p, threshold, labels)
        kept = {c: sum(1 for v in pred if v == c) for c in calls}
        # Precision of long among the kept calls: abstained events are no_trade, so they are no call.
        prec = precision_score(truth, pred, labels=calls, average=None, zero_division=np.nan)
        return AbstentionRow(min_confidence=threshold, n_calls=kept["long"] + kept["short"], n_long=kept["long"],
                             n_short=kept["short"], n_abstained=int(mask.sum()), precision_long=_none_if_nan(prec[0]),
                             precision_short=_none_if_nan(prec[1]))

    base = row(None)
    rows = tuple(replace(r, coverage=r.n_calls / base.n_calls if base.n_calls else None)
                 for r in (row(check_min_confidence(t)) for t in grid))
    return replace(base, coverage=1.0 if base.n_calls else None), rows


# ------------------------------------------------------------------------------------------- the run
@dataclass
class TrustResult:
    temperature: float  # what ships in the package (1.0 when calibration is off)
    calibration: Calibration
    abstention: Abstention
    # The two figures, file name -> what draws it at a given path: the run's recorder writes them.
    plots: dict[str, Callable[[Path], Path]]
    pngs: list[Path] = field(default_factory=list)  # the figures written, when out_dir was given


def evaluate_trust(probs: Any, y: Any, *, calibrate: bool, folds: int, n_bins: int, grid: Sequence[float],
                   min_confidence: float | None, seed: int, out_dir: Path | None = None) -> TrustResult:
    """What training reports on the validation probabilities: calibration before/after (out-of-fold),
    the packaged temperature (fitted on all of val), the abstention table on the out-of-fold
    probabilities, and the two PNGs (``reliability_diagram.png``, ``abstention.png``; written into
    ``out_dir`` when given)."""
    p, ids = _check(probs, y)
    block = Calibration(method="none", n_bins=n_bins, ece_before=expected_calibration_error(p, ids, n_bins),
                        brier_before=brier_score(p, ids), nll_before=nll(p, ids))
    temperature, scored = 1.0, p
    if calibrate and cross_fit_folds(ids, folds) < 2:
        calibrate = False  # a val set this small cannot both fit and score a temperature
        block = replace(block, skipped="too few validation events to cross-fit (class counts "
                                       f"{np.bincount(ids).tolist()})")
    if calibrate:
        cf = cross_fit(p, ids, folds=folds, seed=seed)
        temperature = fit_temperature(p, ids)
        scored = cf.probs
        block = replace(
            block,
            method="temperature_scaling",
            fitting=f"cross-fitted over {len(cf.temperatures)} stratified val folds; "
                    "packaged temperature fitted on all val events",
            temperature=temperature,
            fold_temperatures=tuple(cf.temperatures),
            ece_after=expected_calibration_error(scored, ids, n_bins),
            brier_after=brier_score(scored, ids),
            nll_after=nll(scored, ids),
        )
    no_threshold, rows = abstention_rows(scored, ids, grid)
    abstention = Abstention(min_confidence=min_confidence,
                            probabilities="out-of-fold calibrated" if calibrate else "uncalibrated",
                            no_threshold=no_threshold, grid=rows)
    after = scored if calibrate else None
    plots: dict[str, Callable[[Path], Path]] = {
        "reliability_diagram.png": lambda path: plot_reliability(p, after, ids, path, n_bins=n_bins),
        "abstention.png": lambda path: plot_abstention(abstention, path)}
    pngs = [] if out_dir is None else [draw(Path(out_dir) / name) for name, draw in plots.items()]
    return TrustResult(temperature=temperature, calibration=block, abstention=abstention, plots=plots, pngs=pngs)


# ------------------------------------------------------------------------------------------ plots
def _figure(size: tuple[float, float]) -> tuple[Any, Any]:
    # Figure + Agg canvas, no pyplot: headless, no global figure state, no backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_reliability(before: Any, after: Any | None, y: Any, path: Path, *, n_bins: int = 10,
                     title: str = "Reliability (validation)") -> Path:
    """Accuracy against mean confidence per bin, before (and after) calibration, the diagonal being
    perfect calibration; ECE in the legend. Bars at the bottom: share of events per bin. Atomic."""
    fig, ax = _figure((5.6, 6.0))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    shares = ax.twinx()
    width = 1.0 / n_bins
    for probs, name, color, offset in ((before, "uncalibrated", "tab:red", 0.0),
                                       (after, "temperature-scaled (out-of-fold)", "tab:blue", 0.5)):
        if probs is None:
            continue
        bins = reliability_bins(probs, y, n_bins)
        used = [b for b in bins if b["count"]]
        ece = expected_calibration_error(probs, y, n_bins)
        ax.plot([b["confidence"] for b in used], [b["accuracy"] for b in used], "o-", color=color,
                label=f"{name}: ECE {ece:.3f}")
        total = sum(b["count"] for b in bins)
        shares.bar([b["lo"] + width * (0.25 + offset / 2) for b in bins], [b["count"] / total for b in bins],
                   width=width / 2, align="edge", color=color, alpha=0.2)
    shares.set_ylim(0, 4)  # keep the share bars in the bottom quarter
    shares.set_yticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean top probability in bin (confidence)")
    ax.set_ylabel("share of correct predictions in bin (accuracy)")
    ax.set_zorder(shares.get_zorder() + 1)
    ax.patch.set_visible(False)
    # Below the axes: an over-confident curve runs bottom-right, an under-confident one top-left.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small", frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return write_png_atomic(fig, path)


def plot_abstention(table: Abstention, path: Path, *, title: str = "Abstention (validation)") -> Path:
    """Coverage and long/short precision against the min_confidence threshold. Atomic."""
    rows = table.grid
    if not rows:
        raise ValueError("the abstention table has no thresholds")
    x = [r.min_confidence for r in rows]

    def series(key: str) -> list[float]:
        return [np.nan if getattr(r, key) is None else getattr(r, key) for r in rows]

    fig, ax = _figure((6.4, 4.0))
    ax.plot(x, series("coverage"), "o-", color="black", label="coverage (long/short calls kept)")
    ax.plot(x, series("precision_long"), "s-", color="tab:green", label="precision long")
    ax.plot(x, series("precision_short"), "^-", color="tab:red", label="precision short")
    for key, color in (("precision_long", "tab:green"), ("precision_short", "tab:red")):
        ref = getattr(table.no_threshold, key)
        if ref is not None:
            ax.axhline(ref, color=color, linestyle=":", linewidth=1,
                       label=f"{key.replace('_', ' ')} without a threshold")
    ax.set_xlabel("min_confidence (abstain below)")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    return write_png_atomic(fig, path)
