"""What MLflow's UI is told about the experiment: model training, not GenAI (docs/mlflow.md)."""

from __future__ import annotations

from conftest import tracking_at


def test_a_run_types_its_experiment_as_model_training_and_keeps_a_users_type(tmp_path, monkeypatch):
    from processor import tracking

    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)  # a real store of its own, not a surrounding `mlflow run`
    with tracking_at(f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}") as client:
        with tracking.start_run("kind-test"):
            pass
        experiment = client.get_experiment_by_name("kind-test")
        assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
        client.set_experiment_tag(experiment.experiment_id, tracking.EXPERIMENT_KIND_TAG, "finetuning")
        with tracking.start_run("kind-test"):
            pass
        assert client.get_experiment(experiment.experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "finetuning"
