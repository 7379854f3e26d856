"""What a training run logs to MLflow, in the fast tier (no training, no server): the per-epoch
metrics under the names the gate and the sweep read (``val_*``, one step per epoch), and the final
metrics at the last epoch's step, so MLflow's latest value (run page, search_runs, the sweep) is the
shipped model's and not the last epoch's. A real MLflow store (sqlite in a temp directory) and the
project's own logger and recorder, fed made-up epochs; test_train_loop.py checks a real run (slow)."""

from __future__ import annotations

import mlflow
from transformers import TrainerState

from conftest import sqlite_store, tracking_at
from processor.record import Metrics
from processor.recorder import MlflowRecorder
from processor.tracking import MlflowEpochLogger

# Two epochs as Trainer reports them (eval_ prefix, its own timing keys); the second is the worse, and
# the shipped model (early stopping restores the best) is the first.
EPOCHS = [
    {"eval_loss": 0.91, "eval_macro_f1": 0.62, "eval_accuracy": 0.70, "eval_f1_long": 0.55,
     "eval_runtime": 1.5, "eval_samples_per_second": 100.0, "eval_steps_per_second": 4.0, "epoch": 1.0},
    {"eval_loss": 0.95, "eval_macro_f1": 0.58, "eval_accuracy": 0.66, "eval_f1_long": 0.50,
     "eval_runtime": 1.4, "eval_samples_per_second": 101.0, "eval_steps_per_second": 4.1, "epoch": 2.0},
]
SHIPPED = {"val_macro_f1": 0.62, "val_accuracy": 0.70, "best_epoch": 1, "epochs_run": 2}


def test_epoch_and_final_metrics_names_and_steps(mlflow_sqlite_template, tmp_path):
    uri = sqlite_store(mlflow_sqlite_template, tmp_path / "store")
    with tracking_at(uri) as client:
        experiment = client.create_experiment("fast-tracking", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            logger = MlflowEpochLogger()
            for step, metrics in zip((10, 20), EPOCHS):
                logger.on_evaluate(None, TrainerState(epoch=metrics["epoch"], global_step=step), None,
                                   metrics=dict(metrics))
            MlflowRecorder(tmp_path / "out", run).outputs(Metrics.from_dict(SHIPPED), [])
        run_id = run.info.run_id

        logged = client.get_run(run_id).data.metrics
        # Per epoch: val_<name>, Trainer's timing keys left out, nothing under the bare names.
        for name in ("val_loss", "val_macro_f1", "val_accuracy", "val_f1_long"):
            history = client.get_metric_history(run_id, name)
            assert [(m.step, m.value) for m in history][:2] == [(1, EPOCHS[0][f"eval_{name[4:]}"]),
                                                               (2, EPOCHS[1][f"eval_{name[4:]}"])], name
        assert not {"loss", "macro_f1", "accuracy", "val_runtime", "runtime", "val_epoch"} & set(logged)
        # Final: logged at the last epoch's step, after it, so the latest value is the shipped model's.
        final = client.get_metric_history(run_id, "val_macro_f1")
        assert [(m.step, m.value) for m in final] == [(1, 0.62), (2, 0.58), (2, 0.62)]
        assert logged["val_macro_f1"] == SHIPPED["val_macro_f1"] != EPOCHS[-1]["eval_macro_f1"]
        assert logged["val_accuracy"] == SHIPPED["val_accuracy"]
        assert (logged["best_epoch"], logged["epochs_run"]) == (1, 2)
        assert [m.step for m in client.get_metric_history(run_id, "best_epoch")] == [2]
