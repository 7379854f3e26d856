"""The shipping thresholds: read from gates/ship_checks.yaml, the only place their values live.

A stricter (or looser) ``--checks`` file is laid over the shipped one: a key it leaves out keeps the
shipped value (``class_f1`` and ``strict`` are replaced whole), so no number is repeated in code."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from processor.cli import UserError
from processor.schema import LABELS

# The repository's checks file (this package is installed editable from the repository).
DEFAULT_CHECKS = Path(__file__).resolve().parents[3] / "gates" / "ship_checks.yaml"


class GateUsageError(UserError):
    """Bad arguments or checks file: exit 2."""


@dataclass(frozen=True)
class Thresholds:
    min_share: float
    max_share: float
    min_macro_f1: float
    class_f1: dict[str, float]
    strict: bool
    margin: float
    # Optional sixth check: val macro-F1 >= the named baseline's (same metrics.json) - baseline_margin.
    beats_baseline: bool = False
    baseline: str = ""
    baseline_margin: float = 0.0
    # Optional check: the run's metrics.json says its train/val split does not overlap in time.
    time_leakage: bool = False
    # Optional check: every class's F1 rests on >= min_support_events val events.
    min_support: bool = False
    min_support_events: int = 0


_ALLOWED = {"class_balance": {"min_share", "max_share"}, "val_macro_f1": {"min"}, "class_f1": set(LABELS),
            "strict": None, "champion": {"margin"}, "beats_baseline": {"enabled", "baseline", "margin"},
            "time_leakage": {"enabled"}, "min_support": {"enabled", "events"}}
_MERGED = ("class_balance", "val_macro_f1", "champion", "beats_baseline", "time_leakage",
           "min_support")  # mappings merged key by key over the shipped file


def fraction(value: Any, where: str, *, lo: float = 0.0, hi: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise GateUsageError(f"{where}: expected a number between {lo} and {hi}, got {value!r}")
    return float(value)


def _read_checks(path: Path) -> dict[str, Any]:
    """The file's mapping, with every key checked: unknown keys are errors so a typo cannot silently
    relax a check."""
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
    return raw


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = {**base.get(key, {}), **value} if key in _MERGED else value
    return merged


def _required(raw: dict[str, Any], path: Path, *keys: str) -> Any:
    node: Any = raw
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise GateUsageError(f"{path}: missing {'.'.join(keys)} (and no shipped {DEFAULT_CHECKS.name} "
                                 "to take it from)")
        node = node[key]
    return node


def load_thresholds(path: Path = DEFAULT_CHECKS) -> Thresholds:
    """The thresholds of ``path`` laid over the shipped gates/ship_checks.yaml."""
    path = Path(path)
    raw = _read_checks(path)
    if path.resolve() != DEFAULT_CHECKS and DEFAULT_CHECKS.is_file():
        raw = _overlay(_read_checks(DEFAULT_CHECKS), raw)
    min_share = fraction(_required(raw, path, "class_balance", "min_share"), f"{path}: class_balance.min_share")
    max_share = fraction(_required(raw, path, "class_balance", "max_share"), f"{path}: class_balance.max_share")
    if min_share > max_share:
        raise GateUsageError(f"{path}: class_balance.min_share {min_share} > max_share {max_share}")
    min_f1 = fraction(_required(raw, path, "val_macro_f1", "min"), f"{path}: val_macro_f1.min")
    class_f1 = {k: fraction(v, f"{path}: class_f1.{k}") for k, v in _required(raw, path, "class_f1").items()}
    strict = raw.get("strict", False)
    if not isinstance(strict, bool):
        raise GateUsageError(f"{path}: strict must be true or false, got {strict!r}")
    margin = fraction(raw.get("champion", {}).get("margin", 0.0), f"{path}: champion.margin", lo=-1.0)
    bb = raw.get("beats_baseline", {})
    enabled = bb.get("enabled", False)
    if not isinstance(enabled, bool):
        raise GateUsageError(f"{path}: beats_baseline.enabled must be true or false, got {enabled!r}")
    baseline = bb.get("baseline", "")
    if enabled and (not isinstance(baseline, str) or not baseline):
        raise GateUsageError(f"{path}: beats_baseline.baseline must name a baseline of metrics.json "
                             "(e.g. hist_gradient_boosting)")
    bmargin = fraction(bb.get("margin", 0.0), f"{path}: beats_baseline.margin") if enabled else 0.0
    leak = raw.get("time_leakage", {}).get("enabled", False)
    if not isinstance(leak, bool):
        raise GateUsageError(f"{path}: time_leakage.enabled must be true or false, got {leak!r}")
    support, events = _min_support(raw, path)
    return Thresholds(min_share, max_share, min_f1, class_f1, strict, margin, enabled, baseline or "", bmargin,
                      leak, support, events)


def _min_support(raw: dict[str, Any], path: Path) -> tuple[bool, int]:
    enabled = raw.get("min_support", {}).get("enabled", False)
    if not isinstance(enabled, bool):
        raise GateUsageError(f"{path}: min_support.enabled must be true or false, got {enabled!r}")
    events = _required(raw, path, "min_support", "events")
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise GateUsageError(f"{path}: min_support.events must be an integer >= 1, got {events!r}")
    return enabled, events
