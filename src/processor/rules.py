"""The labeler's rule sets (v1, v2): the noise-free label of an event, and the Bayes ceiling they
score on a noisy validation set. ``processor.sample_data`` labels its synthetic events with them; the
rules themselves are described in that module's docstring."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from sklearn.metrics import f1_score

from processor.schema import LABELS

RULES: tuple[str, ...] = ("v1", "v2")
ASIA_MIN_WAVE = 0.65  # v1: an Asia-session event only trades with a wave at least this strong
V2_MAX_LEG = 3  # v2: only the first three MGann legs


def check_rules(rules: str) -> None:
    if rules not in RULES:
        raise ValueError(f"unknown rules {rules!r}; choose one of: {', '.join(RULES)}")


def _label_v1(f: Mapping[str, Any]) -> str:
    session_ok = str(f["session"]) != "asia" or float(f["wave_strength"]) >= ASIA_MIN_WAVE
    if not (bool(f["pb_wave_strength_ok"]) and session_ok):
        return "no_trade"
    ext_dir = int(f["ext_dir"])
    retest = bool(f["fvg_retest"])
    if ext_dir == 1 and (bool(f["ext_choch_up"]) or (bool(f["fvg_up"]) and retest)):
        return "long"
    if ext_dir == -1 and (bool(f["ext_choch_down"]) or (bool(f["fvg_down"]) and retest)):
        return "short"
    return "no_trade"


def _label_v2(f: Mapping[str, Any]) -> str:
    if not (bool(f["mgann_leg_first_fvg"]) and 1 <= int(f["mgann_leg_index"]) <= V2_MAX_LEG):
        return "no_trade"
    int_dir = int(f["int_dir"])
    if int_dir == 1 and bool(f["fvg_up"]):
        return "long"
    if int_dir == -1 and bool(f["fvg_down"]):
        return "short"
    return "no_trade"


_RULE_FUNCS = {"v1": _label_v1, "v2": _label_v2}


def label_event(features: Mapping[str, Any], rules: str = "v1") -> str:
    """The noise-free label of one event under a documented rule set (see the module docstring).

    Accepts any mapping holding the 13 features (extra keys such as ``id`` or ``label`` are ignored);
    0/1 flags and numpy scalars work as well as Python bools and ints.
    """
    check_rules(rules)
    return _RULE_FUNCS[rules](features)


def bayes_ceiling(val_records: Iterable[Mapping[str, Any]] | pd.DataFrame, rules: str = "v1") -> float:
    """Macro-F1 (over all three LABELS) of the noise-free rules against the records' (noisy) labels.

    This is what a perfect learner of the rules would score on this validation set.
    """
    check_rules(rules)
    records = val_records.to_dict("records") if isinstance(val_records, pd.DataFrame) else list(val_records)
    if not records:
        raise ValueError("bayes_ceiling needs at least one validation record")
    y_true = [str(r["label"]) for r in records]
    y_pred = [label_event(r, rules) for r in records]
    return float(f1_score(y_true, y_pred, labels=list(LABELS), average="macro", zero_division=0))
