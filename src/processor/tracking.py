"""MLflow: the run a training joins or starts, what it logs, and the pyfunc model it ships.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else MLflow's own default (a local sqlite file,
``./mlflow.db``). Under ``mlflow run`` the run already exists (``MLFLOW_RUN_ID``) and is joined;
otherwise a run is started in the configured experiment. Inside an Optuna study the trial is a
nested run of the study's parent run.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from transformers import TrainerCallback

from processor.names import BASE_ARTIFACT, PYFUNC_MODULE, PYFUNC_NAME, ZIP_ARTIFACT
from processor.schema import FEATURES



def start_run(experiment: str, *, nested: bool = False, run_name: str | None = None,
              run_id: str | None = None) -> mlflow.ActiveRun:
    """Join the run ``mlflow run`` created, continue ``run_id`` (a resumed training), nest under an
    active parent, or start a new run."""
    if run_id and not os.environ.get("MLFLOW_RUN_ID"):
        # The interrupted run is RUNNING (its process was killed) or FAILED (it stopped on an error):
        # either way this run continues it, and ends it FINISHED with every epoch's metrics.
        return mlflow.start_run(run_id=run_id, nested=nested)
    # Not keyed on MLFLOW_EXPERIMENT_ID: mlflow.set_experiment itself exports it, so a second run in
    # the same process would otherwise land in the first run's experiment.
    if not os.environ.get("MLFLOW_RUN_ID") and not nested:
        mlflow.set_experiment(experiment)
    active = mlflow.start_run(nested=nested, run_name=run_name)
    mark_model_training(active.info.experiment_id)
    return active


# MLflow 3's experiment type, the tag its UI's type selector writes: model training, not GenAI
# (docs/mlflow.md says how to open the runs table).
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def mark_model_training(experiment_id: str) -> None:
    """Type the experiment as model training, unless it already has a type (a user's choice stays)."""
    client = mlflow.MlflowClient()
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def log_params(flat: dict[str, Any]) -> None:
    # MLflow params are strings of at most 6000 chars; lists and None become their repr.
    mlflow.log_params({k: ("" if v is None else str(v)) for k, v in flat.items()})


def log_dataset(frame: pd.DataFrame, *, path: Path, digest: str, context: str) -> None:
    """``mlflow.log_input`` with the file's sha256 as the digest (stable across machines)."""
    with warnings.catch_warnings():
        # Both harmless here: the integer-column hint (contract events have no missing values) and
        # "the dataset source can be interpreted in multiple ways" (a local path matches several
        # source types; MLflow picks the local file, which is what it is).
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        dataset = mlflow.data.from_pandas(frame.drop(columns=["line"], errors="ignore"), source=str(path),
                                          name=path.name, digest=digest[:16])
        mlflow.log_input(dataset, context=context)  # the schema (and its hint) is inferred lazily, here


class MlflowEpochLogger(TrainerCallback):
    """Per-epoch metrics under the names the gate and the sweep use (``val_macro_f1`` ...)."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - Trainer hook
        if logs and "loss" in logs and mlflow.active_run():
            mlflow.log_metric("train_loss", float(logs["loss"]), step=int(state.global_step))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or not mlflow.active_run():
            return
        epoch = int(round(state.epoch or 0))
        out = {}
        for key, value in metrics.items():
            name = key.removeprefix("eval_")
            if name in ("runtime", "samples_per_second", "steps_per_second", "epoch"):
                continue
            out[f"val_{name}" if not name.startswith("val_") else name] = float(value)
        mlflow.log_metrics(out, step=epoch)


def _code_dir(stage: Path) -> Path:
    """A copy of the ``processor`` package without bytecode caches, to travel with the model."""
    import shutil

    import processor

    target = stage / "processor"
    shutil.copytree(Path(processor.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def log_pyfunc(zip_path: Path, example: pd.DataFrame, example_output: pd.DataFrame, requirements: list[str],
               *, base_dir: Path | None = None, metadata: dict[str, Any] | None = None):
    """Log (never register: that is the gate's job) the pyfunc model with signature and example.

    Self-contained: the model is logged from code (``processor/serving.py``), the ``processor``
    package travels as ``code_paths``, and ``base_dir`` (the base checkpoint, when given) is stored
    as an artifact so that serving needs neither a model hub nor this project's cache.
    """
    import tempfile

    from mlflow.models import infer_signature

    import processor
    from processor.quiet import no_artifact_progress, no_mlflow_info
    from processor.signature import model_signature

    example = example[["id", *FEATURES]].reset_index(drop=True)
    # no_artifact_progress: MLflow validates the input example by downloading the model back.
    with (tempfile.TemporaryDirectory(prefix="pyfunc-code-") as stage, warnings.catch_warnings(), no_artifact_progress(),
          no_mlflow_info()):
        # MLflow's hint that integer columns cannot hold missing values, from the schemas it infers for
        # the output signature and for the input example: contract events never have missing values (a
        # missing key is a contract error, reported as such), so it never applies.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        # Inputs: the contract's keys and types, checked by the model itself (processor.signature).
        signature = model_signature(infer_signature(example, example_output).outputs)
        artifacts = {ZIP_ARTIFACT: str(zip_path)}
        if base_dir is not None:
            artifacts[BASE_ARTIFACT] = str(base_dir)
        return mlflow.pyfunc.log_model(
            name=PYFUNC_NAME,
            python_model=Path(processor.__file__).parent / PYFUNC_MODULE,
            code_paths=[str(_code_dir(Path(stage)))],
            artifacts=artifacts,
            signature=signature,
            # As records: the request shape ({"inputs": [event, ...]}) MLflow writes into serving_input_example.json.
            input_example=example.to_dict(orient="records"),
            pip_requirements=requirements,
            metadata=metadata,
        )
