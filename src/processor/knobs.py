"""The table of knobs: each training setting a user turns from outside the config file, declared once.

A knob names its config key, its command-line flag (``--lr``), whether it is a parameter of MLproject's
``main`` entry point, and whether an Optuna sweep may vary it (and with which type). The train loop's
flags, the sweep's search space and a test of MLproject are derived from this table, the way
``HfArgumentParser`` derives flags from dataclass fields; the valid range of each value is the config's
own check (``processor.config.check``), which both the flags and every sweep trial go through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    name: str  # the flag (``--lora-r``), the MLproject parameter and the sweep parameter
    key: str | None  # the config key it sets; None = derived (see lora_alpha_ratio)
    help: str
    sweep: type | None = None  # int or float: a sweep may vary it (the sweep file gives the range)
    flag: bool = True  # a train_loop flag
    mlproject: bool = True  # a parameter of MLproject's main entry point
    boolean: bool = False  # a bare ``--flag`` means true

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"


KNOBS: tuple[Knob, ...] = (
    Knob("train_file", "data.train_file", "training events (JSONL)"),
    Knob("val_file", "data.val_file", "validation events (JSONL)"),
    Knob("model", "model", "base: qwen-tiny (demo), qwen-base, a hub id or a local checkpoint directory"),
    Knob("revision", "revision", "hub revision (commit hash or tag) of the base"),
    Knob("lora_r", "lora.r", "LoRA rank", sweep=int),
    Knob("lora_alpha", "lora.alpha", "LoRA alpha", sweep=int),
    Knob("lora_alpha_ratio", None, "lora.alpha = round(ratio * lora.r)", sweep=float, flag=False, mlproject=False),
    Knob("lora_dropout", "lora.dropout", "LoRA dropout", sweep=float),
    Knob("batch_size", "training.batch_size", "events per device per step"),
    Knob("grad_accum", "training.grad_accum", "gradient accumulation steps"),
    Knob("lr", "training.lr", "learning rate", sweep=float),
    Knob("max_epochs", "training.epochs", "most epochs (early stopping may end sooner)"),
    Knob("early_stop_metric", "training.early_stop_metric", "val_macro_f1, val_accuracy or val_loss"),
    Knob("patience", "training.patience", "epochs without improvement before stopping"),
    Knob("members", "training.members", "adapters trained on the one base, their softmax averaged (K x the time)"),
    Knob("max_length", "training.max_length", "tokens per event (longer events are truncated)"),
    Knob("device", "training.device", "auto, cpu, cuda or mps"),
    Knob("gamma", "loss.gamma", "focal-loss gamma (0 = weighted cross-entropy)", sweep=float),
    Knob("class_weights", "loss.class_weights", "auto, none, or weights in label order"),
    Knob("oversample", "data.oversample", "oversample a class under 25 %% of train", boolean=True),
    Knob("output_dir", "packaging.output_dir", "where the run writes its outputs"),
    Knob("zip_final", "packaging.zip_final", "the packaged model's file name"),
    Knob("bundle_base", "packaging.bundle_base", "copy the base into the logged model", boolean=True),
    Knob("seed", "seed", "drives data order, sampling, init and training"),
    # Not an MLproject parameter: `mlflow run --experiment-name` chooses the experiment of that run.
    Knob("experiment_name", "mlflow.experiment", "MLflow experiment", mlproject=False),
)
BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
FLAGS: tuple[Knob, ...] = tuple(k for k in KNOBS if k.flag)
SWEEPABLE: dict[str, Knob] = {k.name: k for k in KNOBS if k.sweep is not None}


def flag_values(args: Any, knobs: Iterable[Knob]) -> list[tuple[str, Any, str]]:
    """``(key, value, option)`` of each of ``knobs`` on parsed arguments, for
    :func:`processor.config.resolve_config` (which skips the ones not given)."""
    return [(k.key, getattr(args, k.name, None), k.option) for k in knobs if k.key]
