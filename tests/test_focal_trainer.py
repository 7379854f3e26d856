"""FocalTrainer: the loss the real transformers.Trainer optimises is the focal loss, and gradient
accumulation gives the larger batch's update. A tiny random Qwen2 classifier (no base build)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import (Qwen2Config, Qwen2ForSequenceClassification, Trainer, TrainingArguments,
                          default_data_collator)

from processor.loss import FocalLoss, focal_loss
from processor.trainer import FocalTrainer

N_CLASSES = 3


def tiny_classifier(seed: int = 0) -> Qwen2ForSequenceClassification:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=N_CLASSES, pad_token_id=0)
    return Qwen2ForSequenceClassification(config)


def examples(n: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Unpadded sequences (ids 1..63, no pad token), labels covering every class."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, 6), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(6, dtype=torch.long),
             "labels": torch.tensor(i % N_CLASSES)} for i in range(n)]


def trainer_for(model, tmp_path, focal: FocalLoss, **args) -> FocalTrainer:
    defaults = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
                    logging_strategy="no", seed=0, dataloader_num_workers=0)
    return FocalTrainer(model=model, args=TrainingArguments(**{**defaults, **args}),
                        data_collator=default_data_collator, focal=focal)


def test_the_trainer_loss_is_the_weighted_focal_loss(tmp_path):
    model = tiny_classifier()
    weight = torch.tensor([2.0, 3.0, 0.5])
    trainer = trainer_for(model, tmp_path, FocalLoss(gamma=2.0, weight=weight))
    batch = default_data_collator(examples(9))
    labels = batch["labels"]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        got = trainer.compute_loss(model, dict(batch))
    expected = focal_loss(logits, labels, gamma=2.0, weight=weight)
    assert torch.allclose(got, expected, atol=1e-6), (got, expected)
    # The test can tell the focal loss from the plain (or weighted) cross-entropy on this batch.
    for other in (F.cross_entropy(logits, labels), F.cross_entropy(logits, labels, weight=weight),
                  focal_loss(logits, labels, gamma=2.0)):
        assert abs(float(other) - float(expected)) > 1e-3


def test_floating_point_ops_is_trainers_estimate_with_the_parameters_counted_once(tmp_path, monkeypatch):
    """total_flos as Trainer computes it, without a walk over every parameter on every step."""
    model = tiny_classifier()
    trainer = trainer_for(model, tmp_path, FocalLoss(gamma=1.5))
    batch = default_data_collator(examples(4))
    expected = Trainer.floating_point_ops(trainer, batch)
    assert expected == 6 * batch["input_ids"].numel() * model.num_parameters(exclude_embeddings=True) > 0
    counts = []
    monkeypatch.setattr(model, "num_parameters", lambda **kw: counts.append(kw) or 7)
    assert [trainer.floating_point_ops(batch) for _ in range(3)] == [6 * 4 * 6 * 7] * 3
    assert counts == [{"exclude_embeddings": True}]
    trainer.model = tiny_classifier(seed=1)  # another model is counted again
    assert trainer.floating_point_ops(batch) == expected


@pytest.mark.slow
def test_gradient_accumulation_gives_the_larger_batch_update(tmp_path):
    """One optimizer step over 8 examples: batch 8 x 1 and batch 4 x accumulation 2 move every weight
    the same (the per-micro-batch mean is divided by the accumulation steps, not summed)."""
    start = tiny_classifier()
    data = examples(8)
    common = dict(max_steps=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", warmup_steps=0,
                  weight_decay=0.0, max_grad_norm=0.0)  # no clipping: it would hide a scale error
    results = []
    for batch, accum in ((8, 1), (4, 2)):
        model = copy.deepcopy(start)
        trainer = trainer_for(model, tmp_path / f"b{batch}", FocalLoss(gamma=1.5),
                              per_device_train_batch_size=batch, gradient_accumulation_steps=accum, **common)
        trainer.train_dataset = data
        trainer.train()
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    before = start.state_dict()
    big, accumulated = results
    moved = max(float((big[k] - before[k]).abs().max()) for k in before)
    assert moved > 1e-3  # the step really changed the weights
    for key in before:
        assert torch.allclose(big[key], accumulated[key], atol=1e-6, rtol=1e-4), key
