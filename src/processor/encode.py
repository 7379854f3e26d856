"""The train loop's encode phase: events -> text (the serializer's bins fitted on train) -> token ids, and
what that text costs in tokens, under the base's tokenizer and under Qwen's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from processor.config import Config
from processor.data import records
from processor.schema import LABEL2ID
from processor.serialize import Serializer, count_tokens


class EncodedEvents(torch.utils.data.Dataset):
    """Tokenized once up front; padding is the collator's job (num_workers=0 safe, picklable)."""

    def __init__(self, tokenizer: Any, texts: list[str], labels: Any, max_length: int):
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        self.input_ids = enc["input_ids"]
        self.attention_mask = enc["attention_mask"]
        self.labels = [LABEL2ID[label] for label in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i], "labels": self.labels[i]}


@dataclass
class EncodedData:
    serializer: Serializer  # travels in the package: prediction renders events exactly as training did
    train_ds: EncodedEvents  # the split trained on (oversampled when a class is under 25 %)
    val_ds: EncodedEvents
    tokens_per_event: float  # under the base's own tokenizer
    tokens_per_event_qwen: float  # under Qwen's vocabulary: what the same text costs on a real Qwen


def encode(cfg: Config, tokenizer: Any, *, train: pd.DataFrame, fit: pd.DataFrame, val: pd.DataFrame
           ) -> EncodedData:
    """``train`` as loaded, ``fit`` what the model trains on, ``val`` the events scored."""
    from processor.qwen_vocab import qwen_tokens_per_event

    # Bins are fitted on the training split as loaded: oversampled duplicates must not move the edges.
    serializer = Serializer.fit(train, template=cfg.data.template)
    val_texts = serializer.render_all(records(val))
    # Tokens per event are counted over the events as they come, each once (never the oversampled copies).
    texts = serializer.render_all(records(train)) + val_texts
    max_length = cfg.training.max_length
    return EncodedData(
        serializer=serializer,
        train_ds=EncodedEvents(tokenizer, serializer.render_all(records(fit)), fit["label"], max_length),
        val_ds=EncodedEvents(tokenizer, val_texts, val["label"], max_length),
        tokens_per_event=count_tokens(tokenizer, texts), tokens_per_event_qwen=qwen_tokens_per_event(texts))
