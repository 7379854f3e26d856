"""The gate against runs edited through the MLflow client: a run that did not finish (run_status), a
class F1 resting on too few events (min_support), a version left half-done by a killed gate (repair),
and the verdict on the run's own description. Real tracking server, doctored copies of the trained
run (see test_gate.py)."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from processor import gate
from processor.gate.describe import NOTE_TAG

from test_gate import (STRICT_CHECKS, failed_checks, genuine, make_run, registered_versions,  # noqa: F401
                       report_of, run_gate, unique_name)

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------- run_status
@pytest.mark.parametrize("status, reason", [
    ("FAILED", "the run ended FAILED"),
    ("KILLED", "the run was KILLED"),
    ("RUNNING", "the run is still RUNNING"),
    ("SCHEDULED", "the run is SCHEDULED"),
])
def test_a_run_that_did_not_finish_is_refused(tracking, genuine, tmp_path, capsys, status, reason):
    """Complete, passing artifacts; only the run's status is wrong: exit 1, the reason in the report,
    nothing registered. FAILED/KILLED are set with set_terminated, RUNNING is a run left open, as a
    training still logging (or killed with -9) leaves it."""
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine, finish=status != "RUNNING")
    try:
        if status in ("FAILED", "KILLED"):
            client.set_terminated(run_id, status=status)
        elif status == "SCHEDULED":
            client.update_run(run_id, status=status)
        assert client.get_run(run_id).info.status == status
        name = unique_name()
        report = tmp_path / "report.json"
        capsys.readouterr()
        assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(report)) == 1
        data = report_of(report)
        assert data["checks"][0]["name"] == "run_status"  # judged first, always
        assert failed_checks(data) == {"run_status"}
        check = data["checks"][0]
        assert check["value"] == status and reason in check["detail"]
        assert f"run_status: {reason}" in capsys.readouterr().out
        assert data["registration"] is None
        assert client.search_registered_models(f"name = '{name}'") == []
        assert client.search_model_versions(f"run_id = '{run_id}'") == []
        assert client.get_run(run_id).data.tags["gate.run_status"] == "fail"
    finally:
        while mlflow.active_run():
            mlflow.end_run()


def test_a_finished_run_passes_run_status(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
    report = tmp_path / "report.json"
    assert run_gate("--run-id", run_id, "--model-name", unique_name(), "--report", str(report)) == 0
    checks = report_of(report)["checks"]
    assert [c["name"] for c in checks] == ["run_status", *gate.CHECK_NAMES]
    assert checks[0]["passed"] and checks[0]["value"] == "FINISHED"


# ------------------------------------------------------------------------------------ min_support
def _support(label: str, n: int):
    def change(m: dict) -> None:
        m["per_class"][label]["support"] = n
    return change


def test_min_support_is_off_by_default_and_on_in_the_strict_file():
    assert gate.load_thresholds().min_support is False
    strict = gate.load_thresholds(STRICT_CHECKS)
    assert strict.min_support is True and strict.min_support_events == 30
    # The strict gate's rival is the tuned tree every run fits, not sklearn's default one.
    assert (strict.beats_baseline, strict.baseline) == (True, "tuned_gbdt")
    assert gate.load_thresholds().beats_baseline is False


@pytest.mark.parametrize("events, passes", [(30, True), (29, False)])
def test_min_support_at_and_below_the_floor(genuine, tmp_path, events, passes):
    """A class F1 measured on exactly N val events is certified; on N-1 it is refused, saying how many
    more events it needs. Only min_support is added to the shipped checks here."""
    assert min(genuine.metrics["per_class"][n]["support"] for n in ("long", "short", "no_trade")) >= 30
    out = genuine.copy_to(tmp_path / "out", _support("short", events))
    checks = tmp_path / "checks.yaml"
    checks.write_text(yaml.safe_dump({"min_support": {"enabled": True}}), encoding="utf-8")
    default, report = tmp_path / "default.json", tmp_path / "report.json"
    assert run_gate("--output-dir", str(out), "--report", str(default)) == 0  # off in ship_checks.yaml
    assert "min_support" not in [c["name"] for c in report_of(default)["checks"]]
    code = run_gate("--output-dir", str(out), "--checks", str(checks), "--report", str(report))
    check = {c["name"]: c for c in report_of(report)["checks"]}["min_support"]
    assert check["data"]["support"]["short"] == events
    if passes:
        assert (code, failed_checks(report_of(report))) == (0, set())
    else:
        assert (code, failed_checks(report_of(report))) == (1, {"min_support"})
        assert ("short F1 is measured on 29 val events, fewer than 30: too few to certify it "
                "(1 more short val event needed)") in check["detail"]


def test_a_run_with_too_little_evidence_is_not_registered(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files", _support("long", 12)), genuine)
    checks = tmp_path / "checks.yaml"
    checks.write_text(yaml.safe_dump({"min_support": {"enabled": True, "events": 40}}), encoding="utf-8")
    name, report = unique_name(), tmp_path / "report.json"
    assert run_gate("--run-id", run_id, "--model-name", name, "--checks", str(checks), "--report", str(report)) == 1
    detail = {c["name"]: c for c in report_of(report)["checks"]}["min_support"]["detail"]
    assert "long F1 is measured on 12 val events, fewer than 40" in detail and "28 more long val events" in detail
    assert client.search_registered_models(f"name = '{name}'") == []


# ----------------------------------------------------------------- a gate killed after registering
def test_a_rerun_repairs_a_version_left_without_alias_and_description(tracking, genuine, tmp_path, capsys):
    """The state a gate killed right after registration left (before this fix, the version was created
    by one request and described by the next): a version with its gate tags, no description, no alias.
    Made here through the client; the rerun completes it, in place, and says so."""
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
    name = unique_name()
    logged = gate.find_logged_model(client, client.get_run(run_id))
    client.create_registered_model(name)
    half = client.create_model_version(name, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id,
                                       tags={"gate.status": "passed", "run_id": run_id, "val_macro_f1": "0.7"})
    assert not client.get_model_version(name, half.version).description
    report = tmp_path / "report.json"
    capsys.readouterr()
    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(report)) == 0
    shown = capsys.readouterr().out
    reg = report_of(report)["registration"]
    assert reg["created"] is False and reg["version"] == half.version
    assert reg["repairs"] and f"version {half.version} had no alias and no description" in reg["repairs"][0]
    assert f"repaired: version {half.version} had no alias and no description" in shown
    assert [v.version for v in registered_versions(client, name)] == [half.version]
    assert client.get_model_version_by_alias(name, "champion").version == half.version
    version = client.get_model_version(name, half.version)
    assert run_id in version.description and "passed all" in version.description
    assert version.tags["gate.outcome"].endswith(":champion")
    # Done now: a third gate has nothing to repair.
    again = tmp_path / "again.json"
    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(again)) == 0
    assert report_of(again)["registration"]["repairs"] == []


def test_a_new_version_is_created_with_its_description(tracking, genuine, tmp_path):
    """Tags and description are written in the one request that creates the version (before the alias
    moves), and the version is marked done last."""
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
    name = unique_name()
    assert run_gate("--run-id", run_id, "--model-name", name) == 0
    (version,) = registered_versions(client, name)
    assert version.description and run_id in version.description
    assert version.tags["gate.outcome"].endswith(":champion")
    # The logged model still lists its registered version (as mlflow.register_model would).
    logged = gate.find_logged_model(client, client.get_run(run_id))
    assert f'"version": "{version.version}"' in client.get_logged_model(logged.model_id).tags["mlflow.modelVersions"]


# ----------------------------------------------------------------------- the run's own description
def test_the_verdict_is_appended_to_the_run_description(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
    training = "Training summary paragraph, as the train loop writes it."
    client.set_tag(run_id, NOTE_TAG, training)
    name = unique_name()
    assert run_gate("--run-id", run_id, "--model-name", name) == 0
    note = client.get_run(run_id).data.tags[NOTE_TAG]
    first, verdict = note.split("\n\n")
    assert first == training
    assert verdict.startswith("Shipping gate: passed all 6 shipping checks (run_status, ") and "ship_checks.yaml" in verdict
    assert f"Registered as {name} version 1, alias champion" in verdict
    # Gated again: the verdict is replaced, not repeated; the training paragraph stays.
    assert run_gate("--run-id", run_id, "--model-name", name, "--no-require-better") == 0
    note = client.get_run(run_id).data.tags[NOTE_TAG]
    assert note.count("Shipping gate") == 1 and note.startswith(training)


def test_a_refused_run_without_description_gets_summary_and_verdict(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)

    def low(m: dict) -> None:
        m["val_macro_f1"] = 0.55

    run_id = make_run(client, genuine.copy_to(tmp_path / "files", low), genuine)
    assert run_gate("--run-id", run_id, "--model-name", unique_name()) == 1
    summary, verdict = client.get_run(run_id).data.tags[NOTE_TAG].split("\n\n")
    metrics = genuine.metrics
    assert metrics["model"]["base_id"] in summary and "val macro-F1 0.550" in summary
    assert verdict.startswith("Shipping gate: failed 1 of 6 shipping checks with ship_checks.yaml: val_macro_f1")
    assert verdict.endswith("Not registered.")
