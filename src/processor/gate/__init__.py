"""The shipping gate: check a training run from its own artifacts; register and alias it only if it
passes. ``python gates/gate.py`` / ``python -m processor.gate`` (see :mod:`processor.gate.cli`).

thresholds (gates/ship_checks.yaml) -> evidence (what the run left) -> checks -> registry (one version
per run, aliases) -> cli (report, exit codes)."""

from processor.gate.checks import CHECK_NAMES, CheckResult, format_table, run_checks
from processor.gate.cli import DEFAULT_ALIAS, DEFAULT_MODEL_NAME, GateOutcome, gate_output_dir, gate_run, main
from processor.gate.evidence import Evidence, evidence_from_dir, find_logged_model
from processor.gate.registry import GateInfraError
from processor.gate.thresholds import DEFAULT_CHECKS, GateUsageError, Thresholds, load_thresholds

__all__ = ["CHECK_NAMES", "CheckResult", "DEFAULT_ALIAS", "DEFAULT_CHECKS", "DEFAULT_MODEL_NAME", "Evidence",
           "GateInfraError", "GateOutcome", "GateUsageError", "Thresholds", "evidence_from_dir",
           "find_logged_model", "format_table", "gate_output_dir", "gate_run", "load_thresholds", "main",
           "run_checks"]
