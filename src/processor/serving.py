"""The registered model: an MLflow pyfunc that checks its input against the event contract and
predicts with ``model_final.zip``.

It is logged "from code" (MLflow stores this file with the model and runs it at load time; the
``set_model`` call at the bottom is what MLflow looks for) and the ``processor`` package travels with
it as ``code_paths``, so a serving host needs only the model's own ``requirements.txt``: not this
project, not its cache. The base weights travel too when they are the demo base, or when the run was
trained with ``--bundle-base``; otherwise the base is resolved by hub id and revision on the host.

Requests: ``{"inputs": [event, ...]}``, each event a contract record without ``label`` (or a DataFrame
through ``mlflow.pyfunc``). The signature (:func:`model_signature`) lists every key with its type, for
the MLflow UI and for clients, and is marked as checked by the model itself: MLflow then hands the
events over as sent. Enforced by MLflow, it would cast them first (``"true"`` and ``7`` to a flag's
``True``, ``1.5`` to ``1``) and silently drop unknown keys, so the contract check below would pass
values the contract refuses. The cost: MLflow answers the pandas request formats
(``dataframe_records``, ``dataframe_split``, ``instances``) with its own HTTP 400 asking for ``inputs``.

Input that breaks the contract, or is not a list of events at all, raises ``MlflowException`` with
``INVALID_PARAMETER_VALUE``, which ``mlflow models serve`` answers with HTTP 400 and the message (no
stack trace): ``row 2 id=ev-9 key=ext_dir: must be one of -1, 0, 1, got 7``.

Drift (processor.drift): a batch of at least 100 events is compared with the training profile; a
feature over the warning level (``trust.psi_warn``) is logged, and with the ``max_psi`` param a batch
with any feature over it is refused the same way (HTTP 400 naming the features and their PSI).
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model

from processor.names import BASE_ARTIFACT, ZIP_ARTIFACT
from processor.schema import FEATURES

# What a request must look like; ends every message about a request of the wrong shape.
REQUEST_FORMAT = ('expected {"inputs": [event, ...]}: a non-empty list of event objects, each with "id", '
                  '"timestamp" and "symbol" optional, and the 13 features ' + ", ".join(FEATURES))

_log = logging.getLogger(__name__)


class ServingError(MlflowException):
    """An error answered to the client with its message as written.

    MLflow's scoring server rewrites the message of an exception raised by ``predict`` to ``Failed to
    predict data '<the whole request>'. Error: <message>``: for a 1,000-event request with one bad row
    that is a ~350 KB body with the problem at its very end. This keeps the first message set (the
    constructor's) and ignores later rewrites, so the body is the problems alone."""

    @property  # type: ignore[override]
    def message(self) -> str:
        return self.__dict__["_kept_message"]

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__.setdefault("_kept_message", value)


# Problems listed in one served answer; the rest are counted ("... and 12 more problems").
MAX_PROBLEMS_SHOWN = 20


def contract_message(problems: list[Any], max_shown: int = MAX_PROBLEMS_SHOWN) -> str:
    """``row N id=… key=…: what was wrong``, one line per problem (the first ``max_shown``, then how
    many more), under a one-line summary."""
    lines = []
    for p in problems[:max_shown]:
        where = [f"row {p.line}" if p.line is not None else "input"]
        if p.id is not None:
            where.append(f"id={p.id}")
        if p.key is not None:
            where.append(f"key={p.key}")
        lines.append(" ".join(where) + f": {p.message}")
    n = len(problems)
    if n > len(lines):
        lines.append(f"... and {n - len(lines)} more problem{'s' if n - len(lines) != 1 else ''}")
    return f"the input breaks the event contract ({n} problem{'s' if n != 1 else ''}):\n" + "\n".join(lines)


def _request_error(what: str) -> Exception:
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return ServingError(f"{what}; {REQUEST_FORMAT}", error_code=INVALID_PARAMETER_VALUE)


def as_frame(model_input: Any) -> pd.DataFrame:
    """The events of a request as a DataFrame, one row per event, values as sent (the contract check
    comes next). Accepts a DataFrame, a list of event objects, one event object, or columns (an object
    of equally long lists); anything else is a request error naming what was received."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        if model_input and all(isinstance(v, list) for v in model_input.values()):
            lengths = {len(v) for v in model_input.values()}
            if len(lengths) != 1:
                raise _request_error(f"got columns of different lengths {sorted(lengths)}")
            return pd.DataFrame(model_input)
        model_input = [model_input]  # one event
    if not isinstance(model_input, list):
        raise _request_error(f"got {type(model_input).__name__} input")
    if not model_input:
        raise _request_error("got an empty list (no events)")
    for i, item in enumerate(model_input):
        if not isinstance(item, dict):
            raise _request_error(f"inputs[{i}] is a {type(item).__name__}, not an event object")
    return pd.DataFrame.from_records(model_input)


def check_events(model_input: Any) -> list[dict[str, Any]]:
    """A request's events checked against the contract (processor.contract_check.ContractError otherwise), in
    memory. A list of event objects, as served, is checked as sent, the way the same records in a JSONL
    file would be; anything else goes through :func:`as_frame` and the frame check."""
    from processor.contract_check import check_records
    from processor.predict import FRAME_SOURCE, check_frame

    if isinstance(model_input, dict) and not (model_input and all(isinstance(v, list) for v in model_input.values())):
        model_input = [model_input]  # one event
    # (Only empty objects: a frame with no columns, which as_frame's path reports as no events.)
    if isinstance(model_input, list) and all(isinstance(item, dict) for item in model_input) and any(model_input):
        return check_records(model_input, source=FRAME_SOURCE)
    return check_frame(as_frame(model_input))


class EventClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """Input: contract events (a DataFrame, one row per event, unlabeled); output: ``id``, the
    predicted ``label``, one calibrated probability column ``p_<class>`` per class and ``abstained``
    (top probability below the ``min_confidence`` param, or the model's default: label no_trade)."""

    def load_context(self, context: Any) -> None:
        from processor.package import load_packaged_model

        self._model = load_packaged_model(context.artifacts[ZIP_ARTIFACT],
                                          base_dir=context.artifacts.get(BASE_ARTIFACT))

    # model_input: a DataFrame through mlflow.pyfunc, a request's raw "inputs" when served (as_frame).
    # Hinted as a DataFrame: the one hint MLflow neither validates input against nor infers a schema from.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

        from processor.cli import first_line

        try:
            return self._predict(model_input, params)
        except MlflowException:
            raise
        except Exception as exc:  # noqa: BLE001 - a fault of this model, not of the request
            # MLflow would answer with the traceback in the body: it goes to the server's log instead.
            _log.exception("prediction failed")
            raise ServingError(f"the model failed on this request ({type(exc).__name__}: {first_line(exc)}); "
                               "the server log has the details", error_code=INTERNAL_ERROR) from None

    def _predict(self, model_input: Any, params: dict[str, Any] | None) -> pd.DataFrame:
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from processor.calibrate import check_min_confidence
        from processor.contract_check import ContractError

        min_confidence = (params or {}).get("min_confidence")  # None: PackagedModel uses the model's own
        if min_confidence is not None:
            try:
                min_confidence = check_min_confidence(min_confidence)
            except ValueError as exc:
                raise ServingError(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        try:
            events = check_events(model_input)
        except ContractError as exc:
            # A user mistake, not a server fault: HTTP 400 with every problem, and no traceback.
            raise ServingError(contract_message(exc.problems), error_code=INVALID_PARAMETER_VALUE) from None
        self._check_drift(events, (params or {}).get("max_psi"))
        return pd.DataFrame(self._model.predict_columns(events, min_confidence=min_confidence))

    def _check_drift(self, events: list[dict[str, Any]], max_psi: float | None) -> None:
        """Warn (log) when the batch has drifted past the warning level; refuse it past ``max_psi``."""
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from processor.drift import describe, limit_message

        if max_psi is not None and not max_psi >= 0:
            raise ServingError(f"max_psi must be a number >= 0, got {max_psi!r}", error_code=INVALID_PARAMETER_VALUE)
        report = self._model.drift(events)
        if report.warnings:
            _log.warning("input drift: PSI > %g over %d events: %s", report.warn_at, report.n_events,
                         describe(report.warnings))
        if max_psi is not None and report.over(max_psi):
            raise ServingError(limit_message(report, max_psi), error_code=INVALID_PARAMETER_VALUE)


set_model(EventClassifierPyfunc())
