"""Shipping gate: check a training run from its own artifacts; register and alias it only if it passes.

    python gates/gate.py --run-id RUN_ID [--model-name train-loop-v3] [--alias champion] [--report FILE]
                         [--checks gates/ship_checks.yaml] [--strict] [--no-require-better] [--margin M]
    python gates/gate.py --output-dir outputs/demo [--report FILE] [--strict]    # local check, no MLflow
    mlflow run . -e gate -P run_id=RUN_ID

Checks (thresholds in gates/ship_checks.yaml; never from the command line):
  class_balance  every class's share of the training data after oversampling within 30-40 %
  val_macro_f1   val macro-F1 >= 0.60
  class_f1       F1(long) >= 0.55 and F1(short) >= 0.55
  artifacts      metrics.json and model_final.zip present, the zip intact (manifest sha256s, no unsafe
                 paths), the run's metrics.json identical to the zip's own copy; with MLflow also the
                 run's pyfunc model, bundling that same zip
  schema         the run's feature schema is the contract's (fingerprint, feature keys, no extra keys)
The scores of checks 1-3 and the fingerprint of check 5 are read from the metrics.json inside the
verified zip (covered by its manifest), never from the separate metrics.json file alone.
--strict: checks 2 and 3 use the lower bound of the bootstrap CI in metrics.json (both are reported).

Only when every check passes is the run's pyfunc model registered (one version per run: gating a run
again re-uses its version) with the check results, git commit, schema fingerprint and run id as
version tags, and the alias moved to it. --require-better (default on): the alias moves only if the
run's val macro-F1 >= the current alias holder's + margin; otherwise the version gets the alias
"challenger" and the champion stays.

Exit codes: 0 passed (and registered/aliased unless --output-dir), 1 a check failed (nothing
registered, no alias moved), 2 usage or infrastructure error (unknown run, unreachable server, bad
checks file). The report (stdout table, --report JSON) is also logged to the run as gate_report.json
with tags gate.status and gate.<check>.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    import processor  # noqa: F401  (installed with `pip install -e .`)
except ModuleNotFoundError:  # a plain checkout run as `python gates/gate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import yaml

from processor.atomic import write_text_atomic
from processor.package import PackageError, verify_package
from processor.schema import FEATURES, LABELS, schema_fingerprint

DEFAULT_CHECKS = Path(__file__).resolve().with_name("ship_checks.yaml")
DEFAULT_MODEL_NAME = "train-loop-v3"
DEFAULT_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PYFUNC_NAME = "model"  # processor.tracking.PYFUNC_NAME; not imported to keep the gate free of torch
ZIP_NAME = "model_final.zip"
REPORT_NAME = "gate_report.json"
CHECK_NAMES = ("class_balance", "val_macro_f1", "class_f1", "artifacts", "schema")
_ALIAS_ATTEMPTS = 5


class GateUsageError(Exception):
    """Bad arguments or checks file: exit 2."""


class GateInfraError(Exception):
    """The tracking server or registry could not be used as needed: exit 2."""


# ------------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Thresholds:
    min_share: float = 0.30
    max_share: float = 0.40
    min_macro_f1: float = 0.60
    class_f1: dict[str, float] = field(default_factory=lambda: {"long": 0.55, "short": 0.55})
    strict: bool = False
    margin: float = 0.0


_ALLOWED = {"class_balance": {"min_share", "max_share"}, "val_macro_f1": {"min"}, "class_f1": set(LABELS),
            "strict": None, "champion": {"margin"}}


def _fraction(value: Any, where: str, *, lo: float = 0.0, hi: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise GateUsageError(f"{where}: expected a number between {lo} and {hi}, got {value!r}")
    return float(value)


def load_thresholds(path: Path) -> Thresholds:
    """Read and check a checks file; unknown keys are errors so a typo cannot silently relax a check."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateUsageError(f"checks file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise GateUsageError(f"cannot read checks file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise GateUsageError(f"{path}: expected a mapping of checks, got {type(raw).__name__}")
    for key, value in raw.items():
        if key not in _ALLOWED:
            raise GateUsageError(f"{path}: unknown key {key!r} (allowed: {', '.join(_ALLOWED)})")
        sub = _ALLOWED[key]
        if sub is not None:
            if not isinstance(value, dict):
                raise GateUsageError(f"{path}: {key} must be a mapping")
            unknown = set(value) - sub
            if unknown:
                raise GateUsageError(f"{path}: unknown key(s) {sorted(unknown)} under {key} "
                                     f"(allowed: {sorted(sub)})")
    d = Thresholds()
    cb = raw.get("class_balance", {})
    min_share = _fraction(cb.get("min_share", d.min_share), f"{path}: class_balance.min_share")
    max_share = _fraction(cb.get("max_share", d.max_share), f"{path}: class_balance.max_share")
    if min_share > max_share:
        raise GateUsageError(f"{path}: class_balance.min_share {min_share} > max_share {max_share}")
    min_f1 = _fraction(raw.get("val_macro_f1", {}).get("min", d.min_macro_f1), f"{path}: val_macro_f1.min")
    class_f1 = {k: _fraction(v, f"{path}: class_f1.{k}") for k, v in raw.get("class_f1", d.class_f1).items()}
    strict = raw.get("strict", False)
    if not isinstance(strict, bool):
        raise GateUsageError(f"{path}: strict must be true or false, got {strict!r}")
    margin = _fraction(raw.get("champion", {}).get("margin", 0.0), f"{path}: champion.margin", lo=-1.0)
    return Thresholds(min_share, max_share, min_f1, class_f1, strict, margin)


# --------------------------------------------------------------------------------------- evidence
@dataclass
class Evidence:
    """What a run left behind, as far as it could be read. Missing pieces are check failures."""

    source: str  # "mlflow run <id>" or the output directory
    # What checks 1-3 and 5 judge: the verified zip's own metrics.json (see ``settle_metrics``).
    metrics: dict[str, Any] | None = None
    metrics_problem: str | None = None
    metrics_source: str = "none"  # "model_final.zip" (verified) or "metrics.json (unverified)"
    # The run's separate metrics.json artifact; it must equal the zip's copy (check 4).
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
    pyfunc_problem: str | None = None
    signature_inputs: list[str] | None = None
    pyfunc_zip_sha256: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)


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
    ev.artifact_metrics, ev.artifact_metrics_problem = _parse_metrics(raw, "metrics.json")


def settle_metrics(ev: Evidence) -> Evidence:
    """Decide which metrics the checks judge: the zip's own metrics.json once the zip's manifest
    verifies -- the run's separate metrics.json is a plain file anyone with write access to the run
    can edit, the zip's copy is covered by the manifest sha256s. When the zip is missing or fails
    verification, check 4 fails anyway; the separate metrics.json is then judged (marked unverified)
    so that the report still says what else would have failed."""
    if ev.zip_path is not None:
        try:
            verify_package(ev.zip_path)
        except PackageError as exc:
            ev.zip_verify_problem = str(exc).replace(str(ev.zip_path), ev.zip_path.name)
        else:
            try:
                with zipfile.ZipFile(ev.zip_path) as zf:
                    raw = zf.read("metrics.json")
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
    _read_metrics(out / "metrics.json", ev)
    zip_path = out / _zip_name_from_config(out / "resolved_config.yaml")
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
    run_id = run.info.run_id
    ev = Evidence(source=f"mlflow run {run_id}", pyfunc_checked=True, run_tags=dict(run.data.tags))
    zip_name = run.data.params.get("packaging.zip_final") or ZIP_NAME
    root = {f.path for f in client.list_artifacts(run_id)}
    if "metrics.json" in root:
        _read_metrics(Path(client.download_artifacts(run_id, "metrics.json", str(workdir))), ev)
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
    try:
        model = Model.load(local)
    except Exception as exc:  # noqa: BLE001 - any unreadable MLmodel is the same finding
        ev.pyfunc_problem = f"pyfunc model {logged.model_id}: MLmodel unreadable ({exc})"
        return
    if model.signature is not None and model.signature.inputs is not None:
        ev.signature_inputs = list(model.signature.inputs.input_names())
    conf = (model.flavors.get("python_function") or {}).get("artifacts", {}).get("model_final", {})
    bundled = local / conf["path"] if conf.get("path") else None
    if bundled is None or not bundled.is_file():
        ev.pyfunc_problem = f"pyfunc model {logged.model_id} does not bundle model_final.zip"
        return
    from processor.package import sha256_file

    ev.pyfunc_zip_sha256 = sha256_file(bundled)


# ----------------------------------------------------------------------------------------- checks
@dataclass
class CheckResult:
    name: str
    passed: bool
    value: str  # for the table
    threshold: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable numbers for the JSON report


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def check_class_balance(ev: Evidence, th: Thresholds) -> CheckResult:
    threshold = f"{th.min_share:.0%}-{th.max_share:.0%} each"
    if ev.metrics is None:
        return CheckResult("class_balance", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    after = _get(ev.metrics, "class_balance", "after")
    if not isinstance(after, dict):
        return CheckResult("class_balance", False, "n/a", threshold, "metrics.json has no class_balance.after")
    shares = {name: _num(after.get(name)) for name in LABELS}
    bad = [n for n, s in shares.items() if s is None or not th.min_share <= s <= th.max_share]
    value = " ".join(f"{n} {s:.1%}" if s is not None else f"{n} n/a" for n, s in shares.items())
    detail = f"out of range: {', '.join(bad)}" if bad else ""
    return CheckResult("class_balance", not bad, value, threshold, detail,
                       {"after": shares, "applied": _get(ev.metrics, "class_balance", "applied")})


def _score(point: Any, low: Any, strict: bool) -> tuple[float | None, float | None, float | None, str]:
    p, lo = _num(point), _num(low)
    used = lo if strict else p
    return p, lo, used, "ci_low" if strict else "point"


def _show(p: float | None, lo: float | None, used_kind: str, confidence: Any) -> str:
    conf = f"{float(confidence):.0%} " if _num(confidence) is not None else ""
    ci = f"{conf}CI low {lo:.3f}" if lo is not None else "no CI"
    point = f"{p:.3f}" if p is not None else "n/a"
    mark = ("*" if used_kind == "point" else "", "*" if used_kind == "ci_low" else "")
    return f"{point}{mark[0]} ({ci}{mark[1]})"


def check_macro_f1(ev: Evidence, th: Thresholds, strict: bool) -> CheckResult:
    threshold = f">= {th.min_macro_f1:.3f}" + (" (CI low)" if strict else "")
    if ev.metrics is None:
        return CheckResult("val_macro_f1", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    p, lo, used, kind = _score(ev.metrics.get("val_macro_f1"),
                               _get(ev.metrics, "bootstrap", "val_macro_f1", "low"), strict)
    conf = _get(ev.metrics, "bootstrap", "confidence")
    data = {"point": p, "ci_low": lo, "used": kind, "confidence": _num(conf)}
    if used is None:
        what = "bootstrap.val_macro_f1.low" if strict else "val_macro_f1"
        return CheckResult("val_macro_f1", False, _show(p, lo, kind, conf), threshold,
                           f"metrics.json has no finite {what}", data)
    return CheckResult("val_macro_f1", used >= th.min_macro_f1, _show(p, lo, kind, conf), threshold, "", data)


def check_class_f1(ev: Evidence, th: Thresholds, strict: bool) -> CheckResult:
    threshold = ", ".join(f"{n} >= {v:.3f}" for n, v in th.class_f1.items()) + (" (CI low)" if strict else "")
    if ev.metrics is None:
        return CheckResult("class_f1", False, "n/a", threshold, ev.metrics_problem or "no metrics")
    conf = _get(ev.metrics, "bootstrap", "confidence")
    parts, data, bad = [], {}, []
    for name, floor in th.class_f1.items():
        p, lo, used, kind = _score(_get(ev.metrics, "per_class", name, "f1"),
                                   _get(ev.metrics, "bootstrap", "f1", name, "low"), strict)
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
        from processor.package import sha256_file

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


def _serving_json(zip_path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    if zip_path is None:
        return None, None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return json.loads(zf.read("serving.json")), None
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as exc:
        return None, f"serving.json unreadable in {zip_path.name} ({exc})"


def check_schema(ev: Evidence) -> CheckResult:
    """The run's feature schema = the contract: every fingerprint the run recorded equals the contract's,
    and every key list it recorded (package features, pyfunc signature) is exactly id + the 13 features."""
    expected = schema_fingerprint()
    problems: list[str] = []
    seen: dict[str, Any] = {}
    fp = ev.metrics.get("schema_fingerprint") if ev.metrics else None
    seen["metrics.json"] = fp
    if fp is None:
        problems.append("metrics.json records no schema_fingerprint")
    elif fp != expected:
        problems.append(f"metrics.json schema_fingerprint {str(fp)[:12]}... != contract {expected[:12]}...")
    if "schema_fingerprint" in ev.run_tags and ev.run_tags["schema_fingerprint"] != expected:
        problems.append(f"run tag schema_fingerprint {ev.run_tags['schema_fingerprint'][:12]}... != contract")
    serving, serving_problem = _serving_json(ev.zip_path)
    key_sets = 0
    if serving is not None:
        key_sets += 1
        seen["serving.json"] = serving.get("schema_fingerprint")
        if serving.get("schema_fingerprint") != expected:
            problems.append("the package's serving.json schema_fingerprint differs from the contract")
        feats = serving.get("features")
        if feats != list(FEATURES):
            extra = sorted(set(feats or []) - set(FEATURES))
            missing = [f for f in FEATURES if f not in (feats or [])]
            problems.append("the package's features differ from the contract"
                            + (f" (extra: {extra})" if extra else "") + (f" (missing: {missing})" if missing else "")
                            + ("" if extra or missing else " (order)"))
    elif serving_problem:
        problems.append(serving_problem)
    if ev.pyfunc_checked and ev.pyfunc_model_id:
        key_sets += 1
        inputs = ev.signature_inputs
        if inputs is None:
            problems.append("the pyfunc model has no input signature")
        else:
            allowed = {"id", *FEATURES}
            extra, missing = sorted(set(inputs) - allowed), sorted(allowed - set(inputs))
            if extra:
                problems.append(f"the pyfunc signature has keys outside the contract: {extra}")
            if missing:
                problems.append(f"the pyfunc signature lacks contract keys: {missing}")
    if key_sets == 0 and not problems:
        problems.append("no record of the run's feature keys (no readable package, no pyfunc signature)")
    value = f"fingerprint {str(fp)[:12]}" if fp else "no fingerprint"
    return CheckResult("schema", not problems, value, f"contract {expected[:12]}, {len(FEATURES)} features",
                       "; ".join(problems), {"expected": expected, "seen": seen})


def run_checks(ev: Evidence, th: Thresholds, *, strict: bool) -> list[CheckResult]:
    return [check_class_balance(ev, th), check_macro_f1(ev, th, strict), check_class_f1(ev, th, strict),
            check_artifacts(ev), check_schema(ev)]


# ------------------------------------------------------------------------------------------ report
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


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False, default=str))


# ----------------------------------------------------------------------------------------- registry
def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def versions_of_run(client: Any, model_name: str, run_id: str) -> list[Any]:
    """Live versions of ``model_name`` created from ``run_id``, lowest version first."""
    found = client.search_model_versions(f"name = '{_quote(model_name)}' and run_id = '{_quote(run_id)}'")
    return sorted(found, key=lambda mv: int(mv.version))


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def register_once(client: Any, model_name: str, run_id: str, model_id: str, tags: dict[str, str]) -> tuple[Any, bool]:
    """The run's version of ``model_name``: the existing one, or a new one (tags set atomically at creation).

    Racing gates on the same run can both create a version; afterwards each keeps the lowest version of
    the run and deletes its own duplicate, so exactly one survives. Returns (version, created_now)."""
    import mlflow

    existing = versions_of_run(client, model_name, run_id)
    if existing:
        return existing[0], False
    mv = mlflow.register_model(f"models:/{model_id}", model_name, tags=tags, await_registration_for=300)
    if str(mv.run_id) != run_id:
        raise GateInfraError(f"registered version {mv.version} reports run {mv.run_id}, expected {run_id}")
    survivors = versions_of_run(client, model_name, run_id)
    keep = survivors[0] if survivors else mv
    if str(keep.version) != str(mv.version):
        client.delete_model_version(model_name, mv.version)
        return keep, False
    return mv, True


def alias_version(client: Any, model_name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if _is_not_found(exc):
            return None
        raise


def version_macro_f1(client: Any, mv: Any) -> float | None:
    """The val macro-F1 a version was registered with (version tag, else its run's metric)."""
    value = _num(_try_float(mv.tags.get("val_macro_f1"))) if mv.tags else None
    if value is None and mv.run_id:
        try:
            value = _num(client.get_run(mv.run_id).data.metrics.get("val_macro_f1"))
        except Exception:  # noqa: BLE001 - a deleted run leaves the champion without a score
            value = None
    return value


def _try_float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def promote(client: Any, model_name: str, alias: str, mv: Any, f1: float | None, *,
            require_better: bool, margin: float) -> dict[str, Any]:
    """Move ``alias`` to ``mv`` unless (require_better) the holder scores higher; then alias ``challenger``.

    MLflow has no compare-and-set on aliases, so after moving the alias it is read back: if a racing
    gate moved it meanwhile, the comparison is made again against the new holder (a few attempts)."""
    decision: dict[str, Any] = {"alias": alias, "version": str(mv.version), "previous": None}
    for attempt in range(_ALIAS_ATTEMPTS):
        holder = alias_version(client, model_name, alias)
        if holder is not None and str(holder.version) == str(mv.version):
            decision.update(outcome="promoted" if attempt else "already_holds_alias")
            break
        if holder is not None and decision["previous"] is None:
            decision["previous"] = str(holder.version)
        if require_better and holder is not None:
            holder_f1 = version_macro_f1(client, holder)
            decision.update(holder_version=str(holder.version), holder_val_macro_f1=holder_f1)
            if holder_f1 is not None and (f1 is None or f1 < holder_f1 + margin):
                client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, mv.version)
                decision.update(outcome="challenger", alias=CHALLENGER_ALIAS,
                                reason=f"val macro-F1 {f1} < {alias} v{holder.version}'s {holder_f1} + margin {margin}")
                return decision
        client.set_registered_model_alias(model_name, alias, mv.version)
        time.sleep(0.2 + random.random() * 0.3)  # let a racing gate's write land before reading back
    else:
        decision["outcome"] = "promoted_contested"
    # A version that was challenger and now holds the alias is no longer a challenger.
    challenger = alias_version(client, model_name, CHALLENGER_ALIAS)
    if alias != CHALLENGER_ALIAS and challenger is not None and str(challenger.version) == str(mv.version):
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)
    return decision


# --------------------------------------------------------------------------------------------- main
@dataclass
class GateOutcome:
    exit_code: int
    report: dict[str, Any]


def _version_tags(run_id: str, checks: Sequence[CheckResult], ev: Evidence, strict: bool) -> dict[str, str]:
    tags = {f"gate.{c.name}": "pass" if c.passed else "fail" for c in checks}
    tags.update({"gate.status": "passed", "gate.strict": str(strict).lower(), "run_id": run_id,
                 "git_commit": ev.run_tags.get("git_commit", "unknown"),
                 "schema_fingerprint": str(ev.metrics.get("schema_fingerprint") if ev.metrics else ""),
                 "val_macro_f1": repr(_num(ev.metrics.get("val_macro_f1")) if ev.metrics else None)})
    return tags


def _log_to_run(client: Any, run_id: str, report: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="gate-report-") as tmp:
        path = Path(tmp) / REPORT_NAME
        write_json_atomic(path, report)
        client.log_artifact(run_id, str(path))
    client.set_tag(run_id, "gate.status", report["status"])
    for c in report["checks"]:
        client.set_tag(run_id, f"gate.{c['name']}", "pass" if c["passed"] else "fail")
    reg = report.get("registration") or {}
    if reg.get("version"):
        client.set_tag(run_id, "gate.model_version", f"{reg['model_name']}/{reg['version']}")


def gate_output_dir(out: Path, th: Thresholds, *, strict: bool) -> GateOutcome:
    ev = evidence_from_dir(out)
    checks = run_checks(ev, th, strict=strict)
    passed = all(c.passed for c in checks)
    report = _report(ev, checks, th, strict, "passed" if passed else "failed")
    return GateOutcome(0 if passed else 1, report)


def _report(ev: Evidence, checks: Sequence[CheckResult], th: Thresholds, strict: bool, status: str,
            **extra: Any) -> dict[str, Any]:
    return {"status": status, "source": ev.source, "metrics_source": ev.metrics_source, "strict": strict,
            "thresholds": asdict(th),
            "checks": [asdict(c) for c in checks], **extra}


def gate_run(run_id: str, th: Thresholds, *, strict: bool, model_name: str, alias: str,
             require_better: bool, margin: float) -> GateOutcome:
    """Check an MLflow run; register + alias on pass. Raises GateInfraError for exit-2 situations."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if _is_not_found(exc) or getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE":
            raise GateInfraError(f"run {run_id!r} not found on {mlflow.get_tracking_uri()}") from None
        raise
    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        ev = evidence_from_run(client, run, Path(tmp))
        checks = run_checks(ev, th, strict=strict)
        passed = all(c.passed for c in checks)
        tracking = {"tracking_uri": mlflow.get_tracking_uri(), "run_id": run_id}
        if not passed:
            report = _report(ev, checks, th, strict, "failed", **tracking, registration=None)
            _log_to_run(client, run_id, report)
            return GateOutcome(1, report)
        f1 = _num(ev.metrics.get("val_macro_f1")) if ev.metrics else None
        mv, created = register_once(client, model_name, run_id, ev.pyfunc_model_id or "",
                                    _version_tags(run_id, checks, ev, strict))
        decision = promote(client, model_name, alias, mv, f1, require_better=require_better, margin=margin)
        registration = {"model_name": model_name, "version": str(mv.version), "created": created,
                        "require_better": require_better, "margin": margin, **decision,
                        "uri": f"models:/{model_name}@{decision['alias']}"}
        report = _report(ev, checks, th, strict, "passed", **tracking, registration=registration)
        _log_to_run(client, run_id, report)
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
    p.add_argument("--strict", action="store_true", help="checks 2 and 3 use the bootstrap CI lower bound")
    p.add_argument("--require-better", action=argparse.BooleanOptionalAction, default=True,
                   help="replace the alias holder only if val macro-F1 is not lower (default: on)")
    p.add_argument("--margin", type=float, default=None,
                   help="with --require-better: needed improvement over the holder (default: checks file)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    return p


def _print_summary(outcome: GateOutcome) -> None:
    r = outcome.report
    print(f"shipping gate: {r['source']}  strict={'yes' if r['strict'] else 'no'}")
    checks = [CheckResult(**c) for c in r["checks"]]
    print(format_table(checks))
    if r["strict"]:
        print("  (* = the number compared with the threshold)")
    elif any(c.name in ("val_macro_f1", "class_f1") for c in checks):
        print("  (* = the number compared with the threshold; --strict compares the CI lower bound)")
    reg = r.get("registration")
    status = r["status"].upper()
    if reg:
        verb = {"challenger": f"registered as challenger (champion v{reg.get('holder_version')} scores higher)",
                "already_holds_alias": f"already {reg['alias']}"}.get(reg.get("outcome"), f"alias {reg['alias']} -> this version")
        print(f"status: {status}  {reg['model_name']} version {reg['version']} "
              f"({'new' if reg['created'] else 'existing'}), {verb}: {reg['uri']}")
    elif r["status"] == "failed":
        print(f"status: {status}  nothing registered, no alias moved")
    else:
        print(f"status: {status}  (local check: nothing registered)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        th = load_thresholds(args.checks)
        strict = args.strict or th.strict
        margin = th.margin if args.margin is None else _fraction(args.margin, "--margin", lo=-1.0)
        if args.output_dir is not None:
            outcome = gate_output_dir(args.output_dir, th, strict=strict)
        else:
            import mlflow

            if args.tracking_uri:
                mlflow.set_tracking_uri(args.tracking_uri)
            outcome = gate_run(args.run_id, th, strict=strict, model_name=args.model_name, alias=args.alias,
                               require_better=args.require_better, margin=margin)
    except (GateUsageError, GateInfraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - server/registry/network failures: exit 2, one line, no traceback
        print(f"error: the gate could not finish ({type(exc).__name__}: {_one_line(exc)}); "
              "see the run and registry state before retrying", file=sys.stderr)
        return 2
    _print_summary(outcome)
    if args.report is not None:
        try:
            write_json_atomic(args.report, outcome.report)
        except OSError as exc:
            print(f"error: cannot write --report {args.report}: {exc}", file=sys.stderr)
            return 2
    return outcome.exit_code


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0][:300] if text else "no message"


if __name__ == "__main__":
    # Fail fast in CI when the server is down, rather than MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    sys.exit(main())
