"""Optuna sweep over the train loop: gamma / LoRA r / lr (...) against val macro-F1.

    python -m processor.tune --config configs/tiny.yaml --sweep configs/sweep.yaml --n-trials 20
    python -m processor.tune --config configs/qwen.yaml --storage postgresql://user@db/optuna \\
        --study-name v3-sweep --n-trials 40          # start the same command on several machines
    mlflow run . -e tune -P n_trials=20

Every trial is a real ``train_loop.train`` run (same code as ``main``) in its own output directory
``<output-dir>/trial_<number>``, logged as a nested MLflow run of the study's parent run. Pruning:
val macro-F1 is reported after every epoch and the pruner may stop the trial (state PRUNED in Optuna;
status KILLED and tag ``optuna.state=PRUNED`` in MLflow).

``--n-trials`` is the study's total, not this process's share: every worker and every rerun with the
same ``--study-name`` counts the trials already in the storage, so a study interrupted after k trials
continues to n, and two workers on one PostgreSQL study finish n trials together. Counting and
creating a trial happen under a lock (PostgreSQL advisory lock; a lock file next to a sqlite file), so
workers racing for the last slot cannot overshoot. Trials of a killed worker go stale (Optuna
heartbeat) and are retried with the same parameters; they, and trials stopped by Ctrl-C or by an error
that stops the sweep, do not count towards n.

One MLflow parent run per study: the first worker creates it (under ``mlflow run`` it uses the project
run) and stores its id in the study (user attribute ``mlflow_parent_run_id``), under the same lock;
other workers and reruns find it there and nest their trials under it. Each worker, when it stops,
logs the study's summary to the parent (best value and params, ``trials.csv``, ``summary.json``,
Optuna's plots), so the last worker to stop leaves the complete picture.

Default storage: ``sqlite:///<output-dir>/optuna.db`` (``--storage ""`` means the same).
Exit codes: 0 done, 1 no trial completed / the data break the contract / ``--gate-best`` found no
passing trial or the gate failed, 2 usage or config error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import optuna

from processor.cli import nothing_trained, run
from processor.config import Config, resolve_config
from processor.knobs import BY_NAME, flag_values
from processor.tune.space import (DEFAULT_STUDY, OBJECTIVE, PRUNER_KEYS, SPACE_ATTR, SweepError, load_sweep, make_pruner,
                                  make_sampler)
from processor.tune.storage import (TrialLock, counted, make_lock, open_storage, redact, storage_url,
                                    sweep_output_dir)
from processor.tune.objective import Context, open_gate, run_worker
from processor.tune.report import StudySummary, log_summary, parent_run, print_summary, run_gate_best, trials_table

# Train-loop flags the sweep accepts too: what data and which base model every trial trains on.
TRAIN_FLAGS = ("train_file", "val_file", "model")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor.tune", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny.yaml", help="base config (default configs/tiny.yaml)")
    # The same data/model flags as the train loop (over the base config, under the overrides' order).
    for knob in map(BY_NAME.get, TRAIN_FLAGS):
        p.add_argument(knob.option, dest=knob.name, default=None, metavar="VALUE",
                       help=f"overrides {knob.key} (as in the train loop)")
    p.add_argument("--sweep", default="configs/sweep.yaml", help="search space (default configs/sweep.yaml)")
    p.add_argument("--n-trials", type=int, default=20, help="the study's total number of trials (default 20)")
    p.add_argument("--timeout", type=float, default=None, help="this worker starts no new trial after S seconds")
    p.add_argument("--study-name", default=DEFAULT_STUDY, help=f"default {DEFAULT_STUDY}")
    p.add_argument("--storage", nargs="?", const="", default="",
                   help="Optuna storage URL (default/empty: sqlite:///<output-dir>/optuna.db); "
                        "postgresql://... for several workers")
    p.add_argument("--pruner", choices=tuple(PRUNER_KEYS), default=None, help="overrides the sweep file's pruner")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="sampler seed (default: the sweep file's, else the base config's seed)")
    p.add_argument("--output-dir", default=None, help="trial outputs (default outputs/sweeps/<study-name>)")
    p.add_argument("--gate-best", action="store_true",
                   help="run gates/gate.py on the best trial that passes the gate checks")
    p.add_argument("--gate-checks", type=Path, default=None, help="thresholds (default gates/ship_checks.yaml)")
    p.add_argument("--gate-model-name", default=None, help="registered model name for --gate-best")
    p.add_argument("--heartbeat", type=int, default=60,
                   help="seconds between heartbeats of a running trial (default 60)")
    p.add_argument("--grace-period", type=int, default=None,
                   help="a trial without heartbeat for this long is stale and retried (default 2 x --heartbeat)")
    p.add_argument("--max-retry", type=int, default=3, help="retries of a stale trial (default 3)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="CPU threads per worker (default: torch's choice); with k workers on one machine, "
                        "cores / k avoids oversubscription")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep every trial's epoch checkpoints")
    p.add_argument("--verbose", action="store_true", help="show each trial's training output")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="base config overrides")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.n_trials < 1:
        raise SweepError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not args.timeout > 0:
        raise SweepError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.heartbeat < 1:
        raise SweepError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    if args.grace_period is not None and args.grace_period <= args.heartbeat:
        raise SweepError(f"--grace-period ({args.grace_period}) must be longer than --heartbeat ({args.heartbeat})")
    if args.torch_threads is not None and args.torch_threads < 1:
        raise SweepError(f"--torch-threads must be >= 1, got {args.torch_threads}")
    if args.max_retry < 0:
        raise SweepError(f"--max-retry must be >= 0, got {args.max_retry}")
    from processor import distributed

    if distributed.world_size() > 1:
        # Each trial runs in this process with a pruning hook that raises here; N copies of the sweep
        # would run N studies' worth of trials, each as one rank of nothing. One worker per device on a
        # shared study is the parallel sweep (docs/distributed.md).
        raise SweepError(f"processor.tune runs one process per worker, not under torchrun/accelerate "
                         f"(WORLD_SIZE={distributed.world_size()}): start one worker per device on a shared "
                         "--storage instead")
    if not args.study_name.strip():
        raise SweepError("--study-name must not be empty")


def base_config(args: argparse.Namespace) -> Config:
    """config file < section.key=value overrides < flags (a flag wins), as in the train loop."""
    return resolve_config(args.config, args.overrides, flag_values(args, map(BY_NAME.__getitem__, TRAIN_FLAGS)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module prints its own line per trial
    # config, sweep file, arguments, model not available: UserError; data that break the contract: DataError
    return run(lambda: _main(args), data_error=nothing_trained,
               interrupted="interrupted: rerun the same command to continue the study")


def _main(args: argparse.Namespace) -> int:
    lock: TrialLock | None = None
    threads_before: int | None = None
    try:
        _check_args(args)
        base = base_config(args)
        sweep = load_sweep(args.sweep, base)
        if args.pruner and args.pruner != sweep.pruner["type"]:
            sweep.pruner = {"type": args.pruner}  # the file's settings belong to the file's pruner type
        if args.gate_best and not (base.mlflow.enabled and base.mlflow.log_model):
            raise SweepError("--gate-best needs MLflow with the logged model (mlflow.enabled=true, "
                             "mlflow.log_model=true): the gate checks the run's pyfunc model")
        gate = open_gate(args.gate_checks)
        if args.torch_threads:
            import torch

            threads_before = torch.get_num_threads()
            torch.set_num_threads(args.torch_threads)
        output_dir = sweep_output_dir(args.study_name, args.output_dir)
        url = storage_url(args.storage, output_dir)
        storage = open_storage(url, heartbeat=args.heartbeat, grace=args.grace_period, max_retry=args.max_retry)
        seed = args.sampler_seed if args.sampler_seed is not None else sweep.sampler.get("seed", base.seed)
        study = optuna.create_study(study_name=args.study_name, storage=storage, load_if_exists=True,
                                    direction="maximize", sampler=make_sampler(sweep.sampler, seed),
                                    pruner=make_pruner(sweep.pruner, base.training.epochs))
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and still the way to name it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE])  # the dashboard's axis says val_macro_f1, not "Objective 0"
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise SweepError(f"study {args.study_name!r} in {redact(url)} minimises; use another --study-name")
        lock = make_lock(url, args.study_name)
        with lock.held():
            _pin_space(study, sweep, args.study_name, url)
        ctx = Context(study=study, sweep=sweep, base=base, output_dir=output_dir, lock=lock, gate=gate,
                      mlflow_on=base.mlflow.enabled, quiet=not args.verbose, keep_checkpoints=args.keep_checkpoints)
        done_before = len(counted(study.get_trials(deepcopy=False)))
        print(f"[tune] study {args.study_name} in {redact(url)}: {done_before} of {args.n_trials} trials done; "
              f"sampler {sweep.sampler['type']} seed {seed}, pruner {sweep.pruner['type']}; outputs {output_dir}",
              flush=True)
        data, table = _sweep(ctx, args, url, seed)
    finally:
        if lock is not None:
            lock.close()
        if threads_before is not None:  # main() may run inside a larger process (tests, notebooks)
            import torch

            torch.set_num_threads(threads_before)
    print_summary(data, table, gate)
    if not data.states.get("COMPLETE"):
        print("no trial completed", file=sys.stderr)
        return 1
    if args.gate_best and gate is not None:
        return run_gate_best(data, gate, args.gate_model_name)
    return 0


def _pin_space(study: optuna.Study, sweep: Any, name: str, url: str) -> None:
    """A study keeps the search space it was created with: recorded by its first worker, compared by the
    others (under the study's lock, so two first workers cannot both record theirs)."""
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, sweep.fingerprint())
    elif stored != sweep.fingerprint():
        old, new = json.loads(stored), json.loads(sweep.fingerprint())
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SweepError(f"study {name!r} in {redact(url)} was created with another search "
                         f"space (changed: {', '.join(changed)}); use a new --study-name or the "
                         "original sweep file")


def _sweep(ctx: Context, args: argparse.Namespace, url: str, seed: int) -> tuple[StudySummary, Any]:
    if not ctx.mlflow_on:
        run_worker(ctx, args.n_trials, args.timeout, seed)
        data, table = StudySummary.of(ctx.study), trials_table(ctx.study)
        log_summary(ctx, data, table)
        return data, table
    import mlflow

    # Under `mlflow run` the project run is in MLFLOW_RUN_ID; taken out so trials do not join it.
    project_run = os.environ.pop("MLFLOW_RUN_ID", None)
    meta = {"sweep.study_name": ctx.study.study_name, "sweep.objective": OBJECTIVE,
            "sweep.base_config": str(args.config), "sweep.sweep_file": str(args.sweep),
            "sweep.search_space": ctx.sweep.fingerprint()[:6000]}
    run_id = parent_run(ctx, meta, project_run)
    mlflow.start_run(run_id=run_id)
    try:
        mlflow.set_tags({"sweep.n_trials_target": str(args.n_trials), "sweep.storage": redact(url),
                         "sweep.sampler": f"{ctx.sweep.sampler['type']} seed {seed}",
                         "sweep.pruner": json.dumps(ctx.sweep.pruner, sort_keys=True)})
        run_worker(ctx, args.n_trials, args.timeout, seed)
        data, table = replace(StudySummary.of(ctx.study), mlflow_parent_run_id=run_id), trials_table(ctx.study)
        log_summary(ctx, data, table)
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run()
    return data, table


if __name__ == "__main__":
    sys.exit(main())
