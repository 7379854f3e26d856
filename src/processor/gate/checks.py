"""The shipping checks on the evidence (``CHECK_NAMES`` always, the optional ones when the checks file
switches them on), and the table that reports them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from processor.blocks import number
from processor.io import sha256_file
from processor.leakage import format_duration
from processor.cli import first_line
from processor.schema import (ALL_KEYS, FEATURES, LABELS, SCHEMA_FILE, fingerprint_of, schema_fingerprint,
                              signature_columns)

from processor.names import ZIP_NAME
from processor.gate.evidence import Evidence, describe_mismatch, evidence_from_dir, serving_json
from processor.gate.thresholds import DEFAULT_CHECKS, Thresholds

# The contract files the code is compared with: the copy the repository carries (exported from
# processor.schema, checked by a test) and, where the checkout has it beside it, the upstream one.
REPO_CONTRACT = DEFAULT_CHECKS.parents[1] / "contract" / SCHEMA_FILE
UPSTREAM_CONTRACT = DEFAULT_CHECKS.parents[2] / "shared" / "contract" / SCHEMA_FILE

CHECK_NAMES = ("class_balance", "val_macro_f1", "class_f1", "artifacts", "schema")
# Always checked first when the evidence is an MLflow run (a local --output-dir has no run status);
# not a key of the checks file: no file can switch it off.
RUN_STATUS = "run_status"
FINISHED = "FINISHED"
_NOT_FINISHED = {
    "RUNNING": "the run is still RUNNING: training has not ended, or its process was killed before it "
               "could end the run",
    "FAILED": "the run ended FAILED: training stopped on an error, its artifacts are not a finished run's",
    "KILLED": "the run was KILLED before it finished",
    "SCHEDULED": "the run is SCHEDULED: it has not started",
}


@dataclass
class CheckResult:
    name: str
    passed: bool
    value: str  # for the table
    threshold: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable numbers for the JSON report


def check_class_balance(ev: Evidence, th: Thresholds) -> CheckResult:
    threshold = f"{th.min_share:.0%}-{th.max_share:.0%} each"
    if ev.metrics is None:
        return CheckResult("class_balance", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    shares = ev.record.shares_after()
    if shares is None:
        return CheckResult("class_balance", False, "n/a", threshold, "metrics.json has no class_balance.after")
    bad = [n for n, s in shares.items() if s is None or not th.min_share <= s <= th.max_share]
    value = " ".join(f"{n} {s:.1%}" if s is not None else f"{n} n/a" for n, s in shares.items())
    detail = f"out of range: {', '.join(bad)}" if bad else ""
    return CheckResult("class_balance", not bad, value, threshold, detail,
                       {"after": shares, "applied": ev.record.oversampled})


def _score(point: Any, low: Any, strict: bool) -> tuple[float | None, float | None, float | None, str]:
    p, lo = number(point), number(low)
    used = lo if strict else p
    return p, lo, used, "ci_low" if strict else "point"


def _show(p: float | None, lo: float | None, used_kind: str, confidence: Any) -> str:
    conf = f"{float(confidence):.0%} " if number(confidence) is not None else ""
    ci = f"{conf}CI low {lo:.3f}" if lo is not None else "no CI"
    point = f"{p:.3f}" if p is not None else "n/a"
    mark = ("*" if used_kind == "point" else "", "*" if used_kind == "ci_low" else "")
    return f"{point}{mark[0]} ({ci}{mark[1]})"


def check_macro_f1(ev: Evidence, th: Thresholds, strict: bool) -> CheckResult:
    threshold = f">= {th.min_macro_f1:.3f}" + (" (CI low)" if strict else "")
    if ev.metrics is None:
        return CheckResult("val_macro_f1", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    p, lo, used, kind = _score(ev.record.macro_f1, ev.record.macro_f1_ci.low, strict)
    conf = ev.record.confidence
    data = {"point": p, "ci_low": lo, "used": kind, "confidence": number(conf)}
    if used is None:
        what = "bootstrap.val_macro_f1.low" if strict else "val_macro_f1"
        return CheckResult("val_macro_f1", False, _show(p, lo, kind, conf), threshold,
                           f"metrics.json has no finite {what}", data)
    return CheckResult("val_macro_f1", used >= th.min_macro_f1, _show(p, lo, kind, conf), threshold, "", data)


def check_class_f1(ev: Evidence, th: Thresholds, strict: bool) -> CheckResult:
    threshold = ", ".join(f"{n} >= {v:.3f}" for n, v in th.class_f1.items()) + (" (CI low)" if strict else "")
    if ev.metrics is None:
        return CheckResult("class_f1", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    conf = ev.record.confidence
    parts, data, bad = [], {}, []
    for name, floor in th.class_f1.items():
        p, lo, used, kind = _score(ev.record.class_f1(name), ev.record.class_f1_ci(name).low, strict)
        data[name] = {"point": p, "ci_low": lo, "used": kind}
        parts.append(f"{name} {_show(p, lo, kind, conf)}")
        if used is None:
            bad.append(f"{name}: no finite {'CI low' if strict else 'F1'} in metrics.json")
        elif used < floor:
            bad.append(f"{name} {used:.3f} < {floor:.3f}")
    return CheckResult("class_f1", not bad, "; ".join(parts), threshold, "; ".join(bad), data)


def check_artifacts(ev: Evidence) -> CheckResult:
    problems = [p for p in (ev.artifact_metrics_problem, ev.zip_problem, ev.zip_verify_problem,
                            ev.zip_metrics_problem) if p]
    data: dict[str, Any] = {"metrics_json": ev.artifact_metrics is not None, "zip": ev.zip_path is not None,
                            "metrics_source": ev.metrics_source}
    zip_sha = None
    if ev.zip_path is not None:
        data["zip_intact"] = ev.zip_verify_problem is None
        if ev.artifact_metrics is not None and ev.zip_metrics is not None:
            diff = describe_mismatch(ev.artifact_metrics, ev.zip_metrics)
            data["metrics_match"] = not diff
            if diff:
                # The scores judged are the zip's; a different separate file means one of them was edited.
                problems.append(f"the run's metrics.json differs from the one inside {ev.zip_path.name} "
                                f"(metrics.json vs zip: {diff})")
        zip_sha = sha256_file(ev.zip_path)
        data["zip_sha256"] = zip_sha
    if ev.pyfunc_checked:
        data["pyfunc_model_id"] = ev.pyfunc_model_id
        if ev.pyfunc_problem:
            problems.append(ev.pyfunc_problem)
        elif zip_sha is not None and ev.pyfunc_zip_sha256 != zip_sha:
            # The registered model serves its own copy of the zip: it must be the one checked here.
            problems.append("the pyfunc model bundles a different model_final.zip than the run's artifact")
    parts = ["metrics.json" if ev.artifact_metrics is not None else "no metrics.json",
             (ZIP_NAME if data.get("zip_intact") else f"{ZIP_NAME} BAD") if ev.zip_path else f"no {ZIP_NAME}"]
    if ev.pyfunc_checked:
        parts.append("pyfunc model" if ev.pyfunc_model_id and not ev.pyfunc_problem else "no usable pyfunc model")
    threshold = "present, zip intact, same metrics" + (", pyfunc bundles it" if ev.pyfunc_checked else "")
    return CheckResult("artifacts", not problems, ", ".join(parts), threshold, "; ".join(problems), data)


def check_schema(ev: Evidence) -> CheckResult:
    """The run's feature schema = the contract: every fingerprint the run recorded equals the contract's,
    the package's feature list is the 13 features, and the pyfunc's input signature is the contract's."""
    expected = schema_fingerprint()
    problems: list[str] = []
    seen: dict[str, Any] = {}
    fp = ev.record.schema_fingerprint if ev.metrics else None
    seen["metrics.json"] = fp
    if fp is None:
        problems.append("metrics.json records no schema_fingerprint")
    elif fp != expected:
        problems.append(f"metrics.json schema_fingerprint {str(fp)[:12]}... != contract {expected[:12]}...")
    if "schema_fingerprint" in ev.run_tags and ev.run_tags["schema_fingerprint"] != expected:
        problems.append(f"run tag schema_fingerprint {ev.run_tags['schema_fingerprint'][:12]}... != contract")
    serving, serving_problem = serving_json(ev.zip_path)
    key_sets = 0
    if serving is not None:
        key_sets += 1
        seen["serving.json"] = serving.schema_fingerprint
        if serving.schema_fingerprint != expected:
            problems.append("the package's serving.json schema_fingerprint differs from the contract")
        feats = serving.features
        if feats != tuple(FEATURES):
            extra = sorted(set(feats or []) - set(FEATURES))
            missing = [f for f in FEATURES if f not in (feats or [])]
            problems.append("the package's features differ from the contract"
                            + (f" (extra: {extra})" if extra else "") + (f" (missing: {missing})" if missing else "")
                            + ("" if extra or missing else " (order)"))
    elif serving_problem:
        problems.append(serving_problem)
    if ev.pyfunc_checked and ev.pyfunc_model_id:
        key_sets += 1
        problems += _signature_problems(ev, expected, seen)
    if key_sets == 0 and not problems:
        problems.append("no record of the run's feature keys (no readable package, no pyfunc signature)")
    problems += _contract_file_problems(expected, seen)
    value = f"fingerprint {str(fp)[:12]}" if fp else "no fingerprint"
    return CheckResult("schema", not problems, value, f"contract {expected[:12]}, {len(FEATURES)} features",
                       "; ".join(problems), {"expected": expected, "seen": seen})


def _signature_problems(ev: Evidence, expected: str, seen: dict[str, Any]) -> list[str]:
    """The pyfunc's input signature is the contract's (processor.schema.signature_columns) and MLflow
    hands requests to the model as sent; a model logged before signatures were declared (no input
    schema) passes when its metadata names the contract it checks requests against."""
    inputs = ev.signature_inputs
    if inputs is None:
        seen["pyfunc metadata"] = ev.model_metadata.get("schema_fingerprint")
        if seen["pyfunc metadata"] != expected:
            return ["the pyfunc model has no input signature and its metadata schema_fingerprint "
                    f"{str(seen['pyfunc metadata'])[:12]}... is not the contract's"]
        return []
    problems = []
    want = {c["name"]: c for c in signature_columns()}
    got = {c.get("name"): c for c in inputs}
    extra, missing = sorted(map(str, set(got) - set(want))), [k for k in want if k not in got]
    if extra:
        problems.append(f"the pyfunc signature has keys outside the contract: {extra}")
    if missing:
        problems.append(f"the pyfunc signature lacks contract keys: {missing}")
    differ = [f"{k} ({got[k].get('type')}, required={got[k].get('required')})" for k in want
              if k in got and got[k] != want[k]]
    if differ:
        problems.append(f"the pyfunc signature types keys unlike the contract: {differ}")
    if not ev.signature_checked_by_model:
        # MLflow would then cast each request to these types and drop unknown keys before the
        # contract check sees them (processor.serving).
        problems.append("the pyfunc signature is enforced by MLflow, not by the model's contract check")
    return problems


def _contract_file_problems(expected: str, seen: dict[str, Any]) -> list[str]:
    """The contract files agree with the code's contract: the repo's copy (required) has the same keys
    and fingerprint, the upstream copy (when present) the same keys -- no extra, none missing."""
    problems = []
    for name, path, required in (("repo contract", REPO_CONTRACT, True), ("upstream contract", UPSTREAM_CONTRACT, False)):
        if not path.is_file():
            if required:
                problems.append(f"{name} {path} is missing")
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            keys = set(doc["properties"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{name} {path} is not a readable JSON Schema ({first_line(exc)})")
            continue
        if keys != set(ALL_KEYS):
            problems.append(f"{name} {path} keys differ from the contract: extra {sorted(keys - set(ALL_KEYS))}, "
                            f"missing {sorted(set(ALL_KEYS) - keys)}")
        if "x-canonical-spec" in doc:  # the repo's export: its spec must hash to the code's fingerprint
            seen[name] = fingerprint_of(doc["x-canonical-spec"])
            if seen[name] != expected or doc.get("x-schema-fingerprint") != expected:
                problems.append(f"{name} {path} fingerprint {seen[name][:12]}... != contract {expected[:12]}... "
                                "(re-export it: python -m processor.schema --export contract)")
    return problems


def check_beats_baseline(ev: Evidence, th: Thresholds) -> CheckResult:
    """Optional: the model's val macro-F1 >= the classic baseline's on the same split - margin (both from
    the verified metrics.json), so that an LLM which a gradient-boosted tree beats does not ship."""
    threshold = f">= {th.baseline} - {th.baseline_margin:.3f}"
    if ev.metrics is None:
        return CheckResult("beats_baseline", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    model, base = ev.record.macro_f1, ev.record.baseline_f1(th.baseline)
    data = {"val_macro_f1": model, "baseline": th.baseline, "baseline_val_macro_f1": base,
            "margin": th.baseline_margin}
    value = f"{model:.3f} vs {th.baseline} {base:.3f}" if model is not None and base is not None else "n/a"
    if model is None or base is None:
        what = "val_macro_f1" if model is None else f"baselines.{th.baseline}.val_macro_f1"
        return CheckResult("beats_baseline", False, value, threshold, f"metrics.json has no finite {what}", data)
    # A tolerance far below any score resolution: 0.70 vs 0.80 - 0.10 must pass (0.8 - 0.1 > 0.7 in floats).
    passed = model >= base - th.baseline_margin - 1e-9
    detail = "" if passed else f"{model:.3f} < {base:.3f} - {th.baseline_margin:.3f}"
    return CheckResult("beats_baseline", passed, value, threshold, detail, data)


def check_time_leakage(ev: Evidence) -> CheckResult:
    """Optional: the run's split is known not to overlap in time (metrics.json ``leakage``, written by
    training from processor.leakage). Unknown is not good enough: a run whose events carry no
    timestamps, or trained with trust.check_time_leakage off, fails as "not checked"."""
    threshold = "val later than train per symbol"
    if ev.metrics is None:
        return CheckResult("time_leakage", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    leak = ev.record.leakage
    if leak is None:
        return CheckResult("time_leakage", False, "not checked", threshold,
                           "metrics.json has no leakage block (trained with trust.check_time_leakage=false, "
                           "or before the check existed)")
    risk = leak.leakage_risk
    data = {"checked": leak.checked, "leakage_risk": risk, "val_overlapping": leak.val_overlapping,
            "min_gap_seconds": leak.min_gap_seconds}
    if risk is True:
        overlapping = [str(s.symbol) for s in leak.symbols if s.overlaps]
        return CheckResult("time_leakage", False, f"overlap: {leak.val_overlapping} val events",
                           threshold, f"{leak.val_overlapping} of {leak.n_val} val events are not "
                           f"later than the latest train event of their symbol ({', '.join(overlapping)})", data)
    if risk is not False:
        return CheckResult("time_leakage", False, "not checked", threshold,
                           f"not checked: {leak.reason or 'leakage_risk is unknown'}", data)
    gap = leak.min_gap_seconds
    value = "no overlap" + (f" (min gap {format_duration(gap)})" if gap is not None else "")
    return CheckResult("time_leakage", True, value, threshold, "", data)


def check_run_status(ev: Evidence) -> CheckResult:
    """Always on for an MLflow run: only a FINISHED run is judged fit to ship. A FAILED, KILLED or
    still RUNNING run may have left complete-looking artifacts (a crash after packaging, a gate started
    while training is still logging); they are not the outcome of a finished training."""
    status = ev.run_status or "unknown"
    if status == FINISHED:
        return CheckResult(RUN_STATUS, True, status, FINISHED)
    reason = _NOT_FINISHED.get(status, f"the run's status is {status}, not {FINISHED}")
    return CheckResult(RUN_STATUS, False, status, FINISHED, reason, {"status": status})


def check_min_support(ev: Evidence, th: Thresholds) -> CheckResult:
    """Optional: every class's val F1 (macro-F1 averages all three) is measured on >= N val events
    (metrics.json per_class.<label>.support); below that, one event moves it by several points."""
    n = th.min_support_events
    threshold = f">= {n} val events per class"
    if ev.metrics is None:
        return CheckResult("min_support", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    support = {name: ev.record.support(name) for name in LABELS}
    bad = []
    for name, count in support.items():
        if count is None:
            bad.append(f"metrics.json has no per_class.{name}.support")
        elif count < n:
            more = n - int(count)
            bad.append(f"{name} F1 is measured on {int(count)} val events, fewer than {n}: too few to certify "
                       f"it ({more} more {name} val event{'s' if more != 1 else ''} needed)")
    value = " ".join(f"{name} {int(c)}" if c is not None else f"{name} n/a" for name, c in support.items())
    return CheckResult("min_support", not bad, value, threshold, "; ".join(bad),
                       {"support": support, "min_events": n})


def run_checks(ev: Evidence, th: Thresholds, *, strict: bool) -> list[CheckResult]:
    checks = [check_class_balance(ev, th), check_macro_f1(ev, th, strict), check_class_f1(ev, th, strict),
              check_artifacts(ev), check_schema(ev)]
    if ev.mlflow_run_id is not None:
        checks.insert(0, check_run_status(ev))
    if th.beats_baseline:
        checks.append(check_beats_baseline(ev, th))
    if th.time_leakage:
        checks.append(check_time_leakage(ev))
    if th.min_support:
        checks.append(check_min_support(ev, th))
    return checks


def format_table(checks: Sequence[CheckResult]) -> str:
    rows = [("check", "value", "threshold", "result")]
    rows += [(c.name, c.value, c.threshold, "PASS" if c.passed else "FAIL") for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for c in checks:
        if c.detail:
            lines.append(f"  {c.name}: {c.detail}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the verdict
_RUN_KEYS = ("tracking_uri", "run_id", "registration")


@dataclass
class GateReport:
    """``gate_report.json`` (and the ``--report`` file): the verdict, where the evidence came from, the
    thresholds and every check; a gated MLflow run adds its tracking URI, its id and what was registered
    (``registration``, None when the run failed). Written by :meth:`to_dict`, read leniently by
    :meth:`from_dict` (a doctored report reads as failed checks and empty fields, never a KeyError)."""

    status: str
    source: str
    metrics_source: str | None
    strict: bool
    thresholds: dict[str, Any]
    checks: list[CheckResult]
    run: dict[str, Any] | None = None  # {tracking_uri, run_id, registration}: gated from an MLflow run

    @property
    def registration(self) -> dict[str, Any] | None:
        return (self.run or {}).get("registration")

    def failures(self) -> list[str]:
        """The failed checks as ``name: detail`` (the value when there is no detail)."""
        return [f"{c.name}: {c.detail or c.value}" for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "source": self.source, "metrics_source": self.metrics_source,
                "strict": self.strict, "thresholds": self.thresholds, "checks": [asdict(c) for c in self.checks],
                **(self.run or {})}

    @classmethod
    def from_dict(cls, d: Any) -> GateReport:
        d = d if isinstance(d, dict) else {}
        checks = [CheckResult(name=str(c.get("name", "")), passed=c.get("passed") is True,
                              value=str(c.get("value", "")), threshold=str(c.get("threshold", "")),
                              detail=str(c.get("detail") or ""),
                              data=c.get("data") if isinstance(c.get("data"), dict) else {})
                  for c in d.get("checks") or [] if isinstance(c, dict)]
        run = {k: d.get(k) for k in _RUN_KEYS} if any(k in d for k in _RUN_KEYS) else None
        metrics_source = d.get("metrics_source")
        return cls(status=str(d.get("status", "unknown")), source=str(d.get("source", "")),
                   metrics_source=metrics_source if isinstance(metrics_source, str) else None,
                   strict=d.get("strict") is True,
                   thresholds=d.get("thresholds") if isinstance(d.get("thresholds"), dict) else {},
                   checks=checks, run=run)


@dataclass
class GateOutcome:
    """The exit code (0 passed, 1 failed) and the report."""

    exit_code: int
    report: GateReport


def gate_output_dir(out: Path, th: Thresholds, *, strict: bool) -> GateOutcome:
    """The verdict on a local output directory (``--output-dir``; each trial of a sweep): checks only, no registry."""
    ev = evidence_from_dir(out)
    checks = run_checks(ev, th, strict=strict)
    passed = all(c.passed for c in checks)
    return GateOutcome(0 if passed else 1, gate_report(ev, checks, th, strict, "passed" if passed else "failed"))


def gate_report(ev: Evidence, checks: Sequence[CheckResult], th: Thresholds, strict: bool, status: str,
                run: dict[str, Any] | None = None) -> GateReport:
    return GateReport(status=status, source=ev.source, metrics_source=ev.metrics_source, strict=strict,
                      thresholds=asdict(th), checks=list(checks), run=run)
