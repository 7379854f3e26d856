"""Batch prediction with a trained model, and the contract check of in-memory input.

    python -m processor.predict --model outputs/demo/model_final.zip --input events.jsonl --output preds.jsonl
    python -m processor.predict --model models:/train-loop-v3@champion --input events.jsonl --output preds.jsonl
    python -m processor.predict --model runs:/<run_id>/model --input events.jsonl --output preds.jsonl
    python -m processor.predict --model outputs/demo/model_final.zip --input events.jsonl --output preds.jsonl \
        --min-confidence 0.6

``--model`` is a ``model_final.zip`` (loaded directly, no MLflow), an MLflow model URI (``runs:/``,
``models:/``, ...; loaded with ``mlflow.pyfunc.load_model`` from ``MLFLOW_TRACKING_URI``) or a local
MLflow model directory. The input is checked against the event contract with the ``--unlabeled`` rules
of ``processor.validate``; the output has one JSON line per event: ``id``, predicted ``label``, the
calibrated probabilities ``p_long``, ``p_short``, ``p_no_trade`` and ``abstained`` (true when the top
probability is below ``--min-confidence``, or the model's own threshold when the flag is not given: the
label is then no_trade). The output file appears complete or not at all.

Drift: the whole input is compared with the model's training profile (processor.drift): the
population stability index (PSI) per feature, printed on stderr when a feature exceeds the model's
warning level (trust.psi_warn, 0.2 by default), always written by ``--drift-report PATH`` (JSON).
``--max-psi X`` refuses input where any feature's PSI exceeds X: exit 1, no predictions written.
Fewer than 100 events are too few for a drift check: reported as such, never refused.

Exit codes: 0 predicted, 1 the input breaks the contract (every problem on stderr, with line numbers)
or drifted past --max-psi, 2 usage error (missing file, unloadable or tampered model, unreachable
tracking server).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from processor import drift
from processor.calibrate import check_min_confidence
from processor.cli import first_line, run
from processor.contract_check import ContractError, Problem, check_records
from processor.data import UsageError, load_events
from processor.io import write_json_atomic, write_text_atomic
from processor.schema import FEATURES, LABELS

__all__ = ["FRAME_SOURCE", "Predictor", "check_frame", "load_predictor", "main", "predict_file"]

# Problems found in a DataFrame name this as their "file"; their "line" is the 1-based row position.
FRAME_SOURCE = "dataframe row"
OUTPUT_KEYS: tuple[str, ...] = ("id", "label", *(f"p_{name}" for name in LABELS), "abstained")
_URI_SCHEMES = ("runs:/", "models:/", "file:", "s3:", "gs:", "wasbs:", "dbfs:", "http:", "https:", "mlflow-artifacts:")


# ------------------------------------------------------------------------------------ frame checking
def check_frame(frame: pd.DataFrame, *, source: str = FRAME_SOURCE) -> list[dict[str, Any]]:
    """Check a DataFrame of unlabeled events against the contract; return ``[{"id", *FEATURES}]``.

    This is the serving-side twin of ``load_events(path, labeled=False)`` and runs the very same
    checks, in memory (:func:`processor.contract_check.check_records`): a frame passes exactly when the JSONL
    file of its rows, each written as the JSON record it stands for, would. A missing cell
    (``None``/``NaN``, which is how a DataFrame shows a key absent from some records) counts as an
    absent key.

    Raises :class:`ContractError`; each problem's ``file`` is ``source`` and its ``line`` the 1-based
    row position (``dataframe row:3 id=ev-9 key=atr: ...``).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of events, got {type(frame).__name__}")
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise ContractError([Problem(source, None, None, c, "column appears more than once") for c in dupes])
    if frame.empty:
        raise ContractError([Problem(source, None, None, None, "no events (the frame has no rows)")])
    # Column by column: to_dict(orient="records") reads a mixed-dtype frame cell by cell (~1 ms a row).
    cells = zip(*(frame.iloc[:, i].tolist() for i in range(len(columns))))
    return check_records([dict(zip(columns, row)) for row in cells], source=source)


# ----------------------------------------------------------------------------------------- models
class Predictor(Protocol):
    # The model's training feature profile (None when the model does not expose one): the drift reference.
    profile: dict[str, Any] | None

    def __call__(self, events: pd.DataFrame) -> list[dict[str, Any]]: ...


def _looks_like_uri(text: str) -> bool:
    return text.startswith(_URI_SCHEMES)


def load_predictor(model: str, *, batch_size: int = 64, min_confidence: float | None = None
                   ) -> tuple[Predictor, Any]:
    """A function ``frame of checked events -> output rows`` for ``model`` and a ``close()`` handle.

    ``model`` is a ``.zip`` package, a local MLflow model directory or an MLflow model URI;
    ``min_confidence`` None means the model's own abstention threshold.
    Raises :class:`UsageError` with a one-line reason when the model cannot be loaded.
    """
    path = Path(model)
    if not _looks_like_uri(model) and path.is_file():
        from processor.model import ModelNotAvailableError
        from processor.package import PackageError, load_packaged_model

        try:
            packaged = load_packaged_model(path)
        except (PackageError, ModelNotAvailableError) as exc:
            raise UsageError(f"cannot load model {model}: {exc}") from None

        def predict_zip(events: pd.DataFrame) -> list[dict[str, Any]]:
            return packaged.predict(events[["id", *FEATURES]].to_dict(orient="records"), batch_size=batch_size,
                                    min_confidence=min_confidence)

        predict_zip.profile = packaged.spec.feature_profile  # type: ignore[attr-defined]
        return predict_zip, packaged.close
    if not _looks_like_uri(model) and not path.exists():
        raise UsageError(f"--model {model}: no such file, and not a model URI (runs:/..., models:/...)")
    if not _looks_like_uri(model) and not (path / "MLmodel").is_file():
        raise UsageError(f"--model {model}: a directory without an MLmodel file (expected model_final.zip "
                         "or an MLflow model)")
    pyfunc = _load_pyfunc(model)
    params = _pyfunc_params(pyfunc, model, min_confidence)

    def predict_pyfunc(events: pd.DataFrame) -> list[dict[str, Any]]:
        frame = events[["id", *FEATURES]].reset_index(drop=True)
        out: list[dict[str, Any]] = []
        # The pyfunc model batches internally too; chunking here bounds the size of each call.
        for start in range(0, len(frame), batch_size):
            answer = pyfunc.predict(frame.iloc[start:start + batch_size], params=params)
            out.extend(pd.DataFrame(answer).to_dict(orient="records"))
        return out

    predict_pyfunc.profile = _pyfunc_profile(pyfunc)  # type: ignore[attr-defined]
    return predict_pyfunc, lambda: None


def _pyfunc_params(pyfunc: Any, model: str, min_confidence: float | None) -> dict[str, Any] | None:
    """The pyfunc's params for ``min_confidence``; a model logged without that param would ignore it
    (MLflow only warns), so asking it to abstain is a usage error."""
    if min_confidence is None:
        return None
    schema = pyfunc.metadata.get_params_schema()
    if schema is None or "min_confidence" not in {p.name for p in schema.params}:
        raise UsageError(f"--min-confidence: model {model} was logged without a min_confidence param "
                         "(trained before abstention existed); use its model_final.zip or retrain")
    return {"min_confidence": min_confidence}


def _load_pyfunc(uri: str) -> Any:
    import mlflow
    from mlflow.exceptions import MlflowException

    from processor.quiet import no_artifact_progress

    try:
        with no_artifact_progress():
            return mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise UsageError(f"cannot load model {uri} (tracking: {mlflow.get_tracking_uri()}): "
                         f"{first_line(exc)}") from None
    except OSError as exc:  # connection refused / DNS after MLflow's retries
        raise UsageError(f"cannot load model {uri} (tracking: {mlflow.get_tracking_uri()}): {exc}") from None


def _pyfunc_profile(pyfunc: Any) -> dict[str, Any] | None:
    """The training feature profile of the package inside a processor pyfunc (processor.serving), so a
    URI gets the same drift check as the zip; None for any other kind of MLflow model."""
    from mlflow.exceptions import MlflowException

    try:
        inner = pyfunc.unwrap_python_model()
    except MlflowException:  # not a python_model pyfunc
        return None
    packaged = getattr(inner, "_model", None)
    return packaged.spec.feature_profile if isinstance(getattr(packaged, "serving", None), dict) else None


# ---------------------------------------------------------------------------------------- the job
def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {"id": str(row["id"]), "label": str(row["label"])}
    out.update({k: float(row[k]) for k in OUTPUT_KEYS[2:-1]})
    out["abstained"] = bool(row.get("abstained", False))  # models logged before abstention never abstain
    return out


def write_jsonl_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as JSON lines to a temp file beside ``path``, then rename: no partial file ever."""
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
                                           for row in rows))


def predict_file(model: str, input_path: Path, output_path: Path, *, batch_size: int = 64,
                 min_confidence: float | None = None, max_psi: float | None = None,
                 drift_report: Path | None = None) -> int:
    """Validate ``input_path``, check drift, predict with ``model``, write ``output_path``; return the
    event count.

    Raises :class:`ContractError` (bad input; nothing written), :class:`processor.drift.DriftError`
    (a feature's PSI over ``max_psi``; nothing written) or :class:`UsageError`.
    """
    for flag, path in (("--output", output_path), ("--drift-report", drift_report)):
        if path is not None and Path(input_path).resolve() == Path(path).resolve():
            raise UsageError(f"{flag} {path} is the input file; choose another path")
    if drift_report is not None and Path(drift_report).resolve() == Path(output_path).resolve():
        raise UsageError(f"--drift-report {drift_report} is the --output file; choose another path")
    events = load_events(input_path, labeled=False)  # before loading a model: bad data fails fast
    predict, close = load_predictor(model, batch_size=batch_size, min_confidence=min_confidence)
    try:
        # The whole file at once (not per batch): PSI needs enough events to mean anything.
        check_drift(drift.check(getattr(predict, "profile", None), events), max_psi=max_psi,
                    report_path=drift_report, source={"model": model, "input": str(input_path)})
        rows = [_plain(r) for r in predict(events)]
    finally:
        close()
    if [r["id"] for r in rows] != list(events["id"]):
        raise RuntimeError("the model returned predictions that do not line up with the input events")
    write_jsonl_atomic(Path(output_path), rows)
    return len(rows)


def check_drift(report: drift.DriftReport, *, max_psi: float | None, report_path: Path | None = None,
                source: dict[str, Any] | None = None) -> None:
    """Tell the user about drift (stderr), write the JSON report, raise DriftError over ``max_psi``."""
    refused = max_psi is not None and bool(report.over(max_psi))
    if report_path is not None:
        write_json_atomic(report_path, {**(source or {}), **report.to_dict(), "max_psi_limit": max_psi,
                                        "refused": refused}, allow_nan=False)
    if report.warnings or refused or not report.checked:
        print(report.summary(), file=sys.stderr)
    if report.warnings or refused:
        print(report.table(), file=sys.stderr)
    if refused:
        raise drift.DriftError(drift.limit_message(report, max_psi))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _confidence(text: str) -> float:
    try:
        return check_min_confidence(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor.predict", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model_final.zip, runs:/<run_id>/model, "
                   "models:/<name>@<alias> or an MLflow model directory")
    p.add_argument("--input", required=True, type=Path, help="JSONL events (label optional, ignored)")
    p.add_argument("--output", required=True, type=Path, help="JSONL predictions (written atomically)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="events per forward pass (default 64)")
    p.add_argument("--max-psi", type=_non_negative_float, default=None, metavar="X",
                   help="exit 1 without predicting when any feature's PSI against the training profile exceeds X "
                        f"(not applied to inputs under {drift.MIN_EVENTS} events: too few for a drift check)")
    p.add_argument("--drift-report", type=Path, default=None, metavar="PATH",
                   help="write the drift check (PSI per feature) as JSON, also when predictions are refused")
    p.add_argument("--min-confidence", type=_confidence, default=None, metavar="P",
                   help="abstain (label no_trade, abstained: true) when the top probability is below P, "
                        "in [0, 1]; 0 never abstains (default: the model's trust.min_confidence)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse exits 2 on usage errors

    def job() -> int:
        n = predict_file(args.model, args.input, args.output, batch_size=args.batch_size,
                         min_confidence=args.min_confidence, max_psi=args.max_psi, drift_report=args.drift_report)
        print(f"{n} predictions -> {args.output}")
        return 0

    def data_error(exc: Any) -> str:
        if isinstance(exc, ContractError):
            return f"{args.input} breaks the event contract; no predictions written.\n{exc.report(None)}"
        return f"{exc}; no predictions written."

    return run(job, data_error=data_error)


if __name__ == "__main__":
    sys.exit(main())
