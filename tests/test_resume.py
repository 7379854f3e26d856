"""Faults lose nothing: a training process killed for real (SIGKILL) mid-epoch or mid-save resumes to the
very run an uninterrupted one gives, in the same MLflow run; a finished run is never retrained.

The uninterrupted run is the session's ``early_stopped_run`` (a few epochs, stopped by patience 2 after
an early best epoch); the killed runs train the same settings through the CLI (EARLY_STOPPED_OVERRIDES).
Resuming to the same figures needs the same run, not a long one: the default schedule (up to 30 epochs)
would train the same thing twice more for nothing the exactness checks need."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from processor.train_loop import main

from conftest import EARLY_STOPPED_OVERRIDES, REPO, as_cli_overrides

pytestmark = pytest.mark.slow


def _argv(sample_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "processor.train_loop", "--config", str(REPO / "configs/tiny.yaml"),
            "--train-file", str(sample_dir / "train.jsonl"), "--val-file", str(sample_dir / "val.jsonl"),
            "--output-dir", str(out), *as_cli_overrides(EARLY_STOPPED_OVERRIDES), *extra]


def _saved_epoch(checkpoint: Path) -> float | None:
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError):
        return None


def _kill_when(proc: subprocess.Popen, out: Path, ready, timeout: float = 1500) -> Path:
    """Poll the run's checkpoints; SIGKILL the process as soon as ``ready(checkpoint)`` holds for one."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the run ended before the moment it was to be killed"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        for checkpoint in sorted((out / "checkpoints").glob("checkpoint-*")):
            if ready(proc, checkpoint):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return checkpoint
        time.sleep(0.005)


def _same_run(got: dict, want: dict) -> None:
    assert (got["best_epoch"], got["epochs_run"]) == (want["best_epoch"], want["epochs_run"])
    assert got["val_macro_f1"] == pytest.approx(want["val_macro_f1"], abs=1e-9)
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert got["calibration"]["temperature"] == pytest.approx(want["calibration"]["temperature"], abs=1e-9)


def test_kill_after_the_best_epoch_resumes_with_its_patience_in_the_same_mlflow_run(early_stopped_run, sample_dir,
                                                                                     tmp_path, tracking):
    """Killed one epoch before the uninterrupted run stopped (early stopping's patience half spent), the
    resumed run stops at the same epoch (the patience counter comes back from the checkpoint), with the
    same metrics, as ONE MLflow run that ends FINISHED and holds every epoch's metrics."""
    want = early_stopped_run.metrics
    assert want["epochs_run"] < EARLY_STOPPED_OVERRIDES["training.epochs"]  # stopped by its patience
    assert want["best_epoch"] < want["epochs_run"] - 1  # the kill lands while patience is being spent
    out = tmp_path / "killed"
    argv = _argv(sample_dir, out)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def late_enough(proc, checkpoint):
        epoch = _saved_epoch(checkpoint)
        return epoch is not None and round(epoch) >= want["epochs_run"] - 1

    _kill_when(proc, out, late_enough)
    assert not (out / "metrics.json").exists()
    run_id = (out / "checkpoints" / "mlflow_run_id").read_text(encoding="utf-8").strip()
    client = MlflowClient(tracking)
    assert client.get_run(run_id).info.status == "RUNNING"  # the killed process could not end it
    # Without --resume the unfinished directory is protected (the CLI's main in process: refused before
    # anything is loaded).
    assert main(argv[3:]) == 2
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_run(json.loads((out / "metrics.json").read_text()), want)

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["output_dir"] == out.as_posix()
    epochs = sorted({m.step for m in client.get_metric_history(run_id, "val_macro_f1")})
    assert epochs == list(range(1, want["epochs_run"] + 1))
    exp = client.get_experiment(run.info.experiment_id)
    same_name = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run.info.run_name}'")
    assert [r.info.run_id for r in same_name if r.data.tags.get("output_dir") == out.as_posix()] == [run_id]


def test_kill_mid_save_resumes_from_the_newest_complete_checkpoint(early_stopped_run, sample_dir, tmp_path):
    """SIGKILL while a checkpoint is being written (its folder exists, its trainer_state.json, written
    last, does not): --resume skips it with a note and ends as the uninterrupted run."""
    out = tmp_path / "mid-save"
    argv = _argv(sample_dir, out, "--no-mlflow")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def mid_save(proc, checkpoint):
        newest = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        # Only the newest: an older one may be half-deleted by the rotation (save_total_limit).
        if checkpoint != newest or (checkpoint / "trainer_state.json").exists():
            return False
        os.kill(proc.pid, signal.SIGSTOP)  # freeze it, then look again: kill only if still mid-save
        if (checkpoint / "trainer_state.json").exists() or not any(out.glob("checkpoints/*/trainer_state.json")):
            os.kill(proc.pid, signal.SIGCONT)  # too late for this one (or no complete one yet): next save
            return False
        return True

    cut = _kill_when(proc, out, mid_save)
    assert cut.is_dir() and not (cut / "trainer_state.json").exists()
    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"skipping the incomplete checkpoint {cut}" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    _same_run(json.loads((out / "metrics.json").read_text()), early_stopped_run.metrics)


def test_resume_on_a_finished_run_is_refused_and_changes_nothing(trained_run, sample_dir, capsys):
    out = trained_run.output_dir
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = main(["--config", str(REPO / "configs/tiny.yaml"), "--no-mlflow", "--train-file",
                 str(sample_dir / "train.jsonl"), "--val-file", str(sample_dir / "val.jsonl"),
                 "--output-dir", str(out), "--resume"])
    assert code == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
