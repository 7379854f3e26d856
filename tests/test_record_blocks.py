"""metrics.json's nested blocks as typed records (processor.record): what training writes reads back the
same, a doctored block reads as None/empty instead of raising, and the recorder is the figures' writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processor.record import (BaselineScore, Bootstrap, ClassBalance, ClassScores, DataBlock, Interval, Metrics,
                              ValDrift, dumps)
from processor.recorder import NullRecorder, Recorder
from processor.scores import bootstrap_ci, bootstrap_intervals, compute_metrics

Y_TRUE = ["long", "short", "no_trade", "long", "no_trade", "short", "no_trade", "no_trade"]
Y_PRED = ["long", "no_trade", "no_trade", "long", "short", "short", "no_trade", "long"]

BLOCKS = [
    ClassScores(precision=0.5, recall=0.25, f1=1 / 3, support=4),
    Bootstrap(confidence=0.9, n_resamples=200, method="percentile", val_macro_f1=Interval(0.4, 0.7),
              f1={"long": Interval(0.1, 0.9), "short": Interval(None, 0.5)}),
    ClassBalance(applied=True, before={"long": 0.2, "short": 0.1, "no_trade": 0.7},
                 after={"long": 1 / 3, "short": 1 / 3, "no_trade": 1 / 3}),
    BaselineScore(val_accuracy=0.7, val_macro_f1=0.6, per_class_f1={"long": 0.5, "short": 0.6, "no_trade": 0.7},
                  extra={"cv_macro_f1": 0.61, "params": {"num_leaves": 15, "offsets": None}, "seconds": 1.5}),
    DataBlock(train_file="t.jsonl", val_file="v.jsonl", train_sha256="ab", val_sha256="cd", n_train=10,
              n_train_fit=12, n_val=4, train_counts={"long": 3, "short": 2, "no_trade": 5},
              val_counts={"long": 1, "short": 1, "no_trade": 2},
              time_range={"train": ["2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00"], "val": None},
              bayes_ceiling=0.9),
    ValDrift(val_psi={"atr": 0.01, "session": 0.2}, max_psi=0.2, note=None),
]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: type(b).__name__)
def test_a_block_reads_back_what_it_wrote(block) -> None:
    assert type(block).from_dict(json.loads(dumps(block.to_dict()))) == block


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: type(b).__name__)
@pytest.mark.parametrize("doctored", ["oops", None, 3, ["a"]])
def test_a_doctored_block_reads_as_empty(block, doctored) -> None:
    assert type(block).from_dict(doctored) == type(block)()


def test_metrics_keeps_blocks_as_their_json_and_reads_them_leniently() -> None:
    m = Metrics(bootstrap=BLOCKS[1], class_balance=BLOCKS[2], baselines={"tuned_gbdt": BLOCKS[3]},
                per_class={"long": BLOCKS[0]})
    again = Metrics.from_dict(json.loads(dumps(m.to_dict())))
    assert m.to_dict() == again.to_dict() and isinstance(m.bootstrap, dict)
    assert again.macro_f1_ci == Interval(0.4, 0.7) and again.class_f1_ci("short") == Interval(None, 0.5)
    assert again.class_f1_ci("no_trade") == Interval() and again.support("long") == 4
    assert again.oversampled is True and again.shares_after()["short"] == pytest.approx(1 / 3)
    assert again.baseline_f1("tuned_gbdt") == 0.6 and again.baseline("tuned_gbdt").extra["seconds"] == 1.5
    broken = Metrics.from_dict({"bootstrap": {"val_macro_f1": "high"}, "class_balance": [1], "baselines": 7,
                                "per_class": {"long": {"f1": "x", "support": 2.5}}})
    assert broken.macro_f1_ci == Interval() and broken.shares_after() is None and broken.oversampled is None
    assert broken.baseline_scores() == {} and broken.class_f1("long") is None and broken.support("long") is None


def test_the_typed_scores_are_the_dicts_runs_write() -> None:
    typed = bootstrap_intervals(Y_TRUE, Y_PRED, n_resamples=50, seed=3)
    assert bootstrap_ci(Y_TRUE, Y_PRED, n_resamples=50, seed=3) == typed.to_dict()
    assert list(typed.to_dict()) == ["confidence", "n_resamples", "method", "val_macro_f1", "f1"]
    per_class = compute_metrics(Y_TRUE, Y_PRED)["per_class"]
    assert {k: ClassScores.from_dict(v).to_dict() for k, v in per_class.items()} == per_class


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
