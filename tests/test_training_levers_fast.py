"""The opt-in training levers of issue 27, as the train loop builds them, on the tiny random base of
``tiny_package`` (150 events, two short epochs: seconds, so the fast tier):

- ``training.head_warmup_epochs``: the first epochs move the head and leave every LoRA weight at its init;
  the epoch after, LoRA trains.
- ``training.weight_average``: each epoch is evaluated with the moving average of the weights seen after
  every optimizer step (computed here by hand from the recorded steps), and the next epoch trains on
  from the raw weights, not from the average.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import TrainerCallback

from conftest import tiny_config
from processor.recorder import NullRecorder
from processor.trainer import HeadWarmup, WeightAverage


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n}


class Recorder(TrainerCallback):
    """The trainable weights at each step's end, each evaluation and each epoch's first step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []
        self.evaluated: list[dict[str, torch.Tensor]] = []
        self.epoch_starts: list[dict[str, torch.Tensor]] = []
        self._new_epoch = False
        self.init: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.init = _snapshot(model)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._new_epoch = True

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self._new_epoch:
            self.epoch_starts.append(_snapshot(model))
            self._new_epoch = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append(_snapshot(model))

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.evaluated.append(_snapshot(model))


def _train(tiny_package, tmp_path, **overrides) -> SimpleNamespace:
    from demo_kit.sample_data import write_sample_data
    from processor.encode import encode
    from processor.train_loop import build_model, build_trainer, prepare_data

    write_sample_data(tmp_path / "data", n=150, seed=3)
    cfg = tiny_config(tmp_path / "data", tmp_path / "out", **{
        "model": str(tiny_package.base_dir), "lora.r": 2, "lora.alpha": 4, "mlflow.enabled": False,
        "training.epochs": 2, "training.patience": 5, "training.batch_size": 64, **overrides})
    rec = NullRecorder(tmp_path)
    data = prepare_data(cfg, rec)
    recorder = Recorder()
    built = build_model(cfg, rec)
    encoded = encode(cfg, built.tokenizer, train=data.train, fit=data.fit, val=data.val)
    trainer = build_trainer(cfg, tmp_path / "out", data, built, encoded, rec, [recorder])
    trainer.train()
    return SimpleNamespace(trainer=trainer, rec=recorder)


def _levers(trainer) -> set[type]:
    return {type(c) for c in trainer.callback_handler.callbacks} & {HeadWarmup, WeightAverage}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], part: str) -> bool:
    return all(torch.equal(a[n], b[n]) for n in a if part in n)


def test_head_warmup_trains_the_head_alone_for_its_epochs(tiny_package, tmp_path):
    run = _train(tiny_package, tmp_path, **{"training.head_warmup_epochs": 1})
    assert _levers(run.trainer) == {HeadWarmup}
    steps_per_epoch = len(run.rec.steps) // 2
    end_of_first = run.rec.steps[steps_per_epoch - 1]
    assert _same(run.rec.init, end_of_first, "lora_")  # LoRA frozen through the warm-up epoch
    assert not _same(run.rec.init, end_of_first, "modules_to_save")  # the head learned
    assert not _same(end_of_first, run.rec.steps[-1], "lora_")  # LoRA trains after it


def test_weight_average_evaluates_the_average_and_trains_on_from_the_raw_weights(tiny_package, tmp_path):
    decay = 0.5  # few steps per epoch here: a short memory makes every step count in the average
    run = _train(tiny_package, tmp_path, **{"training.weight_average": decay})
    assert _levers(run.trainer) == {WeightAverage}
    steps_per_epoch = len(run.rec.steps) // 2
    average = {n: t.clone() for n, t in run.rec.init.items()}
    for step in run.rec.steps[:steps_per_epoch]:
        for n in average:
            average[n] = decay * average[n] + (1 - decay) * step[n]
    evaluated = run.rec.evaluated[0]
    assert all(torch.allclose(evaluated[n], average[n], atol=1e-6) for n in average)
    assert not _same(evaluated, run.rec.steps[steps_per_epoch - 1], "lora_")  # the average, not the last step
    assert _same(run.rec.epoch_starts[1], run.rec.steps[steps_per_epoch - 1], "")  # raw weights again
