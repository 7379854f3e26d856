"""Template qwen-v1 against Qwen's real vocabulary: every value of every feature in the contract is
exactly one token, in a fixed layout, and an event costs at most 16 Qwen tokens."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from processor.qwen_vocab import qwen_tokenizer, qwen_tokens_per_event
from demo_kit.sample_data import sample_features
from processor.schema import FEATURES, contract_spec
from processor.serialize import N_BINS, QWEN_TEMPLATE, QWEN_WORDS, TEMPLATE_NAME, Serializer, render_events

MAX_QWEN_TOKENS_PER_EVENT = 16  # the target


@pytest.fixture(scope="module")
def fitted() -> Serializer:
    serializer = Serializer.fit(sample_features(2000, np.random.default_rng(0)), template=QWEN_TEMPLATE)
    # Every quantile bin exists, so every bin word is reachable below.
    assert {k: len(v) + 1 for k, v in serializer.edges.items()} == N_BINS
    return serializer


def _values(key: str, spec: dict, serializer: Serializer) -> list:
    """Every value the contract allows that can give a different word (each bin once, every integer)."""
    if key in N_BINS:
        edges = serializer.edges[key]
        return [edges[0] / 2, *edges]  # below the first edge, then the start of every other bin
    if spec["type"] == "boolean":
        return [False, True, 0, 1]
    if "enum" in spec:
        return list(spec["enum"])
    return list(range(spec["minimum"], spec["maximum"] + 1))


def test_every_value_of_every_feature_is_one_qwen_token(fitted):
    tok = qwen_tokenizer()
    base = sample_features(1, np.random.default_rng(1))[0]
    keys = contract_spec()["keys"]
    assert tuple(QWEN_WORDS) == FEATURES  # the layout is the contract's feature order
    for position, key in enumerate(FEATURES):
        seen = set()
        for value in _values(key, keys[key], fitted):
            text = fitted.render(dict(base, **{key: value}))
            ids = tok(text)["input_ids"]
            assert len(ids) == len(FEATURES), f"{key}={value!r}: {tok.convert_ids_to_tokens(ids)}"
            word = text.split(" ")[position]
            assert tok.decode([ids[position]]) == (word if position == 0 else " " + word), (key, value)
            seen.add(word)
        assert seen == set(QWEN_WORDS[key]), f"{key}: words never rendered {set(QWEN_WORDS[key]) - seen}"
    # The first feature's words are one token both at the start of a text and after a space.
    assert all(len(tok(w)["input_ids"]) == 1 == len(tok(" " + w)["input_ids"]) for w in QWEN_WORDS[FEATURES[0]])


def test_words_of_one_feature_are_distinct_tokens():
    tok = qwen_tokenizer()
    for key, words in QWEN_WORDS.items():
        ids = [tuple(tok(" " + w)["input_ids"]) for w in words]
        assert len(set(ids)) == len(words), key


def test_an_event_costs_at_most_16_qwen_tokens():
    events = sample_features(1000, np.random.default_rng(2))
    qwen = qwen_tokens_per_event(render_events(events, template=QWEN_TEMPLATE))
    words = qwen_tokens_per_event(render_events(events, template=TEMPLATE_NAME))
    assert qwen == len(FEATURES) <= MAX_QWEN_TOKENS_PER_EVENT
    assert words > 2 * len(FEATURES)  # why the template exists: words-v1 is split by Qwen's BPE


# The template's tokenizer and build record need the full tokenizer recipe but not the full pretraining
# (the same code for every template: test_model builds and checks it): a short pretraining suffices.
SHORT_PRETRAINING = {"pretrain_events": 640, "pretrain_steps": 10}


@pytest.mark.slow
def test_demo_base_builds_its_tokenizer_from_the_chosen_template(tmp_path):
    import json

    from transformers import AutoTokenizer

    from demo_kit.tiny_base import BUILD_INFO_FILE, TinyRecipe, build_qwen_tiny

    texts = render_events(sample_features(200, np.random.default_rng(3)), template=QWEN_TEMPLATE)
    built = build_qwen_tiny(tmp_path, recipe=replace(TinyRecipe(template=QWEN_TEMPLATE), **SHORT_PRETRAINING))
    info = json.loads((built / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    assert info["template"] == QWEN_TEMPLATE and info["tokens_per_event"] == len(FEATURES)
    tok = AutoTokenizer.from_pretrained(built)
    assert {len(ids) for ids in tok(texts)["input_ids"]} == {len(FEATURES)}


def test_qwen_tiny_resolves_each_template_to_its_own_build(monkeypatch, tmp_path):
    """resolve_model finds the build of the template asked for, and a package's recorded revision finds the
    build it was trained on (the builds themselves: the test above and test_model)."""
    import demo_kit.tiny_base as tiny_base
    from processor.model import ModelNotAvailableError, resolve_model

    built = []
    monkeypatch.setattr(tiny_base, "build_qwen_tiny", lambda *, recipe: built.append(recipe) or tmp_path / recipe.template)
    qwen_revision = tiny_base.TinyRecipe(template=QWEN_TEMPLATE).recipe_hash()
    qwen_base = resolve_model("qwen-tiny", template=QWEN_TEMPLATE)
    assert (qwen_base.path, qwen_base.revision) == (tmp_path / QWEN_TEMPLATE, qwen_revision)
    default = resolve_model("qwen-tiny")
    assert (default.path, default.revision) == (tmp_path / TEMPLATE_NAME, tiny_base.TinyRecipe().recipe_hash())
    assert default.revision != qwen_base.revision
    assert resolve_model("qwen-tiny", revision=qwen_revision).path == qwen_base.path
    assert [r.template for r in built] == [QWEN_TEMPLATE, TEMPLATE_NAME, QWEN_TEMPLATE]
    with pytest.raises(ModelNotAvailableError, match="revision 0123456789abcdef was requested"):
        resolve_model("qwen-tiny", revision="0123456789abcdef")
