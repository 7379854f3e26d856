"""The README's main job, end to end on the embedded demo base (run from the repo root):

sample data -> validate -> train ``qwen-tiny`` through ``mlflow run`` -> metrics -> shipping gate.

    python -m demo_kit            # what `make demo` runs

``qwen-tiny`` is a small Qwen2-architecture model built and pretrained locally (not Qwen's weights):
it shows the pipeline working offline; real runs use ``--model qwen-base`` or a local checkpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import mlflow

from demo_kit import sample_data
from processor import validate
from processor.cli import EXIT_DATA, UserError, run
from processor.quiet import no_mlflow_info
from processor.record import METRICS_FILE, Metrics


def run_training(root: Path, config: str, data: Path, output_dir: str, **parameters: str):
    """``mlflow run`` of the main entry point, in the config's experiment (``train-loop-v3``).

    `mlflow run` creates the run before the train loop starts, in the experiment it is given (else
    MLflow's "Default"); the train loop joins that run, so the experiment must be named here.
    """
    from processor.config import load_config

    experiment = load_config(root / config).mlflow.experiment
    return mlflow.projects.run(
        str(root), entry_point="main", env_manager="local", synchronous=True, experiment_name=experiment,
        parameters={"config": config, "train_file": str(data / "train.jsonl"), "val_file": str(data / "val.jsonl"),
                    "output_dir": output_dir, "overwrite": "true", **parameters},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo_kit", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--seed", type=int, default=0, help="sample-data seed")
    p.add_argument("--no-gate", action="store_true", help="stop after training")
    args = p.parse_args(argv)
    with no_mlflow_info():  # `mlflow run` narrates its database set-up and the command it starts
        return run(lambda: _demo(args))


def _demo(args: argparse.Namespace) -> int:
    root = Path.cwd()
    # `mlflow run` runs the MLproject command `python -m ...`: make that this interpreter, even when
    # the venv is not activated (`.venv/bin/python -m demo_kit`).
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    if not (root / "MLproject").is_file():
        raise UserError("run the demo from the repository root (where MLproject is)")

    data = Path(args.data_dir)
    print(f"== 1/4 sample data -> {data}/")
    card = sample_data.write_sample_data(data, seed=args.seed)
    shares = card["train"]["shares"]
    print(f"   rules {card['rules']}, noise {card['noise']}: train {card['n_train']} / val {card['n_val']} events;"
          f" train shares " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    print(f"   Bayes ceiling (noise-free rules on noisy val labels): val macro-F1 {card['bayes_ceiling']:.3f}")

    print("== 2/4 validate against the event contract")
    code = validate.main(["--train", str(data / "train.jsonl"), "--val", str(data / "val.jsonl")])
    if code != 0:
        return code

    print("== 3/4 train qwen-tiny (demo base, not Qwen's weights) via `mlflow run . -e main`")
    try:
        submitted = run_training(root, args.config, data, args.output_dir)
    except mlflow.exceptions.ExecutionException as exc:
        raise UserError(f"training failed ({exc}); its output is above", exit_code=EXIT_DATA) from None
    run_id = submitted.run_id
    m = Metrics.read(Path(args.output_dir) / METRICS_FILE)
    ci = m.macro_f1_ci
    print(f"   run {run_id}: val macro-F1 {m.macro_f1:.3f} ({ci.low:.3f}-{ci.high:.3f} at {m.confidence:.0%}), "
          f"accuracy {m.accuracy:.3f}, F1 long {m.class_f1('long'):.3f}, short {m.class_f1('short'):.3f}; "
          f"tokens/event {m.tokens_per_event:g}")
    for name, f1 in m.baseline_scores().items():
        print(f"   baseline {name}: val macro-F1 {f1:.3f}")
    cal = m.calibration
    if cal is not None and cal.ece_after is not None:
        print(f"   calibration: ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f} (out-of-fold), Brier "
              f"{cal.brier_before:.3f} -> {cal.brier_after:.3f}, temperature {cal.temperature:.2f}; "
              f"drift: val PSI at most {(m.drift.max_psi if m.drift else None) or 0:.3f}; "
              f"temporal leakage risk: {m.leakage.leakage_risk if m.leakage else None}")
    experiment = mlflow.get_run(run_id).info.experiment_id
    print(f"   outputs in {args.output_dir}/ ; browse runs with `mlflow ui` (tracking: {mlflow.get_tracking_uri()}), at "
          f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning")

    if args.no_gate:
        return 0
    print("== 4/4 shipping gate")
    gate = subprocess.run([sys.executable, "-m", "processor.gate", "--run-id", run_id], check=False)
    if gate.returncode == 0:
        print("   champion: models:/train-loop-v3@champion "
              "(serve: mlflow models serve -m models:/train-loop-v3@champion --env-manager local)")
    return gate.returncode


if __name__ == "__main__":
    sys.exit(main())
