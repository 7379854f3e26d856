"""The run record: the documents a training run leaves behind, as typed records with one owner.

- :class:`Metrics` is ``metrics.json`` (the run's scores and how they were obtained);
- :class:`ServingSpec` is ``serving.json`` inside ``model_final.zip`` (what prediction needs);
- :class:`ShippedHead` is the part of the spec that turns the classifier's raw output into the
  probabilities that ship (prior bias, then temperature) and the abstention threshold. It is the one
  definition of what ships: early stopping, the final metrics, the zip, the pyfunc and predict all
  call :meth:`ShippedHead.probabilities`.

Training writes these records; the gate, the model card, the sweep, the demo and predict read them
through this module, so no other module walks nested keys. Each nested block of ``metrics.json`` is a
small record of its own (processor.blocks), built by the module that computes it, and
``validation_report.json`` is :class:`ValidationReport`. Reading is lenient, because the gate judges
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
    model.{name,base_id,revision,is_demo,lora_r,lora_alpha,members}, loss.{type,gamma,mae}, seed
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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from processor.blocks import (Abstention, BaselineScore, Bootstrap, Calibration, ClassBalance, ClassScores,
                              ConfusionMatrix, DataBlock, EpochRow, Interval, Leakage, LossBlock, ModelBlock,
                              PriorCorrection, ValDrift, flag, mapping, number, shares, text, whole)
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

    def prior_block(self) -> PriorCorrection:
        """``prior_correction`` as metrics.json and serving.json record it."""
        return PriorCorrection(self.prior_alpha, self.logit_bias)

    @classmethod
    def from_serving(cls, doc: Mapping[str, Any]) -> ShippedHead:
        prior = mapping(doc.get("prior_correction"))
        bias = prior.get("logit_bias")
        temperature = number(mapping(doc.get("calibration")).get("temperature"))
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
        d = mapping(d)
        return cls(name=text(d.get("name")), base_id=text(d.get("base_id")), revision=text(d.get("revision")),
                   is_demo=flag(d.get("is_demo")), weights_sha256=text(d.get("weights_sha256")))

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
            "prior_correction": self.head.prior_block().to_dict(),
            "min_confidence": self.head.min_confidence,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServingSpec:
        """Any serving.json written so far (the first zips lack the profile, temperature and prior)."""
        features = d.get("features")
        return cls(base=BaseModel.from_dict(d.get("base")), template=str(d.get("template", "")),
                   serialization=mapping(d.get("serialization")) or {"template": str(d.get("template", ""))},
                   max_length=whole(d.get("max_length")) or 0, labels=tuple(d.get("labels") or LABELS),
                   schema_fingerprint=text(d.get("schema_fingerprint")),
                   features=tuple(features) if isinstance(features, list) else None,
                   feature_profile=d.get("feature_profile") if isinstance(d.get("feature_profile"), Mapping) else None,
                   head=ShippedHead.from_serving(d), format_version=whole(d.get("format_version")) or 1)


# ------------------------------------------------------------------------------ validation_report.json
@dataclass
class ValidationReport:
    """``validation_report.json``: did the run's files keep the event contract, and every problem
    (file, line, id, key, message) when not. The train loop writes it before anything trains."""

    valid: bool
    files: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, valid: bool, paths: list[Path], problems: list[Any]) -> ValidationReport:
        """From processor.data's problems (objects with file, line, id, key, message)."""
        return cls(valid, [str(p) for p in paths],
                   [{"file": p.file, "line": p.line, "id": p.id, "key": p.key, "message": p.message} for p in problems])

    @classmethod
    def from_dict(cls, d: Any) -> ValidationReport:
        d = mapping(d)
        files, problems = d.get("files"), d.get("problems")
        return cls(d.get("valid") is True, [str(f) for f in files] if isinstance(files, list) else [],
                   [dict(p) for p in problems if isinstance(p, Mapping)] if isinstance(problems, list) else [])

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "files": self.files, "problems": self.problems}


# ------------------------------------------------------------------------------ metrics.json
# How metrics.json's keys read back: a block that is no JSON object (missing, null, doctored) reads as
# None, as do a scalar of the wrong type and a list that is no list; inside a block, the block's record
# reads what it can (processor.blocks).
def _block(cls: Any) -> Any:
    return lambda x: cls.from_dict(x) if isinstance(x, Mapping) else None


def _by_name(cls: Any) -> Any:
    return lambda x: {str(k): cls.from_dict(v) for k, v in x.items()} if isinstance(x, Mapping) else None


def _rows(cls: Any) -> Any:
    return lambda x: tuple(cls.from_dict(r) for r in x if isinstance(r, Mapping)) if isinstance(x, list) else None


_READ: dict[str, Any] = {
    "val_accuracy": number, "val_macro_f1": number, "per_class": _by_name(ClassScores),
    "confusion_matrix": _block(ConfusionMatrix), "bootstrap": _block(Bootstrap), "class_balance": _block(ClassBalance),
    "class_weights": shares, "best_epoch": whole, "epochs_run": whole, "epoch_history": _rows(EpochRow),
    "schema_fingerprint": text, "tokens_per_event": number, "tokens_per_event_qwen": number,
    "data": _block(DataBlock), "model": _block(ModelBlock), "loss": _block(LossBlock),
    "prior_correction": _block(PriorCorrection), "seed": whole, "leakage": _block(Leakage), "drift": _block(ValDrift),
    "calibration": _block(Calibration), "abstention": _block(Abstention), "baselines": _by_name(BaselineScore),
}


def _plain(value: Any) -> Any:
    """A field as JSON: a record as its to_dict, a mapping or a list of records as theirs."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)) and any(hasattr(v, "to_dict") for v in value):
        return [_plain(v) for v in value]
    return value


@dataclass
class Metrics:
    """``metrics.json``, each nested block its record (processor.blocks). Read leniently: a missing or
    malformed value is None (an absent block too) and a block reads what it can, so callers get a
    number or None, never a KeyError. Keys this version does not know are kept in ``extra``."""

    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    per_class: dict[str, ClassScores] | None = None
    confusion_matrix: ConfusionMatrix | None = None
    bootstrap: Bootstrap | None = None
    class_balance: ClassBalance | None = None
    class_weights: dict[str, float | None] | None = None  # by label; None: the loss was unweighted
    best_epoch: int | None = None
    epochs_run: int | None = None
    epoch_history: tuple[EpochRow, ...] | None = None
    schema_fingerprint: str | None = None
    tokens_per_event: float | None = None  # under the trained base's tokenizer
    tokens_per_event_qwen: float | None = None  # under Qwen's own vocabulary
    data: DataBlock | None = None
    model: ModelBlock | None = None
    loss: LossBlock | None = None
    prior_correction: PriorCorrection | None = None
    seed: int | None = None
    leakage: Leakage | None = None  # absent when the check is off
    drift: ValDrift | None = None
    calibration: Calibration | None = None
    abstention: Abstention | None = None
    baselines: dict[str, BaselineScore] | None = None  # absent when eval.baselines is empty
    record_version: int = RECORD_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as written

    # -- the scores
    @property
    def macro_f1(self) -> float | None:
        return self.val_macro_f1

    @property
    def accuracy(self) -> float | None:
        return self.val_accuracy

    def class_scores(self, label: str) -> ClassScores:
        return (self.per_class or {}).get(label) or ClassScores()

    def class_f1(self, label: str) -> float | None:
        return self.class_scores(label).f1

    def support(self, label: str) -> int | None:
        """How many val events of ``label`` its F1 rests on (None where missing)."""
        return self.class_scores(label).support

    # -- their uncertainty
    @property
    def intervals(self) -> Bootstrap:
        return self.bootstrap or Bootstrap()

    @property
    def confidence(self) -> float | None:
        return self.intervals.confidence

    @property
    def macro_f1_ci(self) -> Interval:
        return self.intervals.val_macro_f1

    def class_f1_ci(self, label: str) -> Interval:
        return self.intervals.f1.get(label) or Interval()

    # -- how the run got there
    @property
    def balance(self) -> ClassBalance:
        return self.class_balance or ClassBalance()

    def shares_after(self) -> dict[str, float | None] | None:
        """The training-class shares after oversampling, per label (None where missing); None when
        the run recorded none."""
        after = self.balance.after
        return None if after is None else {n: after.get(n) for n in LABELS}

    @property
    def oversampled(self) -> bool | None:
        return self.balance.applied

    def baseline(self, name: str) -> BaselineScore:
        return (self.baselines or {}).get(name) or BaselineScore()

    def baseline_f1(self, name: str) -> float | None:
        return self.baseline(name).val_macro_f1

    def baseline_scores(self) -> dict[str, float | None]:
        return {name: self.baseline_f1(name) for name in self.baselines or {}}

    @property
    def temperature(self) -> float | None:
        return None if self.calibration is None else self.calibration.temperature

    # -- writing
    def to_dict(self) -> dict[str, Any]:
        """The document in the order training has always written it; optional blocks the run did not
        produce (leakage, baselines, tokens_per_event_qwen) are left out rather than written as null."""
        doc = {"record_version": self.record_version}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("record_version", "extra") or (f.name in _OPTIONAL and value is None):
                continue
            doc[f.name] = _plain(value)
        doc.update(self.extra)
        return doc

    def write(self, path: PathLike) -> Path:
        return write_json(path, self.to_dict())

    def final_metrics(self, labels: tuple[str, ...] = LABELS) -> dict[str, float]:
        """The run's final MLflow metrics, named once here: val_macro_f1, val_accuracy, best_epoch,
        epochs_run, tokens_per_event(_qwen), val_macro_f1_ci_low/high, val_f1_<label>, share_after_<label>,
        per baseline (gbdt, logreg, tuned_gbdt) baseline_<name>_macro_f1 and val_macro_f1_minus_<name>, and the
        calibration figures val_ece_before/after, val_brier_before/after, val_nll_before/after, temperature."""
        ci, shares_after = self.macro_f1_ci, self.shares_after() or {}
        final = {"val_macro_f1": self.macro_f1, "val_accuracy": self.accuracy, "best_epoch": self.best_epoch,
                 "epochs_run": self.epochs_run, "tokens_per_event": self.tokens_per_event,
                 "tokens_per_event_qwen": self.tokens_per_event_qwen,
                 "val_macro_f1_ci_low": ci.low, "val_macro_f1_ci_high": ci.high}
        final.update({f"val_f1_{name}": self.class_f1(name) for name in labels})
        final.update({f"share_after_{name}": shares_after.get(name) for name in labels})
        # The question a user asks first: does the LLM beat a plain model on the same split?
        for key, short in BASELINE_METRIC_NAMES.items():
            f1 = self.baseline_f1(key)
            if f1 is not None and self.macro_f1 is not None:
                final[f"baseline_{short}_macro_f1"] = f1
                final[f"val_macro_f1_minus_{short}"] = self.macro_f1 - f1
        cal = self.calibration or Calibration()
        for key in ("ece_before", "ece_after", "brier_before", "brier_after", "nll_before", "nll_after"):
            final[f"val_{key}"] = getattr(cal, key)
        final["temperature"] = self.temperature
        return {k: float(v) for k, v in final.items() if v is not None}

    # -- reading
    @classmethod
    def from_dict(cls, doc: Any) -> Metrics:
        """Any metrics.json written so far; a file without ``record_version`` is version 1."""
        doc = mapping(doc)
        values = {k: _READ[k](v) for k, v in doc.items() if k in _READ}
        return cls(**values, record_version=whole(doc.get("record_version")) or 1,
                   extra={k: v for k, v in doc.items() if k not in _READ and k != "record_version"})

    @classmethod
    def read(cls, path: PathLike) -> Metrics:
        return cls.from_dict(read_json(path))
