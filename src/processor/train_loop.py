"""Train loop v3, top to bottom: validate -> oversample -> focal loss -> Qwen + LoRA -> Trainer
(early stopping on val macro-F1) -> metrics.json -> model_final.zip -> MLflow.

    python -m processor.train_loop --config configs/tiny.yaml --gamma 1.5 --output-dir outputs/demo
    python -m processor.train_loop --train-file data/train.jsonl --val-file data/val.jsonl \
        --model qwen-base --lora-r 32 --lora-alpha 64 --batch-size 8 --grad-accum 8 --device cpu ...

Flags override ``--config``; ``section.key=value`` arguments override anything (torchtune style).
Exit codes: 0 trained, 1 the data break the contract (nothing trained), 2 usage/config error.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from processor import distributed, drift, metrics_file
from processor.cli import UserError, nothing_trained, parse_bool, run
from processor.config import Config, apply_override, load_config, parse_override, save_config
from processor.io import write_text_atomic
from processor.schema import FEATURES, LABELS, schema_fingerprint
from processor.serialize import Serializer
from processor.trainer import (EncodedEvents, FocalTrainer, check_whole_val_set, epoch_history, last_checkpoint,
                               softmax, trainer_metrics)
from processor.trainer import best_epoch as best_epoch_of

# CLI flag -> config key. Every flag defaults to "unset" (None or ""), so MLproject can pass empty
# parameters through and the config file keeps its value.
FLAGS: dict[str, str] = {
    "train_file": "data.train_file",
    "val_file": "data.val_file",
    "model": "model",
    "revision": "revision",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "batch_size": "training.batch_size",
    "grad_accum": "training.grad_accum",
    "lr": "training.lr",
    "max_epochs": "training.epochs",
    "early_stop_metric": "training.early_stop_metric",
    "patience": "training.patience",
    "max_length": "training.max_length",
    "device": "training.device",
    "gamma": "loss.gamma",
    "class_weights": "loss.class_weights",
    "oversample": "data.oversample",
    "output_dir": "packaging.output_dir",
    "zip_final": "packaging.zip_final",
    "bundle_base": "packaging.bundle_base",
    "seed": "seed",
    "experiment_name": "mlflow.experiment",
}
# Trainer reports eval metrics as eval_<name>; the config speaks of val_<name>.
TRAINER_METRIC = {"val_macro_f1": "macro_f1", "val_accuracy": "accuracy", "val_loss": "loss"}
# The logged model's requirements.txt: what processor's serving path (processor/serving.py, which
# travels with the model) imports, pinned to the versions trained with.
REQUIREMENTS = ("torch", "transformers", "tokenizers", "peft", "accelerate", "mlflow", "pandas", "pandera",
                "numpy", "scikit-learn", "safetensors", "pyyaml", "huggingface-hub", "filelock")
# Flags that are booleans: a bare flag means true, and "" (an empty MLproject parameter) means unset.
BOOL_FLAGS = ("bundle_base",)


class UsageError(UserError):
    """The command cannot run as asked (paths, output directory, device); exit code 2."""


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]  # empty on the ranks other than 0 of a multi-process job
    zip_path: Path
    run_id: str | None
    # The in-memory trained model (best epoch restored) and its tokenizer, for callers in-process.
    model: Any = None
    tokenizer: Any = None


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor.train_loop", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (configs/tiny.yaml, configs/v3.yaml, ...)")
    for flag, key in FLAGS.items():
        extra = {"nargs": "?", "const": "true", "metavar": "BOOL"} if flag in BOOL_FLAGS else {"metavar": "VALUE"}
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, default=None, help=f"overrides {key}", **extra)
    # Optional values so MLproject can pass "--overwrite false"; a bare flag means true.
    p.add_argument("--resume", nargs="?", const="true", default="false", type=parse_bool, metavar="BOOL",
                   help="continue from the last checkpoint in --output-dir (after an interrupted run)")
    p.add_argument("--overwrite", nargs="?", const="true", default="false", type=parse_bool, metavar="BOOL",
                   help="replace a finished run in --output-dir")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="any config key, e.g. training.lr=1e-3")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config or None)
    for text in args.overrides:
        key, value = parse_override(text)
        apply_override(cfg, key, value, source=text)
    for flag, key in FLAGS.items():
        value = getattr(args, flag)
        if value is not None and value != "":  # "" = an MLproject parameter left empty
            apply_override(cfg, key, value, source=f"--{flag.replace('_', '-')}")
    if args.no_mlflow:
        cfg.mlflow.enabled = False
    from processor.config import check

    return check(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Under torchrun every rank meets the same config and data, so every rank fails the same way;
    # rank 0 alone says why (one message, not one per process), all exit with the same code.
    say = distributed.is_main_process()
    return run(lambda: _main(args, say), data_error=nothing_trained, quiet=not say)


def _main(args: argparse.Namespace, say: bool) -> int:
    result = train(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    if not say:
        return 0
    m = result.metrics
    print(f"\nval_macro_f1={m['val_macro_f1']:.4f}  val_accuracy={m['val_accuracy']:.4f}  "
          f"F1 long={m['per_class']['long']['f1']:.4f} short={m['per_class']['short']['f1']:.4f} "
          f"no_trade={m['per_class']['no_trade']['f1']:.4f}  best_epoch={m['best_epoch']}/{m['epochs_run']}")
    print(f"outputs: {result.output_dir / 'metrics.json'}  {result.zip_path}")
    if result.run_id:
        print(f"mlflow run: {result.run_id}  (tracking: {_tracking_uri()}; browse with `mlflow ui`)")
    return 0


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: Config, *, resume: bool = False, overwrite: bool = False, callbacks: Sequence[Any] = (),
          nested: bool = False, run_name: str | None = None) -> RunResult:
    """One full training run. ``callbacks`` are extra Trainer callbacks (the sweep's pruning hook);
    ``nested`` logs the run under the active MLflow run (a sweep trial)."""
    out = prepare_output_dir(Path(cfg.packaging.output_dir), resume=resume, overwrite=overwrite)
    # Other ranks of a torchrun/accelerate job never touch the tracking store: rank 0's run is the run.
    if not cfg.mlflow.enabled or not distributed.is_main_process():
        return _train(cfg, out, resume, callbacks, run=None)

    from processor.tracking import start_run

    with start_run(cfg.mlflow.experiment, nested=nested, run_name=run_name or default_run_name(cfg)) as run:
        # An exception inside this block ends the run as FAILED (validation report attached first).
        return _train(cfg, out, resume, callbacks, run=run)


def default_run_name(cfg: Config) -> str:
    """A readable MLflow run name from what distinguishes runs: ``qwen-tiny-g1.5-r16-s42``."""
    model = cfg.model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or cfg.model
    return f"{model}-g{cfg.loss.gamma:g}-r{cfg.lora.r}-s{cfg.seed}"


def prepare_output_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    finished = (out / "metrics.json").exists() or any(out.glob("*.zip")) if out.exists() else False
    started = out.exists() and any(out.iterdir())
    if overwrite and started:
        if distributed.is_main_process():  # the other ranks only check; they write nothing before training
            shutil.rmtree(out)
    elif finished and not resume:
        raise UsageError(f"{out} already holds a finished run (metrics.json / model zip). "
                         "Pass --overwrite to replace it, or choose another --output-dir.")
    elif started and not resume and (out / "checkpoints").exists():
        raise UsageError(f"{out} holds an unfinished run. Pass --resume to continue it, "
                         "--overwrite to start again, or choose another --output-dir.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _train(cfg: Config, out: Path, resume: bool, callbacks: Sequence[Any], run: Any) -> RunResult:
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, TrainingArguments, set_seed

    from processor import evaluate as ev
    from processor.data import ContractError, load_split
    from processor.io import sha256_file
    from processor.loss import FocalLoss, resolve_class_weights
    from processor.model import apply_lora, count_tokens, load_for_classification, resolve_model
    from processor.oversample import oversample

    mlflow = _mlflow() if run else None
    if cfg.training.torch_threads:
        torch.set_num_threads(cfg.training.torch_threads)
    set_seed(cfg.seed)
    main_rank = distributed.is_main_process()  # the only rank that writes files (the others run run=None)
    if main_rank:
        save_config(cfg, out / "resolved_config.yaml")
    if mlflow:
        from processor.tracking import git_commit, log_params

        log_params(cfg.flat())
        mlflow.set_tags({"schema_fingerprint": schema_fingerprint(), "git_commit": git_commit() or "unknown",
                         "template": cfg.data.template})
        mlflow.log_artifact(str(out / "resolved_config.yaml"))

    # 1. Load and validate against the event contract: nothing trains on bad data.
    train_path, val_path = Path(cfg.data.train_file), Path(cfg.data.val_file)
    for path in (train_path, val_path):
        if not path.is_file():
            raise UsageError(f"data file not found: {path} (make sample data with "
                             "`python -m processor.sample_data --out data`)")
    try:
        train_df, val_df = load_split(train_path, val_path)
    except ContractError as exc:
        if main_rank:
            _write_json(out / "validation_report.json", _report(False, [train_path, val_path], exc.problems))
        if mlflow:
            mlflow.log_artifact(str(out / "validation_report.json"))
            mlflow.set_tag("validation", "failed")
        raise
    if main_rank:
        _write_json(out / "validation_report.json", _report(True, [train_path, val_path], []))
    digests = {"train": sha256_file(train_path), "val": sha256_file(val_path)}
    if mlflow:
        from processor.tracking import log_dataset

        mlflow.set_tag("validation", "passed")
        mlflow.log_artifact(str(out / "validation_report.json"))
        log_dataset(train_df, path=train_path, digest=digests["train"], context="training")
        log_dataset(val_df, path=val_path, digest=digests["val"], context="validation")
    leakage = _check_leakage(cfg, train_df, val_df, mlflow, say=main_rank)

    # 2. Oversample the training set only, when a class is under 25 %.
    if cfg.data.oversample:
        balance = oversample(train_df, seed=cfg.seed)
        fit_df = balance.frame
        class_balance = {"applied": balance.applied, "before": balance.before, "after": balance.after}
    else:
        fit_df = train_df
        shares = _shares(train_df["label"])
        class_balance = {"applied": False, "before": shares, "after": shares}

    # The prior correction's logit bias comes from the class shares as loaded, before oversampling.
    from processor.calibrate import prior_logit_bias

    logit_bias = prior_logit_bias([_counts(train_df["label"])[n] for n in LABELS], cfg.training.prior_correction)
    prior_correction = {"alpha": cfg.training.prior_correction,
                        "logit_bias": None if logit_bias is None else [float(b) for b in logit_bias]}

    # 3. Class-weighted focal loss; "auto" weights come from the class counts the model trains on.
    weights = resolve_class_weights(cfg.loss.class_weights, fit_df["label"].to_numpy())
    focal = FocalLoss(gamma=cfg.loss.gamma, weight=None if weights is None else torch.tensor(weights))
    if mlflow:
        used = "none" if weights is None else ",".join(f"{name}={w:.4f}" for name, w in zip(LABELS, weights))
        mlflow.log_param("loss.class_weights_used", used)

    # 4. Qwen base + LoRA, last-token classification head (score trained via modules_to_save).
    with distributed.single_process():  # may build qwen-tiny with a Trainer of its own
        resolved = resolve_model(cfg.model, revision=cfg.revision)
    set_seed(cfg.seed)  # the head and LoRA init draw from this seed, whatever ran before
    base, tokenizer = load_for_classification(resolved, labels=LABELS)
    model = apply_lora(base, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                       target_modules=cfg.lora.target_modules)
    if mlflow:
        mlflow.set_tags({"base_model": resolved.base_id, "base_model_revision": resolved.revision or "unknown",
                         "base_model_is_demo": str(resolved.is_demo).lower()})

    # Bins are fitted on the training split as loaded (before oversampling: duplicates must not move the
    # edges) and travel in the package, so prediction renders events exactly as training did.
    serializer = Serializer.fit(train_df, template=cfg.data.template)
    profile = drift.fit_profile(train_df, psi_warn=cfg.trust.psi_warn)  # predict-time drift reference, same rule
    train_texts = serializer.render_all(_records(fit_df))
    val_texts = serializer.render_all(_records(val_df))
    tokens_per_event = count_tokens(tokenizer, serializer.render_all(_records(train_df)) + val_texts)
    train_ds = EncodedEvents(tokenizer, train_texts, fit_df["label"], cfg.training.max_length)
    val_ds = EncodedEvents(tokenizer, val_texts, val_df["label"], cfg.training.max_length)

    # 5. Trainer: accumulation, per-epoch eval + checkpoints, early stop, best epoch restored.
    metric = TRAINER_METRIC[cfg.training.early_stop_metric]
    processes = distributed.world_size()  # each rank takes its own batch: the global batch is larger
    device = _device_args(cfg.training.device)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.training.batch_size,
        per_device_eval_batch_size=cfg.training.eval_batch_size,
        gradient_accumulation_steps=cfg.training.grad_accum,
        learning_rate=cfg.training.lr,
        weight_decay=cfg.training.weight_decay,
        warmup_steps=cfg.training.warmup_ratio,
        num_train_epochs=cfg.training.epochs,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=max(1, len(train_ds) // (cfg.training.batch_size * cfg.training.grad_accum * processes * 4)),
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=metric != "loss",
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        dataloader_num_workers=0,
        # LoRA adapters and the head are all used in every forward pass: skip DDP's extra graph walk.
        ddp_find_unused_parameters=False,
        **device,
    )
    callbacks_all = [EarlyStoppingCallback(early_stopping_patience=cfg.training.patience)]
    if mlflow:
        from processor.tracking import MlflowEpochLogger

        callbacks_all.append(MlflowEpochLogger())  # before the caller's: a pruning hook may raise
    callbacks_all.extend(callbacks)
    trainer = FocalTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=functools.partial(trainer_metrics, logit_bias=logit_bias),
        callbacks=callbacks_all,
        focal=focal,
    )
    checkpoint = resume and last_checkpoint(out / "checkpoints")
    if resume and not checkpoint:
        print(f"note: --resume found no checkpoint in {out / 'checkpoints'}; starting from scratch", file=sys.stderr)
    trainer.train(resume_from_checkpoint=checkpoint or None)

    # 6. Evaluate the restored best model on val: metrics, uncertainty, baselines. Every rank takes
    # part (the prediction is sharded); Trainer's gather_for_metrics drops the distributed sampler's
    # padding, so each val event is counted exactly once.
    prediction = trainer.predict(val_ds)
    y_true = list(val_df["label"])
    check_whole_val_set(prediction.label_ids, y_true)
    if processes > 1:
        distributed.barrier()  # every rank is past its last step: rank 0 alone writes from here on
        distributed.end()
        if not main_rank:
            return RunResult(output_dir=out, metrics={}, zip_path=out / cfg.packaging.zip_final, run_id=None)
    probs = softmax(prediction.predictions + (0.0 if logit_bias is None else logit_bias))
    y_pred = [LABELS[i] for i in probs.argmax(axis=1)]
    metrics = ev.compute_metrics(y_true, y_pred)
    history = epoch_history(trainer.state.log_history)
    best_epoch = best_epoch_of(trainer.state, history, metric)
    metrics.update(
        bootstrap=ev.bootstrap_ci(y_true, y_pred, confidence=cfg.eval.confidence,
                                  n_resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed),
        class_balance=class_balance,
        class_weights=None if weights is None else dict(zip(LABELS, map(float, weights))),
        best_epoch=best_epoch,
        epochs_run=int(round(trainer.state.epoch or 0)),
        epoch_history=history,
        schema_fingerprint=schema_fingerprint(),
        tokens_per_event=round(float(tokens_per_event), 2),
        data={
            "train_file": str(train_path), "val_file": str(val_path),
            "train_sha256": digests["train"], "val_sha256": digests["val"],
            "n_train": int(len(train_df)), "n_train_fit": int(len(fit_df)), "n_val": int(len(val_df)),
            "train_counts": _counts(train_df["label"]), "val_counts": _counts(val_df["label"]),
            "time_range": {"train": _time_range(train_df), "val": _time_range(val_df)},
            "bayes_ceiling": _bayes_ceiling(train_path, digests),
        },
        model={"name": cfg.model, "base_id": resolved.base_id, "revision": resolved.revision,
               "is_demo": resolved.is_demo, "lora_r": cfg.lora.r, "lora_alpha": cfg.lora.alpha},
        loss={"type": "focal", "gamma": cfg.loss.gamma},
        prior_correction=prior_correction,
        seed=cfg.seed,
    )
    if leakage is not None:
        metrics["leakage"] = leakage.to_dict()
    val_drift = drift.psi(profile, val_df)  # sanity: val should look like train
    metrics["drift"] = {"val_psi": val_drift.psi, "max_psi": val_drift.max_psi, "note": val_drift.note}
    # Trust: calibration measured, temperature cross-fitted over val folds; abstention table on the
    # out-of-fold probabilities. Reported macro-F1 stays the argmax above (a temperature keeps the argmax).
    from processor.calibrate import evaluate_trust

    trust = evaluate_trust(probs, y_true, calibrate=cfg.trust.calibrate, folds=cfg.trust.calibration_folds,
                           n_bins=cfg.trust.ece_bins, grid=cfg.trust.abstention_grid,
                           min_confidence=cfg.trust.min_confidence, seed=cfg.seed, out_dir=out)
    metrics.update(calibration=trust.calibration, abstention=trust.abstention)
    if cfg.eval.baselines:
        metrics["baselines"] = ev.baselines(train_df, val_df, seed=cfg.seed)
    ev.plot_confusion_matrix(metrics["confusion_matrix"], out / "confusion_matrix.png",
                             title=f"{cfg.model} val (macro-F1 {metrics['val_macro_f1']:.3f})")
    gbdt_f1 = metrics_file.number(metrics_file.get(metrics, "baselines", "hist_gradient_boosting", "val_macro_f1"))
    ev.plot_learning_curve(history, out / "learning_curve.png", best_epoch=best_epoch, baseline_f1=gbdt_f1,
                           title=f"{cfg.model}: train loss and val macro-F1 per epoch")

    # 7. Package: adapter + head + tokenizer + config + template + fingerprint + metrics.
    from processor.io import weights_sha256
    from processor.package import write_package

    serving = {
        "base": {"name": cfg.model, "base_id": resolved.base_id, "revision": resolved.revision,
                 "is_demo": resolved.is_demo, "weights_sha256": weights_sha256(resolved.path)},
        "template": serializer.template,
        "serialization": serializer.to_dict(),
        "max_length": cfg.training.max_length,
        "labels": list(LABELS),
        "schema_fingerprint": schema_fingerprint(),
        "features": list(FEATURES),
        "feature_profile": profile,
        "calibration": {"temperature": trust.temperature},
        "prior_correction": prior_correction,
        "min_confidence": cfg.trust.min_confidence,
    }
    zip_path = write_package(out / cfg.packaging.zip_final, model=trainer.model, tokenizer=tokenizer,
                             serving=serving, metrics=metrics)
    metrics_file.write(out / metrics_file.FILE_NAME, metrics)  # written last: its presence marks a finished run

    run_id = None
    if mlflow:
        run_id = run.info.run_id
        final = metrics_file.final_metrics(metrics, LABELS)
        # Same step as the last epoch's eval, logged later: MLflow's "latest" value (what the run page,
        # search_runs and the sweep read) is then the restored best model's, not the last epoch's.
        mlflow.log_metrics(final, step=metrics["epochs_run"])
        for name in (metrics_file.FILE_NAME, "confusion_matrix.png", "learning_curve.png",
                     *(png.name for png in trust.pngs), zip_path.name):
            mlflow.log_artifact(str(out / name))
        if cfg.mlflow.log_model:
            _log_pyfunc(zip_path, val_df, trainer.model, tokenizer, cfg, serializer, resolved, serving)
    return RunResult(output_dir=out, metrics=metrics, zip_path=zip_path, run_id=run_id, model=trainer.model,
                     tokenizer=tokenizer)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------
def _device_args(device: str) -> dict[str, Any]:
    if device == "cpu":
        return {"use_cpu": True}
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps asked for, but MPS is not available (use --device cpu or auto)")
    return {}  # auto/cuda/mps: Trainer picks the accelerator when there is one


def _records(frame: Any) -> list[dict[str, Any]]:
    return frame[list(FEATURES)].to_dict("records")


def _counts(labels: Any) -> dict[str, int]:
    c = Counter(labels)
    return {name: int(c.get(name, 0)) for name in LABELS}


def _shares(labels: Any) -> dict[str, float]:
    counts = _counts(labels)
    total = sum(counts.values())
    return {name: counts[name] / total for name in LABELS}


def _time_range(frame: Any) -> list[str] | None:
    """First and last event time (UTC, ISO 8601), or None when the events carry no timestamps."""
    from processor.leakage import event_times

    stamps = event_times(frame).dropna()
    return None if stamps.empty else [stamps.min().isoformat(), stamps.max().isoformat()]


def _bayes_ceiling(train_path: Path, digests: dict[str, str]) -> float | None:
    """The data card's Bayes ceiling (processor.sample_data writes one beside its files), only when the
    card describes exactly the files trained on (sha256 of both); otherwise unknown."""
    card_path = train_path.parent / "data_card.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        files = card["files"]
        same = all(any(f.get("sha256") == digests[split] for f in files.values()) for split in ("train", "val"))
        return float(card["bayes_ceiling"]) if same else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_leakage(cfg: Config, train_df: Any, val_df: Any, mlflow: Any, *, say: bool) -> Any:
    """Temporal leakage of the split (processor.leakage): a warning and the run tag ``leakage_risk``
    (true / false / unknown: no timestamps, or the check is off); the report, or None when off."""
    from processor.leakage import time_overlap

    report = time_overlap(train_df, val_df) if cfg.trust.check_time_leakage else None
    if say and report is not None and report.leakage_risk:
        print(f"WARNING: {report.summary()} (the val scores may overstate the model)", file=sys.stderr)
    if mlflow:
        mlflow.set_tag("leakage_risk", report.tag if report is not None else "unknown")
    return report


def _report(valid: bool, paths: list[Path], problems: list[Any]) -> dict[str, Any]:
    return {"valid": valid, "files": [str(p) for p in paths],
            "problems": [{"file": p.file, "line": p.line, "id": p.id, "key": p.key, "message": p.message}
                         for p in problems]}


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, metrics_file.dumps(obj))


def _mlflow():
    import mlflow

    return mlflow


def _log_pyfunc(zip_path: Path, val_df: Any, model: Any, tokenizer: Any, cfg: Config, serializer: Serializer,
                resolved: Any, serving: dict[str, Any]) -> None:
    import pandas as pd

    from processor.package import prediction_rows, predict_texts, shipped_probabilities
    from processor.tracking import log_pyfunc

    example = val_df.head(3).copy()
    texts = serializer.render_all(_records(example))
    probs = shipped_probabilities(predict_texts(model, tokenizer, texts, cfg.training.max_length), serving)
    out = pd.DataFrame(prediction_rows(list(example["id"]), probs, cfg.trust.min_confidence))
    requirements = []
    for dist in REQUIREMENTS:
        try:
            requirements.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            pass
    # The demo base is small (< 1 MB) and rebuilding it on a serving host takes a minute: always
    # bundled. A hub base is bundled on request; otherwise the host resolves it by id and revision.
    bundle = resolved.is_demo or cfg.packaging.bundle_base
    metadata = {"base_model": resolved.base_id, "base_model_revision": resolved.revision or "unknown",
                "base_bundled": bool(bundle), "schema_fingerprint": schema_fingerprint()}
    log_pyfunc(zip_path, example, out, requirements, base_dir=Path(resolved.path) if bundle else None,
               metadata=metadata)


if __name__ == "__main__":
    sys.exit(main())
