"""``python -m processor.tune.dashboard``: Optuna's dashboard on the study a sweep wrote, found through
the same storage resolution as ``python -m processor.tune`` (sqlite default, or a PostgreSQL URL)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest

from conftest import free_port, wait_http
from processor.tune.dashboard import main
from processor.tune.storage import storage_url, sweep_output_dir


def make_study(name: str, *, storage: str = "", output_dir: Path | None = None) -> optuna.Study:
    """A small real study where tune would put it (two trials of a toy objective; no training)."""
    url = storage_url(storage, sweep_output_dir(name, str(output_dir) if output_dir else None))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 1.0 - abs(t.suggest_float("gamma", 0.0, 3.0) - 2.0), n_trials=2)
    return study


def served_study(args: list[str], name: str, workdir: Path) -> dict:
    """Start the dashboard on a free port, fetch the study over HTTP, stop it; the study's JSON."""
    port = free_port()
    log = workdir / "dashboard.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "processor.tune.dashboard", *args, "--study-name", name,
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/api/studies", timeout=120, proc=proc)
        except Exception:
            raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as resp:
            listed = {s["study_name"]: s for s in json.loads(resp.read())["study_summaries"]}
        assert name in listed, listed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{listed[name]['study_id']}",
                                    timeout=30) as resp:
            detail = json.loads(resp.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"/dashboard/studies/{listed[name]['study_id']}" in log.read_text()
    return detail


@pytest.mark.slow  # starts a server
def test_the_dashboard_shows_the_study_from_tune_s_default_storage(tmp_path, monkeypatch):
    # The default: no --storage, the sqlite file under outputs/sweeps/<study name> of the working
    # directory, which is where tune resolves it too.
    workdir = tmp_path / "repo"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    study = make_study("dash-sqlite")
    assert (workdir / "outputs" / "sweeps" / "dash-sqlite" / "optuna.db").is_file()
    detail = served_study([], "dash-sqlite", workdir)
    assert len(detail["trials"]) == 2
    assert [t["params"][0]["name"] for t in detail["trials"]] == ["gamma", "gamma"]
    assert max(t["values"][0] for t in detail["trials"]) == pytest.approx(study.best_value)


@pytest.mark.slow  # starts a server and PostgreSQL
def test_the_dashboard_shows_a_postgresql_study(pg_database, tmp_path):
    make_study("dash-pg", storage=pg_database)
    plain = pg_database.replace("postgresql+psycopg2://", "postgresql://", 1)  # as a user types it
    detail = served_study(["--storage", plain], "dash-pg", tmp_path)
    assert len(detail["trials"]) == 2


def test_no_sweep_storage_is_a_usage_error(tmp_path, capsys):
    assert main(["--output-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    # The file tune would have written for that --output-dir, named in full.
    assert f"no sweep storage at {(tmp_path / 'nowhere' / 'optuna.db').resolve().as_posix()}" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "nowhere").exists()  # nothing created


def test_an_unknown_study_names_the_ones_there(tmp_path, capsys):
    make_study("present", output_dir=tmp_path)
    assert main(["--study-name", "absent", "--storage", storage_url("", tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "holds no study 'absent'" in err and "'present'" in err
