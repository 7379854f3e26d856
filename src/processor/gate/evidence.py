"""What a run left behind (metrics.json, model_final.zip, the logged pyfunc model), read from a local
output directory or downloaded from MLflow, and which metrics the checks judge (``settle_metrics``)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from processor.io import sha256_file
from processor.names import PYFUNC_NAME, RESOLVED_CONFIG, ZIP_ARTIFACT, ZIP_NAME
from processor.record import METRICS_FILE, SERVING_FILE, Metrics, ServingSpec
from processor.quiet import no_artifact_progress

from processor.gate.thresholds import GateUsageError



@dataclass
class Evidence:
    """What a run left behind, as far as it could be read. Missing pieces are check failures."""

    source: str  # "mlflow run <id>" or the output directory
    # What the checks judge: the verified zip's own metrics.json (see ``settle_metrics``).
    metrics: dict[str, Any] | None = None
    metrics_problem: str | None = None
    metrics_source: str = "none"  # "model_final.zip" (verified) or "metrics.json (unverified)"
    # The run's separate metrics.json artifact; it must equal the zip's copy (check ``artifacts``).
    artifact_metrics: dict[str, Any] | None = None
    artifact_metrics_problem: str | None = None
    zip_path: Path | None = None
    zip_problem: str | None = None
    zip_verify_problem: str | None = None  # set by settle_metrics when the manifest check fails
    zip_metrics: dict[str, Any] | None = None
    zip_metrics_problem: str | None = None
    # MLflow only: the logged pyfunc model (None + problem when absent), its signature input columns and
    # the sha256 of the zip it bundles. ``pyfunc_checked`` is False for --output-dir.
    pyfunc_checked: bool = False
    pyfunc_model_id: str | None = None
    pyfunc_dir: Path | None = None  # the downloaded model (MLmodel, requirements.txt, artifacts)
    pyfunc_problem: str | None = None
    # The signature's input columns as MLflow writes them ({"type", "name", "required"}), and whether
    # MLflow hands requests to the model unchecked (MLmodel's is_signature_from_type_hint).
    signature_inputs: list[dict[str, Any]] | None = None
    signature_checked_by_model: bool = False
    model_metadata: dict[str, Any] = field(default_factory=dict)
    pyfunc_zip_sha256: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)
    # MLflow only: the run judged and its status (run.info.status: FINISHED, RUNNING, FAILED, ...).
    mlflow_run_id: str | None = None
    run_status: str | None = None

    @property
    def record(self) -> Metrics:
        """The judged metrics.json as the run record reads it (every value None when there is none)."""
        return Metrics.from_dict(self.metrics)


def serving_json(zip_path: Path | None) -> tuple[ServingSpec | None, str | None]:
    """The package's serving.json (base model, template, fingerprint, ...), or None and why not."""
    if zip_path is None:
        return None, None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            doc = json.loads(zf.read(SERVING_FILE))
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as exc:
        return None, f"serving.json unreadable in {zip_path.name} ({exc})"
    if not isinstance(doc, dict):
        return None, f"serving.json in {zip_path.name} is not a JSON object"
    return ServingSpec.from_dict(doc), None


def _parse_metrics(raw: bytes, where: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{where} is not readable JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"{where} is not a JSON object"
    return data, None


def _read_metrics(path: Path, ev: Evidence) -> None:
    if not path.is_file():
        ev.artifact_metrics_problem = "metrics.json is missing"
        return
    try:
        raw = path.read_bytes()
    except OSError as exc:
        ev.artifact_metrics_problem = f"metrics.json is not readable ({exc})"
        return
    ev.artifact_metrics, ev.artifact_metrics_problem = _parse_metrics(raw, METRICS_FILE)


def settle_metrics(ev: Evidence) -> Evidence:
    """Decide which metrics the checks judge: the zip's own metrics.json once the zip's manifest
    verifies -- the run's separate metrics.json is a plain file anyone with write access to the run
    can edit, the zip's copy is covered by the manifest sha256s. When the zip is missing or fails
    verification, ``artifacts`` fails anyway; the separate metrics.json is then judged (marked unverified)
    so that the report still says what else would have failed."""
    if ev.zip_path is not None:
        # Imported here: processor.package imports torch, which the gate needs only once a zip is there
        # to verify (--help, a bad checks file or an unknown run do not pay for it).
        from processor.package import PackageError, verify_package

        try:
            verify_package(ev.zip_path)
        except PackageError as exc:
            ev.zip_verify_problem = str(exc).replace(str(ev.zip_path), ev.zip_path.name)
        else:
            try:
                with zipfile.ZipFile(ev.zip_path) as zf:
                    raw = zf.read(METRICS_FILE)
            except KeyError:
                ev.zip_metrics_problem = f"{ev.zip_path.name} holds no metrics.json"
            else:
                ev.zip_metrics, ev.zip_metrics_problem = _parse_metrics(raw, f"{ev.zip_path.name}'s metrics.json")
    if ev.zip_path is not None and ev.zip_verify_problem is None:
        ev.metrics, ev.metrics_problem = ev.zip_metrics, ev.zip_metrics_problem
        ev.metrics_source = ZIP_NAME
    else:
        ev.metrics, ev.metrics_problem = ev.artifact_metrics, ev.artifact_metrics_problem
        ev.metrics_source = "metrics.json (unverified)" if ev.artifact_metrics is not None else "none"
    return ev


# Differences in what the checks judge are named first in a mismatch report.
_JUDGED = ("val_macro_f1", "per_class.", "class_balance.", "schema_fingerprint", "bootstrap.")


def describe_mismatch(artifact: dict[str, Any], packaged: dict[str, Any], shown: int = 4) -> str:
    """'' when equal, else the differing keys (judged scores first), e.g. ``val_macro_f1: 0.9 vs 0.7``."""
    diff = metrics_mismatch(artifact, packaged)
    if not diff:
        return ""
    diff.sort(key=lambda d: next((i for i, p in enumerate(_JUDGED) if d.startswith(p)), len(_JUDGED)))
    more = f"; +{len(diff) - shown} more" if len(diff) > shown else ""
    return "; ".join(diff[:shown]) + more


def metrics_mismatch(a: Any, b: Any, path: str = "", limit: int = 200) -> list[str]:
    """Where two metrics.json documents differ, as ``key.path: a vs b`` (at most ``limit`` entries).
    Compared in canonical JSON so that NaN equals NaN and key order does not matter."""
    def canon(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    if canon(a) == canon(b):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                found.append(f"{sub}: {'missing' if key not in a else canon(a[key])[:40]} vs "
                             f"{'missing' if key not in b else canon(b[key])[:40]}")
            else:
                found.extend(metrics_mismatch(a[key], b[key], sub, limit))
            if len(found) >= limit:
                return found[:limit]
        return found
    return [f"{path or '(whole file)'}: {canon(a)[:40]} vs {canon(b)[:40]}"]


def evidence_from_dir(out: Path) -> Evidence:
    """Evidence from a local training output directory (``--output-dir``)."""
    if not out.is_dir():
        raise GateUsageError(f"--output-dir {out}: not a directory")
    ev = Evidence(source=str(out))
    _read_metrics(out / METRICS_FILE, ev)
    zip_path = out / _zip_name_from_config(out / RESOLVED_CONFIG)
    if zip_path.is_file():
        ev.zip_path = zip_path
    else:
        ev.zip_problem = f"{zip_path.name} is missing"
    return settle_metrics(ev)


def _zip_name_from_config(path: Path) -> str:
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = cfg["packaging"]["zip_final"]
        return name if isinstance(name, str) and name else ZIP_NAME
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return ZIP_NAME


def evidence_from_run(client: Any, run: Any, workdir: Path) -> Evidence:
    """Download the run's metrics.json, zip and pyfunc model into ``workdir``.

    Absent artifacts become problems (check failures); transport errors raise (exit 2)."""
    # Three downloads per run, often in CI logs: their progress bars would bury the report.
    with no_artifact_progress():
        return _evidence_from_run(client, run, workdir)


def _evidence_from_run(client: Any, run: Any, workdir: Path) -> Evidence:
    run_id = run.info.run_id
    ev = Evidence(source=f"mlflow run {run_id}", pyfunc_checked=True, run_tags=dict(run.data.tags),
                  mlflow_run_id=run_id, run_status=run.info.status)
    zip_name = run.data.params.get("packaging.zip_final") or ZIP_NAME
    root = {f.path for f in client.list_artifacts(run_id)}
    if METRICS_FILE in root:
        _read_metrics(Path(client.download_artifacts(run_id, METRICS_FILE, str(workdir))), ev)
    else:
        ev.artifact_metrics_problem = "metrics.json is missing from the run's artifacts"
    if zip_name in root:
        ev.zip_path = Path(client.download_artifacts(run_id, zip_name, str(workdir)))
    else:
        ev.zip_problem = f"{zip_name} is missing from the run's artifacts"
    _pyfunc_evidence(client, run, workdir / "pyfunc", ev)
    return settle_metrics(ev)


def find_logged_model(client: Any, run: Any, name: str = PYFUNC_NAME) -> Any | None:
    """The run's logged model called ``name`` (the newest if it was logged more than once)."""
    found, token = [], None
    while True:
        page = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           filter_string=f"name = '{name}'", page_token=token)
        found.extend(m for m in page if m.source_run_id == run.info.run_id)
        token = page.token
        if not token:
            break
    return max(found, key=lambda m: m.creation_timestamp) if found else None


def _pyfunc_evidence(client: Any, run: Any, workdir: Path, ev: Evidence) -> None:
    import mlflow
    from mlflow.models import Model

    logged = find_logged_model(client, run)
    if logged is None:
        ev.pyfunc_problem = f"no pyfunc model {PYFUNC_NAME!r} logged by the run (nothing to register)"
        return
    ev.pyfunc_model_id = logged.model_id
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=str(workdir)))
    ev.pyfunc_dir = local
    try:
        model = Model.load(local)
    except Exception as exc:  # noqa: BLE001 - any unreadable MLmodel is the same finding
        ev.pyfunc_problem = f"pyfunc model {logged.model_id}: MLmodel unreadable ({exc})"
        return
    if model.signature is not None and model.signature.inputs is not None:
        ev.signature_inputs = model.signature.inputs.to_dict()
        ev.signature_checked_by_model = bool(model._is_signature_from_type_hint())
    ev.model_metadata = dict(model.metadata or {})
    conf = (model.flavors.get("python_function") or {}).get("artifacts", {}).get(ZIP_ARTIFACT, {})
    bundled = local / conf["path"] if conf.get("path") else None
    if bundled is None or not bundled.is_file():
        ev.pyfunc_problem = f"pyfunc model {logged.model_id} does not bundle {ZIP_NAME}"
        return
    ev.pyfunc_zip_sha256 = sha256_file(bundled)


