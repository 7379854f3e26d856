"""Third-party progress bars off where they are raised: MLflow's "Downloading artifacts" (one per
artifact download: logging a model validates it by downloading it back, loading a ``runs:/`` or
``models:/`` URI downloads it), transformers' "Loading weights" (one per ``from_pretrained``), and
MLflow's INFO lines about its own housekeeping (creating its tables, validating an input example,
the command ``mlflow run`` starts).

Several per step, between the project's own lines, they said nothing a user acts on. Each switch is
scoped to the call that raises the bar and restored after, so the project's own progress (the
Trainer's epoch bar, the sweep's trial lines) is untouched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

# Read by MLflow each time it would draw an artifact progress bar (mlflow.environment_variables).
_MLFLOW_ARTIFACTS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def no_artifact_progress() -> Iterator[None]:
    """No MLflow "Downloading artifacts" / "Uploading artifacts" bars inside the block."""
    before = os.environ.get(_MLFLOW_ARTIFACTS_BAR)
    os.environ[_MLFLOW_ARTIFACTS_BAR] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_MLFLOW_ARTIFACTS_BAR, None)
        else:
            os.environ[_MLFLOW_ARTIFACTS_BAR] = before


@contextmanager
def no_mlflow_info() -> Iterator[None]:
    """MLflow's logger at WARNING inside the block: its INFO lines narrate its own steps; its warnings
    and errors still show."""
    mlflow_logger = logging.getLogger("mlflow")
    before = mlflow_logger.level
    mlflow_logger.setLevel(max(before, logging.WARNING))
    try:
        yield
    finally:
        mlflow_logger.setLevel(before)


@contextmanager
def no_weight_progress() -> Iterator[None]:
    """No transformers "Loading weights" bar inside the block (transformers.utils.logging's switch,
    which the Trainer's own progress bar does not read)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
