"""Config: YAML template < key=value overrides < flags; unknown keys and wrong types are clear errors."""

from __future__ import annotations


import pytest

from processor.config import Config, ConfigError, load_config
from processor.train_loop import build_parser, config_from_args

from conftest import REPO, run_module


def cfg_from(argv: list[str]) -> Config:
    return config_from_args(build_parser().parse_args(argv))


def test_shipped_configs_load():
    qwen = load_config(REPO / "configs" / "qwen.yaml")
    assert (qwen.model, qwen.lora.r, qwen.lora.alpha, qwen.training.batch_size) == ("qwen-base", 16, 32, 32)
    assert (qwen.training.lr, qwen.loss.gamma, qwen.loss.class_weights) == (2e-4, 0.5, "auto")
    assert (qwen.training.precision, qwen.training.gradient_checkpointing) == ("bf16", False)
    assert qwen.packaging.zip_final == "model_final.zip"
    cpu = load_config(REPO / "configs" / "cpu.yaml")
    assert (cpu.training.batch_size, cpu.training.grad_accum, cpu.training.device) == (8, 8, "cpu")
    assert cpu.training.precision == "fp32"
    for cfg in (qwen, cpu):  # max_length is the qwen-v1 text's 13 Qwen tokens and a few spare
        assert cfg.data.template == "qwen-v1" and 13 <= cfg.training.max_length <= 16
    tiny = load_config(REPO / "configs" / "tiny.yaml")
    assert tiny.model == "qwen-tiny"


def test_flags_override_config_and_overrides():
    cfg = cfg_from(["--config", str(REPO / "configs" / "qwen.yaml"), "training.lr=1e-3", "lora.r=8",
                    "--lr", "5e-4", "--gamma", "0", "--class-weights", "1,2,2", "--max-epochs", "3",
                    "--batch-size", "8", "--grad-accum", "8", "--device", "cpu"])
    assert cfg.training.lr == 5e-4  # the flag wins over the key=value override
    assert cfg.lora.r == 8  # the override wins over the file
    assert cfg.loss.gamma == 0.0 and cfg.loss.class_weights == [1.0, 2.0, 2.0]
    assert (cfg.training.epochs, cfg.training.batch_size, cfg.training.grad_accum) == (3, 8, 8)
    assert cfg.model == "qwen-base"  # untouched keys keep the file's value


def test_empty_flag_means_unset():
    # MLproject passes empty parameters through as "".
    cfg = cfg_from(["--config", str(REPO / "configs" / "qwen.yaml"), "--gamma", "", "--lr", ""])
    assert cfg.loss.gamma == 0.5 and cfg.training.lr == 2e-4


@pytest.mark.parametrize("argv, fragment", [
    (["--lr", "fast"], "--lr (training.lr): expected a number, got 'fast'"),
    (["--lora-r", "2.5"], "--lora-r (lora.r): expected an integer"),
    (["--lora-r", "0"], "lora.r must be >= 1"),
    (["--gamma", "-1"], "loss.gamma must be >= 0"),
    (["--class-weights", "1,2"], "loss.class_weights must be 3 positive numbers"),
    (["--device", "tpu"], "training.device must be one of"),
    (["--early-stop-metric", "f1"], "training.early_stop_metric must be one of"),
    (["training.lrr=1"], "unknown key 'lrr' in training"),
    (["nosuch=1"], "unknown key 'nosuch'"),
])
def test_bad_values_are_clear_errors(argv, fragment):
    with pytest.raises(ConfigError) as err:
        cfg_from(argv)
    assert fragment in str(err.value)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {lr: 1e-3, epochz: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.training: unknown key 'epochz'"):
        load_config(bad)
    bad.write_text("lora: {r: sixteen}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.lora.r: expected an integer, got 'sixteen'"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads "3e-4" as a string; the config must still take it as a float.
    f = tmp_path / "c.yaml"
    f.write_text("training: {lr: 3e-4}\n")
    assert load_config(f).training.lr == 3e-4


def test_cli_reports_config_errors_without_traceback(tmp_path):
    out = run_module("processor.train_loop", "--config", str(REPO / "configs" / "tiny.yaml"), "--lora-r", "abc",
                     "--no-mlflow", "--output-dir", str(tmp_path / "o"), cwd=REPO, timeout=300)
    assert out.returncode == 2
    assert "lora.r" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()
