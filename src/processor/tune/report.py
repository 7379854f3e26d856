"""The study's summary: ``summary.json`` (:class:`StudySummary`, its one owner), the trials table, plots and
summary logged to the parent MLflow run, the console summary, and --gate-best."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from processor.blocks import flag, mapping, number, text, whole
from processor.cli import first_line
from processor.io import write_json_atomic, write_text_atomic
from processor.tune.space import NOT_COUNTED_ATTR, OBJECTIVE, PARENT_ATTR
from processor.tune.storage import counted, retried_numbers
from processor.tune.context import Context, Gate, fmt_value, mlflow_client


def trials_table(study: optuna.Study):
    import pandas as pd

    rows = []
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        row: dict[str, Any] = {"number": t.number, "state": t.state.name, OBJECTIVE: t.value}
        row.update({f"param_{k}": v for k, v in t.params.items()})
        row["epochs"] = max(t.intermediate_values) if t.intermediate_values else None
        row["gate_pass"] = t.user_attrs.get("gate_pass")
        row["duration_s"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 1) \
            if t.datetime_complete and t.datetime_start else None
        row["mlflow_run_id"] = t.user_attrs.get("mlflow_run_id")
        row["worker"] = t.user_attrs.get("worker")
        row["note"] = t.user_attrs.get("error") or t.user_attrs.get(NOT_COUNTED_ATTR) or (
            "retried" if t.number in retried else "")
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TrialBrief:
    """A trial in ``summary.json``: its number, objective value and params, and where its run went."""

    number: int | None = None
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    output_dir: str | None = None

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialBrief:
        return cls(t.number, t.value, dict(t.params), t.user_attrs.get("mlflow_run_id"), t.user_attrs.get("output_dir"))

    @classmethod
    def from_dict(cls, d: Any) -> TrialBrief | None:
        if not isinstance(d, Mapping):
            return None
        return cls(whole(d.get("number")), number(d.get("value")), mapping(d.get("params")),
                   text(d.get("mlflow_run_id")), text(d.get("output_dir")))

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "value": self.value, "params": self.params,
                "mlflow_run_id": self.mlflow_run_id, "output_dir": self.output_dir}


@dataclass(frozen=True)
class StudySummary:
    """``summary.json``: the study's trials by state, its best trial and, when the gate judged them, the
    trials that pass (best first). Read back leniently, like the run record: a malformed value is None."""

    study_name: str | None = None
    objective: str | None = None
    direction: str | None = None
    n_trials: int | None = None
    n_counted: int | None = None
    states: dict[str, int] = field(default_factory=dict)  # by TrialState name, the states some trial is in
    best: TrialBrief | None = None
    gate_checked: bool | None = None
    gate_passing: tuple[int, ...] = ()
    best_passing: TrialBrief | None = None
    mlflow_parent_run_id: str | None = None  # written only when the sweep logged to MLflow

    @classmethod
    def of(cls, study: optuna.Study) -> StudySummary:
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        passing = sorted((t for t in complete if t.user_attrs.get("gate_pass")), key=lambda t: -t.value)
        best = max(complete, key=lambda t: t.value) if complete else None
        return cls(study_name=study.study_name, objective=OBJECTIVE, direction="maximize", n_trials=len(trials),
                   n_counted=len(counted(trials)),
                   states={s.name: sum(1 for t in trials if t.state == s) for s in TrialState
                           if any(t.state == s for t in trials)},
                   best=None if best is None else TrialBrief.of(best),
                   gate_checked=any("gate_pass" in t.user_attrs for t in complete),
                   gate_passing=tuple(t.number for t in passing),
                   best_passing=TrialBrief.of(passing[0]) if passing else None)

    @classmethod
    def from_dict(cls, d: Any) -> StudySummary:
        d = mapping(d)
        passing = d.get("gate_passing")
        states = {str(k): whole(v) for k, v in mapping(d.get("states")).items() if whole(v) is not None}
        return cls(text(d.get("study_name")), text(d.get("objective")), text(d.get("direction")),
                   whole(d.get("n_trials")), whole(d.get("n_counted")), states, TrialBrief.from_dict(d.get("best")),
                   flag(d.get("gate_checked")),
                   tuple(n for n in map(whole, passing) if n is not None) if isinstance(passing, list) else (),
                   TrialBrief.from_dict(d.get("best_passing")), text(d.get("mlflow_parent_run_id")))

    def to_dict(self) -> dict[str, Any]:
        doc = {"study_name": self.study_name, "objective": self.objective, "direction": self.direction,
               "n_trials": self.n_trials, "n_counted": self.n_counted, "states": self.states,
               "best": None if self.best is None else self.best.to_dict(), "gate_checked": self.gate_checked,
               "gate_passing": list(self.gate_passing),
               "best_passing": None if self.best_passing is None else self.best_passing.to_dict()}
        if self.mlflow_parent_run_id is not None:
            doc["mlflow_parent_run_id"] = self.mlflow_parent_run_id
        return doc


def write_plots(study: optuna.Study, out: Path) -> list[str]:
    """Optuna's plots as self-contained HTML (plotly) and PNG (matplotlib). Returns notes for plots
    that cannot be drawn yet (e.g. importances need two completed trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization as vis
    from optuna.visualization import matplotlib as vis_mpl

    notes = []
    out.mkdir(parents=True, exist_ok=True)
    plots = {"optimization_history": (vis.plot_optimization_history, vis_mpl.plot_optimization_history),
             "param_importances": (vis.plot_param_importances, vis_mpl.plot_param_importances),
             "parallel_coordinate": (vis.plot_parallel_coordinate, vis_mpl.plot_parallel_coordinate)}


    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning of the matplotlib backend
        for name, (html_fn, png_fn) in plots.items():
            try:
                html_fn(study).write_html(str(out / f"{name}.html"), include_plotlyjs=True)
                ax = png_fn(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
            except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn yet must not fail the sweep
                notes.append(f"{name}: {first_line(exc)}")
    return notes


def log_summary(ctx: Context, data: StudySummary, table: Any) -> None:
    """Local copies in the output dir; parent-run params/tags/metrics/artifacts when MLflow is on."""
    write_text_atomic(ctx.output_dir / "trials.csv", table.to_csv(index=False))
    write_json_atomic(ctx.output_dir / "summary.json", data.to_dict(), default=str)
    notes = write_plots(ctx.study, ctx.output_dir / "plots") if data.states.get("COMPLETE") else ["no completed trial"]
    for note in notes:
        print(f"note: plot skipped: {note}", file=sys.stderr)
    if not ctx.mlflow_on:
        return
    import mlflow

    best = data.best
    tags = {"sweep.n_trials": data.n_trials, "sweep.gate_passing": ",".join(map(str, data.gate_passing))}
    if best:
        tags.update({"best.trial_number": best.number, "best.mlflow_run_id": best.mlflow_run_id or "",
                     **{f"best.param.{k}": v for k, v in best.params.items()}})
        mlflow.log_metric(f"best_{OBJECTIVE}", best.value,
                          step=sum(n for s, n in data.states.items() if s in ("COMPLETE", "PRUNED", "FAIL")))
    mlflow.set_tags({k: str(v) for k, v in tags.items()})
    mlflow.log_metrics({f"n_{s.lower()}": float(n) for s, n in data.states.items()})
    for name in ("trials.csv", "summary.json"):
        mlflow.log_artifact(str(ctx.output_dir / name))
    if (ctx.output_dir / "plots").is_dir():
        mlflow.log_artifacts(str(ctx.output_dir / "plots"), artifact_path="plots")


def print_summary(data: StudySummary, table: Any, gate: Gate | None) -> None:
    import pandas as pd

    shown = table.drop(columns=[c for c in ("mlflow_run_id", "worker") if c in table], errors="ignore")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print("\n" + shown.to_string(index=False))
    states = ", ".join(f"{n} {s.lower()}" for s, n in data.states.items())
    print(f"\nstudy {data.study_name}: {data.n_trials} trials ({states})")
    best = data.best
    if best:
        params = " ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items())
        print(f"best: trial {best.number} {OBJECTIVE}={best.value:.4f} {params}"
              + (f"  mlflow run {best.mlflow_run_id}" if best.mlflow_run_id else ""))
    if gate is None:
        return
    passing = data.gate_passing
    where = gate.checks
    if passing and data.best_passing is not None:
        bp = data.best_passing
        print(f"gate ({where}): trials {', '.join(map(str, passing))} would pass; best passing: trial "
              f"{bp.number} ({OBJECTIVE}={bp.value:.4f})")
    else:
        print(f"gate ({where}): no completed trial would pass")


def run_gate_best(data: StudySummary, gate: Gate, model_name: str | None) -> int:
    import mlflow

    bp = data.best_passing
    if bp is None:
        print("--gate-best: no completed trial passes the gate checks; nothing to gate", file=sys.stderr)
        return 1
    if not bp.mlflow_run_id:
        print(f"--gate-best: trial {bp.number} has no MLflow run", file=sys.stderr)
        return 1
    cmd = [sys.executable, "-m", "processor.gate", "--run-id", bp.mlflow_run_id, "--checks", str(gate.checks),
           "--tracking-uri", mlflow.get_tracking_uri()]
    if model_name:
        cmd += ["--model-name", model_name]
    print(f"\n--gate-best: trial {bp.number}: {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, check=False).returncode


# --------------------------------------------------------------------------------------------
# MLflow parent run
# --------------------------------------------------------------------------------------------
def parent_run(ctx: Context, meta: dict[str, str], project_run: str | None) -> str:
    """The study's parent run: stored in the study, created once (under the trial lock)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    with ctx.lock.held():
        run_id = ctx.study.user_attrs.get(PARENT_ATTR)
        if run_id:
            try:
                run = client.get_run(run_id)
                if run.info.lifecycle_stage != "deleted":
                    mlflow.set_experiment(experiment_id=run.info.experiment_id)
                    _tag_project_run(project_run, run_id)
                    return run_id
            except MlflowException:
                pass
            print(f"note: the study's parent run {run_id} is not on {mlflow.get_tracking_uri()}; "
                  "starting a new parent run", file=sys.stderr)
        if project_run:  # `mlflow run . -e tune`: the project run is the parent
            run = client.get_run(project_run)
            mlflow.set_experiment(experiment_id=run.info.experiment_id)
        else:
            env_exp = os.environ.get("MLFLOW_EXPERIMENT_ID")
            exp = mlflow.set_experiment(experiment_id=env_exp) if env_exp else \
                mlflow.set_experiment(ctx.base.mlflow.experiment)
            run = client.create_run(exp.experiment_id, run_name=f"sweep-{ctx.study.study_name}")
        run_id = run.info.run_id
        for key, value in meta.items():
            client.log_param(run_id, key, value)
        client.set_tag(run_id, "sweep.role", "parent")
        client.set_tag(run_id, "optuna.study_name", ctx.study.study_name)
        ctx.study.set_user_attr(PARENT_ATTR, run_id)
        return run_id


def _tag_project_run(project_run: str | None, parent: str) -> None:
    if project_run and project_run != parent:
        mlflow_client().set_tag(project_run, "sweep.parent_run_id", parent)
