"""Config: YAML template < key=value overrides < flags; unknown keys and wrong types are clear errors."""

from __future__ import annotations


import pytest

from processor.config import RANGES, Config, ConfigError, check, load_config, numeric_keys
from processor.train_loop import build_parser, config_from_args

from conftest import REPO


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


def test_the_sweep_reads_its_base_config_like_the_train_loop():
    from processor.tune.cli import base_config
    from processor.tune.cli import build_parser as tune_parser

    argv = ["--config", str(REPO / "configs" / "qwen.yaml"), "data.train_file=a.jsonl", "training.lr=1e-3",
            "--train-file", "b.jsonl"]
    tuned, trained = base_config(tune_parser().parse_args(argv)), cfg_from(argv)
    assert tuned.data.train_file == "b.jsonl" and tuned.training.lr == 1e-3  # the flag wins, then the override
    assert tuned == trained


def test_values_are_checked_once_on_the_result(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  gamma: 7\ntraining:\n  lr: 1.0e+6\n", encoding="utf-8")
    cfg = cfg_from(["--config", str(path), "--lr", "1e-3"])  # the flag replaces the file's refused lr
    assert cfg.training.lr == 1e-3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: loss.gamma=7.0 is outside the typical range"), err


def test_empty_flag_means_unset():
    # MLproject passes empty parameters through as "".
    cfg = cfg_from(["--config", str(REPO / "configs" / "qwen.yaml"), "--gamma", "", "--lr", ""])
    assert cfg.loss.gamma == 0.5 and cfg.training.lr == 2e-4


@pytest.mark.parametrize("argv, fragment", [
    (["--lr", "fast"], "--lr (training.lr): expected a number, got 'fast'"),
    (["--lora-r", "2.5"], "--lora-r (lora.r): expected an integer"),
    (["--lora-r", "0"], "lora.r must be an integer in [1, 1024], got 0"),
    (["--gamma", "-1"], "loss.gamma must be a finite number in [0, 10], got -1.0"),
    (["--lr", "inf"], "training.lr must be a finite number in (0, 1], got inf"),
    (["--lr", "nan"], "training.lr must be a finite number in (0, 1], got nan"),
    (["--lr", "1e6"], "training.lr must be a finite number in (0, 1], got 1000000.0"),
    (["--gamma", "inf"], "loss.gamma must be a finite number in [0, 10], got inf"),
    (["--lora-dropout", "1"], "lora.dropout must be a finite number in [0, 1), got 1.0"),
    (["training.weight_decay=-0.1"], "training.weight_decay must be a finite number in [0, 1], got -0.1"),
    (["--class-weights", "1,inf,2"], "loss.class_weights must be a finite number in (0, 1e+06], got inf"),
    (["trust.abstention_grid=[0.5, 1.5]"], "trust.abstention_grid must be a finite number in [0, 1], got 1.5"),
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--class-weights", "1,2"], "loss.class_weights must be 3 positive numbers"),
    (["--device", "tpu"], "training.device must be one of"),
    (["--early-stop-metric", "f1"], "training.early_stop_metric must be one of"),
    (["eval.baselines=xgboost"], "eval.baselines must be true, false or a list of logistic_regression, "
                                 "hist_gradient_boosting, tuned_gbdt; unknown ['xgboost']"),
    (["eval.tuned_folds=1"], "eval.tuned_folds must be an integer in [2, 20], got 1"),
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


@pytest.mark.parametrize("text, names", [
    ("true", ["logistic_regression", "hist_gradient_boosting", "tuned_gbdt"]),  # older files: a bool
    ("false", []),
    ("[tuned_gbdt, logistic_regression]", ["tuned_gbdt", "logistic_regression"]),
    ("[]", []),
])
def test_baselines_are_a_list_of_names_or_the_old_boolean(tmp_path, text, names):
    f = tmp_path / "c.yaml"
    f.write_text(f"eval: {{baselines: {text}}}\n")
    assert check(load_config(f), warn=None).eval.baseline_names() == names
    assert Config().eval.baseline_names() == ["logistic_regression", "hist_gradient_boosting", "tuned_gbdt"]
    # On the command line: a comma-separated list, one name, or the old true/false.
    assert cfg_from(["eval.baselines=tuned_gbdt"]).eval.baseline_names() == ["tuned_gbdt"]
    assert cfg_from(["eval.baselines=false"]).eval.baseline_names() == []
    assert cfg_from(["eval.baselines=logistic_regression,hist_gradient_boosting"]).eval.baseline_names() == [
        "logistic_regression", "hist_gradient_boosting"]


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    # YAML 1.1 reads "3e-4" as a string; the config must still take it as a float.
    f = tmp_path / "c.yaml"
    f.write_text("training: {lr: 3e-4}\n")
    assert load_config(f).training.lr == 3e-4


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    # In-process main(): the exit code and stderr a user sees (tests/test_cli.py runs each command for real).
    from processor.train_loop import main

    code = main(["--config", str(REPO / "configs" / "tiny.yaml"), "--lora-r", "abc", "--no-mlflow",
                 "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert "lora.r" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ booleans


@pytest.mark.parametrize(("text", "value"), [("true", True), ("Yes", True), ("1", True), (" ON ", True),
                                             ("false", False), ("NO", False), ("0", False), ("off", False)])
def test_one_boolean_reading_for_flags_config_values_and_metadata(text: str, value: bool) -> None:
    from processor.cli import parse_bool
    from processor.config import apply_override

    assert parse_bool(text) is value
    cfg = Config()
    apply_override(cfg, "packaging.bundle_base", text, source="test")
    assert cfg.packaging.bundle_base is value
    args = build_parser().parse_args(["--resume", text])
    assert args.resume is value


def test_an_empty_boolean_is_false_on_the_command_line_and_an_error_in_config(capsys) -> None:
    from processor.cli import parse_bool
    from processor.config import apply_override

    assert parse_bool("") is False  # an MLproject parameter left empty
    with pytest.raises(ConfigError, match="packaging.bundle_base.*expected true/false"):
        apply_override(Config(), "packaging.bundle_base", "", source="packaging.bundle_base")
    with pytest.raises(ValueError, match="expected true or false, got 'maybe'"):
        parse_bool("maybe")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--resume", "maybe"])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


def test_every_numeric_key_has_a_documented_range():
    """A numeric key added to the config without a range in RANGES (or a range left for a removed
    key) fails here: every number must be checked finite and in range."""
    assert set(numeric_keys()) == set(RANGES)
    for key, rng in RANGES.items():
        assert rng.lo in rng or rng.lo_open, key
        if rng.typical is not None:
            assert all(x in rng for x in rng.typical), (key, rng)
    for name in ("tiny", "qwen", "cpu"):  # the shipped configs are typical: they train without a warning
        warned: list[str] = []
        check(load_config(REPO / "configs" / f"{name}.yaml"), warn=warned.append)
        assert warned == [], (name, warned)


def test_several_bad_values_are_one_line_naming_each_key():
    with pytest.raises(ConfigError) as err:
        cfg_from(["--lr", "inf", "--gamma", "nan"])
    assert "\n" not in str(err.value)
    assert "training.lr" in str(err.value) and "loss.gamma" in str(err.value)


@pytest.mark.parametrize("argv, key", [(["--lr", "0.1"], "training.lr=0.1"), (["--gamma", "7"], "loss.gamma=7.0")])
def test_a_valid_but_unusual_value_is_warned_about(capsys, argv, key):
    cfg_from(argv)  # accepted ...
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {key} is outside the typical range"), err


@pytest.mark.parametrize("argv, key", [
    (["--lr", "inf"], "training.lr"),
    (["--gamma", "inf"], "loss.gamma"),
    (["--lr", "1e6"], "training.lr"),
])
def test_cli_refuses_a_hostile_value_before_loading_anything(tmp_path, capsys, argv, key):
    """Exit 2, one line naming the key, at the config check: the train file does not even exist (a
    data load would have said so first), and no output directory is made."""
    from processor.train_loop import main

    code = main(["--config", str(REPO / "configs" / "tiny.yaml"), *argv, "--train-file",
                 str(tmp_path / "absent.jsonl"), "--no-mlflow", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid config: ") and key in lines[0], lines
    assert "absent.jsonl" not in err and not (tmp_path / "o").exists()
