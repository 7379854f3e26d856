"""The train loop's encode phase (processor.encode): which events each of its outputs comes from. The
serializer's bins and the token counts come from the events as loaded, each once; the model trains on the
oversampled split and is scored on val as loaded. A word-per-token stand-in tokenizer keeps it in the fast
tier (no base to load)."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import tiny_config
from processor.data import load_split, records
from processor.encode import encode
from processor.oversample import oversample
from processor.schema import LABEL2ID
from processor.serialize import Serializer


class WordTokenizer:
    """One token per word, and an end-of-text token where a tokenizer adds its special tokens; remembers
    how many texts each token count was taken over."""

    def __init__(self) -> None:
        self.counted: list[int] = []

    def __call__(self, texts: list[str], *, truncation: bool = False, max_length: int | None = None,
                 add_special_tokens: bool = True, padding: bool = False) -> dict[str, Any]:
        ids = [[len(word) for word in text.split()] + ([0] if add_special_tokens else []) for text in texts]
        if not truncation:  # count_tokens' call: the encode phase's own datasets truncate
            self.counted.append(len(texts))
        ids = [row[:max_length] for row in ids] if max_length else ids
        return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}


@pytest.fixture(scope="module")
def split(sample_dir):
    train, val = load_split(sample_dir / "train.jsonl", sample_dir / "val.jsonl")
    fit = oversample(train, seed=0).frame
    assert len(fit) > len(train)  # the sample data's minority classes are oversampled
    return train, fit, val


def test_bins_and_token_counts_come_from_the_events_as_loaded(split, sample_dir, tmp_path, monkeypatch):
    import processor.qwen_vocab

    train, fit, val = split
    qwen_counted: list[int] = []
    monkeypatch.setattr(processor.qwen_vocab, "qwen_tokens_per_event",
                        lambda texts: qwen_counted.append(len(texts)) or 13.0)
    cfg = tiny_config(sample_dir, tmp_path)
    tokenizer = WordTokenizer()
    encoded = encode(cfg, tokenizer, train=train, fit=fit, val=val)

    template = cfg.data.template
    assert encoded.serializer.to_dict() == Serializer.fit(train, template=template).to_dict()
    # Not vacuous: the oversampled copies would have moved the edges.
    assert encoded.serializer.to_dict() != Serializer.fit(fit, template=template).to_dict()
    assert tokenizer.counted == qwen_counted == [len(train) + len(val)]
    assert encoded.tokens_per_event == 14.0 and encoded.tokens_per_event_qwen == 13.0  # 13 words, 1 special


def test_the_model_trains_on_the_oversampled_split_and_is_scored_on_val_as_loaded(split, sample_dir, tmp_path,
                                                                                   monkeypatch):
    import processor.qwen_vocab

    train, fit, val = split
    monkeypatch.setattr(processor.qwen_vocab, "qwen_tokens_per_event", lambda texts: 13.0)
    encoded = encode(tiny_config(sample_dir, tmp_path), WordTokenizer(), train=train, fit=fit, val=val)
    assert encoded.train_ds.labels == [LABEL2ID[label] for label in fit["label"]]
    assert encoded.val_ds.labels == [LABEL2ID[label] for label in val["label"]]
    texts = encoded.serializer.render_all(records(fit))
    assert encoded.train_ds.input_ids == WordTokenizer()(texts, truncation=True)["input_ids"]
