"""The ``metrics.json`` layout, in one place: written by training, read by the gate, the sweep and the
demo through these accessors instead of each walking the nested keys itself.

Layout (the keys the readers rely on)::

    val_macro_f1, val_accuracy                       point estimates on the validation set
    per_class.<label>.{precision,recall,f1,support}
    bootstrap.{confidence,n_resamples,method}        the CI settings actually used
    bootstrap.val_macro_f1.{low,high}, bootstrap.f1.<label>.{low,high}
    class_balance.{applied,before,after}             training-class shares before/after oversampling
    best_epoch, epochs_run, epoch_history, tokens_per_event, schema_fingerprint
    data.{train_file,val_file,train_sha256,val_sha256,n_train,n_val,...}, model.{...}, loss.{...}
    baselines.<name>.val_macro_f1                    (when computed)
    leakage.{checked,leakage_risk,val_overlapping,symbols,...}  (trust.check_time_leakage; processor.leakage)
    calibration.{method,n_bins,ece_before,brier_before,nll_before}   uncalibrated val probabilities
    calibration.{temperature,fitting,fold_temperatures,ece_after,brier_after,nll_after}  (when calibrated)
    abstention.{min_confidence,probabilities,no_threshold,grid[]}    per threshold: coverage, n_calls,
                                                     n_long, n_short, n_abstained, precision_long/short
    drift.{val_psi,max_psi,note}                     val vs the training feature profile (processor.drift)
    prior_correction.{alpha,logit_bias}              training.prior_correction (processor.calibrate)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from processor.io import PathLike, write_text_atomic

FILE_NAME = "metrics.json"
# baselines.<key> in metrics.json -> the short name in the run's MLflow metrics.
BASELINE_METRIC_NAMES = {"hist_gradient_boosting": "gbdt", "logistic_regression": "logreg"}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """JSON text as training writes it (numpy scalars and paths made plain)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default)


def write(path: PathLike, metrics: dict[str, Any]) -> Path:
    return write_text_atomic(path, dumps(metrics))


def read(path: PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def get(m: Any, *keys: str) -> Any:
    """``m[k1][k2]...``, or None where a key (or a mapping) is missing."""
    for key in keys:
        if not isinstance(m, dict) or key not in m:
            return None
        m = m[key]
    return m


def number(x: Any) -> float | None:
    """A finite number as float; None for anything else (missing, NaN, bool, text)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def macro_f1(m: Any) -> float | None:
    return number(get(m, "val_macro_f1"))


def macro_f1_ci(m: Any) -> tuple[float | None, float | None]:
    return number(get(m, "bootstrap", "val_macro_f1", "low")), number(get(m, "bootstrap", "val_macro_f1", "high"))


def class_f1(m: Any, label: str) -> float | None:
    return number(get(m, "per_class", label, "f1"))


def class_f1_ci_low(m: Any, label: str) -> float | None:
    return number(get(m, "bootstrap", "f1", label, "low"))


def confidence(m: Any) -> float | None:
    return number(get(m, "bootstrap", "confidence"))


def shares_after(m: Any) -> Any:
    return get(m, "class_balance", "after")


def final_metrics(m: dict[str, Any], labels: tuple[str, ...]) -> dict[str, float]:
    """The run's final MLflow metrics, named once here: val_macro_f1, val_accuracy, best_epoch,
    epochs_run, tokens_per_event, val_macro_f1_ci_low/high, val_f1_<label>, share_after_<label>, per
    baseline (gbdt, logreg) baseline_<name>_macro_f1 and val_macro_f1_minus_<name>, and the calibration
    figures val_ece_before/after, val_brier_before/after, val_nll_before/after, temperature."""
    ci = m["bootstrap"]["val_macro_f1"]
    final = {"val_macro_f1": m["val_macro_f1"], "val_accuracy": m["val_accuracy"], "best_epoch": m["best_epoch"],
             "epochs_run": m["epochs_run"], "tokens_per_event": m["tokens_per_event"],
             "val_macro_f1_ci_low": ci["low"], "val_macro_f1_ci_high": ci["high"]}
    final.update({f"val_f1_{name}": m["per_class"][name]["f1"] for name in labels})
    final.update({f"share_after_{name}": m["class_balance"]["after"][name] for name in labels})
    # The question a user asks first: does the LLM beat a plain model on the same split?
    for key, short in BASELINE_METRIC_NAMES.items():
        f1 = number(get(m, "baselines", key, "val_macro_f1"))
        if f1 is not None:
            final[f"baseline_{short}_macro_f1"] = f1
            final[f"val_macro_f1_minus_{short}"] = m["val_macro_f1"] - f1
    for key in ("ece_before", "ece_after", "brier_before", "brier_after", "nll_before", "nll_after"):
        value = number(get(m, "calibration", key))
        if value is not None:
            final[f"val_{key}"] = value
    temperature = number(get(m, "calibration", "temperature"))
    if temperature is not None:
        final["temperature"] = temperature
    return final
