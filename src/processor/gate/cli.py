"""Shipping gate: check a training run from its own artifacts; register and alias it only if it passes.

    python gates/gate.py --run-id RUN_ID [--model-name train-loop-v3] [--alias champion] [--report FILE]
                         [--checks gates/ship_checks.yaml] [--strict] [--no-require-better] [--margin M]
                         [--bundle-base]
    python gates/gate.py --output-dir outputs/demo [--report FILE] [--strict]    # local check, no MLflow
    python -m processor.gate ...                                                 # the same
    mlflow run . -e gate -P run_id=RUN_ID

Always first for an MLflow run (no checks file can switch it off; --output-dir has no run status):
  run_status     the run is FINISHED: a FAILED, KILLED, still RUNNING or SCHEDULED run is refused, and
                 the report says which and why
Checks (every threshold comes from gates/ship_checks.yaml, never from the command line):
  class_balance  every class's share of the training data after oversampling within class_balance
                 min_share..max_share
  val_macro_f1   val macro-F1 >= val_macro_f1.min
  class_f1       F1 of each class listed under class_f1 >= its floor
  artifacts      metrics.json and model_final.zip present, the zip intact (manifest sha256s, no unsafe
                 paths), the run's metrics.json identical to the zip's own copy; with MLflow also the
                 run's pyfunc model, bundling that same zip
  schema         the run's feature schema is the contract's (fingerprint, feature keys, no extra keys)
Optional (off in gates/ship_checks.yaml, on in gates/ship_checks_strict.yaml):
  beats_baseline val macro-F1 >= the named baseline's - beats_baseline.margin
  time_leakage   metrics.json's leakage block says no val event is older than (or as old as) the train
                 events of its symbol; fails when it found an overlap and when it could not check
  min_support    every class's val F1 is measured on >= min_support.events val events (30): fewer,
                 and the report says how many more events the class would need
The scores and fingerprints the checks judge are read from the metrics.json inside the
verified zip (covered by its manifest), never from the separate metrics.json file alone.
--strict: val_macro_f1 and class_f1 use the lower bound of the bootstrap CI in metrics.json (both are
reported).

Only when every check passes is the run's pyfunc model registered (one version per run: gating a run
again re-uses its version) with the check results, git commit, schema fingerprint and run id as
version tags and its description (written in the same request), and the alias moved to it; the
version's tag gate.outcome, written last, marks the gate done. A rerun of a gate that stopped
between registering and moving the alias completes it and reports "repaired: ...". --require-better (default on): the alias moves only if the
run's val macro-F1 >= the current alias holder's + margin; otherwise the version gets the alias
"challenger" and the champion stays.
--bundle-base: for a run trained on a hub base, the pyfunc model is logged again (same run, same zip)
with the base checkpoint inside, for air-gapped serving hosts, and that model is registered. The base
must be resolvable where the gate runs and match the weights digest in the zip. The demo base is always
bundled already; a run that already has a version keeps it.

Exit codes: 0 passed (and registered/aliased unless --output-dir), 1 a check failed (nothing
registered, no alias moved), 2 usage or infrastructure error (unknown run, unreachable server, bad
checks file). The report (stdout table, --report JSON) is also logged to the run as gate_report.json
with tags gate.status and gate.<check>, and the verdict is appended to the run's description
(mlflow.note.content; what training wrote there is kept, an earlier verdict replaced).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processor import model_card
from processor.cli import first_line, parse_bool
from processor.cli import run as run_command
from processor.io import write_json_atomic

from processor.gate.checks import (CheckResult, GateOutcome, GateReport, format_table, gate_output_dir, gate_report,
                                   run_checks)
from processor.gate.describe import NOTE_TAG, gate_paragraph, run_note, version_description
from processor.gate.evidence import Evidence, evidence_from_run, serving_json
from processor.gate.bundle import already_bundled
from processor.gate.bundle import bundle_base as bundle_base_into_run
from processor.gate.registry import (GateInfraError, describe, is_not_found, mark_done, promote,
                                     register_once, set_run_tags, versions_of_run)
from processor.gate.thresholds import DEFAULT_CHECKS, GateUsageError, Thresholds, fraction, load_thresholds

DEFAULT_MODEL_NAME = "train-loop-v3"
DEFAULT_ALIAS = "champion"
REPORT_NAME = "gate_report.json"


def _version_tags(run_id: str, checks: Sequence[CheckResult], ev: Evidence, strict: bool) -> dict[str, str]:
    tags = {f"gate.{c.name}": "pass" if c.passed else "fail" for c in checks}
    tags.update({"gate.status": "passed", "gate.strict": str(strict).lower(), "run_id": run_id,
                 "git_commit": ev.run_tags.get("git_commit", "unknown"),
                 "schema_fingerprint": str(ev.record.schema_fingerprint or ""),
                 "val_macro_f1": repr(ev.record.macro_f1)})
    return tags


def _log_to_run(client: Any, run_id: str, report: GateReport, ev: Evidence, checks_file: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="gate-report-") as tmp:
        path = Path(tmp) / REPORT_NAME
        write_json_atomic(path, report.to_dict(), default=str, allow_nan=False)
        client.log_artifact(run_id, str(path))
        # The model card again, now with the verdict (the zip's copy predates the gate).
        card = Path(tmp) / model_card.RUN_ARTIFACT
        card.write_text(model_card.render(ev.record, serving_json(ev.zip_path)[0] or {}, gate=report.to_dict(),
                                             run_id=run_id),
                        encoding="utf-8")
        client.log_artifact(run_id, str(card))
    tags = {"gate.status": report.status, **{f"gate.{c.name}": "pass" if c.passed else "fail" for c in report.checks}}
    reg = report.registration or {}
    if reg.get("version"):
        tags["gate.model_version"] = f"{reg['model_name']}/{reg['version']}"
    # The run page's description: training's own paragraph kept, the verdict appended (or replaced).
    paragraph = gate_paragraph(report.checks, report.strict, checks_file, report.registration)
    tags[NOTE_TAG] = run_note(ev.run_tags.get(NOTE_TAG), ev, paragraph)
    set_run_tags(client, run_id, tags)


def gate_run(run_id: str, th: Thresholds, *, strict: bool, model_name: str, alias: str,
             require_better: bool, margin: float, checks_file: Path = DEFAULT_CHECKS,
             bundle_base: bool = False) -> GateOutcome:
    """Check an MLflow run; register + alias on pass. Raises GateInfraError for exit-2 situations."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if is_not_found(exc) or getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
            raise GateInfraError(f"run {run_id!r} not found on {mlflow.get_tracking_uri()}") from None
        raise
    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        ev = evidence_from_run(client, run, Path(tmp))
        checks = run_checks(ev, th, strict=strict)
        passed = all(c.passed for c in checks)
        tracking = {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run_id}
        if not passed:
            report = gate_report(ev, checks, th, strict, "failed", run={**tracking, "registration": None})
            _log_to_run(client, run_id, report, ev, checks_file)
            return GateOutcome(1, report)
        f1 = ev.record.macro_f1
        model_id, bundled = ev.pyfunc_model_id or "", already_bundled(ev)
        # A version from an earlier gate of this run (one stopped half-way is repaired below); not one a
        # racing gate is creating right now.
        earlier = bool(versions_of_run(client, model_name, run_id))
        if bundle_base and not bundled and not earlier:
            model_id, bundled = bundle_base_into_run(run_id, ev), True
        description = version_description(run_id, checks, ev, strict, checks_file,
                                          experiment_id=run.info.experiment_id)
        mv, created = register_once(client, model_name, run_id, model_id,
                                    _version_tags(run_id, checks, ev, strict), description)
        repairs = describe(client, model_name, mv, description, created=created, earlier=earlier)
        decision = promote(client, model_name, alias, mv, f1, require_better=require_better, margin=margin)
        mark_done(client, model_name, mv, decision)
        registration = {"model_name": model_name, "version": str(mv.version), "created": created,
                        "require_better": require_better, "margin": margin, "base_bundled": bundled,
                        **decision, "repairs": repairs,
                        "uri": f"models:/{model_name}@{decision['alias']}"}
        report = gate_report(ev, checks, th, strict, "passed", run={**tracking, "registration": registration})
        _log_to_run(client, run_id, report, ev, checks_file)
        return GateOutcome(0, report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python gates/gate.py", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="MLflow run to gate (tracking server from MLFLOW_TRACKING_URI)")
    src.add_argument("--output-dir", type=Path, help="local training output to check (no MLflow, no promotion)")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help=f"registered model (default {DEFAULT_MODEL_NAME})")
    p.add_argument("--alias", default=DEFAULT_ALIAS, help=f"alias to move on success (default {DEFAULT_ALIAS})")
    p.add_argument("--checks", type=Path, default=DEFAULT_CHECKS, help="thresholds file (default gates/ship_checks.yaml)")
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    p.add_argument("--strict", action="store_true", help="val_macro_f1 and class_f1 use the bootstrap CI lower bound")
    p.add_argument("--require-better", action=argparse.BooleanOptionalAction, default=True,
                   help="replace the alias holder only if val macro-F1 is not lower (default: on)")
    p.add_argument("--margin", type=float, default=None,
                   help="with --require-better: needed improvement over the holder (default: checks file)")
    p.add_argument("--bundle-base", nargs="?", const="true", default="false", type=parse_bool, metavar="BOOL",
                   help="register the model with its base checkpoint inside (air-gapped serving; see above)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    return p


def _print_summary(outcome: GateOutcome) -> None:
    r = outcome.report
    print(f"shipping gate: {r.source}  strict={'yes' if r.strict else 'no'}")
    checks = r.checks
    print(format_table(checks))
    if r.strict:
        print("  (* = the number compared with the threshold)")
    elif any(c.name in ("val_macro_f1", "class_f1") for c in checks):
        print("  (* = the number compared with the threshold; --strict compares the CI lower bound)")
    reg = r.registration
    status = r.status.upper()
    if reg:
        verb = {"challenger": f"registered as challenger (champion v{reg.get('holder_version')} scores higher)",
                "already_holds_alias": f"already {reg['alias']}"}.get(reg.get("outcome"), f"alias {reg['alias']} -> this version")
        print(f"status: {status}  {reg['model_name']} version {reg['version']} "
              f"({'new' if reg['created'] else 'existing'}), {verb}: {reg['uri']}")
        for repair in reg.get("repairs") or ():
            print(f"repaired: {repair}")
    elif r.status == "failed":
        print(f"status: {status}  nothing registered, no alias moved")
    else:
        print(f"status: {status}  (local check: nothing registered)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A bad checks file or argument, an unknown run: UserError. Server/registry/network failures:
    # exit 2 and one line too.
    return run_command(lambda: _gate(args), failure=_could_not_finish)


def _could_not_finish(exc: Exception) -> str:
    return (f"the gate could not finish ({type(exc).__name__}: {first_line(exc)}); "
            "see the run and registry state before retrying")


def _gate(args: argparse.Namespace) -> int:
    th = load_thresholds(args.checks)
    strict = args.strict or th.strict
    margin = th.margin if args.margin is None else fraction(args.margin, "--margin", lo=-1.0)
    if args.output_dir is not None:
        outcome = gate_output_dir(args.output_dir, th, strict=strict)
    else:
        import mlflow

        if args.tracking_uri:
            mlflow.set_tracking_uri(args.tracking_uri)
        outcome = gate_run(args.run_id, th, strict=strict, model_name=args.model_name, alias=args.alias,
                           require_better=args.require_better, margin=margin, checks_file=args.checks,
                           bundle_base=args.bundle_base)
    _print_summary(outcome)
    if args.report is not None:
        try:
            write_json_atomic(args.report, outcome.report.to_dict(), default=str, allow_nan=False)
        except OSError as exc:
            raise GateUsageError(f"cannot write --report {args.report}: {exc}") from None
    return outcome.exit_code


def run() -> int:
    """Entry point of ``python gates/gate.py`` and ``python -m processor.gate``."""
    # Fail fast in CI when the server is down, rather than MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    return main()
