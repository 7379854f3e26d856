"""The event contract (../shared/contract/events.md), kept in code.

The contract is the source of truth; this module is the project's copy of it.
"""

from __future__ import annotations

# The 13 feature keys, in contract order.
FEATURES: tuple[str, ...] = (
    "ext_dir", "int_dir", "ext_choch_up", "ext_choch_down", "fvg_up", "fvg_down", "fvg_retest",
    "mgann_leg_index", "mgann_leg_first_fvg", "pb_wave_strength_ok", "wave_strength", "atr", "session",
)
# Class ids follow this order everywhere (model head, confusion matrix rows, metrics).
LABELS: tuple[str, ...] = ("long", "short", "no_trade")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
SESSIONS: tuple[str, ...] = ("asia", "london", "new_york")
OPTIONAL_KEYS: tuple[str, ...] = ("timestamp", "symbol")
