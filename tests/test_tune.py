"""processor.tune against the real thing: Optuna studies in sqlite and PostgreSQL, real Trainer runs of
qwen-tiny on a small sample set, a real MLflow server, and gates/gate.py for --gate-best."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from processor import tune

from conftest import REPO

N_EVENTS = 150  # 120 train / 30 val: ~15 optimizer steps per epoch at batch 8, a trial in ~10-30 s


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from demo_kit.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("tune-data")
    write_sample_data(out, n=N_EVENTS, seed=3)
    return out


def overrides(data_dir: Path | None, experiment: str, *, epochs: int, log_model: bool = False) -> list[str]:
    """Base-config overrides that keep a trial small (``data_dir`` None: the data come from flags)."""
    data = [] if data_dir is None else [f"data.train_file={data_dir / 'train.jsonl'}",
                                        f"data.val_file={data_dir / 'val.jsonl'}"]
    return [*data, f"training.epochs={epochs}", "training.batch_size=8", "eval.baselines=false",
            "eval.bootstrap_resamples=100", f"mlflow.log_model={str(log_model).lower()}",
            f"mlflow.experiment={experiment}"]


def write_yaml(path: Path, obj: dict) -> Path:
    path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    return path


SMALL_SPACE = {"gamma": {"type": "float", "low": 0.5, "high": 2.5},
               "lora_r": {"type": "categorical", "choices": [8, 16]},
               "lr": {"type": "float", "low": 2.0e-3, "high": 5.0e-3, "log": True}}


def cli(sweep: Path, out: Path, study: str, n: int, *extra: str) -> list[str]:
    # One thread per worker: on a busy 2-core box two torch threads per process run several times slower.
    return ["--config", str(REPO / "configs" / "tiny.yaml"), "--sweep", str(sweep), "--n-trials", str(n),
            "--study-name", study, "--output-dir", str(out), "--torch-threads", "1", *extra]


def load_study(out: Path, study: str, storage: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage or tune.default_storage(out))


def parent_and_children(client: MlflowClient, study: str) -> tuple[object, list]:
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`sweep.role` = 'parent' and tags.`optuna.study_name` = '{study}'")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, children


def progress_numbers(text: str, state: str = "") -> list[int]:
    """Trial numbers of the `[tune] trial N STATE ...` progress lines."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("[tune] trial ") and (not state or parts[3] == state):
            out.append(int(parts[2]))
    return out


# ---------------------------------------------------------------------------------------------
# A real sweep: parent + nested runs, artifacts, best value, --gate-best
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_logs_nested_trials_under_one_parent_and_gates_the_best(tracking, data_dir, tmp_path, capsys):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": SMALL_SPACE, "pruner": {"type": "none"}})
    # Thresholds any trained run meets, so the "would pass" summary and --gate-best have a candidate.
    lax = write_yaml(tmp_path / "lax_checks.yaml", {"class_balance": {"min_share": 0.0, "max_share": 1.0},
                                                    "val_macro_f1": {"min": 0.0},
                                                    "class_f1": {"long": 0.0, "short": 0.0}})
    out, study_name, model_name = tmp_path / "sweep", "t-sweep", "tune-test-model"
    rc = tune.main(cli(sweep, out, study_name, 3, "--gate-best", "--gate-checks", str(lax),
                       "--gate-model-name", model_name,
                       *overrides(data_dir, "tune-sweep", epochs=2, log_model=True)))
    printed = capsys.readouterr().out
    assert rc == 0, printed

    study = load_study(out, study_name)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(progress_numbers(printed, "COMPLETE")) == [0, 1, 2]

    client = MlflowClient()
    parent, children = parent_and_children(client, study_name)
    assert study.user_attrs[tune.PARENT_ATTR] == parent.info.run_id
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert sorted(by_number) == [0, 1, 2] and len(children) == 3
    for t in trials:
        child = by_number[t.number]
        assert child.data.tags["optuna.study_name"] == study_name
        assert child.info.run_id == t.user_attrs["mlflow_run_id"]
        assert float(child.data.params["loss.gamma"]) == pytest.approx(t.params["gamma"])
        assert int(child.data.params["lora.r"]) == t.params["lora_r"]
        assert float(child.data.params["training.lr"]) == pytest.approx(t.params["lr"])
        assert child.data.metrics["val_macro_f1"] == pytest.approx(t.value)
        assert (Path(t.user_attrs["output_dir"]) / "metrics.json").is_file()
        assert not (Path(t.user_attrs["output_dir"]) / "checkpoints").exists()

    # Best value = the best nested run's metric; the parent carries it and the best params.
    best_child = max(children, key=lambda c: c.data.metrics["val_macro_f1"])
    assert study.best_value == pytest.approx(best_child.data.metrics["val_macro_f1"])
    assert int(best_child.data.tags["optuna.trial_number"]) == study.best_trial.number
    assert parent.data.metrics["best_val_macro_f1"] == pytest.approx(study.best_value)
    for name, value in study.best_params.items():
        assert parent.data.tags[f"best.param.{name}"] == str(value)

    # Artifacts: the trials table, summary and Optuna's plots.
    root = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "summary.json", "plots"} <= root
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert f"{name}.html" in plots and f"{name}.png" in plots
    import pandas as pd

    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv", str(tmp_path)))
    assert list(table["number"]) == [0, 1, 2]
    assert list(table["val_macro_f1"]) == pytest.approx([t.value for t in trials])
    assert list(table["mlflow_run_id"]) == [t.user_attrs["mlflow_run_id"] for t in trials]

    # Gate: every trial passes the lax checks; --gate-best registered the best one's model.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gate_passing"] == sorted((t.number for t in trials), key=lambda n: -trials[n].value)
    assert summary["best_passing"]["number"] == study.best_trial.number
    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [v.run_id for v in versions] == [study.best_trial.user_attrs["mlflow_run_id"]]
    assert client.get_run(versions[0].run_id).data.tags["gate.status"] == "passed"
    assert f"best passing: trial {study.best_trial.number}" in printed


@pytest.mark.slow
def test_gate_verdicts_follow_the_checks_file(tracking, data_dir, tmp_path, capsys):
    """With the shipped thresholds the verdict comes from the gate's own checks on metrics.json."""
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": {"gamma": [1.0]}, "pruner": {"type": "none"}})
    out = tmp_path / "sweep"
    strict = write_yaml(tmp_path / "strict.yaml", {"val_macro_f1": {"min": 1.0}})
    # The data come from the train loop's --train-file/--val-file flags.
    rc = tune.main(cli(sweep, out, "t-verdict", 1, "--gate-checks", str(strict), "--train-file",
                       str(data_dir / "train.jsonl"), "--val-file", str(data_dir / "val.jsonl"),
                       "mlflow.enabled=false", *overrides(None, "tune-verdict", epochs=1)))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    t = load_study(out, "t-verdict").trials[0]
    metrics = json.loads((out / "trial_0000" / "metrics.json").read_text())
    assert metrics["val_macro_f1"] < 1.0
    assert metrics["data"]["train_file"] == str(data_dir / "train.jsonl")
    assert t.user_attrs["gate_pass"] is False
    assert any(f.startswith("val_macro_f1") for f in t.user_attrs["gate_failures"])
    assert "no completed trial would pass" in printed


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rerun_with_the_same_study_name_continues_to_n(tracking, data_dir, tmp_path, capsys):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": SMALL_SPACE, "pruner": {"type": "none"}})
    out, name = tmp_path / "sweep", "t-resume"
    args = overrides(data_dir, "tune-resume", epochs=1)

    assert tune.main(cli(sweep, out, name, 1, *args)) == 0  # "interrupted" after k=1 trial
    first = capsys.readouterr().out
    assert progress_numbers(first) == [0]
    assert len(load_study(out, name).trials) == 1

    assert tune.main(cli(sweep, out, name, 3, *args)) == 0
    second = capsys.readouterr().out
    assert "1 of 3 trials done" in second
    assert progress_numbers(second) == [1, 2]

    assert tune.main(cli(sweep, out, name, 3, *args)) == 0  # already complete: nothing more runs
    assert progress_numbers(capsys.readouterr().out) == []

    study = load_study(out, name)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    parent, children = parent_and_children(MlflowClient(), name)  # one parent across the three runs
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# Several workers on PostgreSQL
# ---------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return dict(os.environ)


@pytest.mark.slow
def test_two_workers_on_postgres_complete_n_trials_together(tracking, pg_database, data_dir, tmp_path):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": SMALL_SPACE, "pruner": {"type": "none"}})
    out, name, n = tmp_path / "sweep", "t-workers", 4
    cmd = [sys.executable, "-m", "processor.tune",
           *cli(sweep, out, name, n, "--storage", pg_database, *overrides(data_dir, "tune-workers", epochs=1))]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)
             for log in logs]
    for proc in procs:
        proc.wait(timeout=900)
    texts = [log.read_text(errors="replace") for log in logs]
    assert [p.returncode for p in procs] == [0, 0], texts

    study = optuna.load_study(study_name=name, storage=tune.normalize_url(pg_database))  # psycopg2 driver
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(n))  # n in total: none lost, none extra
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    ran = [progress_numbers(text) for text in texts]
    assert all(ran), ran  # both workers trained
    assert sorted(ran[0] + ran[1]) == list(range(n))  # no trial ran twice
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2

    parent, children = parent_and_children(MlflowClient(), name)
    assert study.user_attrs[tune.PARENT_ATTR] == parent.info.run_id
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(range(n))
    assert sorted(p.name for p in out.glob("trial_*") if (p / "metrics.json").is_file()) == \
        [f"trial_{i:04d}" for i in range(n)]


@pytest.mark.slow
def test_stale_trial_of_a_killed_worker_is_retried(tracking, data_dir, tmp_path):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": SMALL_SPACE, "pruner": {"type": "none"}})
    out, name = tmp_path / "sweep", "t-stale"
    # 30 epochs, no early stop: trial 0 must still be training when the worker is killed (a 2-epoch trial
    # of the demo base can finish within one polling second, and then there is nothing stale to retry).
    args = cli(sweep, out, name, 1, "--heartbeat", "1", "--grace-period", "3",
               *overrides(data_dir, "tune-stale", epochs=30), "training.patience=30")
    worker = subprocess.Popen([sys.executable, "-m", "processor.tune", *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path)
    storage = tune.default_storage(out)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:  # wait until trial 0 is training (its MLflow run exists)
            time.sleep(1)
            assert worker.poll() is None, "the worker finished before it could be killed"
            if not (out / "logs" / "trial_0000.log").exists():
                continue  # storage not fully set up by the worker yet: do not race its table creation
            trials = optuna.load_study(study_name=name, storage=storage).trials
            if trials and "mlflow_run_id" in trials[0].user_attrs:
                break
        else:
            pytest.fail("trial 0 never started")
    finally:
        worker.kill()
        worker.wait()
    time.sleep(4)  # past the grace period: trial 0's heartbeat is stale

    # The retrying worker runs the same sweep (space, study, storage) with a 1-epoch base config: a retry
    # takes its trial's parameters from the stale trial, never its length, and 30 epochs would only cost.
    retry_args = cli(sweep, out, name, 1, "--heartbeat", "1", "--grace-period", "3",
                     *overrides(data_dir, "tune-stale", epochs=1))
    assert tune.main(retry_args) == 0
    study = load_study(out, name)
    first, retry = study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == first.params
    assert retry.user_attrs["epochs_run"] == 1  # trained by the retrying worker, under its own base config
    assert retry.system_attrs["failed_trial"] == 0
    assert len(tune.counted(study.trials)) == 1
    client = MlflowClient()
    dead = client.get_run(first.user_attrs["mlflow_run_id"])
    assert dead.info.status == "KILLED" and dead.data.tags["optuna.stale"] == "true"
    parent, children = parent_and_children(client, name)
    assert {c.info.run_id for c in children} == {first.user_attrs["mlflow_run_id"], retry.user_attrs["mlflow_run_id"]}


# ---------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_median_pruner_stops_a_hopeless_trial(tracking, data_dir, tmp_path, capsys):
    sweep = write_yaml(tmp_path / "sweep.yaml", {
        "params": {"lr": [3.0e-3, 1.0e-9], "gamma": [1.0, 2.0]},
        "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0}})
    out, name = tmp_path / "sweep", "t-prune"
    out.mkdir()
    study = optuna.create_study(study_name=name, storage=tune.default_storage(out), direction="maximize")
    # Two sound trials set the median; lr 1e-9 leaves the model untrained.
    study.enqueue_trial({"lr": 3.0e-3, "gamma": 1.0})
    study.enqueue_trial({"lr": 3.0e-3, "gamma": 2.0})
    study.enqueue_trial({"lr": 1.0e-9, "gamma": 1.0})
    rc = tune.main(cli(sweep, out, name, 3, *overrides(data_dir, "tune-prune", epochs=2)))
    printed = capsys.readouterr().out
    assert rc == 0, printed

    good0, good1, bad = load_study(out, name).trials
    assert good0.state == good1.state == optuna.trial.TrialState.COMPLETE
    assert sorted(good0.intermediate_values) == sorted(good1.intermediate_values) == [1, 2]
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert list(bad.intermediate_values) == [1]  # stopped after its first epoch
    assert bad.intermediate_values[1] < statistics.median([good0.intermediate_values[1], good1.intermediate_values[1]])
    assert not (out / "trial_0002" / "metrics.json").exists()
    assert progress_numbers(printed, "PRUNED") == [2]

    run = MlflowClient().get_run(bad.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["optuna.pruned_at_epoch"] == "1"


# ---------------------------------------------------------------------------------------------
# User errors: exit 2, one clear message, no traceback, nothing trained
# ---------------------------------------------------------------------------------------------
BAD_SWEEPS = [
    ({"params": {"gama": {"type": "float", "low": 0, "high": 3}}}, ["params.gama", "unknown parameter", ":2:"]),
    ({"params": {"gamma": {"type": "float", "low": 3.0, "high": 0.5}}}, ["params.gamma", "inverted range", ":2:"]),
    ({"params": {"gamma": {"type": "float", "low": 1.0, "high": 1.0}}}, ["params.gamma", "empty range"]),
    ({"params": {"lora_r": {"type": "categorical", "choices": []}}}, ["params.lora_r.choices", "non-empty"]),
    ({"params": {"lora_r": []}}, ["params.lora_r.choices", "non-empty"]),
    ({"params": {"lr": {"type": "float", "low": "fast", "high": 1.0e-3}}}, ["params.lr.low", "expected a number"]),
    ({"params": {"lr": {"type": "float", "low": 0.0, "high": 1.0e-3, "log": True}}}, ["params.lr.low", "low > 0"]),
    ({"params": {"lora_dropout": {"type": "float", "low": 0.0, "high": 1.5}}}, ["params.lora_dropout", "lora.dropout"]),
    ({"params": {"lora_r": {"type": "float", "low": 4, "high": 8}}}, ["params.lora_r.type", "integer"]),
    ({"params": {"lora_r": [8, 0]}}, ["params.lora_r", "lora.r must be an integer in [1, 1024], got 0"]),
    ({"params": {"gamma": {"type": "float", "low": 0, "hihg": 3}}}, ["params.gamma.hihg", "unknown key"]),
    ({"params": {"gamma": {"type": "uniform", "low": 0, "high": 3}}}, ["params.gamma.type", "float"]),
    ({"params": {"lora_alpha": [16], "lora_alpha_ratio": [2]}}, ["lora_alpha_ratio", "not both"]),
    ({"param": {"gamma": [1.0]}}, ["param", "unknown key"]),
    ({"pruner": {"type": "median"}}, ["params", "non-empty"]),
    ({"params": {"gamma": [1.0]}, "pruner": {"type": "asha"}}, ["pruner.type", "median"]),
    ({"params": {"gamma": [1.0]}, "pruner": {"type": "median", "n_warmup": 1}}, ["pruner.n_warmup", "unknown key"]),
]


@pytest.mark.parametrize("content,expected", BAD_SWEEPS, ids=[e[0] + "|" + e[1] for _, e in BAD_SWEEPS])
def test_bad_sweep_files_are_rejected_with_the_key_named(content, expected, tmp_path, capsys):
    sweep = write_yaml(tmp_path / "bad.yaml", content)
    rc = tune.main(cli(sweep, tmp_path / "out", "t-bad", 2, "mlflow.enabled=false"))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(sweep) in err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "out").exists()  # nothing created, no study


@pytest.mark.parametrize("extra,expected", [
    (["--n-trials", "0"], "--n-trials must be >= 1"),
    (["--timeout", "-5"], "--timeout must be > 0"),
    (["--storage", "not a url"], "not a database URL"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the Optuna storage"),
    (["training.lrr=1"], "unknown key 'lrr'"),
    (["--gate-best", "mlflow.log_model=false"], "--gate-best needs"),
    (["--sweep", "missing.yaml"], "sweep file not found: missing.yaml"),
])
def test_bad_arguments_exit_2_without_traceback(extra, expected, tmp_path, capsys):
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": {"gamma": [1.0]}})
    rc = tune.main(cli(sweep, tmp_path / "out", "t-args", 2) + extra)
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err and "Traceback" not in err


def test_the_sweep_refuses_to_run_under_a_multi_process_launcher(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    sweep = write_yaml(tmp_path / "sweep.yaml", {"params": {"gamma": [1.0]}})
    rc = tune.main(cli(sweep, tmp_path / "out", "t-ddp", 2))
    err = capsys.readouterr().err
    assert rc == 2 and "not under torchrun" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_changing_the_search_space_of_an_existing_study_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    first = write_yaml(tmp_path / "a.yaml", {"params": {"gamma": [1.0, 2.0]}})
    second = write_yaml(tmp_path / "b.yaml", {"params": {"gamma": [1.0, 3.0], "lora_r": [8]}})
    study = optuna.create_study(study_name="t-space", storage=tune.default_storage(out), direction="maximize")
    from processor.config import load_config

    study.set_user_attr(tune.SPACE_ATTR, tune.load_sweep(first, load_config(REPO / "configs" / "tiny.yaml"))
                        .fingerprint())
    rc = tune.main(cli(second, out, "t-space", 2, "mlflow.enabled=false"))
    err = capsys.readouterr().err
    assert rc == 2
    assert "another search space (changed: gamma, lora_r)" in err
    assert study.trials == []
    # The study's objective has its name (Optuna's dashboard shows it instead of "Objective 0").
    assert optuna.load_study(study_name="t-space", storage=tune.default_storage(out)).metric_names == [tune.OBJECTIVE]


def test_data_and_model_flags_override_the_config_like_the_train_loop():
    args = tune.build_parser().parse_args([
        "--config", str(REPO / "configs" / "tiny.yaml"), "--train-file", "a/train.jsonl", "--val-file", "a/val.jsonl",
        "--model", "qwen-base", "data.train_file=overridden.jsonl", "training.lr=1e-3"])
    cfg = tune.base_config(args)
    assert (cfg.data.train_file, cfg.data.val_file, cfg.model) == ("a/train.jsonl", "a/val.jsonl", "qwen-base")
    assert cfg.training.lr == 1e-3
    # An empty value (an MLproject parameter left empty) keeps the config's.
    kept = tune.base_config(tune.build_parser().parse_args(["--config", str(REPO / "configs" / "tiny.yaml"),
                                                            "--model", ""]))
    assert kept.model == "qwen-tiny"


def test_shipped_sweep_file_is_valid():
    from processor.config import load_config

    sweep = tune.load_sweep(REPO / "configs" / "sweep.yaml", load_config(REPO / "configs" / "tiny.yaml"))
    assert {"gamma", "lora_r", "lr"} <= set(sweep.space)
    assert sweep.space["lr"].log
