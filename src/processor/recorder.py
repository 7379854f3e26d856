"""Where a training run's phases report to: the one place that writes the run's records and figures and
tracks the run.

The phases of ``processor.train_loop`` never ask "am I rank 0?" or "is MLflow on?": they hand what they
produced to a recorder: the resolved config, the validation report, metrics.json and the figures (each
handed over as what draws it; processor.evaluate). Two files are written by the step that makes them and
only logged here: ``model_final.zip`` (processor.package, which writes it whole or not at all) and the
Trainer's checkpoints.

- :class:`Recorder` (rank 0 of a job, ``--no-mlflow``): writes the run's files in the output directory.
- :class:`MlflowRecorder` (rank 0, MLflow on): the same files, each also logged to the run, plus params,
  tags, datasets, per-epoch metrics and the pyfunc model.
- :class:`NullRecorder` (the other ranks of a torchrun/accelerate job): writes and logs nothing, so one
  job leaves one set of outputs and one MLflow run.

Every file a recorder writes is listed in ``written``; the ranks that must not write can be checked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any

from processor.config import Config, save_config
from processor.io import write_text_atomic
from processor.names import RESOLVED_CONFIG
from processor.record import METRICS_FILE, Metrics, ValidationReport, write_json

RUN_ID_FILE = "mlflow_run_id"  # beside the checkpoints: --resume continues the same MLflow run
# Written as the first line of the run's files, so that a non-writing rank is visible in tests and logs.
WRITES_ENV = "PROCESSOR_LOG_WRITES"


class NullRecorder:
    """The other ranks of a multi-process job: nothing is written, printed or logged."""

    run_id: str | None = None

    def __init__(self, out: Path):
        self.out = Path(out)
        self.written: list[Path] = []

    def config(self, cfg: Config) -> None: ...
    def validation(self, report: ValidationReport) -> None: ...
    def datasets(self, frames: dict[str, Any], paths: dict[str, Path], digests: dict[str, str]) -> None: ...
    def leakage(self, report: Any) -> None: ...
    def class_weights(self, used: str) -> None: ...
    def base_model(self, resolved: Any) -> None: ...
    def outputs(self, metrics: Metrics, files: list[Path], summary: str = "",
                plots: Mapping[str, Callable[[Path], Path]] | None = None) -> list[Path]:
        return []
    def pyfunc(self, **kwargs: Any) -> None: ...

    def callbacks(self) -> list[Any]:
        return []

    def training_started(self, checkpoints: Path) -> None: ...

    def note(self, text: str) -> None: ...


class Recorder(NullRecorder):
    """Rank 0: the run's files (resolved config, validation report, metrics.json) and its messages."""

    def _write(self, path: Path, write: Any) -> Path:
        write(path)
        self.written.append(path)
        if os.environ.get(WRITES_ENV):  # tests of multi-process jobs: who wrote what
            with open(os.environ[WRITES_ENV], "a", encoding="utf-8") as log:
                log.write(f"{os.environ.get('RANK', '0')} {path.name}\n")
        return path

    def config(self, cfg: Config) -> None:
        self._write(self.out / RESOLVED_CONFIG, lambda p: save_config(cfg, p))

    def validation(self, report: ValidationReport) -> None:
        self._write(self.out / "validation_report.json", lambda p: write_json(p, report.to_dict()))

    def leakage(self, report: Any) -> None:
        if report is not None and report.leakage_risk:
            print(f"WARNING: {report.summary()} (the val scores may overstate the model)", file=sys.stderr)

    def outputs(self, metrics: Metrics, files: list[Path], summary: str = "",
                plots: Mapping[str, Callable[[Path], Path]] | None = None) -> list[Path]:
        """The run's figures (``plots``: file name -> what draws it at a path), then metrics.json, last: its
        presence marks a finished run. ``files`` were written by their own steps (the zip): only logged."""
        written = [self._write(self.out / name, draw) for name, draw in (plots or {}).items()]
        return [self._write(self.out / METRICS_FILE, metrics.write), *written]

    def note(self, text: str) -> None:
        print(text, file=sys.stderr)


class MlflowRecorder(Recorder):
    """Rank 0 with MLflow: every file is also an artifact of the run, which gets params, tags, datasets,
    per-epoch metrics (a Trainer callback), the final metrics and the pyfunc model."""

    def __init__(self, out: Path, run: Any):
        super().__init__(out)
        import mlflow

        self.mlflow, self.run_id = mlflow, run.info.run_id

    def config(self, cfg: Config) -> None:
        from processor.schema import schema_fingerprint
        from processor.tracking import git_commit, log_params

        super().config(cfg)
        log_params(cfg.flat())
        self.mlflow.set_tags({"schema_fingerprint": schema_fingerprint(), "git_commit": git_commit() or "unknown",
                              "template": cfg.data.template})
        self.mlflow.log_artifact(str(self.out / RESOLVED_CONFIG))

    def validation(self, report: ValidationReport) -> None:
        super().validation(report)
        self.mlflow.log_artifact(str(self.out / "validation_report.json"))
        self.mlflow.set_tag("validation", "passed" if report.valid else "failed")

    def datasets(self, frames: dict[str, Any], paths: dict[str, Path], digests: dict[str, str]) -> None:
        from processor.tracking import log_dataset

        for split, context in (("train", "training"), ("val", "validation")):
            log_dataset(frames[split], path=paths[split], digest=digests[split], context=context)

    def leakage(self, report: Any) -> None:
        super().leakage(report)
        self.mlflow.set_tag("leakage_risk", report.tag if report is not None else "unknown")

    def class_weights(self, used: str) -> None:
        self.mlflow.log_param("loss.class_weights_used", used)

    def base_model(self, resolved: Any) -> None:
        self.mlflow.set_tags({"base_model": resolved.base_id, "base_model_revision": resolved.revision or "unknown",
                              "base_model_is_demo": str(resolved.is_demo).lower()})

    def training_started(self, checkpoints: Path) -> None:
        # Beside the checkpoints, so that --resume continues this run; written once training starts (a
        # run refused for its data leaves no checkpoints folder behind). Under `mlflow run` the run
        # belongs to that command, and a resume is a new `mlflow run`.
        if not os.environ.get("MLFLOW_RUN_ID"):
            self._write(checkpoints / RUN_ID_FILE, lambda p: write_text_atomic(p, self.run_id))

    def callbacks(self) -> list[Any]:
        from processor.tracking import MlflowEpochLogger

        return [MlflowEpochLogger()]

    def outputs(self, metrics: Metrics, files: list[Path], summary: str = "",
                plots: Mapping[str, Callable[[Path], Path]] | None = None) -> list[Path]:
        written = super().outputs(metrics, files, plots=plots)
        # The run page's description (the gate appends its verdict) and where the files are.
        self.mlflow.set_tags({"mlflow.note.content": summary, "output_dir": self.out.as_posix()})
        # Same step as the last epoch's eval, logged later: MLflow's "latest" value (what the run page,
        # search_runs and the sweep read) is then the restored best model's, not the last epoch's.
        self.mlflow.log_metrics(metrics.final_metrics(), step=int(metrics.epochs_run or 0))
        for path in (*written, *files):
            self.mlflow.log_artifact(str(path))
        return written

    def pyfunc(self, **kwargs: Any) -> None:
        from processor.tracking import log_pyfunc

        log_pyfunc(**kwargs)
