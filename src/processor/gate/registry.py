"""The model registry: one version per run (race-safe), and the alias moves (champion / challenger).

Order of writes, so that a gate killed at any moment leaves a state a rerun completes: the version is
created with its tags AND its description in one request; then the alias moves; then the version gets
the tag ``gate.outcome`` (where the alias went), which marks the gate's work on it as finished. A
version without ``gate.outcome`` and without an alias is one whose gate stopped in between: the next
gate of that run finds it, completes it and says so (``repairs``)."""

from __future__ import annotations

import random
import time
from typing import Any

from processor.cli import UserError
from processor.blocks import number

CHALLENGER_ALIAS = "challenger"
OUTCOME_TAG = "gate.outcome"  # written last: the gate finished with this version
_ALIAS_ATTEMPTS = 5
_TAG_ATTEMPTS = 4
# The registered model's description, set when the model has none (an edited one is kept).
MODEL_DESCRIPTION = (
    "Trading-event classifier (long / short / no_trade): a Qwen causal LM with LoRA adapters and a "
    "last-token classification head, trained with class-weighted focal loss by train loop v3 on events "
    "of the upstream contract. Versions are registered only by the shipping gate (gates/gate.py), each "
    "described with its base model, data, val macro-F1 and gate verdict; alias champion = the best "
    "passing version, challenger = a passing version that did not beat it.")


class GateInfraError(UserError):
    """The tracking server or registry could not be used as needed: exit 2."""


def is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def versions_of_run(client: Any, model_name: str, run_id: str) -> list[Any]:
    """Live versions of ``model_name`` created from ``run_id``, lowest version first."""
    found = client.search_model_versions(f"name = '{_quote(model_name)}' and run_id = '{_quote(run_id)}'")
    return sorted(found, key=lambda mv: int(mv.version))


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def register_once(client: Any, model_name: str, run_id: str, model_id: str, tags: dict[str, str],
                  description: str) -> tuple[Any, bool]:
    """The run's version of ``model_name``: the existing one, or a new one (tags and description set
    atomically at creation).

    Racing gates on the same run can both create a version; afterwards each keeps the lowest version of
    the run and deletes its own duplicate, so exactly one survives. Returns (version, created_now)."""
    existing = versions_of_run(client, model_name, run_id)
    if existing:
        return existing[0], False
    _ensure_registered_model(client, model_name)
    # mlflow.register_model cannot set a description; the client's create_model_version can, so that
    # no version ever exists with its gate tags but without its description.
    mv = client.create_model_version(model_name, f"models:/{model_id}", run_id=run_id, tags=tags,
                                     description=description, model_id=model_id, await_creation_for=300)
    _link_logged_model(client, model_id, model_name, mv.version)
    if str(mv.run_id) != run_id:
        raise GateInfraError(f"registered version {mv.version} reports run {mv.run_id}, expected {run_id}")
    survivors = versions_of_run(client, model_name, run_id)
    keep = survivors[0] if survivors else mv
    if str(keep.version) != str(mv.version):
        client.delete_model_version(model_name, mv.version)
        return keep, False
    return mv, True


def _ensure_registered_model(client: Any, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name, description=MODEL_DESCRIPTION)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _link_logged_model(client: Any, model_id: str, model_name: str, version: Any) -> None:
    """What mlflow.register_model also does: list the version on the logged model (its UI page links
    to its registered versions)."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    listed = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    entries = [*(json.loads(listed) if listed else []), {"name": model_name, "version": str(version)}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(entries)})


def alias_version(client: Any, model_name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if is_not_found(exc):
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


def describe(client: Any, model_name: str, mv: Any, version_description: str, *, created: bool,
             earlier: bool = True) -> list[str]:
    """Descriptions for the registry UI: the model's (if it has none) and, for a version found from an
    earlier gate, its description if it has none (a re-gated version keeps what it was described with).
    Returns the repairs made: what an earlier gate, stopped between registering the version and moving
    the alias, had left undone (empty for a version created now or left complete; ``earlier`` False:
    the version is a racing gate's, still at work on it)."""
    if not client.get_registered_model(model_name).description:
        client.update_registered_model(model_name, description=MODEL_DESCRIPTION)
    if created or not earlier:  # a version created now (or by a racing gate) was described at creation
        return []
    current = client.get_model_version(model_name, mv.version)
    missing = []
    if not current.aliases and OUTCOME_TAG not in (current.tags or {}):
        missing.append("no alias")
    if not current.description:
        client.update_model_version(model_name, mv.version, description=version_description)
        missing.append("no description")
    if not missing:
        return []
    done = {"no alias": "alias decided now", "no description": "description written"}
    return [f"version {mv.version} had {' and '.join(missing)} (an earlier gate stopped after registering "
            f"it); {', '.join(done[m] for m in missing)}"]


def mark_done(client: Any, model_name: str, mv: Any, decision: dict[str, Any]) -> None:
    """The last write of a gate: where the alias went, on the version (see the module docstring)."""
    value = f"{decision.get('outcome')}:{decision.get('alias')}"
    for attempt in range(_TAG_ATTEMPTS):
        try:
            return client.set_model_version_tag(model_name, mv.version, OUTCOME_TAG, value)
        except Exception as exc:  # the store's error for a racing first write of the same key
            if attempt == _TAG_ATTEMPTS - 1 or not _is_duplicate_key(exc):
                raise
            time.sleep(0.1 + random.random() * 0.2)  # the row exists now: the retry updates it


def set_run_tags(client: Any, run_id: str, tags: dict[str, str]) -> None:
    """The gate's tags on its run, in one batch. Racing gates of one run write the same keys at once;
    the SQL stores insert a new tag by select-then-insert, so single ``set_tag`` calls can collide on the
    unique key (seen as ``UNIQUE constraint failed``), while a batch retries the collision itself."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def _is_duplicate_key(exc: Exception) -> bool:
    text = str(exc)
    return "UNIQUE constraint failed" in text or "duplicate key" in text
