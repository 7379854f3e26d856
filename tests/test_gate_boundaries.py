"""The gate's bounds at their exact values, in the fast tier: the class-balance check on doctored
metrics, and the champion comparison on a real MLflow model registry (a sqlite store in a temp
directory: no server, no training). test_gate.py runs the same boundaries end to end through the gate
CLI on doctored copies of a trained run (slow tier)."""

from __future__ import annotations

import pytest

from conftest import sqlite_store
from processor.gate.checks import check_class_balance
from processor.gate.evidence import Evidence
from processor.gate.registry import promote
from processor.gate.thresholds import load_thresholds


def _balance(long: float, short: float, no_trade: float) -> bool:
    ev = Evidence(source="doctored", metrics={"class_balance": {"applied": True, "after": {
        "long": long, "short": short, "no_trade": no_trade}}})
    return check_class_balance(ev, load_thresholds()).passed


def test_default_share_bounds_are_the_ones_tested_here():
    th = load_thresholds()
    assert (th.min_share, th.max_share) == (0.30, 0.40)


@pytest.mark.parametrize("shares, passes", [
    ((0.30, 0.30, 0.40), True),  # both bounds exactly: inclusive
    ((0.40, 0.30, 0.30), True),
    ((0.2999, 0.3001, 0.40), False),  # just under the floor
    ((0.4001, 0.30, 0.30), False),  # just over the ceiling
])
def test_class_shares_exactly_at_the_bounds_pass_and_just_outside_fail(shares, passes):
    assert _balance(*shares) is passes


@pytest.fixture(scope="module")
def registry(mlflow_sqlite_template, tmp_path_factory):
    """A real MLflow model registry in a sqlite store (a copy of the session's migrated one)."""
    from mlflow import MlflowClient

    uri = sqlite_store(mlflow_sqlite_template, tmp_path_factory.mktemp("registry"))
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _version(client, name: str, f1: float, tmp_path):
    # The gate registers each version with its val macro-F1 as a tag (what promote compares).
    source = tmp_path / f"model-{f1}"
    source.mkdir()
    return client.create_model_version(name, source=source.as_uri(), tags={"val_macro_f1": str(f1)})


# Binary-exact values: 0.75 + 0.125 == 0.875 with no rounding, so "exactly at holder + margin" is exact.
@pytest.mark.parametrize("challenger_f1, outcome", [(0.875, "champion"), (0.8749, "challenger")])
def test_a_challenger_exactly_at_holder_plus_margin_takes_the_alias(registry, tmp_path, challenger_f1, outcome):
    name = f"boundary-{outcome}"
    registry.create_registered_model(name)
    holder = _version(registry, name, 0.75, tmp_path)
    registry.set_registered_model_alias(name, "champion", holder.version)
    mv = _version(registry, name, challenger_f1, tmp_path)
    decision = promote(registry, name, "champion", mv, challenger_f1, require_better=True, margin=0.125)
    champion = registry.get_model_version_by_alias(name, "champion").version
    if outcome == "champion":
        assert decision["outcome"] in {"promoted", "already_holds_alias"} and champion == mv.version
    else:
        assert decision["outcome"] == "challenger" and champion == holder.version
        assert registry.get_model_version_by_alias(name, "challenger").version == mv.version
