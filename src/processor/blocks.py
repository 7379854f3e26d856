"""metrics.json's nested blocks as small typed records, and the lenient readers they share.

Each block is built by the module that computes it (processor.scores, processor.evaluate, processor.trainer,
processor.calibrate, processor.drift, processor.leakage, processor.loss, the train loop's data and
evaluate phases), written by its ``to_dict`` (the keys and their order in metrics.json) and read back by
its ``from_dict``, which never raises: the gate and the model card read files that may be doctored, so a
missing or malformed value reads as None or empty and a check then fails on it.

A leaf (no processor import): the record (processor.record) and every module that builds a block
import it without lengthening an import chain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


# ------------------------------------------------------------------------------ lenient reading
def number(x: Any) -> float | None:
    """A finite number as float; None for anything else (missing, NaN, bool, text)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def whole(x: Any) -> int | None:
    """A whole number as int; None for anything else."""
    v = number(x)
    return int(v) if v is not None and v == int(v) else None


def real(x: Any) -> float | None:
    """A finite number kept as written: an int stays an int, so a block read back writes the same text."""
    return x if number(x) is not None else None


def mapping(x: Any) -> dict[str, Any]:
    return dict(x) if isinstance(x, Mapping) else {}


def text(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def flag(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def shares(x: Any) -> dict[str, float | None] | None:
    """``{label: number}`` (a value that is no number reads as None); None when ``x`` is no mapping."""
    return {str(k): number(v) for k, v in x.items()} if isinstance(x, Mapping) else None


def _floats(x: Any) -> tuple[float, ...] | None:
    """A list of finite numbers; None when ``x`` is no list or holds anything else."""
    if not isinstance(x, list):
        return None
    values = tuple(number(v) for v in x)
    return None if None in values else values


def _given(pairs: dict[str, Any]) -> dict[str, Any]:
    # The keys a block writes only when its run produced them (calibration's "after" figures, ...).
    return {k: list(v) if isinstance(v, tuple) else v for k, v in pairs.items() if v is not None}


# ------------------------------------------------------------------------------ the scores
@dataclass(frozen=True)
class Interval:
    low: float | None = None
    high: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Interval:
        d = mapping(d)
        return cls(number(d.get("low")), number(d.get("high")))

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


@dataclass(frozen=True)
class ClassScores:
    """``per_class.<label>``."""

    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    support: int | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ClassScores:
        d = mapping(d)
        return cls(number(d.get("precision")), number(d.get("recall")), number(d.get("f1")), whole(d.get("support")))

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass(frozen=True)
class ConfusionMatrix:
    """``confusion_matrix``: event counts, rows the true class and columns the predicted one, in ``labels``'
    order. A doctored matrix (a row that is no list, a count that is no whole number) reads as empty."""

    labels: tuple[str, ...] = ()
    matrix: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def from_dict(cls, d: Any) -> ConfusionMatrix:
        d = mapping(d)
        labels, rows = d.get("labels"), d.get("matrix")
        labels = tuple(labels) if isinstance(labels, list) and all(isinstance(v, str) for v in labels) else ()
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            return cls(labels)
        matrix = tuple(tuple(whole(v) for v in r) for r in rows)
        return cls(labels, () if any(None in r for r in matrix) else matrix)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "matrix": [list(r) for r in self.matrix]}


@dataclass(frozen=True)
class Bootstrap:
    """``bootstrap``: the CI settings actually used, macro-F1's interval and each class's F1 interval."""

    confidence: float | None = None
    n_resamples: int | None = None
    method: str | None = None
    val_macro_f1: Interval = field(default_factory=Interval)
    f1: dict[str, Interval] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> Bootstrap:
        d = mapping(d)
        return cls(number(d.get("confidence")), whole(d.get("n_resamples")), text(d.get("method")),
                   Interval.from_dict(d.get("val_macro_f1")),
                   {str(k): Interval.from_dict(v) for k, v in mapping(d.get("f1")).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "n_resamples": self.n_resamples, "method": self.method,
                "val_macro_f1": self.val_macro_f1.to_dict(), "f1": {k: v.to_dict() for k, v in self.f1.items()}}


@dataclass(frozen=True)
class BaselineScore:
    """``baselines.<name>``: a classic model's scores on the same val split; ``extra`` holds what one
    model adds, as written (the tuned tree's ``cv_macro_f1``, ``params``, ``search``, ``seconds``)."""

    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    per_class_f1: dict[str, float | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> BaselineScore:
        d = mapping(d)
        known = ("val_accuracy", "val_macro_f1", "per_class_f1")
        return cls(number(d.get("val_accuracy")), number(d.get("val_macro_f1")), shares(d.get("per_class_f1")) or {},
                   {k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        return {"val_accuracy": self.val_accuracy, "val_macro_f1": self.val_macro_f1,
                "per_class_f1": self.per_class_f1, **self.extra}


@dataclass(frozen=True)
class EpochRow:
    """``epoch_history[]``: one evaluated epoch. ``val`` holds the val figures the Trainer logged, by name
    without the ``val_`` prefix (``loss``, ``macro_f1``, ``accuracy``, ``f1_<label>``), in the order logged."""

    epoch: int | None = None
    step: int | None = None
    train_loss: float | None = None
    val: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> EpochRow:
        d = mapping(d)
        val = {k[4:]: number(v) for k, v in d.items() if k.startswith("val_") and number(v) is not None}
        return cls(whole(d.get("epoch")), whole(d.get("step")), number(d.get("train_loss")), val)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "train_loss": self.train_loss,
                **{f"val_{k}": v for k, v in self.val.items()}}


# ------------------------------------------------------------------------------ how the run got there
@dataclass(frozen=True)
class ClassBalance:
    """``class_balance``: was the training split oversampled, its class shares before and after."""

    applied: bool | None = None
    before: dict[str, float | None] | None = None
    after: dict[str, float | None] | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ClassBalance:
        d = mapping(d)
        return cls(flag(d.get("applied")), shares(d.get("before")), shares(d.get("after")))

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "before": self.before, "after": self.after}


@dataclass(frozen=True)
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
    train_counts: dict[str, int | None] | None = None
    val_counts: dict[str, int | None] | None = None
    time_range: dict[str, list[str] | None] | None = None
    bayes_ceiling: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> DataBlock:
        d = mapping(d)
        counts = (lambda x: {str(k): whole(v) for k, v in x.items()} if isinstance(x, Mapping) else None)
        return cls(text(d.get("train_file")), text(d.get("val_file")), text(d.get("train_sha256")),
                   text(d.get("val_sha256")), whole(d.get("n_train")), whole(d.get("n_train_fit")), whole(d.get("n_val")),
                   counts(d.get("train_counts")), counts(d.get("val_counts")),
                   d.get("time_range") if isinstance(d.get("time_range"), Mapping) else None,
                   number(d.get("bayes_ceiling")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ModelBlock:
    """``model``: the base as asked for and as resolved, the LoRA adapters' rank and alpha, and how many."""

    name: str | None = None
    base_id: str | None = None
    revision: str | None = None
    is_demo: bool | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    members: int | None = None  # adapters whose softmax ships averaged (training.members); None: before it

    @classmethod
    def from_dict(cls, d: Any) -> ModelBlock:
        d = mapping(d)
        return cls(text(d.get("name")), text(d.get("base_id")), text(d.get("revision")), flag(d.get("is_demo")),
                   whole(d.get("lora_r")), real(d.get("lora_alpha")), whole(d.get("members")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LossBlock:
    """``loss``: the training loss and its settings (processor.loss.FocalLoss.block)."""

    type: str | None = None
    gamma: float | None = None
    mae: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> LossBlock:
        d = mapping(d)
        return cls(text(d.get("type")), real(d.get("gamma")), real(d.get("mae")))

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "gamma": self.gamma, "mae": self.mae}


@dataclass(frozen=True)
class PriorCorrection:
    """``prior_correction`` (metrics.json and serving.json): ``alpha`` and the logit bias it gave (None: off)."""

    alpha: float | None = None
    logit_bias: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, d: Any) -> PriorCorrection:
        d = mapping(d)
        return cls(real(d.get("alpha")), _floats(d.get("logit_bias")))

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "logit_bias": None if self.logit_bias is None else list(self.logit_bias)}


# ------------------------------------------------------------------------------ trust
@dataclass(frozen=True)
class SymbolGap:
    """``leakage.symbols[]``: train vs val times of one symbol (processor.leakage.SymbolOverlap as written)."""

    symbol: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    latest_train: str | None = None
    earliest_val: str | None = None
    gap_seconds: float | None = None
    val_overlapping: int | None = None
    overlaps: bool | None = None

    @classmethod
    def from_dict(cls, d: Any) -> SymbolGap:
        d = mapping(d)
        return cls(text(d.get("symbol")), whole(d.get("n_train")), whole(d.get("n_val")), text(d.get("latest_train")),
                   text(d.get("earliest_val")), number(d.get("gap_seconds")), whole(d.get("val_overlapping")),
                   flag(d.get("overlaps")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Leakage:
    """``leakage``: does val overlap train in time, per symbol (processor.leakage.LeakageReport.block)."""

    checked: bool | None = None
    leakage_risk: bool | None = None  # True: an overlap was found; False: checked, none; None: unknown
    reason: str | None = None
    rule: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    train_without_timestamp: int | None = None
    val_without_timestamp: int | None = None
    val_overlapping: int | None = None
    min_gap_seconds: float | None = None
    symbols: tuple[SymbolGap, ...] = ()

    @classmethod
    def from_dict(cls, d: Any) -> Leakage:
        d = mapping(d)
        symbols = d.get("symbols")
        return cls(flag(d.get("checked")), flag(d.get("leakage_risk")), text(d.get("reason")), text(d.get("rule")),
                   whole(d.get("n_train")), whole(d.get("n_val")), whole(d.get("train_without_timestamp")),
                   whole(d.get("val_without_timestamp")), whole(d.get("val_overlapping")),
                   number(d.get("min_gap_seconds")),
                   tuple(SymbolGap.from_dict(s) for s in symbols if isinstance(s, Mapping))
                   if isinstance(symbols, list) else ())

    def to_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**doc, "symbols": [s.to_dict() for s in self.symbols]}


@dataclass(frozen=True)
class ValDrift:
    """``drift``: the val split's PSI per feature against the training profile (processor.drift)."""

    val_psi: dict[str, float] = field(default_factory=dict)
    max_psi: float | None = None
    note: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ValDrift:
        d = mapping(d)
        psi = {str(k): v for k, v in mapping(d.get("val_psi")).items() if number(v) is not None}
        return cls(psi, number(d.get("max_psi")), text(d.get("note")))

    def to_dict(self) -> dict[str, Any]:
        return {"val_psi": self.val_psi, "max_psi": self.max_psi, "note": self.note}


@dataclass(frozen=True)
class Calibration:
    """``calibration`` (processor.calibrate.evaluate_trust): the figures before calibration always; why it
    was skipped, or how the temperature was fitted and the out-of-fold figures after it, when there are."""

    method: str | None = None
    n_bins: int | None = None
    ece_before: float | None = None
    brier_before: float | None = None
    nll_before: float | None = None
    skipped: str | None = None
    fitting: str | None = None
    temperature: float | None = None
    fold_temperatures: tuple[float, ...] | None = None
    ece_after: float | None = None
    brier_after: float | None = None
    nll_after: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        d = mapping(d)
        return cls(text(d.get("method")), whole(d.get("n_bins")), number(d.get("ece_before")),
                   number(d.get("brier_before")), number(d.get("nll_before")), text(d.get("skipped")),
                   text(d.get("fitting")), number(d.get("temperature")), _floats(d.get("fold_temperatures")),
                   number(d.get("ece_after")), number(d.get("brier_after")), number(d.get("nll_after")))

    def to_dict(self) -> dict[str, Any]:
        always = ("method", "n_bins", "ece_before", "brier_before", "nll_before")
        doc = {k: getattr(self, k) for k in always}
        return {**doc, **_given({f.name: getattr(self, f.name) for f in fields(self) if f.name not in always})}


@dataclass(frozen=True)
class AbstentionRow:
    """``abstention.no_threshold`` and ``abstention.grid[]``: what one threshold keeps (processor.calibrate)."""

    min_confidence: float | None = None
    n_calls: int | None = None
    n_long: int | None = None
    n_short: int | None = None
    n_abstained: int | None = None
    precision_long: float | None = None
    precision_short: float | None = None
    coverage: float | None = None

    @classmethod
    def from_dict(cls, d: Any) -> AbstentionRow:
        d = mapping(d)
        return cls(number(d.get("min_confidence")), whole(d.get("n_calls")), whole(d.get("n_long")),
                   whole(d.get("n_short")), whole(d.get("n_abstained")), number(d.get("precision_long")),
                   number(d.get("precision_short")), number(d.get("coverage")))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Abstention:
    """``abstention``: the default threshold, which probabilities the table was computed on, and the table."""

    min_confidence: float | None = None
    probabilities: str | None = None
    no_threshold: AbstentionRow = field(default_factory=AbstentionRow)
    grid: tuple[AbstentionRow, ...] = ()

    @classmethod
    def from_dict(cls, d: Any) -> Abstention:
        d = mapping(d)
        grid = d.get("grid")
        return cls(real(d.get("min_confidence")), text(d.get("probabilities")),
                   AbstentionRow.from_dict(d.get("no_threshold")),
                   tuple(AbstentionRow.from_dict(r) for r in grid if isinstance(r, Mapping))
                   if isinstance(grid, list) else ())

    def to_dict(self) -> dict[str, Any]:
        return {"min_confidence": self.min_confidence, "probabilities": self.probabilities,
                "no_threshold": self.no_threshold.to_dict(), "grid": [r.to_dict() for r in self.grid]}
