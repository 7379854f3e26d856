"""Optuna sweep over the train loop (``python -m processor.tune``; see :mod:`processor.tune.cli`).

space (sweep file -> search space, sampler, pruner) -> storage (Optuna storage, trial lock) ->
objective (one trial, the worker loop) -> report (summary, parent MLflow run, --gate-best) -> cli."""

from processor.tune.cli import base_config, build_parser, main
from processor.tune.space import DEFAULT_STUDY, OBJECTIVE, PARENT_ATTR, SPACE_ATTR, SweepError, load_sweep
from processor.tune.storage import counted, default_storage, normalize_url

__all__ = ["DEFAULT_STUDY", "OBJECTIVE", "PARENT_ATTR", "SPACE_ATTR", "SweepError", "base_config", "build_parser",
           "counted", "default_storage", "load_sweep", "main", "normalize_url"]
