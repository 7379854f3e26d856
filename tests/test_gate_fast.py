"""The gate's own decisions on made-up evidence, in the fast tier (no training, no server): the run
status it accepts, min_support at and around its floor, a --checks file's values over the shipped
ones, and ``strict`` from the file reaching the checks through the CLI. test_gate.py and
test_gate_status.py run the same rules end to end on a trained run (slow tier)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from processor import gate
from processor.gate.checks import check_min_support, check_run_status, run_checks
from processor.gate.evidence import Evidence
from processor.gate.thresholds import load_thresholds
from processor.schema import LABELS, schema_fingerprint

STRICT_CHECKS = REPO / "gates" / "ship_checks_strict.yaml"


def _metrics(*, f1: float = 0.70, low: float = 0.50, support: int = 50) -> dict[str, Any]:
    """A metrics.json that passes every shipped check on its point scores; its CI lower bounds are
    ``low``, under the shipped floors (0.60 macro, 0.55 per class), so judging them (strict) fails."""
    return {
        "val_macro_f1": f1,
        "per_class": {name: {"f1": f1, "support": support} for name in LABELS},
        "bootstrap": {"confidence": 0.95, "val_macro_f1": {"low": low, "high": 0.8},
                      "f1": {name: {"low": low, "high": 0.8} for name in LABELS}},
        "class_balance": {"applied": True, "after": {"long": 0.33, "short": 0.33, "no_trade": 0.34}},
        "schema_fingerprint": schema_fingerprint(),
    }


def _evidence(**kwargs: Any) -> Evidence:
    return Evidence(source="made up", metrics=_metrics(**kwargs), metrics_source="made up")


def _checks_file(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "checks.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ run status
@pytest.mark.parametrize("status, reason", [
    ("RUNNING", "still RUNNING"), ("SCHEDULED", "SCHEDULED: it has not started"),
    ("FAILED", "ended FAILED"), ("KILLED", "KILLED before it finished"), (None, "status is unknown"),
])
def test_only_a_finished_run_is_judged_fit_to_ship(status, reason):
    ev = _evidence()
    ev.mlflow_run_id, ev.run_status = "made-up-run", status
    result = check_run_status(ev)
    assert not result.passed and reason in result.detail
    checks = run_checks(ev, load_thresholds(), strict=False)
    assert checks[0].name == "run_status" and not checks[0].passed
    ev.run_status = "FINISHED"
    checks = run_checks(ev, load_thresholds(), strict=False)
    assert checks[0].name == "run_status" and checks[0].passed


# ----------------------------------------------------------------------------------- min_support
def test_min_support_is_off_by_default_and_on_in_the_strict_file():
    assert load_thresholds().min_support is False
    strict = load_thresholds(STRICT_CHECKS)
    assert strict.min_support is True and strict.min_support_events == 30
    # The strict gate's rival is the tuned tree every run fits, not sklearn's default one.
    assert (strict.beats_baseline, strict.baseline) == (True, "tuned_gbdt")
    assert load_thresholds().beats_baseline is False


@pytest.mark.parametrize("events, passes", [(29, False), (30, True), (31, True)])
def test_min_support_certifies_exactly_its_floor(events, passes):
    th = load_thresholds(STRICT_CHECKS)
    ev = _evidence(support=200)
    ev.metrics["per_class"]["short"]["support"] = events
    result = check_min_support(ev, th)
    assert result.passed is passes and result.data["support"]["short"] == events
    if not passes:
        assert result.detail == ("short F1 is measured on 29 val events, fewer than 30: too few to certify it "
                                 "(1 more short val event needed)")
    assert ("min_support" in [c.name for c in run_checks(ev, th, strict=False)])


# ---------------------------------------------------------------------------- the --checks file
def test_a_checks_file_s_values_win_over_the_shipped_ones(tmp_path):
    shipped = load_thresholds()
    th = load_thresholds(_checks_file(tmp_path, {
        "val_macro_f1": {"min": 0.75}, "class_balance": {"max_share": 0.45}, "class_f1": {"short": 0.65},
        "min_support": {"enabled": True, "events": 40}, "champion": {"margin": 0.02}}))
    assert (th.min_macro_f1, th.max_share, th.margin) == (0.75, 0.45, 0.02)
    assert th.class_f1 == {"short": 0.65}  # replaced whole: long is not checked by this file
    assert (th.min_support, th.min_support_events) == (True, 40)
    # What the file leaves out keeps the shipped value.
    assert (th.min_share, th.strict, th.beats_baseline) == (shipped.min_share, shipped.strict, shipped.beats_baseline)
    # And the checks judge by the file's values.
    assert not run_checks(_evidence(f1=0.72), th, strict=False)[1].passed
    assert run_checks(_evidence(f1=0.72), shipped, strict=False)[1].passed


def _gate_dir(tmp_path: Path, checks: Path | None, *extra: str) -> tuple[int, dict[str, Any]]:
    """gate.main on a local output directory holding only a metrics.json (no zip: artifacts fails,
    the scores are still judged, marked unverified)."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_metrics()), encoding="utf-8")
    report = tmp_path / "report.json"
    argv = ["--output-dir", str(out), "--report", str(report), *extra]
    code = gate.main(argv + (["--checks", str(checks)] if checks else []))
    return code, json.loads(report.read_text(encoding="utf-8"))


def test_strict_true_in_the_checks_file_judges_the_ci_lower_bound(tmp_path, capsys):
    _, lenient = _gate_dir(tmp_path, None)
    by_name = {c["name"]: c for c in lenient["checks"]}
    assert lenient["strict"] is False and by_name["val_macro_f1"]["passed"]
    assert by_name["val_macro_f1"]["data"]["used"] == "point"

    _, strict = _gate_dir(tmp_path, _checks_file(tmp_path, {"strict": True}))
    by_name = {c["name"]: c for c in strict["checks"]}
    assert strict["strict"] is True and strict["thresholds"]["strict"] is True
    assert by_name["val_macro_f1"]["data"]["used"] == "ci_low" and not by_name["val_macro_f1"]["passed"]
    assert not by_name["class_f1"]["passed"]
    # --strict on the command line does the same with the shipped file.
    _, flag = _gate_dir(tmp_path, None, "--strict")
    assert flag["strict"] is True and {c["name"]: c for c in flag["checks"]}["val_macro_f1"]["data"]["used"] == "ci_low"
    assert "strict=yes" in capsys.readouterr().out


class _RacedClient:
    """A registry client whose first version-tag write collides with a racing gate's, as MLflow's SQL
    stores answer two simultaneous first writes of one key."""

    def __init__(self, error: str) -> None:
        self.error, self.writes = error, []

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        from mlflow.exceptions import MlflowException

        self.writes.append((name, version, key, value))
        if len(self.writes) == 1:
            raise MlflowException(self.error)


def test_mark_done_writes_again_when_a_racing_gate_wrote_the_tag_first():
    from types import SimpleNamespace

    from processor.gate.registry import OUTCOME_TAG, mark_done

    client = _RacedClient("(sqlite3.IntegrityError) UNIQUE constraint failed: model_version_tags.key")
    mark_done(client, "m", SimpleNamespace(version="3"), {"outcome": "promoted", "alias": "champion"})
    assert client.writes == [("m", "3", OUTCOME_TAG, "promoted:champion")] * 2

    other = _RacedClient("permission denied")  # any other error is the gate's to report, not to retry
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="permission denied"):
        mark_done(other, "m", SimpleNamespace(version="3"), {"outcome": "promoted", "alias": "champion"})
    assert len(other.writes) == 1
