"""One trial (a real train-loop run, nested in MLflow, reported to Optuna per epoch, gate-checked)
and the worker loop that runs trials until the study has its --n-trials."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from processor.cli import first_line
from processor.config import ConfigError
from processor.tune.space import NOT_COUNTED_ATTR, OBJECTIVE, SweepError, make_sampler, trial_config
from processor.tune.context import Context, Gate, fmt_value, mlflow_client
from processor.tune.storage import counted


class TrialFailed(Exception):
    """One trial crashed; the sweep goes on (its traceback is in the trial's log file)."""



def gate_verdict(gate: Gate, output_dir: Path) -> tuple[bool, list[str]]:
    """Would the gate pass this trial's output directory, and the checks it fails (``name: detail``)."""
    from processor.gate.checks import gate_output_dir

    outcome = gate_output_dir(output_dir, gate.thresholds, strict=gate.thresholds.strict)
    return outcome.exit_code == 0, outcome.report.failures()


def open_gate(checks: Path | None) -> Gate:
    from processor.gate.thresholds import DEFAULT_CHECKS, GateUsageError, load_thresholds

    checks = Path(checks or DEFAULT_CHECKS)
    try:
        thresholds = load_thresholds(checks)
    except GateUsageError as exc:
        raise SweepError(f"--gate-checks: {exc}") from None
    return Gate(checks, thresholds)


# --------------------------------------------------------------------------------------------
# One trial
# --------------------------------------------------------------------------------------------
class TrialCallback(TrainerCallback):
    """Tags the trial's MLflow run and reports val macro-F1 per epoch to Optuna; raises TrialPruned
    when the pruner says so (the train loop then ends the nested run, which the sweep marks KILLED)."""

    def __init__(self, trial: optuna.Trial, tags: dict[str, str]):
        self.trial, self.tags = trial, tags
        self.run_id: str | None = None
        self.pruned: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import mlflow

        run = mlflow.active_run()
        if run is not None:
            self.run_id = run.info.run_id
            mlflow.set_tags(self.tags)
            # Stored right away so a killed worker's trial can still be found (and marked) later.
            self.trial.set_user_attr("mlflow_run_id", self.run_id)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_macro_f1" not in metrics:
            return
        epoch, value = int(round(state.epoch or 0)), float(metrics["eval_macro_f1"])
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned = (epoch, value)
            raise optuna.TrialPruned(f"epoch {epoch}: val_macro_f1 {value:.4f} below the pruner's bar")


@contextlib.contextmanager
def captured(log_path: Path, enabled: bool) -> Iterator[None]:
    """Send the trial's own output (Trainer progress, warnings) to its log file: the console keeps
    one line per trial."""
    if not enabled:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", buffering=1) as fh, \
            contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        yield


def _tag_run(run_id: str | None, tags: dict[str, Any], status: str | None = None) -> None:
    if not run_id:
        return
    client = mlflow_client()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
    if status:
        client.set_terminated(run_id, status)


def _mark_retried(ctx: Context, trial: optuna.Trial) -> None:
    """A retry of a killed worker's trial: close that trial's orphaned MLflow run."""
    frozen = {t.number: t for t in ctx.study.get_trials(deepcopy=False)}
    for number in frozen[trial.number].system_attrs.get("retry_history", []):
        old = frozen.get(number)
        run_id = old.user_attrs.get("mlflow_run_id") if old else None
        if run_id and ctx.mlflow_on and mlflow_client().get_run(run_id).info.status == "RUNNING":
            _tag_run(run_id, {"optuna.state": "FAIL", "optuna.stale": "true", "optuna.retried_as": trial.number},
                     status="KILLED")


def objective(ctx: Context, trial: optuna.Trial) -> float:
    from processor.contract_check import ContractError
    from processor.data import UsageError
    from processor.model import ModelNotAvailableError
    from processor.train_loop import train

    ctx.lock.release()  # the trial exists now; other workers may count and start theirs
    params = ctx.sweep.suggest(trial)
    out = ctx.output_dir / f"trial_{trial.number:04d}"
    log_path = ctx.output_dir / "logs" / f"trial_{trial.number:04d}.log"
    trial.set_user_attr("worker", ctx.worker)
    trial.set_user_attr("output_dir", str(out))
    _mark_retried(ctx, trial)
    tags = {"optuna.study_name": ctx.study.study_name, "optuna.trial_number": str(trial.number),
            "sweep.worker": ctx.worker, **{f"optuna.param.{k}": str(v) for k, v in params.items()}}
    callback = TrialCallback(trial, tags)
    try:
        cfg = trial_config(ctx.base, params, out)
        with captured(log_path, ctx.quiet):
            result = train(cfg, callbacks=[callback], nested=ctx.mlflow_on, run_name=f"trial-{trial.number:04d}")
    except optuna.TrialPruned:
        epoch, value = callback.pruned or (None, None)
        _tag_run(callback.run_id, {"optuna.state": "PRUNED", "optuna.pruned": "true",
                                   "optuna.pruned_at_epoch": epoch, "optuna.pruned_value": value}, status="KILLED")
        _drop_checkpoints(ctx, out)
        raise
    except (ConfigError, UsageError, ModelNotAvailableError, ContractError):
        # The same failure would hit every trial: stop the sweep; this trial does not use up a slot.
        trial.set_user_attr(NOT_COUNTED_ATTR, "stopped the sweep")
        raise
    except KeyboardInterrupt:
        trial.set_user_attr(NOT_COUNTED_ATTR, "interrupted")
        _tag_run(callback.run_id, {"optuna.state": "FAIL", "optuna.interrupted": "true"}, status="KILLED")
        raise
    except Exception as exc:  # noqa: BLE001 - one crashed trial must not end the sweep
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            traceback.print_exc(file=fh)
        trial.set_user_attr("error", f"{type(exc).__name__}: {first_line(exc)}")
        _tag_run(callback.run_id, {"optuna.state": "FAIL"})
        _drop_checkpoints(ctx, out)
        raise TrialFailed(f"{type(exc).__name__}: {first_line(exc)} (see {log_path})") from None
    value = float(result.record.final_metrics()[OBJECTIVE])
    trial.set_user_attr("epochs_run", int(result.record.epochs_run or 0))
    tags = {"optuna.state": "COMPLETE"}
    if ctx.gate is not None:
        try:
            passed, failures = gate_verdict(ctx.gate, out)
        except Exception as exc:  # noqa: BLE001 - the verdict is advisory; the trial itself succeeded
            print(f"note: trial {trial.number}: gate check failed to run: {first_line(exc)}", file=sys.stderr)
        else:
            trial.set_user_attr("gate_pass", passed)
            trial.set_user_attr("gate_failures", failures)
            tags["sweep.gate_would_pass"] = str(passed).lower()
    _tag_run(result.run_id, tags)
    _drop_checkpoints(ctx, out)
    return value


def _drop_checkpoints(ctx: Context, out: Path) -> None:
    # The packaged zip holds the trial's best model; per-epoch checkpoints of every trial add up.
    if not ctx.keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The worker loop
# --------------------------------------------------------------------------------------------
def run_worker(ctx: Context, n_trials: int, timeout: float | None, seed: int, trial_fn: Any = objective) -> None:
    """Run trials until the study holds ``n_trials`` counted trials (or ``timeout`` seconds passed).
    ``trial_fn(ctx, trial)`` runs one trial (:func:`objective`; the tests count trials with a trivial one)."""
    started = time.monotonic()
    while timeout is None or time.monotonic() - started < timeout:
        with ctx.lock.held():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(ctx.study)  # so a dead worker's trial is retried, not counted
            trials = ctx.study.get_trials(deepcopy=False)
            # Queued trials (retries of a dead worker's trials, enqueue_trial) run even past n.
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if not waiting and len(counted(trials)) >= n_trials:
                return
            # Seeded by the number the next trial gets: reproducible with one worker, and workers never
            # draw the same random start-up points.
            ctx.study.sampler = make_sampler(ctx.sweep.sampler, seed + len(trials))
            ctx.study.optimize(lambda t: trial_fn(ctx, t), n_trials=1, catch=(TrialFailed,),
                               callbacks=[lambda study, t: _progress(ctx, study, t)])


def _progress(ctx: Context, study: optuna.Study, t: FrozenTrial) -> None:
    params = " ".join(f"{k}={fmt_value(v)}" for k, v in t.params.items())
    value = f"{OBJECTIVE}={t.value:.4f}" if t.value is not None else f"{OBJECTIVE}=-"
    extra = ""
    if t.state == TrialState.PRUNED:
        last = max(t.intermediate_values) if t.intermediate_values else None
        extra = f" (pruned after epoch {last})" if last is not None else ""
    elif t.state == TrialState.FAIL:
        extra = f" ({t.user_attrs.get('error', 'failed')})"
    elif "gate_pass" in t.user_attrs:
        extra = f" gate={'pass' if t.user_attrs['gate_pass'] else 'fail'}"
    took = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else 0
    print(f"[tune] trial {t.number} {t.state.name} {value} {params}{extra} {took:.0f}s", flush=True)
    if ctx.mlflow_on and study.best_trials:
        import mlflow

        done = sum(1 for x in study.get_trials(deepcopy=False) if x.state.is_finished())
        mlflow.log_metric(f"best_{OBJECTIVE}", study.best_value, step=done)
