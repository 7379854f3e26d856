"""The model registry: one version per run (race-safe), and the alias moves (champion / challenger)."""

from __future__ import annotations

import random
import time
from typing import Any

from processor.cli import UserError
from processor.record import number

CHALLENGER_ALIAS = "challenger"
_ALIAS_ATTEMPTS = 5
# The registered model's description, set when the model has none (an edited one is kept).
MODEL_DESCRIPTION = (
    "Trading-event classifier (long / short / no_trade): a Qwen causal LM with LoRA adapters and a "
    "last-token classification head, trained with class-weighted focal loss by train loop v3 on events "
    "of the upstream contract. Versions are registered only by the shipping gate (gates/gate.py), each "
    "described with its base model, data, val macro-F1 and gate verdict; alias champion = the best "
    "passing version, challenger = a passing version that did not beat it.")


class GateInfraError(UserError):
    """The tracking server or registry could not be used as needed: exit 2."""


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
    value = number(_try_float(mv.tags.get("val_macro_f1"))) if mv.tags else None
    if value is None and mv.run_id:
        try:
            value = number(client.get_run(mv.run_id).data.metrics.get("val_macro_f1"))
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


def describe(client: Any, model_name: str, mv: Any, version_description: str, *, created: bool) -> None:
    """Descriptions for the registry UI: the model's (if it has none) and the version's (when the gate
    created it, or it has none yet: a re-gated version keeps what it was described with)."""
    if not client.get_registered_model(model_name).description:
        client.update_registered_model(model_name, description=MODEL_DESCRIPTION)
    if created or not getattr(mv, "description", None):
        client.update_model_version(model_name, mv.version, description=version_description)
