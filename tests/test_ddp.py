"""Multi-process training on CPU (gloo): a real `torchrun --nproc_per_node 2` job, one MLflow run,
one set of outputs, whole-val-set evaluation, and a contract failure that stops every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, free_port
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
CONTRACT_MESSAGE = "the data break the event contract"


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> Path:
    """Small data whose val size (61) is odd and larger than the eval batch (8), so two ranks'
    shards need the distributed sampler's padding: a duplicated or dropped event would show."""
    from demo_kit.sample_data import write_sample_data

    out = tmp_path_factory.mktemp("ddp-data")
    write_sample_data(out, n=305, seed=1)
    return out


def _env(**extra: str) -> dict[str, str]:
    # A run id or experiment id left by in-process tests would make rank 0 join someone else's run.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env.update(extra)
    return env


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "processor.train_loop", "--config", str(REPO / "configs" / "tiny.yaml"),
            "--train-file", str(data / "train.jsonl"), "--val-file", str(data / "val.jsonl"),
            "--output-dir", str(out), "--max-epochs", "2", "training.eval_batch_size=8", *extra]


def _torchrun(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    port = free_port()
    return subprocess.run([*TORCHRUN, "--nproc_per_node", "2", "--master-addr", "127.0.0.1", "--master-port",
                           str(port), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _val_counts(path: Path) -> dict[str, int]:
    return dict(Counter(json.loads(line)["label"] for line in path.read_text().splitlines() if line.strip()))


def test_torchrun_two_processes_one_run_one_set_of_outputs(ddp_data, mlflow_server, tmp_path):
    out = tmp_path / "out"
    writes = tmp_path / "writes.log"  # every file a recorder writes, with the writer's rank
    proc = _torchrun(_train_args(ddp_data, out, "--experiment-name", "tests-ddp"),
                     _env(MLFLOW_TRACKING_URI=mlflow_server, PROCESSOR_LOG_WRITES=str(writes)), cwd=tmp_path,
                     timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # Rank 0 alone wrote the run's files; rank 1 wrote none.
    lines = [line.split() for line in writes.read_text().splitlines()]
    assert {rank for rank, _ in lines} == {"0"}, lines
    assert sorted(name for _, name in lines) == ["abstention.png", "confusion_matrix.png", "learning_curve.png",
                                                 "metrics.json", "mlflow_run_id", "reliability_diagram.png",
                                                 "resolved_config.yaml", "validation_report.json"]
    # Only rank 0 prints the summary.
    assert proc.stdout.count("val_macro_f1=") == 1, proc.stdout[-2000:]

    # One set of outputs; the supports are the val file's counts (each event evaluated once).
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "model_final.zip", "confusion_matrix.png", "learning_curve.png", "resolved_config.yaml",
            "reliability_diagram.png", "abstention.png", "validation_report.json", "checkpoints"} == names
    assert not list(out.glob("*.tmp*"))
    metrics = json.loads((out / "metrics.json").read_text())
    supports = {name: row["support"] for name, row in metrics["per_class"].items()}
    assert supports == _val_counts(ddp_data / "val.jsonl")
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 61

    # Exactly one MLflow run, made by rank 0, with the usual params, metrics and artifacts.
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("tests-ddp")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.gamma"] == "0.5" and run.data.params["training.epochs"] == "2"
    assert run.data.metrics["val_macro_f1"] == pytest.approx(metrics["val_macro_f1"])
    assert len(client.get_metric_history(run.info.run_id, "val_macro_f1")) >= metrics["epochs_run"]
    assert client.get_metric_history(run.info.run_id, "train_loss")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "model_final.zip", "confusion_matrix.png", "resolved_config.yaml",
            "validation_report.json"} <= artifacts
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    try:
        logged = mlflow.search_logged_models(experiment_ids=[exp.experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'",
                                             output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(logged) == 1


@pytest.fixture
def broken_data(ddp_data, tmp_path) -> Path:
    out = tmp_path / "broken"
    out.mkdir()
    (out / "train.jsonl").write_text((ddp_data / "train.jsonl").read_text())
    lines = (ddp_data / "val.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["session"] = "lunch"  # not a contract session
    lines[2] = json.dumps(row)
    (out / "val.jsonl").write_text("\n".join(lines) + "\n")
    return out


def test_contract_failure_stops_every_rank_with_exit_1(broken_data, tmp_path):
    args = _train_args(broken_data, tmp_path / "out", "--no-mlflow")
    # Each rank started by hand with the variables torchrun sets, so each rank's own exit code is
    # seen: both exit 1 on their own (no rank waits in a collective for one that has quit).
    port = str(free_port())
    ranks = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path, env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                                     LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                                     MASTER_PORT=port))
             for r in (0, 1)]
    results = [p.communicate(timeout=300) for p in ranks]
    assert [p.returncode for p in ranks] == [1, 1], results
    stderr = [err for _, err in results]
    assert CONTRACT_MESSAGE in stderr[0] and "val.jsonl:3" in stderr[0] and "session" in stderr[0]
    assert CONTRACT_MESSAGE not in stderr[1]  # one message, from rank 0
    report = json.loads((tmp_path / "out" / "validation_report.json").read_text())
    assert report["valid"] is False and not (tmp_path / "out" / "metrics.json").exists()

    # The same through torchrun: the job ends with exit 1 and the message once.
    proc = _torchrun(args, _env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count(CONTRACT_MESSAGE) == 1


def test_torchrun_joins_the_run_mlflow_run_made(ddp_data, mlflow_server, tmp_path):
    """`mlflow run` exports MLFLOW_RUN_ID to the command; under torchrun rank 0 joins that run and
    no other run appears."""
    client = MlflowClient(mlflow_server)
    exp_id = client.create_experiment("tests-ddp-join")
    made = client.create_run(exp_id)
    # No classic baselines: this test reads none of their figures (the first test runs them under DDP).
    proc = _torchrun(_train_args(ddp_data, tmp_path / "out", "eval.baselines=false", "--max-epochs", "1"),
                     _env(MLFLOW_TRACKING_URI=mlflow_server, MLFLOW_RUN_ID=made.info.run_id,
                          MLFLOW_EXPERIMENT_ID=exp_id), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = client.search_runs([exp_id])
    assert [r.info.run_id for r in runs] == [made.info.run_id]
    run = client.get_run(made.info.run_id)
    assert run.data.params["training.epochs"] == "1" and "val_macro_f1" in run.data.metrics
    assert "model_final.zip" in {a.path for a in client.list_artifacts(made.info.run_id)}
