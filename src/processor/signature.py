"""The logged pyfunc's MLflow signature: the event contract's keys and types, and its predict-time params.

Beside :mod:`processor.serving` (the pyfunc, which re-exports both names) rather than in it, so that
:func:`processor.tracking.log_pyfunc` can sign the model without importing the model's code: it names
serving.py by path (``python_model``), and that file travels in ``code_paths``.
"""

from __future__ import annotations

from typing import Any

# Predict-time params (``model.predict(frame, params={...})``; JSON ``"params"`` of a serving request):
# name -> (MLflow param type, default). tracking.log_pyfunc puts them in the signature, without which
# MLflow drops every param. None = not given.
PYFUNC_PARAMS: dict[str, tuple[str, Any]] = {
    # Refuse (HTTP 400) a batch of >= processor.drift.MIN_EVENTS events where a feature's PSI exceeds it.
    "max_psi": ("double", None),
    # Abstain below this top probability; not given = the model's own (trust.min_confidence at training).
    "min_confidence": ("double", None),
}


def model_signature(outputs: Any) -> Any:
    """The pyfunc's signature: the contract's keys with their types (processor.schema.signature_columns),
    ``outputs`` as given, and the predict-time params (:data:`PYFUNC_PARAMS`)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    from processor.schema import signature_columns

    # Params spelled out as ParamSpecs: infer_signature(params=...) cannot type a None default (off).
    signature = ModelSignature(
        inputs=Schema([ColSpec(c["type"], c["name"], required=c["required"]) for c in signature_columns()]),
        outputs=outputs,
        params=ParamSchema([ParamSpec(name, dtype, default) for name, (dtype, default) in PYFUNC_PARAMS.items()]))
    # The flag MLflow sets for a signature taken from predict's type hints, meaning "the model checks
    # its input": MLflow neither casts nor filters the request (see the module docstring). Stored in
    # MLmodel as ``is_signature_from_type_hint``; the gate refuses a signature without it.
    signature._is_signature_from_type_hint = True
    return signature
