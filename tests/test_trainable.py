"""A split that meets the contract but cannot train a 3-class classifier: said by validate (warning),
refused by training before anything is loaded (exit 1, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from processor.cli import EXIT_DATA
from processor.config import TrustConfig
from processor.data import load_split
from processor.trainable import UntrainableSplitError, check_trainable, require_trainable
from processor.validate import DEFAULT_CALIBRATION_FOLDS, main as validate_main

from conftest import REPO

FOLDS = TrustConfig().calibration_folds


def keep(path: Path, out: Path, predicate) -> Path:
    """``path``'s events for which ``predicate(event)`` holds, written to ``out``."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out.write_text("".join(line + "\n" for line in lines if predicate(json.loads(line))), encoding="utf-8")
    return out


def only(label: str):
    return lambda ev: ev["label"] == label


def but_few(label: str, n: int):
    """Every event except all but ``n`` of class ``label``."""
    seen = {"n": 0}

    def pred(ev: dict) -> bool:
        if ev["label"] != label:
            return True
        seen["n"] += 1
        return seen["n"] <= n
    return pred


@pytest.fixture
def split(sample_dir: Path, tmp_path: Path):
    """Factory: (train, val) paths of the sample data with ``train`` / ``val`` filtered."""
    def make(train=lambda ev: True, val=lambda ev: True) -> tuple[Path, Path]:
        return (keep(sample_dir / "train.jsonl", tmp_path / "train.jsonl", train),
                keep(sample_dir / "val.jsonl", tmp_path / "val.jsonl", val))
    return make


def test_the_sample_split_can_train(split):
    assert check_trainable(*load_split(*split()), FOLDS) == []
    assert DEFAULT_CALIBRATION_FOLDS == FOLDS  # validate warns with the config's own default


@pytest.mark.parametrize("train, val, needles", [
    (only("long"), None, ["train.jsonl: no short and no no_trade event", "needs every class in train"]),
    (but_few("short", 0), None, ["train.jsonl: no short event"]),
    (but_few("short", FOLDS - 1), None, [f"train.jsonl: short has fewer events than the {FOLDS} calibration folds"]),
    (None, but_few("long", FOLDS - 1), [f"val.jsonl: long has fewer events than the {FOLDS} calibration folds"]),
    (None, but_few("long", 0), ["val.jsonl: long has fewer events than"]),
])
def test_an_untrainable_split_is_named_in_one_line(split, train, val, needles):
    paths = split(*(f or (lambda ev: True) for f in (train, val)))
    problems = check_trainable(*load_split(*paths), FOLDS, names=("train.jsonl", "val.jsonl"))
    assert problems and all("\n" not in p for p in problems)
    for needle in needles:
        assert any(needle in p for p in problems), (needle, problems)
    with pytest.raises(UntrainableSplitError) as err:
        require_trainable(*load_split(*paths), FOLDS, names=("train.jsonl", "val.jsonl"))
    assert err.value.exit_code == EXIT_DATA and "\n" not in str(err.value)
    assert str(err.value).startswith("the split cannot train a 3-class classifier: ")


def test_exactly_folds_events_is_enough(split):
    paths = split(but_few("short", FOLDS), but_few("long", FOLDS))
    assert check_trainable(*load_split(*paths), FOLDS) == []


def test_validate_warns_about_an_untrainable_split(split, tmp_path, capsys):
    train, val = split(only("long"))
    report = tmp_path / "report.json"
    code = validate_main(["--train", str(train), "--val", str(val), "--report-json", str(report)])
    err = capsys.readouterr().err
    assert code == 0  # the data meet the contract: a warning, training is what refuses
    warned = [line for line in err.splitlines() if line.startswith("WARNING: the split cannot train")]
    assert len(warned) == 1 and "train.jsonl: no short and no no_trade event" in warned[0], err
    trainable = json.loads(report.read_text(encoding="utf-8"))["trainable"]
    assert trainable["ok"] is False and trainable["calibration_folds"] == FOLDS and trainable["problems"]
    # The run's own fold count: with 2 folds a val class of 4 events is enough, with 5 it is not.
    train, val = split(val=but_few("long", 4))
    assert validate_main(["--train", str(train), "--val", str(val), "--calibration-folds", "2"]) == 0
    assert "cannot train" not in capsys.readouterr().err
    assert validate_main(["--train", str(train), "--val", str(val)]) == 0
    assert "val.jsonl: long has fewer events than the 5 calibration folds" in capsys.readouterr().err


@pytest.mark.parametrize("oversample", ["true", "false"])
def test_training_refuses_a_one_class_train_file_before_loading_a_model(split, tmp_path, oversample, capsys):
    """Today's crash: OversampleError (oversample on) or the prior correction's log(0) (off), with a
    traceback. Now: exit 1, the reason in one line, nothing trained. The train CLI's own function, in
    process (refused before any model is loaded: fast); `python -m processor.train_loop`'s way of ending
    on a mistake is test_cli.py's."""
    from processor.train_loop import main

    train, val = split(only("long"))
    out = tmp_path / "out"
    code = main(["--config", str(REPO / "configs" / "tiny.yaml"), "--train-file", str(train), "--val-file", str(val),
                 "--no-mlflow", "--output-dir", str(out), f"data.oversample={oversample}"])
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert "Traceback" not in err
    reason = [line for line in err.splitlines() if "cannot train a 3-class classifier" in line]
    assert len(reason) == 1 and "no short and no no_trade event" in reason[0], err
    assert not list(out.glob("*.zip")) and not (out / "metrics.json").exists()
