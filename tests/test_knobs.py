"""The one table of knobs (processor.knobs) against what is derived from it and what must agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from processor.config import Config
from processor.knobs import FLAGS, KNOBS, SWEEPABLE
from processor.train_loop import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]
# MLproject main parameters that are not knobs: the config file and the run-level switches.
NOT_KNOBS = {"config", "overwrite"}


def _main_entry() -> dict:
    return yaml.safe_load((ROOT / "MLproject").read_text(encoding="utf-8"))["entry_points"]["main"]


def test_mlproject_main_has_exactly_the_knobs_marked_for_it():
    params = set(_main_entry()["parameters"]) - NOT_KNOBS
    assert params == {k.name for k in KNOBS if k.mlproject}


def test_mlproject_passes_each_parameter_to_its_own_flag():
    command = _main_entry()["command"]
    passed = dict(re.findall(r"(--[a-z-]+) \{(\w+)\}", command))
    for knob in (k for k in KNOBS if k.mlproject):
        assert passed.get(knob.option) == knob.name, f"MLproject does not pass {{{knob.name}}} as {knob.option}"


def test_every_flag_sets_its_config_key():
    """Each knob's flag reaches its config key (a typo in the table would set nothing or the wrong key)."""
    values = {"train_file": "a.jsonl", "val_file": "b.jsonl", "model": "qwen-base", "revision": "abc",
              "lora_r": "8", "lora_alpha": "16", "lora_dropout": "0.1", "batch_size": "4", "grad_accum": "3",
              "lr": "0.002", "max_epochs": "4", "early_stop_metric": "val_loss", "patience": "3",
              "members": "3", "max_length": "48", "device": "cpu", "gamma": "0.5", "class_weights": "none",
              "oversample": "false",
              "output_dir": "outputs/x", "zip_final": "m.zip", "bundle_base": "true", "seed": "7",
              "experiment_name": "exp"}
    assert set(values) == {k.name for k in FLAGS}
    argv = [arg for knob in FLAGS for arg in (knob.option, values[knob.name])]
    cfg = config_from_args(build_parser().parse_args(argv))
    defaults = Config()
    for knob in FLAGS:
        section, _, key = knob.key.rpartition(".")
        got = getattr(getattr(cfg, section) if section else cfg, key)
        default = getattr(getattr(defaults, section) if section else defaults, key)
        assert got != default, f"{knob.option} did not change {knob.key}"
        assert str(got).lower() == values[knob.name].lower() or float(got) == float(values[knob.name])


def test_the_sweep_space_is_the_sweepable_knobs():
    from processor.tune import space

    assert space.SWEEPABLE is SWEEPABLE  # the one table, not a copy that could drift
