"""The registered model: an MLflow pyfunc that checks its input against the event contract and
predicts with ``model_final.zip``.

It is logged "from code" (MLflow stores this file with the model and runs it at load time; the
``set_model`` call at the bottom is what MLflow looks for) and the ``processor`` package travels with
it as ``code_paths``, so a serving host needs only the model's own ``requirements.txt``: not this
project, not its cache. The base weights travel too when they are the demo base, or when the run was
trained with ``--bundle-base``; otherwise the base is resolved by hub id and revision on the host.

Input that breaks the contract raises ``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which
``mlflow models serve`` answers with HTTP 400 and the message (no stack trace):
``row 2 id=ev-9 key=ext_dir: must be one of -1, 0, 1, got 7``.

Drift (processor.drift): a batch of at least 100 events is compared with the training profile; a
feature over the warning level (``trust.psi_warn``) is logged, and with the ``max_psi`` param a batch
with any feature over it is refused the same way (HTTP 400 naming the features and their PSI).
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import set_model

from processor.names import ZIP_ARTIFACT  # also read by tracking.log_pyfunc as serving.ZIP_ARTIFACT

# Names under which log_pyfunc stores the files the model needs (``context.artifacts`` keys; the zip's
# is ZIP_ARTIFACT).
BASE_ARTIFACT = "base"
# Predict-time params (``model.predict(frame, params={...})``; JSON ``"params"`` of a serving request):
# name -> (MLflow param type, default). tracking.log_pyfunc puts them in the signature, without which
# MLflow drops every param. None = not given.
PYFUNC_PARAMS: dict[str, tuple[str, Any]] = {
    # Refuse (HTTP 400) a batch of >= processor.drift.MIN_EVENTS events where a feature's PSI exceeds it.
    "max_psi": ("double", None),
    # Abstain below this top probability; not given = the model's own (trust.min_confidence at training).
    "min_confidence": ("double", None),
}

_log = logging.getLogger(__name__)


def contract_message(problems: list[Any]) -> str:
    """``row N id=… key=…: what was wrong``, one line per problem, under a one-line summary."""
    lines = []
    for p in problems:
        where = [f"row {p.line}" if p.line is not None else "input"]
        if p.id is not None:
            where.append(f"id={p.id}")
        if p.key is not None:
            where.append(f"key={p.key}")
        lines.append(" ".join(where) + f": {p.message}")
    n = len(problems)
    return f"the input breaks the event contract ({n} problem{'s' if n != 1 else ''}):\n" + "\n".join(lines)


class EventClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """Input: contract events (a DataFrame, one row per event, unlabeled); output: ``id``, the
    predicted ``label``, one calibrated probability column ``p_<class>`` per class and ``abstained``
    (top probability below the ``min_confidence`` param, or the model's default: label no_trade)."""

    def load_context(self, context: Any) -> None:
        from processor.package import load_packaged_model

        self._model = load_packaged_model(context.artifacts[ZIP_ARTIFACT],
                                          base_dir=context.artifacts.get(BASE_ARTIFACT))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from processor.calibrate import check_min_confidence
        from processor.data import ContractError
        from processor.predict import check_frame

        min_confidence = (params or {}).get("min_confidence")  # None: PackagedModel uses the model's own
        if min_confidence is not None:
            try:
                min_confidence = check_min_confidence(min_confidence)
            except ValueError as exc:
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        try:
            events = check_frame(model_input)
        except ContractError as exc:
            # A user mistake, not a server fault: HTTP 400 with every problem, and no traceback.
            raise MlflowException(contract_message(exc.problems), error_code=INVALID_PARAMETER_VALUE) from None
        self._check_drift(events, (params or {}).get("max_psi"))
        return pd.DataFrame(self._model.predict(events, min_confidence=min_confidence))

    def _check_drift(self, events: list[dict[str, Any]], max_psi: float | None) -> None:
        """Warn (log) when the batch has drifted past the warning level; refuse it past ``max_psi``."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from processor.drift import describe, limit_message

        if max_psi is not None and not max_psi >= 0:
            raise MlflowException(f"max_psi must be a number >= 0, got {max_psi!r}", error_code=INVALID_PARAMETER_VALUE)
        report = self._model.drift(events)
        if report.warnings:
            _log.warning("input drift: PSI > %g over %d events: %s", report.warn_at, report.n_events,
                         describe(report.warnings))
        if max_psi is not None and report.over(max_psi):
            raise MlflowException(limit_message(report, max_psi), error_code=INVALID_PARAMETER_VALUE)


set_model(EventClassifierPyfunc())
