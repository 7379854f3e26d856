"""The event -> text template: exact output, fixed key order, rounding, unknown template."""

import json

import pytest

from conftest import CONTRACT_DIR
from processor.serialize import TEMPLATE_NAME, event_to_text

EXAMPLES = CONTRACT_DIR / "examples.jsonl"


def test_contract_examples_render_exactly():
    events = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    assert [event_to_text(e) for e in events] == [
        "ext1 int1 choch10 fvg101 leg2 first1 pb1 ws64 atr0.00112 london",
        "ext-1 int0 choch01 fvg010 leg1 first1 pb1 ws50 atr12.5 new_york",  # 0/1 flags and 1.0 as an int
        "ext0 int-1 choch00 fvg000 leg0 first0 pb0 ws0 atr3.1 asia",
    ]


def test_numbers_are_rounded_not_truncated():
    event = json.loads(EXAMPLES.read_text().splitlines()[0])
    event.update(wave_strength=0.675, atr=123.456, mgann_leg_index=100)
    assert event_to_text(event).endswith("leg100 first1 pb1 ws68 atr123 london")
    event.update(wave_strength=1.0, atr=0.000123456)
    assert "ws100 atr0.000123" in event_to_text(event)


def test_unknown_template_is_an_error():
    with pytest.raises(ValueError, match="unknown serialization template 'v0'"):
        event_to_text({}, template="v0")
    assert TEMPLATE_NAME == "compact-v2"
