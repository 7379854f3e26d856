"""metrics.json's nested blocks as typed records (processor.record): what training writes reads back the
same, a doctored block reads as None/empty instead of raising, and the recorder is the figures' writer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processor.blocks import (Abstention, AbstentionRow, BaselineScore, Bootstrap, Calibration, ClassBalance,
                              ClassScores, ConfusionMatrix, DataBlock, EpochRow, Interval, Leakage, LossBlock,
                              ModelBlock, PriorCorrection, SymbolGap, ValDrift)
from processor.record import Metrics, ShippedHead, dumps
from processor.recorder import NullRecorder, Recorder
from processor.scores import bootstrap_ci, bootstrap_intervals, compute_metrics, score

Y_TRUE = ["long", "short", "no_trade", "long", "no_trade", "short", "no_trade", "no_trade"]
Y_PRED = ["long", "no_trade", "no_trade", "long", "short", "short", "no_trade", "long"]

ROW = AbstentionRow(min_confidence=0.6, n_calls=4, n_long=2, n_short=2, n_abstained=3, precision_long=0.5,
                    precision_short=None, coverage=0.8)
GAP = SymbolGap(symbol="EURUSD", n_train=10, n_val=4, latest_train="2025-11-11T16:10:00Z",
                earliest_val="2025-11-13T12:30:00Z", gap_seconds=159600.0, val_overlapping=0, overlaps=False)
BLOCKS = [
    ClassScores(precision=0.5, recall=0.25, f1=1 / 3, support=4),
    ConfusionMatrix(labels=("long", "short", "no_trade"), matrix=((2, 0, 1), (0, 1, 1), (1, 1, 2))),
    Bootstrap(confidence=0.9, n_resamples=200, method="percentile", val_macro_f1=Interval(0.4, 0.7),
              f1={"long": Interval(0.1, 0.9), "short": Interval(None, 0.5)}),
    ClassBalance(applied=True, before={"long": 0.2, "short": 0.1, "no_trade": 0.7},
                 after={"long": 1 / 3, "short": 1 / 3, "no_trade": 1 / 3}),
    BaselineScore(val_accuracy=0.7, val_macro_f1=0.6, per_class_f1={"long": 0.5, "short": 0.6, "no_trade": 0.7},
                  extra={"cv_macro_f1": 0.61, "params": {"num_leaves": 15, "offsets": None}, "seconds": 1.5}),
    EpochRow(epoch=2, step=64, train_loss=None, val={"loss": 0.4, "macro_f1": 0.7, "f1_long": 0.6}),
    DataBlock(train_file="t.jsonl", val_file="v.jsonl", train_sha256="ab", val_sha256="cd", n_train=10,
              n_train_fit=12, n_val=4, train_counts={"long": 3, "short": 2, "no_trade": 5},
              val_counts={"long": 1, "short": 1, "no_trade": 2},
              time_range={"train": ["2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"], "val": None},
              bayes_ceiling=0.9),
    ModelBlock(name="qwen-tiny", base_id="processor/qwen-tiny", revision="eceab82d", is_demo=True, lora_r=16,
               lora_alpha=32),
    LossBlock(type="focal", gamma=0.5, mae=0.0),
    PriorCorrection(alpha=0.5, logit_bias=(-0.9, -0.85, -0.2)),
    GAP,
    Leakage(checked=True, leakage_risk=False, reason="", rule="val later than train", n_train=10, n_val=4,
            train_without_timestamp=0, val_without_timestamp=0, val_overlapping=0, min_gap_seconds=159600.0,
            symbols=(GAP, replace(GAP, symbol=None, gap_seconds=None))),
    ValDrift(val_psi={"atr": 0.01, "session": 0.2}, max_psi=0.2, note=None),
    Calibration(method="none", n_bins=10, ece_before=0.1, brier_before=0.3, nll_before=0.7,
                skipped="too few validation events to cross-fit"),
    Calibration(method="temperature_scaling", n_bins=10, ece_before=0.1, brier_before=0.3, nll_before=0.7,
                fitting="cross-fitted", temperature=0.73, fold_temperatures=(0.7, 0.75), ece_after=0.02,
                brier_after=0.25, nll_after=0.6),
    ROW,
    Abstention(min_confidence=None, probabilities="out-of-fold calibrated", no_threshold=replace(ROW, coverage=1.0),
               grid=(ROW, replace(ROW, min_confidence=0.9, precision_long=None))),
]


def _name(block) -> str:
    return type(block).__name__


@pytest.mark.parametrize("block", BLOCKS, ids=_name)
def test_a_block_reads_back_what_it_wrote(block) -> None:
    assert type(block).from_dict(json.loads(dumps(block.to_dict()))) == block


@pytest.mark.parametrize("block", BLOCKS, ids=_name)
@pytest.mark.parametrize("doctored", ["oops", None, 3, ["a"], {}], ids=["text", "null", "number", "list", "empty"])
def test_a_doctored_block_reads_as_empty(block, doctored) -> None:
    assert type(block).from_dict(doctored) == type(block)()


def _wrong(value):
    """A value of the wrong type for every key: a list around what was written (a list where a number,
    a text, a flag or an object is expected; a list of lists where a list is)."""
    return [value]


@pytest.mark.parametrize("block", BLOCKS, ids=_name)
def test_every_value_of_the_wrong_type_reads_as_none_or_empty(block) -> None:
    doc = {k: _wrong(v) for k, v in block.to_dict().items()}
    expected = type(block)()
    if isinstance(block, BaselineScore):  # what one model adds is kept as written, whatever it is
        expected = BaselineScore(extra={k: v for k, v in doc.items() if k in block.extra})
    assert type(block).from_dict(doc) == expected


@pytest.mark.parametrize("cls, doc", [
    (ConfusionMatrix, {"labels": "long,short", "matrix": "1,2;3,4"}),
    (ConfusionMatrix, {"labels": ["long", 3], "matrix": [[1, 2], "3,4"]}),
    (ConfusionMatrix, {"matrix": [[1, 2.5], [3, True]]}),
    (Leakage, {"symbols": "EURUSD"}),
    (Leakage, {"symbols": ["EURUSD", 3]}),
    (Abstention, {"grid": "0.5,0.6"}),
    (Abstention, {"grid": [0.5, "x"], "no_threshold": "all"}),
    (Calibration, {"fold_temperatures": "0.7"}),
    (Calibration, {"fold_temperatures": [0.7, "x"]}),
    (PriorCorrection, {"logit_bias": "0.1"}),
    (PriorCorrection, {"logit_bias": [0.1, None, 0.3]}),
    (Bootstrap, {"f1": "long", "val_macro_f1": "0.4-0.7"}),
    (EpochRow, {"val_macro_f1": "0.7", "val_loss": [0.1]}),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_a_string_or_a_broken_list_where_a_list_is_expected_reads_as_empty(cls, doc) -> None:
    assert cls.from_dict(doc) == cls()


def _metrics() -> Metrics:
    by_name = {_name(b): b for b in BLOCKS}
    return Metrics(val_accuracy=0.75, val_macro_f1=0.7, per_class={"long": BLOCKS[0]},
                   confusion_matrix=by_name["ConfusionMatrix"], bootstrap=by_name["Bootstrap"],
                   class_balance=by_name["ClassBalance"], class_weights={"long": 1.5, "short": 1.2, "no_trade": 0.6},
                   best_epoch=2, epochs_run=3, epoch_history=(by_name["EpochRow"],), schema_fingerprint="f00d",
                   tokens_per_event=28.0, tokens_per_event_qwen=13.0, data=by_name["DataBlock"],
                   model=by_name["ModelBlock"], loss=by_name["LossBlock"], prior_correction=by_name["PriorCorrection"],
                   seed=0, leakage=by_name["Leakage"], drift=by_name["ValDrift"], calibration=BLOCKS[-3],
                   abstention=by_name["Abstention"], baselines={"tuned_gbdt": by_name["BaselineScore"]})


def test_metrics_reads_back_every_block_it_wrote() -> None:
    m = _metrics()
    doc = json.loads(dumps(m.to_dict()))
    assert Metrics.from_dict(doc) == m and isinstance(doc["calibration"], dict)
    assert list(doc)[:3] == ["record_version", "val_accuracy", "val_macro_f1"] and "extra" not in doc
    again = Metrics.from_dict(doc)
    assert again.macro_f1_ci == Interval(0.4, 0.7) and again.class_f1_ci("short") == Interval(None, 0.5)
    assert again.class_f1_ci("no_trade") == Interval() and again.support("long") == 4
    assert again.oversampled is True and again.shares_after()["short"] == pytest.approx(1 / 3)
    assert again.baseline_f1("tuned_gbdt") == 0.6 and again.baseline("tuned_gbdt").extra["seconds"] == 1.5
    assert again.temperature == 0.73 and again.epoch_history[0].val["macro_f1"] == 0.7
    final = again.final_metrics()
    assert final["best_epoch"] == 2.0 and final["val_ece_after"] == 0.02 and final["temperature"] == 0.73
    # Keys this version does not know are kept; a file from before record_version is version 1.
    old = Metrics.from_dict({"val_macro_f1": 0.5, "future_block": {"a": 1}})
    assert old.record_version == 1 and old.to_dict()["future_block"] == {"a": 1}


def _doctored() -> dict:
    """Every key of a full metrics.json, each of the wrong type (text where anything else is expected)."""
    return {**{k: "oops" for k in _metrics().to_dict()}, "schema_fingerprint": 7}


def test_a_doctored_metrics_json_reads_as_none_where_it_is_broken() -> None:
    doc = _doctored()
    broken = Metrics.from_dict({**doc, "record_version": 2, "epoch_history": [{"epoch": "one"}, "x"],
                                "per_class": {"long": {"f1": "x", "support": 2.5}}, "baselines": {"tuned_gbdt": 7}})
    assert broken.macro_f1 is None and broken.macro_f1_ci == Interval() and broken.shares_after() is None
    assert broken.oversampled is None and broken.class_f1("long") is None and broken.support("long") is None
    assert broken.baseline_scores() == {"tuned_gbdt": None} and broken.temperature is None
    assert broken.epoch_history == (EpochRow(),) and broken.calibration is None and broken.leakage is None
    assert broken.model is None and broken.seed is None and broken.schema_fingerprint is None
    assert broken.final_metrics() == {}


def _val_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    train = pd.DataFrame({"symbol": ["A", "A", "B"], "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z",
                                                                    "2024-01-01T00:00:00Z"]})
    val = pd.DataFrame({"symbol": ["A", "B"], "timestamp": ["2024-01-03T00:00:00Z", "2024-01-01T00:00:00Z"]})
    return train, val


def test_what_training_builds_writes_the_layout_it_always_wrote() -> None:
    """The blocks as their modules build them: metrics.json's keys in the order training wrote before
    the blocks were records, and the file's text reads back to the very same text."""
    from processor.calibrate import evaluate_trust
    from processor.leakage import time_overlap
    from processor.loss import FocalLoss

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([2, 2, 2], size=60)
    y = rng.integers(0, 3, size=60)
    trust = evaluate_trust(probs, y, calibrate=True, folds=3, n_bins=5, grid=[0.4, 0.6], min_confidence=None, seed=0)
    skipped = evaluate_trust(probs[:3], [0, 1, 2], calibrate=True, folds=3, n_bins=5, grid=[0.5],
                             min_confidence=0.5, seed=0)
    leak = time_overlap(*_val_frames())
    s = score(Y_TRUE, Y_PRED)
    m = Metrics(val_accuracy=s.accuracy, val_macro_f1=s.macro_f1, per_class=s.per_class, confusion_matrix=s.confusion,
                bootstrap=bootstrap_intervals(Y_TRUE, Y_PRED, n_resamples=20), loss=FocalLoss(gamma=0.5).block(),
                prior_correction=ShippedHead(logit_bias=(0.1, -0.2, 0.3), prior_alpha=0.5).prior_block(),
                leakage=leak.block(), calibration=trust.calibration, abstention=trust.abstention)
    text = dumps(m.to_dict())
    assert dumps(Metrics.from_dict(json.loads(text)).to_dict()) == text
    assert list(trust.calibration.to_dict()) == [
        "method", "n_bins", "ece_before", "brier_before", "nll_before", "fitting", "temperature", "fold_temperatures",
        "ece_after", "brier_after", "nll_after"]
    assert list(skipped.calibration.to_dict()) == ["method", "n_bins", "ece_before", "brier_before", "nll_before",
                                                   "skipped"]
    assert list(trust.abstention.to_dict()) == ["min_confidence", "probabilities", "no_threshold", "grid"]
    assert list(trust.abstention.to_dict()["grid"][0]) == [
        "min_confidence", "n_calls", "n_long", "n_short", "n_abstained", "precision_long", "precision_short", "coverage"]
    assert list(leak.to_dict()) == ["checked", "leakage_risk", "reason", "rule", "n_train", "n_val",
                                    "train_without_timestamp", "val_without_timestamp", "val_overlapping",
                                    "min_gap_seconds", "symbols"]
    assert list(leak.to_dict()["symbols"][0]) == ["symbol", "n_train", "n_val", "latest_train", "earliest_val",
                                                  "gap_seconds", "val_overlapping", "overlaps"]
    assert m.to_dict()["loss"] == {"type": "focal", "gamma": 0.5, "mae": 0.0}
    assert m.to_dict()["prior_correction"] == {"alpha": 0.5, "logit_bias": [0.1, -0.2, 0.3]}
    assert s.to_dict() == compute_metrics(Y_TRUE, Y_PRED) and list(s.to_dict()["confusion_matrix"]) == ["labels",
                                                                                                          "matrix"]


def test_the_gate_reports_a_doctored_metrics_json_instead_of_crashing() -> None:
    from processor.gate.checks import check_time_leakage, run_checks
    from processor.gate.evidence import Evidence
    from processor.gate.thresholds import load_thresholds

    th = replace(load_thresholds(), beats_baseline=True, time_leakage=True, min_support=True, min_support_events=30)
    doc = _doctored()
    for metrics in (doc, {**doc, "leakage": {"leakage_risk": True, "symbols": "EURUSD", "val_overlapping": "3"}},
                    {**doc, "leakage": {"leakage_risk": True, "symbols": ["EURUSD", {"symbol": 4}]}}):
        checks = run_checks(Evidence(source="doctored", metrics=metrics), th, strict=False)
        assert checks and not any(c.passed for c in checks if c.name != "artifacts")
    leak = check_time_leakage(Evidence(source="doctored", metrics={
        "leakage": {"leakage_risk": True, "n_val": 4, "val_overlapping": 1,
                    "symbols": [{"symbol": "EURUSD", "overlaps": True}, "GBPUSD"]}}))
    assert not leak.passed and leak.detail.endswith("(EURUSD)") and leak.data["val_overlapping"] == 1


def test_the_typed_scores_are_the_dicts_runs_write() -> None:
    typed = bootstrap_intervals(Y_TRUE, Y_PRED, n_resamples=50, seed=3)
    assert bootstrap_ci(Y_TRUE, Y_PRED, n_resamples=50, seed=3) == typed.to_dict()
    assert list(typed.to_dict()) == ["confidence", "n_resamples", "method", "val_macro_f1", "f1"]
    per_class = compute_metrics(Y_TRUE, Y_PRED)["per_class"]
    assert {k: ClassScores.from_dict(v).to_dict() for k, v in per_class.items()} == per_class
    assert {k: v.to_dict() for k, v in score(Y_TRUE, Y_PRED).per_class.items()} == per_class


def _draw(path: Path) -> Path:
    path.write_bytes(b"\x89PNG")
    return path


def test_the_recorder_writes_the_figures_before_metrics_json(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    written = rec.outputs(Metrics(), [], plots={"a.png": _draw, "b.png": _draw})
    assert [p.name for p in rec.written] == ["a.png", "b.png", "metrics.json"]  # metrics.json last: run done
    assert sorted(p.name for p in written) == ["a.png", "b.png", "metrics.json"]
    assert (tmp_path / "a.png").read_bytes() == b"\x89PNG"
    other = NullRecorder(tmp_path / "rank1")
    other.outputs(Metrics(), [], plots={"a.png": _draw})
    assert other.written == [] and not (tmp_path / "rank1").exists()


def test_the_gate_report_reads_back_what_it_wrote_and_survives_a_doctored_file() -> None:
    from processor.gate.checks import CheckResult, GateReport

    checks = [CheckResult("val_macro_f1", False, "0.41", ">= 0.5", "below the threshold", {"value": 0.41}),
              CheckResult("schema", True, "ok", "same", "")]
    local = GateReport("failed", "out/", "out/metrics.json", False, {"min_share": 0.2}, checks)
    run = GateReport("passed", "run abc", None, True, {}, checks[1:],
                     run={"tracking_uri": "sqlite:///m.db", "run_id": "abc", "registration": {"version": "3"}})
    for report in (local, run):
        doc = json.loads(json.dumps(report.to_dict()))
        assert GateReport.from_dict(doc) == report and list(doc)[:6] == [
            "status", "source", "metrics_source", "strict", "thresholds", "checks"]
    assert "run_id" not in local.to_dict() and run.registration == {"version": "3"}
    assert local.failures() == ["val_macro_f1: below the threshold"]
    doctored = GateReport.from_dict({"status": 3, "checks": ["x", {"name": "schema", "passed": "yes"}], "strict": 1})
    assert doctored.failures() == ["schema: "] and doctored.strict is False and doctored.run is None


def test_the_validation_report_reads_back_what_it_wrote() -> None:
    from types import SimpleNamespace

    from processor.record import ValidationReport

    problem = SimpleNamespace(file="val.jsonl", line=3, id="e3", key="atr", message="must be a number")
    report = ValidationReport.of(False, [Path("train.jsonl"), Path("val.jsonl")], [problem])
    assert report.to_dict() == {"valid": False, "files": ["train.jsonl", "val.jsonl"], "problems": [
        {"file": "val.jsonl", "line": 3, "id": "e3", "key": "atr", "message": "must be a number"}]}
    assert ValidationReport.from_dict(json.loads(dumps(report.to_dict()))) == report
    assert ValidationReport.from_dict({"valid": "yes", "files": 3, "problems": ["x"]}) == ValidationReport(False)


def test_the_study_summary_reads_back_what_it_wrote_and_survives_a_doctored_file() -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from processor.tune.report import StudySummary, TrialBrief

    study = optuna.create_study(study_name="s", direction="maximize")
    dist = {"gamma": FloatDistribution(0.0, 3.0)}
    for value, gate_pass in ((0.7, True), (0.8, False), (0.75, True)):
        study.add_trial(create_trial(value=value, params={"gamma": value}, distributions=dist,
                                     user_attrs={"gate_pass": gate_pass, "mlflow_run_id": f"run{value}"}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"gamma": 1.0}, distributions=dist))
    summary = replace(StudySummary.of(study), mlflow_parent_run_id="parent")
    doc = json.loads(json.dumps(summary.to_dict()))
    assert list(doc) == ["study_name", "objective", "direction", "n_trials", "n_counted", "states", "best",
                         "gate_checked", "gate_passing", "best_passing", "mlflow_parent_run_id"]
    assert StudySummary.from_dict(doc) == summary and "mlflow_parent_run_id" not in StudySummary.of(study).to_dict()
    assert (summary.n_trials, summary.states, summary.gate_passing) == (4, {"COMPLETE": 3, "FAIL": 1}, (2, 0))
    assert summary.best.number == 1 and summary.best_passing.mlflow_run_id == "run0.75"
    for doctored in ("oops", None, [1], {}):
        assert StudySummary.from_dict(doctored) == StudySummary()
    broken = StudySummary.from_dict({"n_trials": "4", "states": {"COMPLETE": "3"}, "best": "trial 1",
                                     "gate_passing": "2,0", "best_passing": {"number": "2", "params": [1]}})
    assert broken.n_trials is None and broken.states == {} and broken.best is None and broken.gate_passing == ()
    assert broken.best_passing == TrialBrief()
