"""Event -> text: the one serialization template shared by training and prediction.

Tokens per event is the main cost of CPU training on a real Qwen (measured on 2 cores:
~2.5 events/s at 40 tokens, ~1.1 at 96), so the template is terse: short key names glued to their
values (no ``=``: Qwen's pre-tokenizer splits letters from digits anyway, so ``=`` would be one more
token per field), the two CHoCH flags and the three FVG flags packed as digit strings,
``wave_strength`` as a whole percentage, ``atr`` with 3 significant digits. Key order is fixed.
The template's name is stored in the packaged model so that prediction serializes exactly as
training did.

Example (contract keys in brackets)::

    ext1 int1 choch10 fvg101 leg2 first1 pb1 ws64 atr0.00112 london
    [ext_dir] [int_dir] [ext_choch_up ext_choch_down] [fvg_up fvg_down fvg_retest]
    [mgann_leg_index] [mgann_leg_first_fvg] [pb_wave_strength_ok] [wave_strength x100] [atr] [session]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEMPLATE_NAME = "compact-v2"
TEMPLATE = (
    "ext{ext_dir} int{int_dir} choch{ext_choch_up}{ext_choch_down} "
    "fvg{fvg_up}{fvg_down}{fvg_retest} leg{mgann_leg_index} first{mgann_leg_first_fvg} "
    "pb{pb_wave_strength_ok} ws{wave_strength} atr{atr} {session}"
)

_FLAGS = (
    "ext_choch_up", "ext_choch_down", "fvg_up", "fvg_down", "fvg_retest",
    "mgann_leg_first_fvg", "pb_wave_strength_ok",
)


def event_to_text(event: Mapping[str, Any], template: str = TEMPLATE_NAME) -> str:
    """Render one (already validated) event as model input text."""
    if template != TEMPLATE_NAME:
        raise ValueError(f"unknown serialization template {template!r} (this version knows {TEMPLATE_NAME!r})")
    fields = {flag: int(bool(event[flag])) for flag in _FLAGS}
    fields.update(
        ext_dir=int(event["ext_dir"]),
        int_dir=int(event["int_dir"]),
        mgann_leg_index=int(event["mgann_leg_index"]),
        wave_strength=int(round(float(event["wave_strength"]) * 100)),
        atr=f"{float(event['atr']):.3g}",
        session=str(event["session"]),
    )
    return TEMPLATE.format(**fields)
