"""The run record: the documents a training run leaves behind, as typed records with one owner.

- :class:`Metrics` is ``metrics.json`` (the run's scores and how they were obtained);
- :class:`ServingSpec` is ``serving.json`` inside ``model_final.zip`` (what prediction needs);
- :class:`ShippedHead` is the part of the spec that turns the classifier's raw output into the
  probabilities that ship (prior bias, then temperature) and the abstention threshold. It is the one
  definition of what ships: early stopping, the final metrics, the zip, the pyfunc and predict all
  call :meth:`ShippedHead.probabilities`.

Training writes these records; the gate, the model card, the sweep, the demo and predict read them
through this module, so no other module walks nested keys. Reading is lenient, because the gate judges
runs whose files may be doctored or broken: a missing or malformed value reads as None (a check then
fails on it) instead of raising. Documents written before ``record_version`` existed (version 1) load
unchanged.

``metrics.json`` layout (every key optional when read)::

    record_version                                    2 (absent = 1)
    val_macro_f1, val_accuracy                        point estimates on the validation set
    per_class.<label>.{precision,recall,f1,support}
    confusion_matrix.{labels,matrix}
    bootstrap.{confidence,n_resamples,method}         the CI settings actually used
    bootstrap.val_macro_f1.{low,high}, bootstrap.f1.<label>.{low,high}
    class_balance.{applied,before,after}              training-class shares before/after oversampling
    class_weights, best_epoch, epochs_run, epoch_history, schema_fingerprint,
    tokens_per_event, tokens_per_event_qwen
    data.{train_file,val_file,train_sha256,val_sha256,n_train,n_train_fit,n_val,train_counts,val_counts,
          time_range,bayes_ceiling}
    model.{name,base_id,revision,is_demo,lora_r,lora_alpha}, loss.{type,gamma,mae}, seed
    leakage.{...}      (trust.check_time_leakage; processor.leakage)
    drift.{val_psi,max_psi,note}                      val vs the training feature profile (processor.drift)
    calibration.{method,n_bins,ece_before,brier_before,nll_before,temperature,fitting,fold_temperatures,
                 ece_after,brier_after,nll_after,skipped}
    abstention.{min_confidence,probabilities,no_threshold,grid[]}
    prior_correction.{alpha,logit_bias}               training.prior_correction (processor.calibrate)
    baselines.<name>.{val_macro_f1,val_accuracy,per_class_f1}   name: eval.baselines (processor.names.BASELINES)
    baselines.tuned_gbdt.{cv_macro_f1,params,search,seconds}   the tuned tree's CV score and chosen settings
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from processor.io import PathLike, write_text_atomic
from processor.schema import LABELS

METRICS_FILE = "metrics.json"
SERVING_FILE = "serving.json"
RECORD_VERSION = 2  # metrics.json; 1 = written before the record had a version (still read)
SERVING_FORMAT_VERSION = 1  # serving.json: unchanged layout since the first zips
# metrics.json blocks that a run may not produce: absent from the file rather than null.
_OPTIONAL = ("tokens_per_event_qwen", "leakage", "baselines")
# baselines.<key> in metrics.json -> the short name in the run's MLflow metrics.
BASELINE_METRIC_NAMES = {"hist_gradient_boosting": "gbdt", "logistic_regression": "logreg", "tuned_gbdt": "tuned_gbdt"}


# ------------------------------------------------------------------------------ lenient reading
def number(x: Any) -> float | None:
    """A finite number as float; None for anything else (missing, NaN, bool, text)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _int(x: Any) -> int | None:
    v = number(x)
    return int(v) if v is not None and v == int(v) else None


def _map(x: Any) -> dict[str, Any]:
    return dict(x) if isinstance(x, Mapping) else {}


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _bool(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """JSON text as training writes it (numpy scalars and paths made plain)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default)


def write_json(path: PathLike, obj: Any) -> Path:
    return write_text_atomic(path, dumps(obj))


def read_json(path: PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ the shipped head
@dataclass(frozen=True)
class ShippedHead:
    """Raw classifier output -> the probabilities that ship, and the default abstention threshold.

    ``logit_bias`` is the prior correction (``alpha * log(train class shares)``, None = off), added
    first; ``temperature`` (1 = none) divides the corrected logits next. Zips made before either have
    neither, and their probabilities pass unchanged.
    """

    logit_bias: tuple[float, ...] | None = None
    prior_alpha: float = 0.0
    temperature: float = 1.0
    min_confidence: float | None = None

    def probabilities(self, raw: Any, *, logits: bool = False) -> np.ndarray:
        """Shipped probabilities from the classifier's softmax ``raw`` (or its logits, ``logits=True``)."""
        from scipy.special import softmax

        from processor.probs import apply_prior_bias, apply_temperature

        p = softmax(np.asarray(raw, dtype=np.float64), axis=-1) if logits else raw
        return apply_temperature(apply_prior_bias(p, self.logit_bias), self.temperature)

    def prior_block(self) -> dict[str, Any]:
        """``prior_correction`` as metrics.json and serving.json record it."""
        return {"alpha": self.prior_alpha, "logit_bias": None if self.logit_bias is None else list(self.logit_bias)}

    @classmethod
    def from_serving(cls, doc: Mapping[str, Any]) -> ShippedHead:
        prior = _map(doc.get("prior_correction"))
        bias = prior.get("logit_bias")
        temperature = number(_map(doc.get("calibration")).get("temperature"))
        return cls(logit_bias=None if bias is None else tuple(float(b) for b in bias),
                   prior_alpha=number(prior.get("alpha")) or 0.0,
                   temperature=1.0 if temperature is None else temperature,
                   min_confidence=number(doc.get("min_confidence")))


# ------------------------------------------------------------------------------ serving.json
@dataclass
class BaseModel:
    """The base the adapter was trained on, and how to find and check it again."""

    name: str | None = None
    base_id: str | None = None
    revision: str | None = None
    is_demo: bool | None = None
    weights_sha256: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> BaseModel:
        d = _map(d)
        return cls(name=_str(d.get("name")), base_id=_str(d.get("base_id")), revision=_str(d.get("revision")),
                   is_demo=_bool(d.get("is_demo")), weights_sha256=_str(d.get("weights_sha256")))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_id": self.base_id, "revision": self.revision, "is_demo": self.is_demo,
                "weights_sha256": self.weights_sha256}


@dataclass
class ServingSpec:
    """``serving.json``: everything prediction needs besides the weights and the tokenizer."""

    base: BaseModel
    template: str
    serialization: dict[str, Any]
    max_length: int
    labels: tuple[str, ...] = LABELS
    schema_fingerprint: str | None = None
    features: tuple[str, ...] | None = None
    feature_profile: dict[str, Any] | None = None
    head: ShippedHead = field(default_factory=ShippedHead)
    format_version: int = SERVING_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "base": self.base.to_dict(),
            "template": self.template,
            "serialization": self.serialization,
            "max_length": self.max_length,
            "labels": list(self.labels),
            "schema_fingerprint": self.schema_fingerprint,
            "features": None if self.features is None else list(self.features),
            "feature_profile": self.feature_profile,
            "calibration": {"temperature": self.head.temperature},
            "prior_correction": self.head.prior_block(),
            "min_confidence": self.head.min_confidence,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServingSpec:
        """Any serving.json written so far (the first zips lack the profile, temperature and prior)."""
        features = d.get("features")
        return cls(base=BaseModel.from_dict(d.get("base")), template=str(d.get("template", "")),
                   serialization=_map(d.get("serialization")) or {"template": str(d.get("template", ""))},
                   max_length=_int(d.get("max_length")) or 0, labels=tuple(d.get("labels") or LABELS),
                   schema_fingerprint=_str(d.get("schema_fingerprint")),
                   features=tuple(features) if isinstance(features, list) else None,
                   feature_profile=d.get("feature_profile") if isinstance(d.get("feature_profile"), Mapping) else None,
                   head=ShippedHead.from_serving(d), format_version=_int(d.get("format_version")) or 1)


# ------------------------------------------------------------------------------ metrics.json
@dataclass
class Interval:
    low: float | None = None
    high: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Interval:
        d = _map(d)
        return cls(number(d.get("low")), number(d.get("high")))


@dataclass
class Metrics:
    """``metrics.json``. Fields hold the values as written (a doctored file may hold anything); the
    accessors below read them leniently, so callers get a number or None, never a KeyError."""

    val_accuracy: Any = None
    val_macro_f1: Any = None
    per_class: Any = None  # {label: {precision, recall, f1, support}}
    confusion_matrix: Any = None  # {labels, matrix}
    bootstrap: Any = None  # {confidence, n_resamples, method, val_macro_f1: {low, high}, f1: {label: {low, high}}}
    class_balance: Any = None  # {applied, before, after}
    class_weights: Any = None  # {label: weight} or None (unweighted)
    best_epoch: Any = None
    epochs_run: Any = None
    epoch_history: Any = None  # [{epoch, step, train_loss, val_*}]
    schema_fingerprint: Any = None
    tokens_per_event: Any = None  # under the trained base's tokenizer
    tokens_per_event_qwen: Any = None  # under Qwen's own vocabulary
    data: Any = None  # {train_file, val_file, *_sha256, n_train, n_train_fit, n_val, *_counts, time_range, bayes_ceiling}
    model: Any = None  # {name, base_id, revision, is_demo, lora_r, lora_alpha}
    loss: Any = None  # {type, gamma, mae}
    prior_correction: Any = None  # {alpha, logit_bias}
    seed: Any = None
    leakage: Any = None  # processor.leakage report (absent when the check is off)
    drift: Any = None  # {val_psi, max_psi, note}
    calibration: Any = None  # processor.calibrate.evaluate_trust
    abstention: Any = None
    baselines: Any = None  # {name: {val_macro_f1, val_accuracy, per_class_f1}} (absent when off)
    record_version: int = RECORD_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as written

    # -- the scores
    @property
    def macro_f1(self) -> float | None:
        return number(self.val_macro_f1)

    @property
    def accuracy(self) -> float | None:
        return number(self.val_accuracy)

    def _class(self, label: str) -> dict[str, Any]:
        return _map(_map(self.per_class).get(label))

    def class_f1(self, label: str) -> float | None:
        return number(self._class(label).get("f1"))

    def support(self, label: str) -> int | None:
        """How many val events of ``label`` its F1 rests on (None where missing)."""
        return _int(self._class(label).get("support"))

    # -- their uncertainty
    @property
    def confidence(self) -> float | None:
        return number(_map(self.bootstrap).get("confidence"))

    @property
    def macro_f1_ci(self) -> Interval:
        return Interval.from_dict(_map(self.bootstrap).get("val_macro_f1"))

    def class_f1_ci(self, label: str) -> Interval:
        return Interval.from_dict(_map(_map(self.bootstrap).get("f1")).get(label))

    # -- how the run got there
    def shares_after(self) -> dict[str, float | None] | None:
        """The training-class shares after oversampling, per label (None where missing); None when
        the run recorded none."""
        after = _map(self.class_balance).get("after")
        return {n: number(after.get(n)) for n in LABELS} if isinstance(after, Mapping) else None

    @property
    def oversampled(self) -> bool | None:
        return _bool(_map(self.class_balance).get("applied"))

    def block(self, name: str) -> dict[str, Any]:
        """A whole nested block (``data``, ``model``, ``loss``, ``calibration``, ``abstention``, ``drift``,
        ``leakage``, ``prior_correction``) as a mapping; empty when missing or malformed."""
        return _map(getattr(self, name, None))

    def has(self, name: str) -> bool:
        return isinstance(getattr(self, name, None), Mapping)

    def value(self, block: str, key: str) -> Any:
        """One value of a block, as written (None when missing)."""
        return self.block(block).get(key)

    def num(self, block: str, key: str) -> float | None:
        """One finite number of a block (None when missing or not a number)."""
        return number(self.block(block).get(key))

    def baseline_f1(self, name: str) -> float | None:
        return number(_map(_map(self.baselines).get(name)).get("val_macro_f1"))

    def baseline_scores(self) -> dict[str, float | None]:
        return {name: self.baseline_f1(name) for name in _map(self.baselines)}

    @property
    def temperature(self) -> float | None:
        return self.num("calibration", "temperature")

    # -- writing
    def to_dict(self) -> dict[str, Any]:
        """The document in the order training has always written it; optional blocks the run did not
        produce (leakage, baselines, tokens_per_event_qwen) are left out rather than written as null."""
        doc = {"record_version": self.record_version}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("record_version", "extra") or (f.name in _OPTIONAL and value is None):
                continue
            doc[f.name] = value
        doc.update(self.extra)
        return doc

    def write(self, path: PathLike) -> Path:
        return write_json(path, self.to_dict())

    def final_metrics(self, labels: tuple[str, ...] = LABELS) -> dict[str, float]:
        """The run's final MLflow metrics, named once here: val_macro_f1, val_accuracy, best_epoch,
        epochs_run, tokens_per_event(_qwen), val_macro_f1_ci_low/high, val_f1_<label>, share_after_<label>,
        per baseline (gbdt, logreg, tuned_gbdt) baseline_<name>_macro_f1 and val_macro_f1_minus_<name>, and the
        calibration figures val_ece_before/after, val_brier_before/after, val_nll_before/after, temperature."""
        ci, shares = self.macro_f1_ci, self.shares_after() or {}
        final = {"val_macro_f1": self.macro_f1, "val_accuracy": self.accuracy, "best_epoch": number(self.best_epoch),
                 "epochs_run": number(self.epochs_run), "tokens_per_event": number(self.tokens_per_event),
                 "tokens_per_event_qwen": number(self.tokens_per_event_qwen),
                 "val_macro_f1_ci_low": ci.low, "val_macro_f1_ci_high": ci.high}
        final.update({f"val_f1_{name}": self.class_f1(name) for name in labels})
        final.update({f"share_after_{name}": shares.get(name) for name in labels})
        # The question a user asks first: does the LLM beat a plain model on the same split?
        for key, short in BASELINE_METRIC_NAMES.items():
            f1 = self.baseline_f1(key)
            if f1 is not None and self.macro_f1 is not None:
                final[f"baseline_{short}_macro_f1"] = f1
                final[f"val_macro_f1_minus_{short}"] = self.macro_f1 - f1
        for key in ("ece_before", "ece_after", "brier_before", "brier_after", "nll_before", "nll_after"):
            final[f"val_{key}"] = self.num("calibration", key)
        final["temperature"] = self.temperature
        return {k: float(v) for k, v in final.items() if v is not None}

    # -- reading
    @classmethod
    def from_dict(cls, doc: Any) -> Metrics:
        """Any metrics.json written so far; a file without ``record_version`` is version 1."""
        doc = _map(doc)
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in doc.items() if k in known}
        values["record_version"] = _int(doc.get("record_version")) or 1
        return cls(**values, extra={k: v for k, v in doc.items() if k not in known})

    @classmethod
    def read(cls, path: PathLike) -> Metrics:
        return cls.from_dict(read_json(path))
