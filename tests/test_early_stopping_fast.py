"""Early stopping as the train loop sets it up, in the fast tier (no training): the Trainer that
``build_trainer`` makes over the tiny random base of ``tiny_package``, fed made-up evaluations.

- val_loss is minimised: the Trainer's own best-checkpoint decision and its early-stopping callback
  keep the epoch with the lower loss (and macro-F1 the higher score), and ``best_epoch`` agrees.
- training.patience reaches the callback, from the config file, --patience and an override.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from transformers import EarlyStoppingCallback

from conftest import REPO, tiny_config
from processor.blocks import EpochRow
from processor.recorder import NullRecorder
from processor.trainer import best_epoch


@pytest.fixture(scope="module")
def pieces(tiny_package, tmp_path_factory):
    """The train loop's prepared data, built model and encoded events (tiny base, 150 events, once):
    build_trainer reads only the training section of the config it is given."""
    from demo_kit.sample_data import write_sample_data
    from processor.encode import encode
    from processor.train_loop import build_model, prepare_data

    out = tmp_path_factory.mktemp("early-stopping")
    sample_dir = out / "data"
    write_sample_data(sample_dir, n=150, seed=3)
    cfg = tiny_config(sample_dir, out / "out", **{"model": str(tiny_package.base_dir), "lora.r": 2,
                                                  "lora.alpha": 4, "mlflow.enabled": False})
    rec = NullRecorder(out)
    data = prepare_data(cfg, rec)
    built = build_model(cfg, rec)
    encoded = encode(cfg, built.tokenizer, train=data.train, fit=data.fit, val=data.val)
    return SimpleNamespace(out=out, data=data, built=built, encoded=encoded, rec=rec, sample_dir=sample_dir,
                           base=str(tiny_package.base_dir))


def _trainer(pieces, cfg):
    from processor.train_loop import build_trainer

    return build_trainer(cfg, pieces.out / "out", pieces.data, pieces.built, pieces.encoded, pieces.rec)


def _stopper(trainer) -> EarlyStoppingCallback:
    [callback] = [c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)]
    return callback


@pytest.mark.parametrize("metric, first, second, second_is_better", [
    ("val_loss", 0.90, 0.50, True),
    ("val_loss", 0.50, 0.90, False),
    ("val_macro_f1", 0.50, 0.90, True),
    ("val_macro_f1", 0.90, 0.50, False),
])
def test_the_trainer_keeps_the_better_epoch_in_the_metric_s_direction(pieces, metric, first, second,
                                                                     second_is_better):
    """Two evaluations at steps 10 and 20, through the Trainer's own best-metric bookkeeping and its
    early-stopping callback (patience 1): the better one is the best step, and a worse one after
    the best stops training."""
    cfg = tiny_config(pieces.sample_dir, pieces.out / "out", **{
        "model": pieces.base, "mlflow.enabled": False, "training.early_stop_metric": metric,
        "training.patience": 1})
    trainer = _trainer(pieces, cfg)
    stopper = _stopper(trainer)
    key = "eval_" + metric.removeprefix("val_")
    for step, value in ((10, first), (20, second)):
        trainer.state.global_step = step
        metrics = {key: value}
        # Trainer's order after each evaluation: the callbacks see it, then the best metric is updated.
        stopper.on_evaluate(trainer.args, trainer.state, trainer.control, metrics=metrics)
        trainer._determine_best_metric(metrics, trial=None)
    assert trainer.state.best_global_step == (20 if second_is_better else 10)
    assert trainer.state.best_metric == (second if second_is_better else first)
    assert trainer.control.should_training_stop is not second_is_better

    # The metrics.json best epoch from the history alone (no checkpoint recorded) agrees.
    name = metric.removeprefix("val_")
    history = [EpochRow(epoch=1, step=10, val={name: first}), EpochRow(epoch=2, step=20, val={name: second})]
    no_checkpoint = SimpleNamespace(best_model_checkpoint=None)
    assert best_epoch(no_checkpoint, history, name) == (2 if second_is_better else 1)


def test_patience_reaches_the_early_stopping_callback(pieces, tmp_path):
    """From the config file, then --patience over it, then a section.key=value override: values no
    default or shipped config has, so a constant in its place fails."""
    from processor.train_loop import build_parser, config_from_args

    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    raw["training"]["patience"] = 3
    config = tmp_path / "patience.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    data = ["--train-file", str(pieces.sample_dir / "train.jsonl"), "--val-file", str(pieces.sample_dir / "val.jsonl"),
            "--model", pieces.base, "--no-mlflow"]
    for argv, want in ((["--config", str(config)], 3),
                       (["--config", str(config), "--patience", "4"], 4),
                       (["--config", str(config), "training.patience=6"], 6),
                       (["--config", str(config), "--patience", "4", "training.patience=6"], 4)):  # flags win
        cfg = config_from_args(build_parser().parse_args([*argv, *data]))
        assert cfg.training.patience == want, argv
        assert _stopper(_trainer(pieces, cfg)).early_stopping_patience == want, argv


@pytest.mark.parametrize("ratio", [0.0, 16.0])
def test_loraplus_ratio_reaches_the_optimizer(pieces, ratio):
    """training.loraplus_ratio > 1: the LoRA B matrices learn ratio x lr, A and the head lr (peft's LoRA+);
    0: one learning rate for every trainable parameter (Trainer's own optimizer)."""
    lr = 1e-3
    cfg = tiny_config(pieces.sample_dir, pieces.out / "out", **{
        "model": pieces.base, "mlflow.enabled": False, "training.lr": lr, "training.loraplus_ratio": ratio})
    trainer = _trainer(pieces, cfg)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    named = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    b = {lr_of[id(p)] for n, p in named if "lora_B" in n}
    rest = {lr_of[id(p)] for n, p in named if "lora_A" in n or "score" in n}
    assert len(lr_of) == len(named)  # every trainable parameter is optimised, once
    assert rest == {lr}
    assert b == {lr * ratio if ratio > 1 else lr}
