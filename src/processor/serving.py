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
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.models import set_model

# Names under which log_pyfunc stores the files the model needs (``context.artifacts`` keys).
ZIP_ARTIFACT = "model_final"
BASE_ARTIFACT = "base"
# The pyfunc's inference params and their defaults: the params schema of the logged signature
# (processor.tracking.log_pyfunc); ``predict(frame, params={...})`` or ``"params"`` in a REST request.
# MLflow infers each param's type from its default, so a default cannot be None: -1.0 stands for "the
# model's own min_confidence" (trust.min_confidence at training time; null = never abstain).
MIN_CONFIDENCE_MODEL_DEFAULT = -1.0
PYFUNC_PARAMS: dict[str, Any] = {"min_confidence": MIN_CONFIDENCE_MODEL_DEFAULT}


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

        min_confidence = (params or {}).get("min_confidence", MIN_CONFIDENCE_MODEL_DEFAULT)
        if min_confidence is not None and min_confidence != MIN_CONFIDENCE_MODEL_DEFAULT:
            try:
                min_confidence = check_min_confidence(min_confidence)
            except ValueError as exc:
                raise MlflowException(f"{exc} (or {MIN_CONFIDENCE_MODEL_DEFAULT:g} for the model's default)",
                                      error_code=INVALID_PARAMETER_VALUE) from None
        else:
            min_confidence = None  # PackagedModel.predict: the model's own
        try:
            events = check_frame(model_input)
        except ContractError as exc:
            # A user mistake, not a server fault: HTTP 400 with every problem, and no traceback.
            raise MlflowException(contract_message(exc.problems), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame(self._model.predict(events, min_confidence=min_confidence))


set_model(EventClassifierPyfunc())
