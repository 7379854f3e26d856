"""The shipping gate against a real MLflow tracking server (sqlite, and once PostgreSQL).

No model is trained here beyond the session's ``trained_run``. The gate's mechanics are tested on new
runs whose artifacts are copies of the trained run's (real zip, real metrics.json, a logged pyfunc
model, so registration would be possible if the gate let a bad run through). The copies start from a
*passing* baseline: a score under a threshold is raised to a passing value, so each doctored copy fails
exactly the one check it was doctored for, whatever the quality of the tiny model. Whether the real
trained run passes is its own test (``test_the_trained_demo_run_passes_the_gate``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema

from conftest import REPO, tracking_at
from processor.io import sha256_bytes
from processor.package import MANIFEST, verify_package
from processor.schema import FEATURES, schema_fingerprint

from processor import gate

GATE_PY = REPO / "gates" / "gate.py"  # the entry point CI and MLproject call

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------ helpers


def unique_name(prefix: str = "gate") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Genuine:
    """The trained run's artifacts as logged, and its pyfunc model's signature."""

    def __init__(self, run_id: str, directory: Path, signature: ModelSignature, tags: dict[str, str],
                 metadata: dict[str, Any]):
        self.run_id, self.dir, self.signature, self.tags = run_id, directory, signature, tags
        self.metadata = metadata  # the pyfunc model's (schema fingerprint, base model)

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.dir / "metrics.json").read_text(encoding="utf-8"))

    def copy_to(self, dst: Path, change_metrics: Callable[[dict], None] | None = None, *,
                edit_file_only: Callable[[dict], None] | None = None) -> Path:
        """metrics.json (made to pass, then ``change_metrics``) and the genuine zip re-packed with that
        same metrics.json (manifest updated, so it verifies), in ``dst``. ``edit_file_only`` then edits
        the separate metrics.json alone, as someone tampering with the run's artifact would."""
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.dir / "model_final.zip", dst / "model_final.zip")
        metrics = self.metrics
        make_passing(metrics)
        if change_metrics:
            change_metrics(metrics)
        if metrics != self.metrics:
            rewrite_zip(dst / "model_final.zip", replace_metrics(metrics))
        if edit_file_only:
            edit_file_only(metrics)
        (dst / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        return dst


def make_passing(m: dict[str, Any]) -> None:
    """Raise scores under the default thresholds to passing values (CI bounds with them)."""
    if m["val_macro_f1"] < 0.65:
        m["val_macro_f1"] = 0.70
        m["bootstrap"]["val_macro_f1"] = {"low": 0.65, "high": 0.75}
    for name in ("long", "short"):
        if m["per_class"][name]["f1"] < 0.60:
            m["per_class"][name]["f1"] = 0.65
            m["bootstrap"]["f1"][name] = {"low": 0.60, "high": 0.70}


@pytest.fixture(scope="session")
def genuine(trained_run, mlflow_server, tmp_path_factory) -> Genuine:
    assert trained_run.run_id, "the trained run was not logged to MLflow"
    out = tmp_path_factory.mktemp("genuine")
    with tracking_at(mlflow_server) as client:
        run = client.get_run(trained_run.run_id)
        for name in ("metrics.json", "model_final.zip"):
            client.download_artifacts(trained_run.run_id, name, str(out))
        logged = gate.find_logged_model(client, run)
        assert logged is not None, "the trained run logged no pyfunc model"
        local = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location,
                                                    dst_path=str(out / "pyfunc"))
        model = Model.load(local)
    return Genuine(trained_run.run_id, out, model.signature, dict(run.data.tags), dict(model.metadata or {}))


def make_run(client: MlflowClient, files: Path, genuine: Genuine, *, log_model: bool = True,
             signature: ModelSignature | None = None, metadata: dict[str, Any] | None = None,
             bundled_zip: Path | None = None,
             skip: tuple[str, ...] = (), experiment: str = "gate-doctored", finish: bool = True) -> str:
    """A finished run logging ``files``' metrics.json / model_final.zip (minus ``skip``), the trained
    run's tags and (unless ``log_model`` is False) a pyfunc model bundling ``bundled_zip`` (default: the
    run's own zip). Uses the tracking URI of the enclosing ``tracking_at``/``tracking`` block.
    ``finish=False`` leaves the run RUNNING (active) as a training still logging would."""
    from processor.serving import EventClassifierPyfunc

    exp = mlflow.set_experiment(experiment)
    with mlflow.start_run(experiment_id=exp.experiment_id) if finish else nullcontext(
            mlflow.start_run(experiment_id=exp.experiment_id)) as run:
        mlflow.set_tags({k: genuine.tags[k] for k in ("schema_fingerprint", "git_commit") if k in genuine.tags})
        for name in ("metrics.json", "model_final.zip"):
            if name not in skip:
                mlflow.log_artifact(str(files / name))
        if log_model:
            mlflow.pyfunc.log_model(name="model", python_model=EventClassifierPyfunc(),
                                    artifacts={"model_final": str(bundled_zip or files / "model_final.zip")},
                                    signature=signature or genuine.signature, pip_requirements=["mlflow"],
                                    metadata=genuine.metadata if metadata is None else metadata)
    return run.info.run_id


def rewrite_zip(path: Path, edit: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite a zip with its members edited in memory (nothing else changed)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    edit(members)
    path.unlink()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def flip_adapter_byte(members: dict[str, bytes]) -> None:
    name = next(n for n in members if n.startswith("adapter/") and n.endswith(".safetensors"))
    data = bytearray(members[name])
    data[-1] ^= 0xFF
    members[name] = bytes(data)


def add_traversal_member(members: dict[str, bytes]) -> None:
    members["../evil.txt"] = b"outside the extraction directory"


def set_member(members: dict[str, bytes], name: str, data: bytes) -> None:
    """Replace one member and its manifest entry, so that the package still verifies."""
    members[name] = data
    manifest = json.loads(members[MANIFEST])
    manifest["files"][name] = sha256_bytes(data)
    members[MANIFEST] = json.dumps(manifest).encode()


def replace_metrics(metrics: dict[str, Any]) -> Callable[[dict[str, bytes]], None]:
    return lambda members: set_member(members, "metrics.json", json.dumps(metrics, indent=2).encode())


def valid_but_different(members: dict[str, bytes]) -> None:
    """A consistent package (manifest updated, same metrics) that is not the genuine one."""
    set_member(members, "label_map.json", json.dumps(json.loads(members["label_map.json"])).encode())


def doctored_signature(sig: ModelSignature, how: str) -> ModelSignature:
    """The trained model's signature with one thing changed: an extra input key, a key typed unlike the
    contract, MLflow enforcing it (no longer checked by the model), or no input schema at all."""
    columns = sig.inputs.to_dict()
    if how == "extra":
        columns.append({"type": "double", "name": "extra_feature", "required": False})
    elif how == "retyped":
        columns = [{**c, "type": "double"} if c["name"] == "ext_dir" else c for c in columns]
    out = ModelSignature(inputs=None if how == "none" else Schema.from_json(json.dumps(columns)),
                         outputs=sig.outputs, params=sig.params)
    out._is_signature_from_type_hint = how != "enforced_by_mlflow"
    return out


def registered_versions(client: MlflowClient, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda mv: int(mv.version))


def report_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def failed_checks(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if not c["passed"]}


def run_gate(*args: str) -> int:
    return gate.main([*args])


# -------------------------------------------------------------------------------------- thresholds
def test_default_thresholds_are_the_issue_s():
    th = gate.load_thresholds(gate.DEFAULT_CHECKS)
    assert (th.min_share, th.max_share, th.min_macro_f1) == (0.30, 0.40, 0.60)
    assert th.class_f1 == {"long": 0.55, "short": 0.55}
    assert th.strict is False and th.margin == 0.0


@pytest.mark.parametrize("text, needle", [
    ("val_macro_f1: {minimum: 0.5}\n", "minimum"),
    ("val_macro_fl: {min: 0.5}\n", "val_macro_fl"),
    ("class_f1: {long: 1.5}\n", "class_f1.long"),
    ("class_balance: {min_share: 0.5, max_share: 0.4}\n", "min_share"),
    ("strict: maybe\n", "strict"),
    ("time_leakage: {enabled: maybe}\n", "time_leakage.enabled"),
    ("time_leakage: {enable: true}\n", "under time_leakage"),
    ("min_support: {enabled: true, events: 0}\n", "min_support.events"),
    ("min_support: {enabled: yes please}\n", "min_support.enabled"),
    # run_status is always on: no checks file can name it, let alone switch it off.
    ("run_status: {enabled: false}\n", "unknown key 'run_status'"),
])
def test_a_bad_checks_file_is_a_usage_error(tmp_path, capsys, text, needle):
    checks = tmp_path / "checks.yaml"
    checks.write_text(text, encoding="utf-8")
    assert run_gate("--output-dir", str(tmp_path), "--checks", str(checks)) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ --output-dir
def test_output_dir_check_needs_no_mlflow(genuine, tmp_path, monkeypatch, capsys):
    out = genuine.copy_to(tmp_path / "out")
    # Nothing listens there: the local check must not touch a tracking server at all.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    report = tmp_path / "report.json"
    code = run_gate("--output-dir", str(out), "--report", str(report))
    shown = capsys.readouterr().out
    assert code == 0, shown
    data = report_of(report)
    assert data["status"] == "passed" and data.get("registration") is None
    assert [c["name"] for c in data["checks"]] == list(gate.CHECK_NAMES)
    for name in gate.CHECK_NAMES:
        assert re.search(rf"^{name}\s.*PASS$", shown, re.M), shown


def _doctored_contract(tmp_path: Path, source: Path, edit: Callable[[dict], None]) -> Path:
    doc = json.loads(source.read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / f"contract-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _extra_key(doc: dict) -> None:
    doc["properties"]["evil"] = {"type": "integer"}


def _other_spec(doc: dict) -> None:
    doc["x-canonical-spec"]["keys"]["atr"]["exclusiveMinimum"] = -1


@pytest.mark.parametrize("which, edit, needle", [
    ("REPO_CONTRACT", _extra_key, "extra ['evil']"),
    ("REPO_CONTRACT", _other_spec, "repo contract"),
    ("REPO_CONTRACT", None, "is missing"),
    ("UPSTREAM_CONTRACT", _extra_key, "upstream contract"),
])
def test_schema_check_compares_the_contract_files(genuine, tmp_path, monkeypatch, which, edit, needle):
    """Check 5 holds the run against the repo's contract file (and upstream's when present), not just
    the in-code copy: a contract file with an extra key or another spec fails it."""
    source = gate.checks.REPO_CONTRACT
    path = tmp_path / "absent.json" if edit is None else _doctored_contract(tmp_path, source, edit)
    monkeypatch.setattr(gate.checks, which, path)
    if which == "UPSTREAM_CONTRACT":  # the repo's own copy stays genuine
        assert gate.checks.REPO_CONTRACT.is_file()
    report = tmp_path / "report.json"
    assert run_gate("--output-dir", str(genuine.copy_to(tmp_path / "out")), "--report", str(report)) == 1
    schema = {c["name"]: c for c in report_of(report)["checks"]}["schema"]
    assert failed_checks(report_of(report)) == {"schema"} and needle in schema["detail"], schema["detail"]


def test_strict_mode_compares_the_bootstrap_lower_bound(genuine, tmp_path):
    def wide_interval(m: dict) -> None:
        m["val_macro_f1"] = 0.70
        m["bootstrap"]["val_macro_f1"] = {"low": 0.58, "high": 0.80}
        for name in ("long", "short"):
            m["per_class"][name]["f1"] = 0.70
            m["bootstrap"]["f1"][name] = {"low": 0.60, "high": 0.80}

    out = genuine.copy_to(tmp_path / "out", wide_interval)
    lenient, strict = tmp_path / "lenient.json", tmp_path / "strict.json"
    assert run_gate("--output-dir", str(out), "--report", str(lenient)) == 0
    assert run_gate("--output-dir", str(out), "--report", str(strict), "--strict") == 1
    assert failed_checks(report_of(strict)) == {"val_macro_f1"}
    macro = {c["name"]: c for c in report_of(strict)["checks"]}["val_macro_f1"]
    assert macro["data"]["point"] == 0.70 and macro["data"]["ci_low"] == 0.58 and macro["data"]["used"] == "ci_low"
    assert "0.700" in macro["value"] and "0.580" in macro["value"]
    # A stricter checks file can switch strict mode on, and F1 floors on the CI bound apply per class.
    checks = tmp_path / "strict.yaml"
    checks.write_text(yaml.safe_dump({"strict": True, "val_macro_f1": {"min": 0.5}, "class_f1": {"long": 0.65}}))
    report = tmp_path / "file.json"
    assert run_gate("--output-dir", str(out), "--checks", str(checks), "--report", str(report)) == 1
    assert failed_checks(report_of(report)) == {"class_f1"}


def test_scores_exactly_at_the_thresholds_pass(genuine, tmp_path):
    """The thresholds are floors: >= 0.60 macro-F1 and >= 0.55 per-class F1 (point and CI low)."""
    def at_the_bar(m: dict) -> None:
        m["val_macro_f1"] = 0.60
        m["bootstrap"]["val_macro_f1"] = {"low": 0.60, "high": 0.70}
        for name in ("long", "short"):
            m["per_class"][name]["f1"] = 0.55
            m["bootstrap"]["f1"][name] = {"low": 0.55, "high": 0.65}

    out = genuine.copy_to(tmp_path / "out", at_the_bar)
    for extra in ((), ("--strict",)):
        report = tmp_path / f"report{len(extra)}.json"
        assert run_gate("--output-dir", str(out), "--report", str(report), *extra) == 0, report_of(report)["checks"]
        assert failed_checks(report_of(report)) == set()


STRICT_CHECKS = REPO / "gates" / "ship_checks_strict.yaml"


def _baseline_at(model: float, tree: float) -> Callable[[dict], None]:
    def change(m: dict) -> None:
        m["val_macro_f1"] = model
        m["bootstrap"]["val_macro_f1"] = {"low": model - 0.05, "high": model + 0.05}
        # The strict file names the tuned tree; the default tree scoring far above the model must not matter.
        m.setdefault("baselines", {})["tuned_gbdt"] = {"val_macro_f1": tree}
        m["baselines"]["hist_gradient_boosting"] = {"val_macro_f1": 0.99}
    return change


@pytest.mark.parametrize("tree, passes", [(0.65, True), (0.73, True), (0.7301, False), (0.80, False)])
def test_beats_baseline_is_a_sixth_check_of_the_strict_file(genuine, tmp_path, tree, passes):
    """Off in ship_checks.yaml; ship_checks_strict.yaml: val macro-F1 >= the tree's - 0.03 (the margin)."""
    out = genuine.copy_to(tmp_path / "out", _baseline_at(0.70, tree))
    default, strict = tmp_path / "default.json", tmp_path / "strict.json"
    assert run_gate("--output-dir", str(out), "--report", str(default)) == 0
    assert [c["name"] for c in report_of(default)["checks"]] == list(gate.CHECK_NAMES)
    code = run_gate("--output-dir", str(out), "--checks", str(STRICT_CHECKS), "--report", str(strict))
    checks = {c["name"]: c for c in report_of(strict)["checks"]}
    assert list(checks) == [*gate.CHECK_NAMES, "beats_baseline", "time_leakage", "min_support"]
    assert checks["beats_baseline"]["data"]["baseline_val_macro_f1"] == tree
    assert checks["beats_baseline"]["value"] == f"0.700 vs tuned_gbdt {tree:.3f}"  # both numbers, named
    assert (code, failed_checks(report_of(strict))) == ((0, set()) if passes else (1, {"beats_baseline"}))


def _leakage(case: str) -> Callable[[dict], None]:
    """The trained run's own leakage block (training wrote it: the sample split is time-ordered),
    doctored to ``case``; beats_baseline passing, so the strict file fails on time_leakage alone."""
    def change(m: dict) -> None:
        _baseline_at(0.70, 0.65)(m)
        block = m["leakage"]
        if case == "no_block":
            del m["leakage"]
        elif case == "overlap":
            block.update(leakage_risk=True, val_overlapping=7)
            block["symbols"][0].update(val_overlapping=7, overlaps=True)
        elif case == "not_checked":
            block.update(checked=False, leakage_risk=None, symbols=[],
                         reason="no train and no val event has a timestamp")
    return change


@pytest.mark.parametrize("case, needle", [
    ("ordered", None),
    ("overlap", "7 of 260 val events are not later than the latest train event of their symbol"),
    ("not_checked", "not checked: no train and no val event has a timestamp"),
    ("no_block", "no leakage block"),
])
def test_time_leakage_is_a_check_of_the_strict_file(genuine, tmp_path, case, needle):
    """Off in ship_checks.yaml; ship_checks_strict.yaml: passes only on leakage_risk false."""
    assert genuine.metrics["leakage"]["leakage_risk"] is False
    out = genuine.copy_to(tmp_path / "out", _leakage(case))
    default, strict = tmp_path / "default.json", tmp_path / "strict.json"
    assert run_gate("--output-dir", str(out), "--report", str(default)) == 0
    assert "time_leakage" not in [c["name"] for c in report_of(default)["checks"]]
    code = run_gate("--output-dir", str(out), "--checks", str(STRICT_CHECKS), "--report", str(strict))
    checks = {c["name"]: c for c in report_of(strict)["checks"]}
    assert "time_leakage" in checks
    assert (code, failed_checks(report_of(strict))) == ((0, set()) if needle is None else (1, {"time_leakage"}))
    if needle:
        assert needle in checks["time_leakage"]["detail"]


@pytest.mark.parametrize("doctor, check", [
    (_baseline_at(0.70, 0.95), "beats_baseline"),
    (_leakage("overlap"), "time_leakage"),
])
def test_a_run_failing_a_strict_check_is_not_registered_under_the_strict_file(tracking, genuine, tmp_path,
                                                                              doctor, check):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files", doctor), genuine)
    name = unique_name()
    report = tmp_path / "report.json"
    assert run_gate("--run-id", run_id, "--model-name", name, "--checks", str(STRICT_CHECKS),
                    "--report", str(report)) == 1
    assert failed_checks(report_of(report)) == {check}
    assert client.search_registered_models(f"name = '{name}'") == []
    assert client.get_run(run_id).data.tags[f"gate.{check}"] == "fail"


@pytest.mark.parametrize("edit, needle", [
    (flip_adapter_byte, "sha256 does not match"),
    (add_traversal_member, "unsafe member path"),
])
def test_a_tampered_zip_is_rejected(genuine, tmp_path, edit, needle):
    out = genuine.copy_to(tmp_path / "out")
    rewrite_zip(out / "model_final.zip", edit)
    report = tmp_path / "report.json"
    assert run_gate("--output-dir", str(out), "--report", str(report)) == 1
    data = report_of(report)
    assert failed_checks(data) == {"artifacts"}
    assert needle in {c["name"]: c for c in data["checks"]}["artifacts"]["detail"]


# ------------------------------------------------------------------------------ promotion (MLflow)
def test_the_trained_demo_run_passes_the_gate(tracking, genuine, tmp_path):
    """The tiny demo run (configs/tiny.yaml on the default sample data) is meant to ship."""
    client = MlflowClient(tracking)
    name = unique_name()
    report = tmp_path / "report.json"
    code = run_gate("--run-id", genuine.run_id, "--model-name", name, "--report", str(report))
    data = report_of(report)
    assert code == 0, "the trained tiny run fails the shipping checks:\n" + gate.format_table(
        [gate.CheckResult(**c) for c in data["checks"]])
    assert client.get_model_version_by_alias(name, "champion").run_id == genuine.run_id
    assert client.get_run(genuine.run_id).data.tags["gate.status"] == "passed"


def test_a_passing_run_is_registered_tagged_and_aliased(tracking, genuine, tmp_path, capsys):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
    name = unique_name()
    report = tmp_path / "report.json"
    capsys.readouterr()
    code = run_gate("--run-id", run_id, "--model-name", name, "--report", str(report))
    data = report_of(report)
    assert code == 0, json.dumps(data["checks"], indent=1)
    assert "Downloading artifacts" not in capsys.readouterr().err  # no progress bars in the gate's output
    assert data["status"] == "passed" and failed_checks(data) == set()

    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == run_id
    assert [v.version for v in registered_versions(client, name)] == [champion.version]
    assert champion.current_stage in (None, "None")  # aliases, never the deprecated stages
    tags = champion.tags
    assert {tags[f"gate.{c}"] for c in gate.CHECK_NAMES} == {"pass"}
    assert tags["gate.status"] == "passed" and tags["run_id"] == run_id
    assert tags["schema_fingerprint"] == schema_fingerprint()
    assert tags["git_commit"] == genuine.tags["git_commit"]
    metrics = json.loads((tmp_path / "files" / "metrics.json").read_text(encoding="utf-8"))
    assert float(tags["val_macro_f1"]) == metrics["val_macro_f1"]
    assert data["registration"]["version"] == champion.version and data["registration"]["created"] is True
    # Descriptions for the registry UI: what the model is; what this version is, its data, score, verdict.
    assert "shipping gate" in client.get_registered_model(name).description
    described = client.get_model_version(name, champion.version).description
    ci = metrics["bootstrap"]["val_macro_f1"]
    for needle in (metrics["model"]["base_id"], f"LoRA r={metrics['model']['lora_r']}", "train.jsonl", "val.jsonl",
                   f"val macro-F1 {metrics['val_macro_f1']:.3f}", f"CI {ci['low']:.3f}-{ci['high']:.3f}",
                   f"passed all {len(data['checks'])} shipping checks", "ship_checks.yaml", run_id):
        assert needle in described, (needle, described)
    # The registered version is the run's pyfunc model, not some other logged model.
    logged = gate.find_logged_model(client, client.get_run(run_id))
    assert champion.source in (f"models:/{logged.model_id}", logged.artifact_location)

    run = client.get_run(run_id)
    assert run.data.tags["gate.status"] == "passed"
    assert {run.data.tags[f"gate.{c}"] for c in gate.CHECK_NAMES} == {"pass"}
    logged = client.download_artifacts(run_id, "gate_report.json", str(tmp_path / "dl"))
    assert report_of(Path(logged))["checks"] == data["checks"]


def test_gating_a_run_twice_makes_one_version(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
    name = unique_name()
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(first)) == 0
    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(second)) == 0
    # ... and once more through the MLproject entry point, as users and CI call it. Its command says
    # `python`: with the virtualenv's bin first on PATH, as in an activated environment.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "gate", "--env-manager", "local",
         "-P", f"run_id={run_id}", "-P", f"model_name={name}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    versions = registered_versions(client, name)
    assert len(versions) == 1
    assert report_of(first)["registration"]["created"] is True
    assert report_of(second)["registration"]["created"] is False
    assert report_of(second)["registration"]["version"] == versions[0].version
    assert report_of(second)["registration"]["repairs"] == []  # the first gate finished: nothing to repair
    assert client.get_model_version_by_alias(name, "champion").version == versions[0].version


# ------------------------------------------------------------------------- each check failing alone
def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(m: dict) -> None:
        *parents, leaf = path.split(".")
        node = m
        for key in parents:
            node = node[key]
        node[leaf] = value
    return change


FAILING_CASES = {
    # name: (the one check expected to fail, make_run options, metrics change, zip edit)
    "class_balance": ("class_balance", {}, _set("class_balance.after", {"long": 0.5, "short": 0.25, "no_trade": 0.25}), None),
    # One bound broken at a time (rounded shares): each bound must block on its own.
    "share_above_max": ("class_balance", {}, _set("class_balance.after", {"long": 0.41, "short": 0.30, "no_trade": 0.30}), None),
    "share_below_min": ("class_balance", {}, _set("class_balance.after", {"long": 0.29, "short": 0.36, "no_trade": 0.35}), None),
    "val_macro_f1": ("val_macro_f1", {}, _set("val_macro_f1", 0.55), None),
    "class_f1_short": ("class_f1", {}, _set("per_class.short.f1", 0.40), None),
    "zip_tampered": ("artifacts", {}, None, flip_adapter_byte),
    "zip_traversal": ("artifacts", {}, None, add_traversal_member),
    "zip_missing": ("artifacts", {"skip": ("model_final.zip",)}, None, None),
    "no_pyfunc_model": ("artifacts", {"log_model": False}, None, None),
    "pyfunc_bundles_other_zip": ("artifacts", {"bundled_zip": "genuine"}, None, valid_but_different),
    "fingerprint": ("schema", {}, _set("schema_fingerprint", "0" * 64), None),
    "extra_key_in_signature": ("schema", {"signature": "extra"}, None, None),
    "key_typed_unlike_the_contract": ("schema", {"signature": "retyped"}, None, None),
    # MLflow would cast requests and drop unknown keys before the contract check.
    "signature_enforced_by_mlflow": ("schema", {"signature": "enforced_by_mlflow"}, None, None),
    # No input schema (as models were logged before signatures were declared) and metadata naming
    # another contract.
    "pyfunc_metadata_fingerprint": ("schema", {"signature": "none", "metadata": {"schema_fingerprint": "0" * 64}},
                                    None, None),
}


@pytest.mark.parametrize("case", list(FAILING_CASES))
def test_each_check_failing_alone_blocks_registration(tracking, genuine, tmp_path, case):
    expected, options, change_metrics, zip_edit = FAILING_CASES[case]
    client = MlflowClient(tracking)
    files = genuine.copy_to(tmp_path / "files", change_metrics)
    if zip_edit:
        rewrite_zip(files / "model_final.zip", zip_edit)
    if options.get("bundled_zip") == "genuine":
        options = {**options, "bundled_zip": genuine.dir / "model_final.zip"}
    if isinstance(options.get("signature"), str):
        options = {**options, "signature": doctored_signature(genuine.signature, options["signature"])}
    run_id = make_run(client, files, genuine, **options)
    name = unique_name()
    report = tmp_path / "report.json"

    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(report)) == 1
    data = report_of(report)
    assert data["status"] == "failed" and data["registration"] is None
    assert failed_checks(data) == {expected}, json.dumps(data["checks"], indent=1)
    assert client.search_registered_models(f"name = '{name}'") == []
    assert client.search_model_versions(f"run_id = '{run_id}'") == []
    tags = client.get_run(run_id).data.tags
    assert tags["gate.status"] == "failed" and tags[f"gate.{expected}"] == "fail"


@pytest.mark.parametrize("after, passes", [
    ({"long": 0.30, "short": 0.30, "no_trade": 0.40}, True),  # both bounds exactly: inclusive
    ({"long": 0.40, "short": 0.30, "no_trade": 0.30}, True),
    ({"long": 0.2999, "short": 0.3001, "no_trade": 0.40}, False),
    ({"long": 0.4001, "short": 0.30, "no_trade": 0.30}, False),
])
def test_shares_exactly_at_the_bounds_pass_and_just_outside_fail(genuine, tmp_path, after, passes):
    out = genuine.copy_to(tmp_path / "out", _set("class_balance.after", after))
    report = tmp_path / "report.json"
    assert run_gate("--output-dir", str(out), "--report", str(report)) == (0 if passes else 1)
    assert failed_checks(report_of(report)) == (set() if passes else {"class_balance"})


def test_missing_metrics_is_a_check_failure_not_an_error(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine, skip=("metrics.json",))
    name = unique_name()
    report = tmp_path / "report.json"
    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(report)) == 1
    data = report_of(report)
    # The scores are judged from the zip's own metrics.json; the missing artifact fails check 4.
    assert failed_checks(data) == {"artifacts"}
    assert "metrics.json is missing" in {c["name"]: c for c in data["checks"]}["artifacts"]["detail"]
    assert client.search_registered_models(f"name = '{name}'") == []


def _raise_scores(m: dict) -> None:
    m["val_macro_f1"] = 0.95
    m["bootstrap"]["val_macro_f1"] = {"low": 0.93, "high": 0.97}
    for name in ("long", "short"):
        m["per_class"][name]["f1"] = 0.95
        m["bootstrap"]["f1"][name] = {"low": 0.93, "high": 0.97}


def _lower_scores(m: dict) -> None:
    m["val_macro_f1"] = 0.40
    m["bootstrap"]["val_macro_f1"] = {"low": 0.35, "high": 0.45}


@pytest.mark.parametrize("zip_scores", ["genuine", "failing"])
def test_a_run_with_edited_scores_is_not_registered(tracking, genuine, tmp_path, zip_scores):
    """metrics.json edited upward next to a zip whose manifest verifies: the gate judges the zip's own
    metrics.json and fails check 4 naming the mismatch ("failing": the zip's scores are under the bar)."""
    client = MlflowClient(tracking)
    if zip_scores == "genuine":
        files = tmp_path / "files"
        files.mkdir()
        shutil.copy2(genuine.dir / "model_final.zip", files / "model_final.zip")
        edited = genuine.metrics
        _raise_scores(edited)
        (files / "metrics.json").write_text(json.dumps(edited), encoding="utf-8")
    else:
        files = genuine.copy_to(tmp_path / "files", _lower_scores, edit_file_only=_raise_scores)
    verify_package(files / "model_final.zip")  # the zip itself is a valid package
    run_id = make_run(client, files, genuine)
    name = unique_name()
    report = tmp_path / "report.json"
    assert run_gate("--run-id", run_id, "--model-name", name, "--report", str(report)) == 1
    data = report_of(report)
    checks = {c["name"]: c for c in data["checks"]}
    assert data["metrics_source"] == "model_final.zip"
    assert "artifacts" in failed_checks(data)
    detail = checks["artifacts"]["detail"]
    assert "metrics.json differs" in detail and "val_macro_f1" in detail, detail
    assert checks["val_macro_f1"]["data"]["point"] != 0.95  # the zip's score, not the edited one
    if zip_scores == "failing":
        assert failed_checks(data) == {"artifacts", "val_macro_f1"}
        assert checks["val_macro_f1"]["data"]["point"] == 0.40
    assert client.search_registered_models(f"name = '{name}'") == []
    assert client.search_model_versions(f"run_id = '{run_id}'") == []


# ----------------------------------------------------------------------------- champion/challenger
def _scores(macro: float) -> Callable[[dict], None]:
    def change(m: dict) -> None:
        m["val_macro_f1"] = macro
        for name in ("long", "short"):
            m["per_class"][name]["f1"] = max(m["per_class"][name]["f1"], 0.60)
    return change


def test_a_worse_challenger_does_not_replace_the_champion(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    name = unique_name()
    strong = make_run(client, genuine.copy_to(tmp_path / "a", _scores(0.90)), genuine)
    weak = make_run(client, genuine.copy_to(tmp_path / "b", _scores(0.85)), genuine)
    assert run_gate("--run-id", strong, "--model-name", name) == 0
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == strong

    report = tmp_path / "weak.json"
    assert run_gate("--run-id", weak, "--model-name", name, "--report", str(report)) == 0
    assert report_of(report)["registration"]["outcome"] == "challenger"
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert challenger.run_id == weak and challenger.tags["gate.status"] == "passed"

    # A margin cannot make a weaker run win; switching the comparison off moves the alias.
    assert run_gate("--run-id", weak, "--model-name", name, "--margin", "0.01") == 0
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    assert run_gate("--run-id", weak, "--model-name", name, "--no-require-better") == 0
    assert client.get_model_version_by_alias(name, "champion").version == challenger.version
    assert "challenger" not in client.get_registered_model(name).aliases  # no longer a mere challenger
    assert len(registered_versions(client, name)) == 2


def test_a_better_run_replaces_the_champion(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    name = unique_name()
    old = make_run(client, genuine.copy_to(tmp_path / "a", _scores(0.80)), genuine)
    new = make_run(client, genuine.copy_to(tmp_path / "b", _scores(0.82)), genuine)
    assert run_gate("--run-id", old, "--model-name", name) == 0
    # Requiring an improvement of 0.05 keeps the old champion; the default margin (0) does not.
    assert run_gate("--run-id", new, "--model-name", name, "--margin", "0.05") == 0
    assert client.get_model_version_by_alias(name, "champion").run_id == old
    assert run_gate("--run-id", new, "--model-name", name) == 0
    assert client.get_model_version_by_alias(name, "champion").run_id == new


def test_a_challenger_exactly_at_holder_plus_margin_replaces_the_champion(tracking, genuine, tmp_path):
    # Binary-exact scores: 0.75 + 0.125 == 0.875, so "exactly at" involves no rounding.
    client = MlflowClient(tracking)
    name = unique_name()
    old = make_run(client, genuine.copy_to(tmp_path / "a", _scores(0.75)), genuine)
    short = make_run(client, genuine.copy_to(tmp_path / "b", _scores(0.8749)), genuine)
    at = make_run(client, genuine.copy_to(tmp_path / "c", _scores(0.875)), genuine)
    assert run_gate("--run-id", old, "--model-name", name) == 0
    assert run_gate("--run-id", short, "--model-name", name, "--margin", "0.125") == 0
    assert client.get_model_version_by_alias(name, "champion").run_id == old
    assert run_gate("--run-id", at, "--model-name", name, "--margin", "0.125") == 0
    assert client.get_model_version_by_alias(name, "champion").run_id == at


# ----------------------------------------------------------------------------------- races, errors
def test_racing_gates_leave_the_registry_consistent(tracking, genuine, tmp_path):
    client = MlflowClient(tracking)
    name = unique_name()
    one = make_run(client, genuine.copy_to(tmp_path / "a"), genuine)
    other = make_run(client, genuine.copy_to(tmp_path / "b"), genuine)
    runs = [one, one, other, other]
    procs = [subprocess.Popen([sys.executable, str(GATE_PY), "--run-id", r, "--model-name", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in runs]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out[-2000:] + err[-3000:]
    versions = registered_versions(client, name)
    assert sorted(v.run_id for v in versions) == sorted({one, other})  # one version per run
    for v in versions:  # every surviving version was written whole, with its gate tags
        assert v.tags["gate.status"] == "passed" and v.tags["run_id"] == v.run_id
        assert {v.tags[f"gate.{c}"] for c in gate.CHECK_NAMES} == {"pass"}
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version in {v.version for v in versions}


def test_unknown_run_is_exit_2(tracking, capsys):
    assert run_gate("--run-id", uuid.uuid4().hex, "--model-name", unique_name()) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err


def test_unreachable_server_is_exit_2(genuine, tmp_path):
    from conftest import free_port

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    proc = subprocess.run([sys.executable, str(GATE_PY), "--run-id", genuine.run_id], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_usage_errors_are_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as both:
        gate.main(["--run-id", "x", "--output-dir", str(tmp_path)])
    assert both.value.code == 2
    assert run_gate("--output-dir", str(tmp_path / "nope")) == 2
    assert run_gate("--output-dir", str(tmp_path), "--checks", str(tmp_path / "missing.yaml")) == 2
    assert "checks file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- PostgreSQL
def test_promotion_with_a_postgresql_backend(pg_database, genuine, tmp_path):
    from conftest import start_mlflow_server, stop

    # The psycopg2 driver is the one installed; SQLAlchemy's bare postgresql:// may pick psycopg 3.
    uri, proc = start_mlflow_server(tmp_path / "server", pg_database.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with tracking_at(uri) as client:
            run_id = make_run(client, genuine.copy_to(tmp_path / "files"), genuine)
            name = unique_name()
            assert run_gate("--run-id", run_id, "--model-name", name) == 0
            assert run_gate("--run-id", run_id, "--model-name", name) == 0
            champion = client.get_model_version_by_alias(name, "champion")
            assert champion.run_id == run_id and len(registered_versions(client, name)) == 1
            assert champion.tags["gate.status"] == "passed"
            assert client.get_run(run_id).data.tags["gate.status"] == "passed"
    finally:
        stop(proc)


def test_genuine_package_is_intact(genuine):
    """Sanity of the fixture the doctored runs start from: the copies differ only where a test edits."""
    manifest = verify_package(genuine.dir / "model_final.zip")
    assert "serving.json" in manifest["files"]
    with zipfile.ZipFile(genuine.dir / "model_final.zip") as zf:
        assert json.loads(zf.read("serving.json"))["features"] == list(FEATURES)
