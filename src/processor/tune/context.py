"""What a sweep's trials and its report share: the sweep's context, the gate it checks trials against,
and the formatting of a trial's values. Below both :mod:`processor.tune.objective` and
:mod:`processor.tune.report`, so the report needs none of the trial's code (nor the train loop)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from processor.config import Config
from processor.tune.space import Sweep
from processor.tune.storage import TrialLock


@dataclass
class Gate:
    """The checks file --gate-checks named and its thresholds (processor.tune.objective.gate_verdict)."""

    checks: Path
    thresholds: Any


@dataclass
class Context:
    study: optuna.Study
    sweep: Sweep
    base: Config
    output_dir: Path
    lock: TrialLock
    gate: Gate | None
    mlflow_on: bool
    quiet: bool
    keep_checkpoints: bool
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


def mlflow_client():
    from mlflow import MlflowClient

    return MlflowClient()


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4g}"
    return str(value)
