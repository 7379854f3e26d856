"""The Trainer pieces of the train loop: the focal-loss Trainer, the metrics it reports per epoch, and
reading its history back (per-epoch rows, the restored best epoch). Its dataset is processor.encode's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback, TrainerCallback

from processor.blocks import EpochRow
from processor.record import ShippedHead
from processor.schema import LABELS


class FocalTrainer(Trainer):
    """Trainer whose loss is the class-weighted focal loss. The loss is a per-micro-batch mean, so
    Trainer divides it by the accumulation steps (``loss_is_scaled_for_ga = False``)."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, focal: torch.nn.Module, loraplus_ratio: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.focal = focal
        self.loraplus_ratio = loraplus_ratio
        self._counted: tuple[Any, int] = (None, 0)  # (model, its non-embedding parameters): floating_point_ops
        if self.pop_callback(ProgressCallback) is not None:  # only where Trainer shows a bar at all
            self.add_callback(EpochProgress)

    def create_optimizer(self, model=None):
        """Trainer's optimizer, or with ``loraplus_ratio`` > 1 peft's LoRA+ (Hayou et al., 2024): the
        LoRA B matrices learn ``loraplus_ratio`` times faster than A and the head."""
        if self.loraplus_ratio <= 1 or self.optimizer is not None:
            return super().create_optimizer(model)
        from peft.optimizers import create_loraplus_optimizer

        opt_model = self.model if model is None else model
        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, opt_model)
        kwargs.pop("lr", None)
        self.optimizer = create_loraplus_optimizer(opt_model, optimizer_cls, lr=self.args.learning_rate,
                                                   loraplus_lr_ratio=self.loraplus_ratio,
                                                   loraplus_weight_decay=self.args.weight_decay, **kwargs)
        return self.optimizer

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Trainer's estimate, 6 × tokens × non-embedding parameters (``total_flos``), with the parameters
        counted once per model: Trainer counts them on every step, a walk over every module and parameter
        of the LoRA-wrapped model (~0.8 ms of a ~40 ms training step on the demo base)."""
        tokens = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if tokens is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._counted[0] is not self.model:
            self._counted = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return 6 * tokens.numel() * self._counted[1]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.focal.to(outputs.logits.device)(outputs.logits.float(), labels)
        return (loss, outputs) if return_outputs else loss


class HeadWarmup(TrainerCallback):
    """The first ``epochs`` epochs train the classification head alone on the base's features, LoRA
    frozen (linear probing, then fine-tuning: Kumar et al., 2022). A random head's gradients would
    otherwise steer the adapters from the first step. AdamW skips a parameter without a gradient, so
    the frozen adapters keep their init and their optimizer state starts when they join."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        # Decided from the epoch counter at every epoch, so a resumed run freezes what the uninterrupted
        # one would have.
        train_lora = int(round(state.epoch or 0)) >= self.epochs
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(train_lora)


class WeightAverage(TrainerCallback):
    """An exponential moving average of the trainable weights (LoRA and head), ``decay`` per optimizer
    step: each epoch is evaluated, checkpointed and (as the best one) shipped with the averaged weights,
    while training goes on from its own. Averaging smooths the step-to-step noise of small batches on
    ~1,000 events (Polyak averaging; Izmailov et al., 2018 for SWA)."""

    def __init__(self, decay: float):
        self.decay = decay
        self.params: dict[str, torch.nn.Parameter] = {}
        self.shadow: dict[str, torch.Tensor] = {}
        self.raw: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # Looked up once: the same Parameter objects are updated in place for the whole run, and the step
        # hook below should cost the average's arithmetic only.
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad or "lora_" in n}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def on_epoch_end(self, args, state, control, **kwargs):
        self.raw = {n: p.detach().clone() for n, p in self.params.items()}
        for n, p in self.params.items():
            p.copy_(self.shadow[n])

    @torch.no_grad()
    def on_epoch_begin(self, args, state, control, **kwargs):
        for n, p in self.params.items():
            if n in self.raw:
                p.copy_(self.raw[n])
        self.raw = {}


class EpochProgress(ProgressCallback):
    """Trainer's progress bar without its log lines: the per-step loss dicts it writes under the bar
    repeat what the epoch history (metrics.json, the learning curve, MLflow) records anyway."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def trainer_metrics(eval_pred: Any, head: ShippedHead) -> dict[str, float]:
    """Per-epoch val metrics of the predictions as they will ship (``head``: the prior correction), so
    early stopping picks the epoch whose shipped predictions score best."""
    from processor.scores import score

    probs = head.probabilities(eval_pred.predictions, logits=True)
    s = score([LABELS[i] for i in eval_pred.label_ids], [LABELS[i] for i in np.argmax(probs, axis=1)])
    out = {"macro_f1": s.macro_f1, "accuracy": s.accuracy}
    out.update({f"f1_{name}": s.per_class[name].f1 for name in LABELS})
    return out


def epoch_history(log_history: list[dict[str, Any]]) -> list[EpochRow]:
    """One row per evaluated epoch: train loss (mean of that epoch's logs) and val metrics."""
    rows, losses = [], []
    for entry in log_history:
        if "loss" in entry:
            losses.append(entry["loss"])
        if "eval_macro_f1" in entry:
            val = {k[5:]: float(v) for k, v in entry.items()
                   if k.startswith("eval_") and k[5:] in ("loss", "macro_f1", "accuracy", "f1_long", "f1_short",
                                                          "f1_no_trade")}
            rows.append(EpochRow(epoch=int(round(entry["epoch"])), step=entry["step"],
                                 train_loss=float(np.mean(losses)) if losses else None, val=val))
            losses = []
    return rows


def greater_is_better(metric: str) -> bool:
    """The direction of an early-stopping metric (Trainer's name: ``loss``, ``macro_f1``, ...): the one
    place it is decided, for the Trainer's best checkpoint and for :func:`best_epoch` alike."""
    return metric != "loss"


def best_epoch(state: Any, history: list[EpochRow], metric: str) -> int:
    if state.best_model_checkpoint:
        step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
        for row in history:
            if row.step == step:
                return row.epoch
    best = (max if greater_is_better(metric) else min)(history, key=lambda r: r.val[metric])
    return best.epoch


def check_whole_val_set(label_ids: Any, y_true: list[str]) -> None:
    """The predictions must be the val file's events, each once, in file order (a multi-process
    gather that duplicated or dropped events would silently skew every metric)."""
    got = [LABELS[i] for i in np.asarray(label_ids).reshape(-1)]
    if got != y_true:
        raise RuntimeError(f"evaluation covered {len(got)} events for {len(y_true)} in the val file, or not "
                           "in file order; the metrics would be wrong")


def last_complete_checkpoint(path: Path, say: Any = print) -> str | None:
    """The newest checkpoint that was written to the end, or None. Trainer writes ``trainer_state.json``
    last, so a checkpoint without a readable one was cut short (a kill mid-save): it is skipped, and
    ``say`` is told which."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not path.is_dir():
        return None
    found = [p for p in path.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for candidate in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((candidate / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            say(f"note: skipping the incomplete checkpoint {candidate} (interrupted while it was being saved)")
            continue
        return str(candidate)
    return None
