"""Temporal leakage: the per-symbol overlap check (processor.leakage), validate --train/--val,
sample_data --time-split / --random-split, and the train loop's tag and metrics.json block."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from demo_kit import sample_data
from processor.data import load_split
from processor.leakage import format_duration, time_overlap
from processor.validate import main as validate_main

from conftest import CONTRACT_DIR, read_jsonl, tiny_config

BAR_SECONDS = 300


def frame(*events: tuple[str | None, str | None]) -> pd.DataFrame:
    """A frame as processor.data loads it: object columns, None where a key was absent."""
    return pd.DataFrame({"timestamp": [t for t, _ in events], "symbol": [s for _, s in events]}, dtype=object)


def write_split(directory: Path, train: list[tuple[str | None, str | None]],
                val: list[tuple[str | None, str | None]]) -> tuple[Path, Path]:
    """Contract-valid train/val files whose events carry the given (timestamp, symbol) pairs."""
    base = {k: v for k, v in read_jsonl(CONTRACT_DIR / "examples.jsonl")[0].items()
            if k not in ("timestamp", "symbol")}
    paths = []
    for name, events in (("train", train), ("val", val)):
        rows = []
        for i, (t, s) in enumerate(events):
            row = {**base, "id": f"{name}-{i}"}
            if t is not None:
                row["timestamp"] = t
            if s is not None:
                row["symbol"] = s
            rows.append(json.dumps(row))
        path = directory / f"{name}.jsonl"
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


# ------------------------------------------------------------------------------------ time_overlap
def test_an_overlapping_split_is_flagged_and_a_time_ordered_one_is_not():
    train = frame(("2024-03-05T10:00:00Z", "EURUSD"), ("2024-03-05T12:00:00Z", "EURUSD"))
    later = frame(("2024-03-05T13:00:00Z", "EURUSD"), ("2024-03-06T09:00:00Z", "EURUSD"))
    mixed = frame(("2024-03-05T11:00:00Z", "EURUSD"), ("2024-03-06T09:00:00Z", "EURUSD"))

    ordered = time_overlap(train, later)
    assert (ordered.checked, ordered.leakage_risk, ordered.val_overlapping) == (True, False, 0)
    assert ordered.min_gap_seconds == 3600 and ordered.tag == "false"

    overlapping = time_overlap(train, mixed)
    assert (overlapping.checked, overlapping.leakage_risk, overlapping.val_overlapping) == (True, True, 1)
    assert overlapping.min_gap_seconds == -3600 and overlapping.tag == "true"
    (eurusd,) = overlapping.to_dict()["symbols"]
    assert eurusd == {"symbol": "EURUSD", "n_train": 2, "n_val": 2, "latest_train": "2024-03-05T12:00:00Z",
                      "earliest_val": "2024-03-05T11:00:00Z", "gap_seconds": -3600.0, "val_overlapping": 1,
                      "overlaps": True}
    json.dumps(overlapping.to_dict(), allow_nan=False)  # JSON-able as metrics.json writes it


def test_symbols_are_compared_with_themselves_only():
    """Symbol A's val events older than symbol B's train events is not leakage; A against A is."""
    train = frame(("2024-03-01T10:00:00Z", "A"), ("2024-03-09T10:00:00Z", "B"))
    report = time_overlap(train, frame(("2024-03-02T10:00:00Z", "A"), ("2024-03-10T10:00:00Z", "B")))
    assert report.leakage_risk is False
    assert [s.symbol for s in report.symbols] == ["A", "B"]
    assert report.min_gap_seconds == 86_400

    report = time_overlap(train, frame(("2024-03-02T10:00:00Z", "A"), ("2024-03-08T10:00:00Z", "B")))
    assert report.leakage_risk is True
    assert {s.symbol: s.overlaps for s in report.symbols} == {"A": False, "B": True}


def test_a_symbol_in_one_split_only_has_nothing_to_overlap_with():
    report = time_overlap(frame(("2024-03-09T10:00:00Z", "A")),
                          frame(("2024-03-10T10:00:00Z", "A"), ("2024-01-01T00:00:00Z", "NEW")))
    assert report.leakage_risk is False
    new = next(s for s in report.symbols if s.symbol == "NEW")
    assert (new.n_train, new.n_val, new.gap_seconds, new.overlaps) == (0, 1, None, False)


def test_events_without_a_symbol_form_one_group():
    train = frame(("2024-03-09T10:00:00Z", None))
    # A symbolled val event older than the symbol-less train event: different groups, no overlap.
    report = time_overlap(train, frame(("2024-03-01T10:00:00Z", "EURUSD")))
    assert report.leakage_risk is False
    # A symbol-less val event older than it: same group, overlap.
    report = time_overlap(train, frame(("2024-03-01T10:00:00Z", None)))
    assert report.leakage_risk is True
    assert report.to_dict()["symbols"][0]["symbol"] is None
    assert "(no symbol)" in report.summary()


@pytest.mark.parametrize("train_t, val_t, overlaps", [
    # 02:10 at +09:00 is 17:10 UTC the day before: compared as strings, the val event would look older.
    ("2024-03-06T02:10:00+09:00", "2024-03-05T17:15:00Z", False),
    ("2024-03-06T02:10:00+09:00", "2024-03-05T17:05:00Z", True),
    ("2024-03-05T12:00:00-05:00", "2024-03-05T16:59:59Z", True),
    ("2024-03-05T12:00:00-05:00", "2024-03-05T17:00:01Z", False),
])
def test_times_are_compared_in_utc(train_t, val_t, overlaps):
    report = time_overlap(frame((train_t, "XAUUSD")), frame((val_t, "XAUUSD")))
    assert report.leakage_risk is overlaps


@pytest.mark.parametrize("val_t, overlapping, gap", [
    ("2024-03-05T12:00:00Z", 1, 0.0),           # the same instant: not later, so an overlap
    ("2024-03-05T21:00:00+09:00", 1, 0.0),      # the same instant written with an offset
    ("2024-03-05T12:00:00.001Z", 0, 0.001),     # the smallest later time the contract can write
    ("2024-03-05T12:00:01Z", 0, 1.0),
])
def test_boundary_a_val_event_at_the_latest_train_time_overlaps(val_t, overlapping, gap):
    report = time_overlap(frame(("2024-03-05T11:00:00Z", "A"), ("2024-03-05T12:00:00Z", "A")), frame((val_t, "A")))
    assert report.val_overlapping == overlapping
    assert report.leakage_risk is (overlapping > 0)
    assert report.min_gap_seconds == pytest.approx(gap)


def test_no_timestamps_is_not_checked():
    report = time_overlap(frame((None, "A")), frame(("2024-03-05T12:00:00Z", "A")))
    assert (report.checked, report.leakage_risk, report.tag) == (False, None, "unknown")
    assert "no train event has a timestamp" in report.reason and report.symbols == []
    # Frames without the optional columns at all (not what the loader makes, but accepted).
    bare = time_overlap(pd.DataFrame({"id": ["a"]}), pd.DataFrame({"id": ["b"]}))
    assert (bare.checked, bare.leakage_risk, bare.train_without_timestamp) == (False, None, 1)


def test_some_timestamps_missing_reports_the_counts_and_certifies_nothing():
    train = frame(("2024-03-05T12:00:00Z", "A"), (None, "A"), (None, "A"))
    clean = time_overlap(train, frame(("2024-03-06T12:00:00Z", "A"), (None, "A")))
    assert (clean.checked, clean.leakage_risk) == (False, None)
    assert (clean.train_without_timestamp, clean.val_without_timestamp) == (2, 1)
    assert "2 of 3 train and 1 of 2 val events have no timestamp" in clean.reason
    # An overlap among the timestamped events is real, whatever the others are.
    dirty = time_overlap(train, frame(("2024-03-04T12:00:00Z", "A"), (None, "A")))
    assert (dirty.checked, dirty.leakage_risk, dirty.val_overlapping) == (False, True, 1)


def test_every_timestamp_form_the_contract_accepts_is_compared(tmp_path):
    """Loaded through the contract (processor.data): lowercase t/z, a space, fractions, offsets."""
    train_path, val_path = write_split(
        tmp_path,
        train=[("2024-03-05t12:00:00z", "A"), ("2024-03-05 12:00:00.5+01:00", "B")],
        val=[("2024-03-05T12:00:00Z", "A"), ("2024-03-05T11:00:00.75Z", "B")],
    )
    train, val = load_split(train_path, val_path)
    report = time_overlap(train, val)
    a, b = report.symbols
    assert (a.symbol, a.val_overlapping, a.gap_seconds) == ("A", 1, 0.0)
    assert (b.symbol, b.val_overlapping, b.gap_seconds) == ("B", 0, pytest.approx(0.25))


@pytest.mark.parametrize("seconds, text", [(0, "0m"), (3300, "55m"), (18_060, "5h 01m"),
                                           (2 * 86_400 + 3 * 3600 + 300, "2d 3h 05m"), (-4200, "-1h 10m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --------------------------------------------------------------------------- validate --train/--val
def run_validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = validate_main([*args])
    out, err = capsys.readouterr()
    return code, out, err


OVERLAPPING = dict(train=[("2024-03-05T10:00:00Z", "EURUSD"), ("2024-03-07T10:00:00Z", "EURUSD")],
                   val=[("2024-03-06T10:00:00Z", "EURUSD"), ("2024-03-08T10:00:00Z", "XAUUSD")])
ORDERED = dict(train=[("2024-03-05T10:00:00Z", "EURUSD"), ("2024-03-07T10:00:00Z", "XAUUSD")],
               val=[("2024-03-06T10:00:00Z", "EURUSD"), ("2024-03-08T10:00:00Z", "XAUUSD")])


def test_validate_warns_on_an_overlapping_split_and_fails_only_when_asked(tmp_path, capsys):
    train, val = write_split(tmp_path, **OVERLAPPING)
    report = tmp_path / "report.json"
    code, out, err = run_validate(capsys, "--train", str(train), "--val", str(val), "--report-json", str(report))
    assert code == 0
    assert "WARNING: temporal leakage risk: 1 of 2 val events" in err and "EURUSD" in err
    assert "EURUSD: train 2 up to 2024-03-07T10:00:00Z, val 1 from 2024-03-06T10:00:00Z: OVERLAP" in out
    assert "XAUUSD: train 0, val 1 from 2024-03-08T10:00:00Z: only in one split" in out
    leakage = json.loads(report.read_text(encoding="utf-8"))["leakage"]
    assert (leakage["checked"], leakage["leakage_risk"], leakage["val_overlapping"]) == (True, True, 1)

    code, out, err = run_validate(capsys, "--train", str(train), "--val", str(val), "--fail-on-leakage")
    assert code == 1 and "LEAKAGE: temporal leakage risk" in err and "Traceback" not in err


def test_validate_passes_a_time_ordered_split(tmp_path, capsys):
    train, val = write_split(tmp_path, **ORDERED)
    report = tmp_path / "report.json"
    code, out, err = run_validate(capsys, "--train", str(train), "--val", str(val), "--fail-on-leakage",
                                  "--report-json", str(report))
    # Two events cannot train a 3-class classifier: that warning (processor.trainable) is the only one.
    assert code == 0 and [line for line in err.splitlines() if "cannot train" not in line] == []
    assert "EURUSD: train 1 up to 2024-03-05T10:00:00Z, val 1 from 2024-03-06T10:00:00Z: gap 1d 0h 00m" in out
    assert "no temporal overlap" in out
    assert json.loads(report.read_text(encoding="utf-8"))["leakage"]["leakage_risk"] is False


def test_validate_says_when_it_cannot_check(tmp_path, capsys):
    train, val = write_split(tmp_path, train=[(None, "A")], val=[(None, "A")])
    code, out, err = run_validate(capsys, "--train", str(train), "--val", str(val), "--fail-on-leakage")
    assert code == 0 and "temporal leakage not checked: no train and no val event has a timestamp" in out


def test_validate_checks_the_contract_before_the_times(tmp_path, capsys):
    train, val = write_split(tmp_path, **OVERLAPPING)
    val.write_text(val.read_text(encoding="utf-8").replace('"london"', '"tokyo"'), encoding="utf-8")
    report = tmp_path / "report.json"
    code, _, err = run_validate(capsys, "--train", str(train), "--val", str(val), "--report-json", str(report))
    assert code == 1 and "key=session" in err and "leakage" not in err
    assert json.loads(report.read_text(encoding="utf-8"))["leakage"] is None


@pytest.mark.parametrize("args, needle", [
    (["--train", "t.jsonl"], "--train and --val go together"),
    (["--train", "t.jsonl", "--val", "v.jsonl", "x.jsonl"], "--train and --val go together"),
    (["x.jsonl", "--fail-on-leakage"], "--fail-on-leakage needs --train and --val"),
    ([], "nothing to check"),
])
def test_validate_split_usage_errors(tmp_path, capsys, args, needle):
    code, _, err = run_validate(capsys, *args)
    assert code == 2 and needle in err and "Traceback" not in err


# ----------------------------------------------------------------------------------- sample data
# sha256 of the seed-0 default files, computed before --time-split existed: benchmarks and README
# figures are read from these exact events, so no new option may move a byte of the default output.
DEFAULT_TRAIN_SHA256 = "57eb8f0ddac9cd9a384f73c412495edd02d9e4e2d24eefc3f3edd2468b4f7e35"
DEFAULT_VAL_SHA256 = "89daa5c9217322bd2b826ed9dff51b290a91ad019861eef9a51e06398f6777a9"
# The data card, canonical JSON without generator_version (which changes with every release).
# Changed once, on purpose: the card names its generator, demo_kit.sample_data since it left processor.
DEFAULT_CARD_SHA256 = "18d0a63056113e9016293cb48cf562b195d697d234d6d413c325bc1b45d80f1e"


def card_digest(card: dict[str, Any]) -> str:
    card = {k: v for k, v in card.items() if k != "generator_version"}
    return hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()


def test_default_sample_data_bytes_are_unchanged(tmp_path):
    assert sample_data.main(["--out", str(tmp_path)]) == 0
    assert hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest() == DEFAULT_TRAIN_SHA256
    assert hashlib.sha256((tmp_path / "val.jsonl").read_bytes()).hexdigest() == DEFAULT_VAL_SHA256
    assert card_digest(json.loads((tmp_path / "data_card.json").read_text(encoding="utf-8"))) == DEFAULT_CARD_SHA256


def _events(data: sample_data.SampleData) -> list[dict[str, Any]]:
    return sorted(data.train + data.val, key=lambda r: r["id"])


def test_the_splits_share_the_events_of_a_seed():
    default = sample_data.generate(n=400, seed=3)
    assert sample_data.generate(n=400, seed=3, split="chronological", embargo_bars=50) == default
    shuffled = sample_data.generate(n=400, seed=3, split="random")
    assert _events(shuffled) == _events(default)
    assert len(shuffled.val) == len(default.val) and shuffled.val != default.val


@pytest.mark.parametrize("embargo_bars", [12, 288])
def test_time_split_leaves_at_least_the_embargo_between_train_and_val_of_every_symbol(tmp_path, embargo_bars):
    out = tmp_path / "ts"
    assert sample_data.main(["--out", str(out), "--time-split", "--embargo-bars", str(embargo_bars)]) == 0
    card = json.loads((out / "data_card.json").read_text(encoding="utf-8"))
    assert (card["embargo_bars"], card["embargo_minutes"]) == (embargo_bars, embargo_bars * 5)
    assert card["gap_minutes"] >= embargo_bars * 5
    train, val = load_split(out / "train.jsonl", out / "val.jsonl")
    report = time_overlap(train, val)
    assert report.checked and report.leakage_risk is False
    assert all(s.gap_seconds >= embargo_bars * BAR_SECONDS for s in report.symbols if s.gap_seconds is not None)
    # Same train events as the default split; val loses exactly the events inside the embargo.
    default = sample_data.generate()
    assert list(train["id"]) == [r["id"] for r in default.train]
    dropped = [r["id"] for r in default.val if r["id"] not in set(val["id"])]
    assert len(dropped) == card["dropped_by_embargo"] == card["n"] - card["n_train"] - card["n_val"]
    if embargo_bars == 288:  # a day: seed 0's first val events fall inside it
        assert dropped == [r["id"] for r in default.val[: len(dropped)]] and dropped


def test_random_split_overlaps_in_time(tmp_path):
    assert sample_data.main(["--out", str(tmp_path), "--random-split", "--n", "300"]) == 0
    report = time_overlap(*load_split(tmp_path / "train.jsonl", tmp_path / "val.jsonl"))
    assert report.leakage_risk is True


@pytest.mark.parametrize("args, needle", [
    (["--embargo-bars", "3"], "--embargo-bars needs --time-split"),
    (["--time-split", "--random-split"], "not allowed with"),
    (["--time-split", "--embargo-bars", "-1"], "non-negative"),
    (["--time-split", "--embargo-bars", "1000000"], "leaves no validation events"),
])
def test_split_flags_usage_errors(tmp_path, capsys, args, needle):
    """Exit 2 with the reason: argparse's own refusals (SystemExit) or one `error:` line (the values)."""
    try:
        code = sample_data.main(["--out", str(tmp_path / "x"), *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "x" / "train.jsonl").exists()


# ------------------------------------------------------------------------------------- train loop
def test_the_hook_is_off_when_the_config_says_so(sample_dir, tmp_path):
    from processor.recorder import NullRecorder
    from processor.train_loop import prepare_data

    cfg = tiny_config(sample_dir, tmp_path, **{"trust.check_time_leakage": False})
    assert prepare_data(cfg, NullRecorder(tmp_path)).leakage is None
    cfg = tiny_config(sample_dir, tmp_path)
    assert prepare_data(cfg, NullRecorder(tmp_path)).leakage.leakage_risk is False


@pytest.mark.slow
def test_a_run_on_an_overlapping_split_is_tagged_leakage_risk(tracking, make_sample_data, tmp_path, capfd):
    from mlflow import MlflowClient

    from processor.train_loop import train

    data = make_sample_data(n=200, seed=5, split="random")
    cfg = tiny_config(data, tmp_path / "out", **{
        "training.epochs": 1, "eval.baselines": False, "eval.bootstrap_resamples": 100,
        "mlflow.log_model": False, "mlflow.experiment": "leakage"})
    result = train(cfg)
    assert "WARNING: temporal leakage risk" in capfd.readouterr().err
    written = json.loads((result.output_dir / "metrics.json").read_text(encoding="utf-8"))["leakage"]
    assert (written["checked"], written["leakage_risk"]) == (True, True) and written["val_overlapping"] > 0
    assert written == json.loads(json.dumps(result.metrics["leakage"]))
    assert MlflowClient(tracking).get_run(result.run_id).data.tags["leakage_risk"] == "true"
