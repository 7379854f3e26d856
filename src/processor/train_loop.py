"""Train loop v3, top to bottom: validate -> oversample -> focal loss -> Qwen + LoRA -> Trainer
(early stopping on val macro-F1) -> metrics.json -> model_final.zip -> MLflow.

    python -m processor.train_loop --config configs/tiny.yaml --gamma 1.5 --output-dir outputs/demo
    python -m processor.train_loop --train-file data/train.jsonl --val-file data/val.jsonl \
        --model qwen-base --lora-r 32 --lora-alpha 64 --batch-size 8 --grad-accum 8 --device cpu ...

Config precedence, lowest first: defaults < ``--config`` < ``section.key=value`` arguments < flags (a flag
wins; processor.config.resolve_config).
Exit codes: 0 trained, 1 the data break the contract or cannot train three classes (nothing trained),
2 usage/config error.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import shutil
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from processor import distributed, drift
from processor.baseline_job import PendingBaselines, start_baselines
from processor.blocks import BaselineScore, ClassBalance, DataBlock, ModelBlock
from processor.cli import nothing_trained, parse_bool, run
from processor.config import Config, resolve_config
from processor.data import UsageError, records
from processor.encode import EncodedData, encode
from processor.knobs import FLAGS, flag_values
from processor.names import DATA_CARD
from processor.model_card import run_summary
from processor.package import write_package
from processor.record import METRICS_FILE, BaseModel, Metrics, ServingSpec, ShippedHead, ValidationReport
from processor.recorder import RUN_ID_FILE, MlflowRecorder, NullRecorder, Recorder
from processor.schema import FEATURES, LABELS, schema_fingerprint
from processor.trainable import require_trainable
from processor.trainer import (FocalTrainer, HeadWarmup, WeightAverage, check_whole_val_set, greater_is_better,
                               last_complete_checkpoint, trainer_metrics)

if TYPE_CHECKING:  # imported by the evaluate phase when it runs (sklearn, matplotlib)
    from processor.evaluate import Evaluation

# Trainer reports eval metrics as eval_<name>; the config speaks of val_<name>.
TRAINER_METRIC = {"val_macro_f1": "macro_f1", "val_accuracy": "accuracy", "val_loss": "loss"}
# The logged model's requirements.txt: what processor's serving path (processor/serving.py, which
# travels with the model) imports, pinned to the versions trained with.
REQUIREMENTS = ("torch", "transformers", "tokenizers", "peft", "accelerate", "mlflow", "pandas", "pandera",
                "numpy", "scikit-learn", "safetensors", "pyyaml", "huggingface-hub", "filelock")


@dataclass
class RunResult:
    output_dir: Path
    zip_path: Path
    run_id: str | None
    record: Metrics | None = None  # None on the ranks other than 0 of a multi-process job
    # The in-memory trained model (best epoch restored) and its tokenizer, for callers in-process.
    model: Any = None
    tokenizer: Any = None

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json as written (empty on the other ranks)."""
        return {} if self.record is None else self.record.to_dict()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor.train_loop", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML config (configs/tiny.yaml, configs/qwen.yaml, ...)")
    # Every flag defaults to "unset" (None or ""), so MLproject can pass empty parameters through and
    # the config file keeps its value.
    for knob in FLAGS:
        extra = {"nargs": "?", "const": "true", "metavar": "BOOL"} if knob.boolean else {"metavar": "VALUE"}
        p.add_argument(knob.option, dest=knob.name, default=None, help=f"{knob.help} ({knob.key})", **extra)
    # Optional values so MLproject can pass "--overwrite false"; a bare flag means true.
    p.add_argument("--resume", nargs="?", const="true", default="false", type=parse_bool, metavar="BOOL",
                   help="continue from the last checkpoint in --output-dir (after an interrupted run)")
    p.add_argument("--overwrite", nargs="?", const="true", default="false", type=parse_bool, metavar="BOOL",
                   help="replace a finished run in --output-dir")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="any config key, e.g. training.lr=1e-3")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    flags = flag_values(args, FLAGS)
    if args.no_mlflow:
        flags.append(("mlflow.enabled", False, "--no-mlflow"))
    return resolve_config(args.config or None, args.overrides, flags)


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
    m = result.record
    print(f"\nval_macro_f1={m.macro_f1:.4f}  val_accuracy={m.accuracy:.4f}  "
          f"F1 long={m.class_f1('long'):.4f} short={m.class_f1('short'):.4f} "
          f"no_trade={m.class_f1('no_trade'):.4f}  best_epoch={m.best_epoch}/{m.epochs_run}")
    print(f"outputs: {result.output_dir}  ({METRICS_FILE}, {result.zip_path.name})")
    if result.run_id:
        print(f"mlflow run: {result.run_id}  (tracking: {_tracking_uri()}; browse with `mlflow ui`)")
    return 0


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


# --------------------------------------------------------------------------------------------
# The run: prepare data -> build the model -> encode -> fit -> evaluate -> package, each phase filling the record
# --------------------------------------------------------------------------------------------
def train(cfg: Config, *, resume: bool = False, overwrite: bool = False, callbacks: Sequence[Any] = (),
          nested: bool = False, run_name: str | None = None) -> RunResult:
    """One full training run. ``callbacks`` are extra Trainer callbacks (the sweep's pruning hook);
    ``nested`` logs the run under the active MLflow run (a sweep trial). Without an output directory
    the run gets its own, ``outputs/<run name>-<short run id>``."""
    run_name = run_name or default_run_name(cfg)
    given = Path(cfg.packaging.output_dir) if cfg.packaging.output_dir else None
    if given is None and (resume or distributed.world_size() > 1):
        raise UsageError("--resume and multi-process runs need the run's --output-dir (every process, and the "
                         "resumed run, must find the same directory)")
    if cfg.training.members > 1 and (resume or distributed.world_size() > 1):
        raise UsageError(f"training.members={cfg.training.members} trains its adapters one after another in one "
                         "process: it does not resume (--overwrite starts it again) and does not run under torchrun")
    # A given directory is checked before any MLflow run exists: refusing it must not leave a failed run.
    out = prepare_output_dir(given, resume=resume, overwrite=overwrite) if given else None
    # Other ranks of a torchrun/accelerate job never write or track: rank 0's run is the run.
    if not distributed.is_main_process():
        return _run(cfg, out, NullRecorder(out), resume, callbacks)
    if not cfg.mlflow.enabled:
        out = out or own_output_dir(cfg, run_name, uuid.uuid4().hex)
        return _run(cfg, out, Recorder(out), resume, callbacks)

    from processor.tracking import start_run

    resumed_run = read_run_id(out) if resume else None
    with start_run(cfg.mlflow.experiment, nested=nested, run_name=run_name, run_id=resumed_run) as run:
        # An exception inside this block ends the run as FAILED (validation report attached first).
        out = out or own_output_dir(cfg, run.info.run_name or run_name, run.info.run_id)
        return _run(cfg, out, MlflowRecorder(out, run), resume, callbacks)


def own_output_dir(cfg: Config, run_name: str, run_id: str) -> Path:
    """``outputs/<run name>-<first 8 characters of the run id>``, recorded in the config the run saves."""
    out = prepare_output_dir(Path("outputs") / f"{run_name}-{run_id[:8]}", resume=False, overwrite=False)
    cfg.packaging.output_dir = out.as_posix()
    return out


def _run(cfg: Config, out: Path, rec: NullRecorder, resume: bool, callbacks: Sequence[Any]) -> RunResult:
    from transformers import set_seed

    if cfg.training.torch_threads:
        torch.set_num_threads(cfg.training.torch_threads)
    set_seed(cfg.seed)
    rec.config(cfg)
    data = prepare_data(cfg, rec)
    zip_path = out / cfg.packaging.zip_final
    # The classic baselines need the data alone: a process of their own fits them while the LLM trains
    # (rank 0 alone evaluates).
    job = start_baselines(cfg, data.train, data.val) if distributed.is_main_process() else PendingBaselines()
    with job as baselines:
        built = build_model(cfg, rec)
        encoded = encode(cfg, built.tokenizer, train=data.train, fit=data.fit, val=data.val)
        trainer = fit(cfg, out, data, built, encoded, rec, resume=resume, callbacks=callbacks)
        add_members(cfg, out, data, encoded, trainer, rec)
        raw = predict_val(trainer, encoded, data)
        if not distributed.is_main_process():
            return RunResult(output_dir=out, zip_path=zip_path, run_id=None)
        metrics, evaluation = evaluate(cfg, data, built, encoded, trainer, raw, baselines.result())
    spec = serving_spec(cfg, data, built, encoded, evaluation.temperature)
    write_package(zip_path, model=trainer.model, tokenizer=built.tokenizer, serving=spec.to_dict(),
                  metrics=metrics.to_dict())
    rec.outputs(metrics, [zip_path], summary=run_summary(metrics), plots=evaluation.plots)
    if cfg.mlflow.log_model:
        rec.pyfunc(**pyfunc_args(cfg, data, built, encoded, trainer.model, spec, zip_path))
    return RunResult(output_dir=out, record=metrics, zip_path=zip_path, run_id=rec.run_id, model=trainer.model,
                     tokenizer=built.tokenizer)


def default_run_name(cfg: Config) -> str:
    """A readable MLflow run name from what distinguishes runs: ``qwen-tiny-g1.5-r16-s42``."""
    model = cfg.model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or cfg.model
    return f"{model}-g{cfg.loss.gamma:g}-r{cfg.lora.r}-s{cfg.seed}"


def prepare_output_dir(out: Path, *, resume: bool, overwrite: bool) -> Path:
    finished = (out / METRICS_FILE).exists() or any(out.glob("*.zip")) if out.exists() else False
    started = out.exists() and any(out.iterdir())
    if overwrite and started:
        if distributed.is_main_process():  # the other ranks only check; they write nothing before training
            shutil.rmtree(out)
    elif finished:
        what = "--resume only continues an interrupted run" if resume else "Pass --overwrite to replace it"
        raise UsageError(f"{out} already holds a finished run (metrics.json / model zip). "
                         f"{what}; choose another --output-dir for a new run.")
    elif started and not resume and (out / "checkpoints").exists():
        raise UsageError(f"{out} holds an unfinished run. Pass --resume to continue it, "
                         "--overwrite to start again, or choose another --output-dir.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_run_id(out: Path) -> str | None:
    """The MLflow run an interrupted run was logging to (None: it was not tracked, or never started)."""
    path = out / "checkpoints" / RUN_ID_FILE
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    return text or None


# -- phase 1: the data ------------------------------------------------------------------------
@dataclass
class PreparedData:
    paths: dict[str, Path]  # train, val
    digests: dict[str, str]
    train: Any  # the training split as loaded (bins, profile and prior come from it)
    val: Any
    fit: Any  # what the model trains on: train, oversampled when a class is under 25 %
    class_balance: dict[str, Any]
    head: ShippedHead  # the prior correction; the temperature comes after evaluation
    profile: dict[str, Any]  # the training feature profile (processor.drift), predict-time drift reference
    leakage: Any


def prepare_data(cfg: Config, rec: NullRecorder) -> PreparedData:
    """Load and validate against the event contract (nothing trains on bad data), check the split for
    temporal leakage, oversample the training set only, and derive the prior correction and the drift
    profile."""
    from processor.calibrate import prior_logit_bias
    from processor.contract_check import ContractError
    from processor.data import load_split
    from processor.io import sha256_file
    from processor.leakage import time_overlap
    from processor.oversample import oversample

    paths = {"train": Path(cfg.data.train_file), "val": Path(cfg.data.val_file)}
    for path in paths.values():
        if not path.is_file():
            raise UsageError(f"data file not found: {path} (make sample data with "
                             "`python -m demo_kit.sample_data --out data`)")
    try:
        train_df, val_df = load_split(paths["train"], paths["val"])
    except ContractError as exc:
        rec.validation(ValidationReport.of(False, list(paths.values()), exc.problems))
        raise
    rec.validation(ValidationReport.of(True, list(paths.values()), []))
    # A split that meets the contract may still be unable to train three classes: stop before any model.
    require_trainable(train_df, val_df, cfg.trust.calibration_folds, names=(paths["train"].name, paths["val"].name))
    digests = {split: sha256_file(path) for split, path in paths.items()}
    rec.datasets({"train": train_df, "val": val_df}, paths, digests)
    leakage = time_overlap(train_df, val_df) if cfg.trust.check_time_leakage else None
    rec.leakage(leakage)

    if cfg.data.oversample:
        balance = oversample(train_df, seed=cfg.seed)
        fit_df = balance.frame
        class_balance = {"applied": balance.applied, "before": balance.before, "after": balance.after}
    else:
        fit_df, shares = train_df, _shares(train_df["label"])
        class_balance = {"applied": False, "before": shares, "after": shares}
    # The prior correction's logit bias comes from the class shares as loaded, before oversampling.
    bias = prior_logit_bias([_counts(train_df["label"])[n] for n in LABELS], cfg.training.prior_correction)
    head = ShippedHead(logit_bias=None if bias is None else tuple(float(b) for b in bias),
                       prior_alpha=cfg.training.prior_correction, min_confidence=cfg.trust.min_confidence)
    # Fitted on the split as loaded too: oversampled duplicates would move the shares.
    profile = drift.fit_profile(train_df, psi_warn=cfg.trust.psi_warn)
    return PreparedData(paths=paths, digests=digests, train=train_df, val=val_df, fit=fit_df,
                        class_balance=class_balance, head=head, profile=profile, leakage=leakage)


# -- phase 2: the model (phase 3, the events as token ids, is processor.encode) --------------
@dataclass
class BuiltModel:
    resolved: Any  # processor.model.ResolvedModel
    model: Any  # base + LoRA + classification head
    tokenizer: Any
    device: str  # cpu, cuda or mps (training.device resolved)
    precision: str  # bf16, fp16 or fp32 (training.precision resolved for that device)


def build_model(cfg: Config, rec: NullRecorder) -> BuiltModel:
    """Qwen base + LoRA with a last-token classification head (``score``, trained via modules_to_save)."""
    from transformers import set_seed

    from processor.model import (apply_lora, load_dtype, load_for_classification, resolve_device, resolve_model,
                                 resolve_precision)

    with distributed.single_process():  # may build qwen-tiny (for this template) with a Trainer of its own
        resolved = resolve_model(cfg.model, revision=cfg.revision, template=cfg.data.template)
    device = resolve_device(cfg.training.device)
    precision = resolve_precision(cfg.training.precision, device)
    set_seed(cfg.seed)  # the head and LoRA init draw from this seed, whatever ran before
    base, tokenizer = load_for_classification(resolved, labels=LABELS, dtype=load_dtype(precision, device))
    model = apply_lora(base, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                       target_modules=cfg.lora.target_modules)
    rec.base_model(resolved)
    return BuiltModel(resolved=resolved, model=model, tokenizer=tokenizer, device=device, precision=precision)


# -- phase 4: fit -----------------------------------------------------------------------------
def fit(cfg: Config, out: Path, data: PreparedData, built: BuiltModel, encoded: EncodedData, rec: NullRecorder,
        *, resume: bool, callbacks: Sequence[Any]) -> FocalTrainer:
    """Train (from the newest complete checkpoint with ``resume``); the best epoch is restored at the end."""
    trainer = build_trainer(cfg, out, data, built, encoded, rec, callbacks)
    rec.training_started(out / "checkpoints")
    checkpoint = last_complete_checkpoint(out / "checkpoints", say=rec.note) if resume else None
    if resume and not checkpoint:
        rec.note(f"note: --resume found no complete checkpoint in {out / 'checkpoints'}; starting from scratch")
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer


def add_members(cfg: Config, out: Path, data: PreparedData, encoded: EncodedData, trainer: FocalTrainer,
                rec: NullRecorder) -> None:
    """Members 1..K-1 of ``training.members``: each a run of its own on a fresh copy of the base, with seed
    + 1000 k (init, data order, dropout), early-stopped on its own val score, then loaded into the first
    member's model as one more adapter. Only the first member is tracked epoch by epoch."""
    from processor.model import member_name

    untracked = NullRecorder(out)
    for k in range(1, cfg.training.members):
        name, member_cfg = member_name(k), replace(cfg, seed=cfg.seed + 1000 * k)
        member_dir = out / "members" / name
        built = build_model(member_cfg, untracked)
        build_trainer(member_cfg, member_dir, data, built, encoded, untracked).train()
        built.model.save_pretrained(member_dir / "adapter")
        trainer.model.load_adapter(member_dir / "adapter", adapter_name=name)
        rec.note(f"member {k + 1}/{cfg.training.members} trained (seed {member_cfg.seed})")
    shutil.rmtree(out / "members", ignore_errors=True)  # every adapter is in the first member's model now


def build_trainer(cfg: Config, out: Path, data: PreparedData, built: BuiltModel, encoded: EncodedData,
                  rec: NullRecorder, callbacks: Sequence[Any] = ()) -> FocalTrainer:
    """Trainer with the class-weighted focal loss: accumulation, per-epoch eval and checkpoints, early
    stopping on the shipped predictions."""
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    from processor.loss import FocalLoss, resolve_class_weights

    # "auto" weights come from the class counts the model trains on (after oversampling).
    weights = resolve_class_weights(cfg.loss.class_weights, data.fit["label"].to_numpy())
    rec.class_weights("none" if weights is None else ",".join(f"{n}={w:.4f}" for n, w in zip(LABELS, weights)))
    focal = FocalLoss(gamma=cfg.loss.gamma, weight=None if weights is None else torch.tensor(weights),
                      mae=cfg.loss.mae)
    return FocalTrainer(
        model=built.model,
        args=training_arguments(cfg, out, built, n_train=len(encoded.train_ds)),
        train_dataset=encoded.train_ds,
        eval_dataset=encoded.val_ds,
        data_collator=DataCollatorWithPadding(built.tokenizer),
        compute_metrics=functools.partial(trainer_metrics, head=data.head),
        # The tracker's before the caller's: a pruning hook may raise.
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.training.patience), *rec.callbacks(),
                   *([HeadWarmup(cfg.training.head_warmup_epochs)] if cfg.training.head_warmup_epochs else []),
                   *([WeightAverage(cfg.training.weight_average)] if cfg.training.weight_average else []),
                   *callbacks],
        focal=focal,
        loraplus_ratio=cfg.training.loraplus_ratio,
    )


def training_arguments(cfg: Config, out: Path, built: BuiltModel, *, n_train: int) -> Any:
    from transformers import TrainingArguments

    from processor.model import checkpointing_args, precision_args

    metric = TRAINER_METRIC[cfg.training.early_stop_metric]
    t = cfg.training
    processes = distributed.world_size()  # each rank takes its own batch: the global batch is larger
    return TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        # transformers 5 has no warmup_ratio: a float in [0, 1) here is a ratio of the total steps
        # (TrainingArguments.get_warmup_steps: ceil(total * value)); config keeps the value below 1.
        warmup_steps=t.warmup_ratio,
        num_train_epochs=t.epochs,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="steps",
        logging_steps=max(1, n_train // (t.batch_size * t.grad_accum * processes * 4)),
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater_is_better(metric),
        save_total_limit=2,
        # Early stopping's patience counter lives in the checkpoint: a resumed run must stop where the
        # uninterrupted one would have.
        restore_callback_states_from_checkpoint=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        dataloader_num_workers=0,
        # LoRA adapters and the head are all used in every forward pass: skip DDP's extra graph walk.
        ddp_find_unused_parameters=False,
        **_device_args(built.device),
        **precision_args(built.precision),
        **checkpointing_args(t.gradient_checkpointing),
    )


# -- phase 5: evaluate ------------------------------------------------------------------------
def predict_val(trainer: FocalTrainer, encoded: EncodedData, data: PreparedData) -> Any:
    """The restored best model's logits on val (of several members: the log of their averaged softmax,
    which the shipped head turns into the probabilities the package ships). Every rank takes part (the
    prediction is sharded); Trainer's gather_for_metrics drops the distributed sampler's padding, so each
    val event counts once.
    After it, the other ranks of a multi-process job are done: rank 0 alone goes on."""
    import numpy as np
    from scipy.special import softmax

    from processor.model import ensemble_members, ensemble_probabilities

    def active_logits() -> Any:
        prediction = trainer.predict(encoded.val_ds)
        check_whole_val_set(prediction.label_ids, list(data.val["label"]))
        return prediction.predictions

    if ensemble_members(trainer.model):  # training.members > 1: the log of the averaged softmax
        logits = np.log(ensemble_probabilities(trainer.model, lambda: softmax(active_logits(), axis=-1)))
    else:
        logits = active_logits()
    if distributed.world_size() > 1:
        distributed.barrier()
        distributed.end()
    return logits


def evaluate(cfg: Config, data: PreparedData, built: BuiltModel, encoded: EncodedData, trainer: FocalTrainer,
             logits: Any, baselines: dict[str, BaselineScore] | None) -> tuple[Metrics, Evaluation]:
    """The evaluate phase (processor.evaluate.evaluate_run: scores, bootstrap, calibration, abstention,
    drift, history, the figures; ``baselines`` fitted beside training) and the run's record around it:
    what trained on what."""
    from processor.evaluate import evaluate_run

    done = evaluate_run(cfg, logits, head=data.head, baselines=baselines, val=data.val, profile=data.profile,
                        trainer=trainer, metric=TRAINER_METRIC[cfg.training.early_stop_metric])
    metrics = Metrics(
        **done.metrics_fields(),
        class_balance=ClassBalance(**data.class_balance),
        class_weights=_weights_used(trainer),
        schema_fingerprint=schema_fingerprint(),
        tokens_per_event=round(float(encoded.tokens_per_event), 2),
        tokens_per_event_qwen=round(float(encoded.tokens_per_event_qwen), 2),
        data=_data_block(data),
        model=ModelBlock(name=cfg.model, base_id=built.resolved.base_id, revision=built.resolved.revision,
                         is_demo=built.resolved.is_demo, lora_r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                         members=cfg.training.members),
        loss=trainer.focal.block(),
        prior_correction=data.head.prior_block(),
        seed=cfg.seed,
        leakage=None if data.leakage is None else data.leakage.block(),
    )
    return metrics, done


# -- phase 6: package -------------------------------------------------------------------------
def serving_spec(cfg: Config, data: PreparedData, built: BuiltModel, encoded: EncodedData, temperature: float
                 ) -> ServingSpec:
    """What prediction needs besides the weights: base, template and bins, the shipped head."""
    from processor.io import weights_sha256

    r = built.resolved
    return ServingSpec(
        base=BaseModel(name=cfg.model, base_id=r.base_id, revision=r.revision, is_demo=r.is_demo,
                       weights_sha256=weights_sha256(r.path)),
        template=encoded.serializer.template, serialization=encoded.serializer.to_dict(),
        max_length=cfg.training.max_length, labels=LABELS, schema_fingerprint=schema_fingerprint(),
        features=FEATURES, feature_profile=data.profile, head=replace(data.head, temperature=temperature))


def pyfunc_args(cfg: Config, data: PreparedData, built: BuiltModel, encoded: EncodedData, model: Any,
                spec: ServingSpec, zip_path: Path) -> dict[str, Any]:
    """The logged pyfunc: the zip, an input example with the predictions it ships, pinned requirements.
    The demo base is small (< 1 MB) and rebuilding it on a serving host takes a minute: always bundled.
    A hub base is bundled on request; otherwise the host resolves it by id and revision."""
    import pandas as pd

    from processor.package import prediction_rows, predict_texts

    example = data.val.head(3).copy()
    texts = encoded.serializer.render_all(records(example))
    probs = spec.head.probabilities(predict_texts(model, built.tokenizer, texts, cfg.training.max_length))
    rows = pd.DataFrame(prediction_rows(list(example["id"]), probs, spec.head.min_confidence))
    requirements = []
    for dist in REQUIREMENTS:
        try:
            requirements.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            pass
    r = built.resolved
    bundle = r.is_demo or cfg.packaging.bundle_base
    metadata = {"base_model": r.base_id, "base_model_revision": r.revision or "unknown",
                "base_bundled": bool(bundle), "schema_fingerprint": schema_fingerprint()}
    return {"zip_path": zip_path, "example": example, "example_output": rows, "requirements": requirements,
            "base_dir": Path(r.path) if bundle else None, "metadata": metadata}


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------
def _device_args(device: str) -> dict[str, Any]:
    """``device`` as resolved (processor.model.resolve_device): the Trainer picks an accelerator itself."""
    return {"use_cpu": True} if device == "cpu" else {}


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
    """The data card's Bayes ceiling (demo_kit.sample_data writes one beside its files), only when the
    card describes exactly the files trained on (sha256 of both); otherwise unknown."""
    card_path = train_path.parent / DATA_CARD
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        files = card["files"]
        same = all(any(f.get("sha256") == digests[split] for f in files.values()) for split in ("train", "val"))
        return float(card["bayes_ceiling"]) if same else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _weights_used(trainer: FocalTrainer) -> dict[str, float] | None:
    """The class weights of the loss the Trainer actually trained with."""
    weight = trainer.focal.weight
    return None if weight is None else dict(zip(LABELS, map(float, weight.tolist())))


def _data_block(data: PreparedData) -> DataBlock:
    train_df, val_df = data.train, data.val
    return DataBlock(train_file=str(data.paths["train"]), val_file=str(data.paths["val"]),
                     train_sha256=data.digests["train"], val_sha256=data.digests["val"],
                     n_train=int(len(train_df)), n_train_fit=int(len(data.fit)), n_val=int(len(val_df)),
                     train_counts=_counts(train_df["label"]), val_counts=_counts(val_df["label"]),
                     time_range={"train": _time_range(train_df), "val": _time_range(val_df)},
                     bayes_ceiling=_bayes_ceiling(data.paths["train"], data.digests))


if __name__ == "__main__":
    sys.exit(main())
