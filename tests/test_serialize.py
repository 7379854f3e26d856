"""Event -> text: exact words, bins fitted on the data given (and only that), round trip, legacy template."""

import numpy as np
import pandas as pd
import pytest

from processor.config import TEMPLATES
from processor.record import ServingSpec
from processor.serialize import LEGACY_TEMPLATES, N_BINS, TEMPLATE_NAME, Serializer

EVENT = {"ext_dir": 1, "int_dir": 1, "ext_choch_up": True, "ext_choch_down": False, "fvg_up": True,
         "fvg_down": False, "fvg_retest": True, "mgann_leg_index": 2, "mgann_leg_first_fvg": True,
         "pb_wave_strength_ok": True, "wave_strength": 0.64, "atr": 0.00112, "session": "london"}
# 0/1 flags and an integral float, as the contract allows.
EVENT_INTS = {"ext_dir": -1, "int_dir": 0, "ext_choch_up": 0, "ext_choch_down": 1, "fvg_up": 0, "fvg_down": 1,
              "fvg_retest": 0, "mgann_leg_index": 1.0, "mgann_leg_first_fvg": 1, "pb_wave_strength_ok": 1,
              "wave_strength": 0.5, "atr": 12.5, "session": "new_york"}
# Hand-made edges: wave_strength bins at 0.25 / 0.5 / 0.75, atr at 1.0.
FITTED = Serializer(edges={"wave_strength": (0.25, 0.5, 0.75), "atr": (1.0,)})


def test_words_render_exactly():
    assert FITTED.render(EVENT) == "extup intup chuy chdn fvuy fvdn frty legc lffy pbky wsc atra sesl"
    # 0.5 sits on an edge: a value equal to an edge goes to the bin above it.
    assert FITTED.render(EVENT_INTS) == "extdn intno chun chdy fvun fvdy frtn legb lffy pbky wsc atrb sesn"


def test_every_feature_is_one_word_in_a_fixed_layout():
    rng = np.random.default_rng(0)
    for _ in range(50):
        event = dict(EVENT, ext_dir=int(rng.integers(-1, 2)), mgann_leg_index=int(rng.integers(0, 101)),
                     wave_strength=float(rng.random()), atr=float(rng.lognormal(0, 3)),
                     session=str(rng.choice(["asia", "london", "new_york"])))
        assert len(FITTED.render(event).split(" ")) == 13


def test_leg_index_folds_ten_and_above_into_one_word():
    words = {FITTED.render(dict(EVENT, mgann_leg_index=i)).split()[7] for i in (10, 11, 55, 100)}
    assert words == {"legk"}
    assert FITTED.render(dict(EVENT, mgann_leg_index=9)).split()[7] == "legj"


def test_bins_are_quantiles_of_the_fitting_events_only():
    rng = np.random.default_rng(1)
    train = pd.DataFrame([dict(EVENT, wave_strength=float(w), atr=float(a))
                          for w, a in zip(rng.random(500), rng.lognormal(-5, 1, 500))])
    fitted = Serializer.fit(train)
    expected = np.quantile(train["wave_strength"], np.linspace(0, 1, N_BINS["wave_strength"] + 1)[1:-1],
                           method="lower")
    assert fitted.edges["wave_strength"] == pytest.approx(tuple(expected))
    assert len(fitted.edges["atr"]) == N_BINS["atr"] - 1
    # Fitting on records gives the same edges as on the frame; other data give other edges.
    assert Serializer.fit(train.to_dict("records")) == fitted
    assert Serializer.fit(train.assign(wave_strength=train["wave_strength"] / 2)).edges != fitted.edges
    # Roughly equal-sized bins on the fitting data: every bin word is used.
    words = {fitted.render(e).split()[10] for e in train.to_dict("records")}
    assert len(words) == N_BINS["wave_strength"]


def test_tied_values_give_fewer_distinct_edges():
    train = pd.DataFrame([dict(EVENT, wave_strength=w) for w in [0.5] * 90 + [0.9] * 10])
    assert Serializer.fit(train).edges["wave_strength"] == (0.5, 0.9)


def test_round_trip_through_a_dict():
    data = FITTED.to_dict()
    assert data == {"template": TEMPLATE_NAME, "edges": {"wave_strength": [0.25, 0.5, 0.75], "atr": [1.0]}}
    assert Serializer.from_dict(data) == FITTED
    assert Serializer.from_dict(ServingSpec.from_dict({"template": TEMPLATE_NAME, "serialization": data}).serialization) == FITTED


def test_unfitted_and_unknown_templates_are_errors():
    with pytest.raises(ValueError, match="not fitted"):
        Serializer().render(EVENT)
    with pytest.raises(ValueError, match="unknown serialization template 'v0'"):
        Serializer.from_dict({"template": "v0"})
    with pytest.raises(ValueError, match="unknown serialization template 'v0'"):
        Serializer.fit([EVENT], template="v0")
    assert TEMPLATES[0] == TEMPLATE_NAME and set(LEGACY_TEMPLATES) <= set(TEMPLATES)


def test_packages_from_before_words_v1_still_render_compact_v2():
    legacy = Serializer.from_dict(ServingSpec.from_dict({"template": "compact-v2"}).serialization)  # old serving.json: no "serialization"
    assert legacy.render_all([EVENT, EVENT_INTS]) == [
        "ext1 int1 choch10 fvg101 leg2 first1 pb1 ws64 atr0.00112 london",
        "ext-1 int0 choch01 fvg010 leg1 first1 pb1 ws50 atr12.5 new_york",
    ]
    assert legacy.render(dict(EVENT, wave_strength=0.675, atr=123.456, mgann_leg_index=100)).endswith(
        "leg100 first1 pb1 ws68 atr123 london")


@pytest.mark.parametrize("template", ["words-v1", "qwen-v1"])
def test_render_all_renders_each_event_as_render_does(template):
    # render_all looks the bins of all events up at once; the texts must be render's, in order,
    # including values on a bin edge and beyond the outer edges.
    fitted = Serializer(template=template, edges=FITTED.edges)
    events = [dict(EVENT, wave_strength=w, atr=a) for w in (0.0, 0.25, 0.3, 0.5, 0.75, 1.0)
              for a in (0.001, 1.0, 12.5)] + [EVENT_INTS]
    assert fitted.render_all(events) == [fitted.render(e) for e in events]
    assert len(set(fitted.render_all(events))) == 9  # 4 wave_strength bins x 2 atr bins, and EVENT_INTS
    with pytest.raises(ValueError, match="not fitted"):
        Serializer().render_all([EVENT])
