"""The labeler's rule sets (v1, v2, v3): the noise-free label of an event, and the Bayes ceiling they
score on a noisy validation set. ``demo_kit.sample_data`` labels its synthetic events with them.

v1 and v2 are conjunctions of a few conditions: a tree finds them with a handful of splits. v3 is a
scored rule: a weighted sum of eight features (integer points, so every comparison is exact) against a
cut-off that depends on the session *and* the volatility regime (an interaction, not a sum), inside a
leg-index window that is open at both ends. No single split, and no short chain of splits on one
feature, captures it. Its parameters (:data:`V3_PARAMETERS`) were fixed before any model was measured
on it (docs/quality.md) and are written into every v3 data card.

The rule sets
-------------
Labels come from documented "merged rules" applied to the features exactly as written to the files
(``wave_strength`` has 2 decimals, so thresholds are exact; ``atr``'s absolute value is never used
because its scale depends on the symbol -- v3 only compares it with the reference of its own scale
band). Every input of a rule appears in the serialized model text.

``v1`` (default) -- external structure + trigger + pullback filter + session filter:

* **long** if all of
  1. ``ext_dir == 1`` (bullish external structure),
  2. a bullish trigger: ``ext_choch_up``, or (``fvg_up`` and ``fvg_retest``),
  3. ``pb_wave_strength_ok`` (the pullback passed the strength filter),
  4. session filter: ``session`` is ``london`` or ``new_york``, or ``wave_strength >= 0.65``
     (an Asia event only counts with a strong wave);
* **short** if the mirror image holds: ``ext_dir == -1``, a bearish trigger (``ext_choch_down``, or
  ``fvg_down`` and ``fvg_retest``), ``pb_wave_strength_ok``, and the same session filter;
* **no_trade** otherwise.

``v2`` -- internal structure + first FVG of an early MGann leg (ignores ``ext_dir``, the CHoCH flags,
``fvg_retest``, ``pb_wave_strength_ok``, ``wave_strength`` and ``session``):

* **long** if ``int_dir == 1`` and ``fvg_up`` and ``mgann_leg_first_fvg`` and
  ``1 <= mgann_leg_index <= 3``;
* **short** if ``int_dir == -1`` and ``fvg_down`` and ``mgann_leg_first_fvg`` and
  ``1 <= mgann_leg_index <= 3``;
* **no_trade** otherwise.

``v3`` -- a scored rule (the harder set: a weighted sum with interactions and thresholds, so that no
single split captures it; parameters in ``demo_kit.rules.V3_*`` and in the data card's
``rules_parameters``, fixed before any model was measured on it). With d = ``ext_dir``:

* **no_trade** if ``ext_dir == 0`` or ``mgann_leg_index`` is outside the window 2..5;
* otherwise a score in integer points, counted in the direction d (for d = -1, "up" reads "down"):
  ``round(100 * wave_strength) - 50``, plus ``int_dir``: +40 if equal to d, -30 if opposite;
  CHoCH: +45 in d, -45 against d; an FVG in d: +30, and +20 more if ``fvg_retest``;
  ``mgann_leg_first_fvg``: +20; ``pb_wave_strength_ok``: +25;
* **long** (d = 1) / **short** (d = -1) if the score reaches the cut-off of the event's session and
  volatility regime, **no_trade** otherwise:

  ========  ====  ========
  session   calm  volatile
  ========  ====  ========
  asia        95        70
  london      70        80
  new_york    60        85
  ========  ====  ========

  "volatile" means ``atr`` at or above the reference ATR of its scale band: 1.25e-3 below atr 0.02
  (FX majors), 0.16 below 0.7 (JPY pairs), 3.0 below 6 (gold), 12 above (index). The band is read off
  ``atr`` itself, so the regime is a function of a feature the model sees, not of the hidden symbol.
  On ``sample_features`` events: about 12 % long, 11 % short, 77 % no_trade before noise; 47 % volatile.

(The two conditions of a rule set can never both hold: ``ext_dir``/``int_dir`` cannot be 1 and -1 at once.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from sklearn.metrics import f1_score

from processor.schema import LABELS

RULES: tuple[str, ...] = ("v1", "v2", "v3")
ASIA_MIN_WAVE = 0.65  # v1: an Asia-session event only trades with a wave at least this strong
V2_MAX_LEG = 3  # v2: only the first three MGann legs

# v3 -- points of the weighted sum, in the direction d = ext_dir of the trade (see _v3_score).
V3_POINTS: dict[str, int] = {
    "int_with": 40,  # internal structure agrees with the external one
    "int_against": -30,  # internal structure runs against it (a pullback still in progress)
    "choch_with": 45,  # a change of character in the trade's direction
    "choch_against": -45,
    "fvg_with": 30,  # a fair-value gap in the trade's direction ...
    "fvg_retest": 20,  # ... that was retested (only counts with fvg_with)
    "first_fvg": 20,  # the first FVG of its MGann leg
    "pb_ok": 25,  # the pullback filter passed
}
# wave_strength adds round(100 * wave_strength) - 50 points: -50 .. +50, linear, no threshold of its own.
V3_WAVE_CENTER = 50
# Cut-off per (session, volatility regime). Not additive: a volatile market lowers the bar in Asia
# (a quiet session needs a move) but raises it in London and New York (whipsaws).
V3_CUTOFF: dict[tuple[str, bool], int] = {
    ("asia", False): 95, ("asia", True): 70,
    ("london", False): 70, ("london", True): 80,
    ("new_york", False): 60, ("new_york", True): 85,
}
# Volatility regime from atr alone (the symbol is not a feature): atr is compared with the reference
# ATR of its scale band (band upper bound, reference), so the regime is a pure function of a
# feature the model sees. The bands follow the instruments' scales (FX majors, JPY pairs, gold,
# index); "volatile" = atr >= the band's reference.
V3_ATR_BANDS: tuple[tuple[float, float], ...] = ((0.02, 1.25e-3), (0.7, 0.16), (6.0, 3.0), (float("inf"), 12.0))
V3_LEG_WINDOW = (2, 5)  # trade only MGann legs 2..5: leg 1 is often a false start, after leg 5 it is late
V3_PARAMETERS: dict[str, Any] = {
    "points": V3_POINTS, "wave_center": V3_WAVE_CENTER,
    "cutoff": {f"{session}/{'volatile' if vol else 'calm'}": c for (session, vol), c in V3_CUTOFF.items()},
    # JSON has no infinity: the open last band is written as null.
    "atr_bands": [{"atr_below": None if b == float("inf") else b, "reference_atr": r} for b, r in V3_ATR_BANDS],
    "leg_window": list(V3_LEG_WINDOW),
}


def rule_parameters(rules: str) -> dict[str, Any] | None:
    """The tunable parameters of a rule set, for its data card; None for v1 and v2, whose cards
    predate this entry (their files stay byte-identical; their constants are in the docstring)."""
    check_rules(rules)
    return V3_PARAMETERS if rules == "v3" else None


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


def volatile(atr: float) -> bool:
    """v3's volatility regime: atr at or above the reference ATR of its scale band."""
    return next(atr >= ref for below, ref in V3_ATR_BANDS if atr < below)


def _v3_score(f: Mapping[str, Any], d: int) -> int:
    """The weighted sum of v3, in integer points, for a trade in direction d (1 long, -1 short)."""
    up = d == 1
    points = V3_POINTS
    int_dir = int(f["int_dir"])
    score = round(100 * float(f["wave_strength"])) - V3_WAVE_CENTER
    score += points["int_with"] if int_dir == d else points["int_against"] if int_dir == -d else 0
    choch_up, choch_down = bool(f["ext_choch_up"]), bool(f["ext_choch_down"])
    choch_with, choch_against = (choch_up, choch_down) if up else (choch_down, choch_up)
    score += points["choch_with"] * choch_with + points["choch_against"] * choch_against
    if bool(f["fvg_up"] if up else f["fvg_down"]):
        score += points["fvg_with"] + points["fvg_retest"] * bool(f["fvg_retest"])
    score += points["first_fvg"] * bool(f["mgann_leg_first_fvg"]) + points["pb_ok"] * bool(f["pb_wave_strength_ok"])
    return score


def _label_v3(f: Mapping[str, Any]) -> str:
    d = int(f["ext_dir"])
    lo, hi = V3_LEG_WINDOW
    if d == 0 or not lo <= int(f["mgann_leg_index"]) <= hi:
        return "no_trade"
    if _v3_score(f, d) < V3_CUTOFF[(str(f["session"]), volatile(float(f["atr"])))]:
        return "no_trade"
    return "long" if d == 1 else "short"


_RULE_FUNCS = {"v1": _label_v1, "v2": _label_v2, "v3": _label_v3}


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
