"""The run record: the documents a training run leaves behind, as typed records with one owner.

- :class:`Metrics` is ``metrics.json`` (the run's scores and how they were obtained);
- :class:`ServingSpec` is ``serving.json`` inside ``model_final.zip`` (what prediction needs);
- :class:`ShippedHead` is the part of the spec that turns the classifier's raw output into the
  probabilities that ship (prior bias, then temperature) and the abstention threshold. It is the one
  definition of what ships: early stopping, the final metrics, the zip, the pyfunc and predict all
  call :meth:`ShippedHead.probabilities`.

Training writes these records; the gate, the model card, the sweep, the demo and predict read them
through this module, so no other module walks nested keys. The nested blocks of ``metrics.json`` that
the gate and the model card read (``per_class``, ``bootstrap``, ``class_balance``, ``baselines``) and
``data`` and ``drift`` are small records of their own, and ``validation_report.json`` is
:class:`ValidationReport`. Reading is lenient, because the gate judges
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
        d = _map(d)
        files, problems = d.get("files"), d.get("problems")
        return cls(d.get("valid") is True, [str(f) for f in files] if isinstance(files, list) else [],
                   [dict(p) for p in problems if isinstance(p, Mapping)] if isinstance(problems, list) else [])

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "files": self.files, "problems": self.problems}


# ------------------------------------------------------------------------------ metrics.json
# The nested blocks the gate and the model card read, each a small record: built by the module that
# computes it (processor.scores, processor.evaluate, processor.drift, the train loop's data phase), written
# by its to_dict (the keys and their order in metrics.json), read back leniently by its from_dict (a
# missing or malformed value reads as None or empty; keys this version does not know are kept).
@dataclass
class Interval:
    low: float | None = None
    high: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Interval:
        d = _map(d)
        return cls(number(d.get("low")), number(d.get("high")))

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


@dataclass
class ClassScores:
    """``per_class.<label>``."""

    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    support: int | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ClassScores:
        d = _map(d)
        return cls(number(d.get("precision")), number(d.get("recall")), number(d.get("f1")), _int(d.get("support")))

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass
class Bootstrap:
    """``bootstrap``: the CI settings actually used, macro-F1's interval and each class's F1 interval."""

    confidence: float | None = None
    n_resamples: int | None = None
    method: str | None = None
    val_macro_f1: Interval = field(default_factory=Interval)
    f1: dict[str, Interval] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> Bootstrap:
        d = _map(d)
        return cls(number(d.get("confidence")), _int(d.get("n_resamples")), _str(d.get("method")),
                   Interval.from_dict(d.get("val_macro_f1")),
                   {str(k): Interval.from_dict(v) for k, v in _map(d.get("f1")).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "n_resamples": self.n_resamples, "method": self.method,
                "val_macro_f1": self.val_macro_f1.to_dict(), "f1": {k: v.to_dict() for k, v in self.f1.items()}}


def _shares(x: Any) -> dict[str, float | None] | None:
    return {str(k): number(v) for k, v in x.items()} if isinstance(x, Mapping) else None


@dataclass
class ClassBalance:
    """``class_balance``: was the training split oversampled, its class shares before and after."""

    applied: bool | None = None
    before: dict[str, float | None] | None = None
    after: dict[str, float | None] | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ClassBalance:
        d = _map(d)
        return cls(_bool(d.get("applied")), _shares(d.get("before")), _shares(d.get("after")))

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "before": self.before, "after": self.after}


@dataclass
class BaselineScore:
    """``baselines.<name>``: a classic model's scores on the same val split; ``extra`` holds what one
    model adds, as written (the tuned tree's ``cv_macro_f1``, ``params``, ``search``, ``seconds``)."""

    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    per_class_f1: dict[str, float | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> BaselineScore:
        d = _map(d)
        known = ("val_accuracy", "val_macro_f1", "per_class_f1")
        return cls(number(d.get("val_accuracy")), number(d.get("val_macro_f1")), _shares(d.get("per_class_f1")) or {},
                   {k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        return {"val_accuracy": self.val_accuracy, "val_macro_f1": self.val_macro_f1,
                "per_class_f1": self.per_class_f1, **self.extra}


@dataclass
class DataBlock:
    """``data``: the files trained and scored on, their sizes and class counts, time ranges, and the data
    card's Bayes ceiling when the card describes exactly these files."""

    train_file: str | None = None
    val_file: str | None = None
    train_sha256: str | None = None
    val_sha256: str | None = None
    n_train: int | None = None
    n_train_fit: int | None = None
    n_val: int | None = None
    train_counts: dict[str, int] | None = None
    val_counts: dict[str, int] | None = None
    time_range: dict[str, list[str] | None] | None = None
    bayes_ceiling: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> DataBlock:
        d = _map(d)
        counts = (lambda x: {str(k): _int(v) for k, v in x.items()} if isinstance(x, Mapping) else None)
        return cls(_str(d.get("train_file")), _str(d.get("val_file")), _str(d.get("train_sha256")),
                   _str(d.get("val_sha256")), _int(d.get("n_train")), _int(d.get("n_train_fit")), _int(d.get("n_val")),
                   counts(d.get("train_counts")), counts(d.get("val_counts")),
                   d.get("time_range") if isinstance(d.get("time_range"), Mapping) else None,
                   number(d.get("bayes_ceiling")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ValDrift:
    """``drift``: the val split's PSI per feature against the training profile (processor.drift)."""

    val_psi: dict[str, float] = field(default_factory=dict)
    max_psi: float | None = None
    note: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ValDrift:
        d = _map(d)
        psi = {str(k): v for k, v in _map(d.get("val_psi")).items() if number(v) is not None}
        return cls(psi, number(d.get("max_psi")), _str(d.get("note")))

    def to_dict(self) -> dict[str, Any]:
        return {"val_psi": self.val_psi, "max_psi": self.max_psi, "note": self.note}


def _plain(value: Any) -> Any:
    """A block as JSON: a typed block (or a mapping of them) as its to_dict, anything else as given."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping) and any(hasattr(v, "to_dict") for v in value.values()):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class Metrics:
    """``metrics.json``. Fields hold the values as written (a doctored file may hold anything); the
    accessors below read them leniently through the blocks' records, so callers get a number or None,
    never a KeyError. Training hands the blocks over as records (:class:`Bootstrap`, ...): they are kept
    as their JSON, what the file holds, so a record read back and one just built are alike."""

    val_accuracy: Any = None
    val_macro_f1: Any = None
    per_class: Any = None  # {label: ClassScores}
    confusion_matrix: Any = None  # {labels, matrix}
    bootstrap: Any = None  # Bootstrap
    class_balance: Any = None  # ClassBalance
    class_weights: Any = None  # {label: weight} or None (unweighted)
    best_epoch: Any = None
    epochs_run: Any = None
    epoch_history: Any = None  # [{epoch, step, train_loss, val_*}]
    schema_fingerprint: Any = None
    tokens_per_event: Any = None  # under the trained base's tokenizer
    tokens_per_event_qwen: Any = None  # under Qwen's own vocabulary
    data: Any = None  # DataBlock
    model: Any = None  # {name, base_id, revision, is_demo, lora_r, lora_alpha}
    loss: Any = None  # {type, gamma, mae}
    prior_correction: Any = None  # {alpha, logit_bias}
    seed: Any = None
    leakage: Any = None  # processor.leakage report (absent when the check is off)
    drift: Any = None  # ValDrift
    calibration: Any = None  # processor.calibrate.evaluate_trust
    abstention: Any = None
    baselines: Any = None  # {name: BaselineScore} (absent when off)
    record_version: int = RECORD_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as written

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _plain(getattr(self, f.name)))

    # -- the scores
    @property
    def macro_f1(self) -> float | None:
        return number(self.val_macro_f1)

    @property
    def accuracy(self) -> float | None:
        return number(self.val_accuracy)

    def class_scores(self, label: str) -> ClassScores:
        return ClassScores.from_dict(_map(self.per_class).get(label))

    def class_f1(self, label: str) -> float | None:
        return self.class_scores(label).f1

    def support(self, label: str) -> int | None:
        """How many val events of ``label`` its F1 rests on (None where missing)."""
        return self.class_scores(label).support

    # -- their uncertainty
    @property
    def intervals(self) -> Bootstrap:
        return Bootstrap.from_dict(self.bootstrap)

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
        return ClassBalance.from_dict(self.class_balance)

    def shares_after(self) -> dict[str, float | None] | None:
        """The training-class shares after oversampling, per label (None where missing); None when
        the run recorded none."""
        after = self.balance.after
        return None if after is None else {n: after.get(n) for n in LABELS}

    @property
    def oversampled(self) -> bool | None:
        return self.balance.applied

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

    def baseline(self, name: str) -> BaselineScore:
        return BaselineScore.from_dict(_map(self.baselines).get(name))

    def baseline_f1(self, name: str) -> float | None:
        return self.baseline(name).val_macro_f1

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
