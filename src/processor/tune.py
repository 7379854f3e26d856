"""Optuna sweep over the train loop: gamma / LoRA r / lr (...) against val macro-F1.

    python -m processor.tune --config configs/tiny.yaml --sweep configs/sweep.yaml --n-trials 20
    python -m processor.tune --config configs/v3.yaml --storage postgresql://user@db/optuna \\
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
import contextlib
import copy
import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
import yaml
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json)
from optuna.trial import FrozenTrial, TrialState
from transformers import TrainerCallback

from processor.cli import UserError, error, first_line, nothing_trained
from processor.config import Config, ConfigError, apply_override, check, load_config, parse_override
from processor.io import write_text_atomic
from processor.train_loop import FLAGS as TRAIN_LOOP_FLAGS

OBJECTIVE = "val_macro_f1"
DEFAULT_STUDY = "train-loop-v3-sweep"
PARENT_ATTR = "mlflow_parent_run_id"
# Train-loop flags the sweep accepts too: what data and which base model every trial trains on.
TRAIN_FLAGS = ("train_file", "val_file", "model")

SPACE_ATTR = "sweep_search_space"
NOT_COUNTED_ATTR = "not_counted"  # why a FAIL trial does not use up one of the n trials


class SweepError(UserError, ValueError):
    """The sweep cannot run as asked (sweep file, storage, flags); exit code 2."""


class TrialFailed(Exception):
    """One trial crashed; the sweep goes on (its traceback is in the trial's log file)."""


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Knob:
    key: str | None  # the config key it sets (None: derived, see lora_alpha_ratio)
    kind: type  # int or float: the type every bound/choice must have
    help: str


KNOBS: dict[str, Knob] = {
    "gamma": Knob("loss.gamma", float, "focal-loss gamma"),
    "lora_r": Knob("lora.r", int, "LoRA rank"),
    "lr": Knob("training.lr", float, "learning rate"),
    "lora_alpha": Knob("lora.alpha", int, "LoRA alpha"),
    "lora_alpha_ratio": Knob(None, float, "lora.alpha = round(ratio * lora.r)"),
    "lora_dropout": Knob("lora.dropout", float, "LoRA dropout"),
}
SPEC_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
             "categorical": {"type", "choices"}}
SAMPLER_KEYS = {"tpe": {"type", "seed", "n_startup_trials"}, "random": {"type", "seed"}}
PRUNER_KEYS = {"median": {"type", "n_startup_trials", "n_warmup_steps"},
               "hyperband": {"type", "min_resource", "reduction_factor"}, "none": {"type"}}
TOP_KEYS = ("params", "sampler", "pruner")


@dataclass
class Sweep:
    path: Path
    space: dict[str, BaseDistribution]
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, d in self.space.items():
            if isinstance(d, CategoricalDistribution):
                out[name] = trial.suggest_categorical(name, d.choices)
            elif isinstance(d, IntDistribution):
                out[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
            else:
                out[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        return out

    def fingerprint(self) -> str:
        return json.dumps({k: json.loads(distribution_to_json(d)) for k, d in sorted(self.space.items())},
                          sort_keys=True)


def overrides_for(params: dict[str, Any], base: Config) -> dict[str, Any]:
    """Sweep parameters -> dotted config overrides."""
    out = {KNOBS[name].key: value for name, value in params.items() if KNOBS[name].key}
    if "lora_alpha_ratio" in params:
        r = params.get("lora_r", base.lora.r)
        out["lora.alpha"] = max(1, int(round(params["lora_alpha_ratio"] * r)))
    return out


def trial_config(base: Config, params: dict[str, Any], output_dir: Path) -> Config:
    cfg = copy.deepcopy(base)
    for key, value in overrides_for(params, base).items():
        apply_override(cfg, key, value, source=f"sweep parameter for {key}")
    cfg.packaging.output_dir = str(output_dir)
    return check(cfg)


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """``("params", "gamma", "low") -> line number`` for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[(*path, str(i))] = value.start_mark.line + 1
                walk(value, (*path, str(i)))

    try:
        walk(yaml.compose(text), ())
    except yaml.YAMLError:
        pass
    return lines


class _Where:
    """Builds ``file:line: dotted.key: message`` errors."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, _line_index(text)

    def error(self, keys: Sequence[str], message: str) -> SweepError:
        keys = tuple(str(k) for k in keys)
        line = next((self.lines[keys[:i]] for i in range(len(keys), 0, -1) if keys[:i] in self.lines), None)
        where = f"{self.path}:{line}" if line else str(self.path)
        return SweepError(f"{where}: {'.'.join(keys)}: {message}" if keys else f"{where}: {message}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _distribution(name: str, spec: Any, w: _Where) -> BaseDistribution:
    at = ("params", name)
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise w.error(at, "expected a mapping like {type: float, low: 0.0, high: 3.0} or a list of choices, "
                          f"got {spec!r}")
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in SPEC_KEYS:
        raise w.error((*at, "type"), f"expected one of {', '.join(SPEC_KEYS)}, got {kind!r}")
    unknown = sorted(set(spec) - SPEC_KEYS[kind])
    if unknown:
        raise w.error((*at, unknown[0]), f"unknown key for a {kind} parameter (allowed: "
                                         f"{', '.join(sorted(SPEC_KEYS[kind]))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise w.error((*at, "choices"), f"expected a non-empty list, got {choices!r}")
        for i, c in enumerate(choices):
            if not _is_number(c):
                raise w.error((*at, "choices", str(i)), f"expected a number, got {c!r}")
        if len(set(choices)) != len(choices):
            raise w.error((*at, "choices"), f"duplicate choices in {choices}")
        return CategoricalDistribution(choices)
    for bound in ("low", "high"):
        if bound not in spec:
            raise w.error(at, f"a {kind} range needs `{bound}`")
        value = spec[bound]
        ok = isinstance(value, int) and not isinstance(value, bool) if kind == "int" else _is_number(value)
        if not ok:
            raise w.error((*at, bound), f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
    low, high = spec["low"], spec["high"]
    if low >= high:
        what = "empty" if low == high else "inverted"
        raise w.error(at, f"{what} range: low ({low}) must be < high ({high}) "
                          "(for a fixed value use {type: categorical, choices: [VALUE]})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise w.error((*at, "log"), f"expected true or false, got {log!r}")
    if log and low <= 0:
        raise w.error((*at, "low"), f"a log range needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if log:
            raise w.error((*at, "step"), "step cannot be combined with log: true")
        ok = (isinstance(step, int) and not isinstance(step, bool)) if kind == "int" else _is_number(step)
        if not ok or step <= 0:
            raise w.error((*at, "step"), f"expected a positive {'integer' if kind == 'int' else 'number'}, "
                                         f"got {step!r}")
    if kind == "int":
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=step)


def _candidates(d: BaseDistribution) -> list[Any]:
    return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]


def _check_domain(space: dict[str, BaseDistribution], base: Config, w: _Where) -> None:
    """Every bound/choice must make a valid config (types and ranges from processor.config)."""
    for name, d in space.items():
        knob = KNOBS[name]
        if knob.kind is int and isinstance(d, FloatDistribution):
            raise w.error(("params", name, "type"), f"{knob.help} is an integer: use type int or categorical")
        for value in _candidates(d):
            if knob.kind is int and not float(value).is_integer():
                raise w.error(("params", name), f"{value!r} is not an integer ({knob.help} is one)")
            params = {name: value}
            if name == "lora_alpha_ratio":
                if value <= 0:
                    raise w.error(("params", name), f"ratio must be > 0, got {value!r}")
                continue
            try:
                trial_config(base, params, Path(base.packaging.output_dir))
            except ConfigError as exc:
                detail = str(exc).replace("invalid config:\n  ", "")
                raise w.error(("params", name), f"value {value!r} is not valid for {knob.key}: {detail}") from None


def _section(raw: dict[str, Any], key: str, allowed: dict[str, set[str]], default: str, w: _Where) -> dict[str, Any]:
    spec = raw.get(key) or {}
    if not isinstance(spec, dict):
        raise w.error((key,), f"expected a mapping, got {spec!r}")
    kind = spec.get("type", default)
    if kind not in allowed:
        raise w.error((key, "type"), f"expected one of {', '.join(allowed)}, got {kind!r}")
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise w.error((key, unknown[0]), f"unknown key for {key} {kind} (allowed: {', '.join(sorted(allowed[kind]))})")
    for k, v in spec.items():
        if k != "type" and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise w.error((key, k), f"expected an integer >= 0, got {v!r}")
    return {**spec, "type": kind}


def load_sweep(path: str | Path, base: Config) -> Sweep:
    """Read and validate a sweep file; every problem names the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepError(f"{path}: not valid YAML: {exc}") from None
    w = _Where(path, text)
    if not isinstance(raw, dict):
        raise w.error((), f"expected a mapping with {', '.join(TOP_KEYS)}, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            raise w.error((str(key),), f"unknown key (allowed: {', '.join(TOP_KEYS)})")
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise w.error(("params",), "expected a non-empty mapping of parameters to search "
                                   f"(any of {', '.join(KNOBS)})")
    space: dict[str, BaseDistribution] = {}
    for name, spec in params.items():
        if name not in KNOBS:
            raise w.error(("params", str(name)), f"unknown parameter (known: {', '.join(KNOBS)})")
        space[name] = _distribution(name, spec, w)
    if "lora_alpha" in space and "lora_alpha_ratio" in space:
        raise w.error(("params", "lora_alpha_ratio"), "set either lora_alpha or lora_alpha_ratio, not both")
    _check_domain(space, base, w)
    sampler = _section(raw, "sampler", SAMPLER_KEYS, "tpe", w)
    pruner = _section(raw, "pruner", PRUNER_KEYS, "median", w)
    if pruner["type"] == "hyperband" and pruner.get("reduction_factor", 3) < 2:
        raise w.error(("pruner", "reduction_factor"), "must be >= 2")
    return Sweep(path, space, sampler, pruner)


def make_sampler(spec: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    if spec["type"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.get("n_startup_trials", 10),
                                      constant_liar=True)


def make_pruner(spec: dict[str, Any], max_epochs: int) -> optuna.pruners.BasePruner:
    if spec["type"] == "none":
        return optuna.pruners.NopPruner()
    if spec["type"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=spec.get("min_resource", 1), max_resource=max_epochs,
                                              reduction_factor=spec.get("reduction_factor", 3))
    return optuna.pruners.MedianPruner(n_startup_trials=spec.get("n_startup_trials", 5),
                                       n_warmup_steps=spec.get("n_warmup_steps", 0), interval_steps=1)


# --------------------------------------------------------------------------------------------
# Storage and the "count, then create a trial" lock
# --------------------------------------------------------------------------------------------
def default_storage(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir.resolve() / 'optuna.db').as_posix()}"


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return re.sub(r"//[^@/]*@", "//***@", url)


def normalize_url(url: str) -> str:
    """Check the storage URL; a bare ``postgresql://`` gets the installed driver (SQLAlchemy 2.1 defaults
    to psycopg 3, this project ships psycopg2)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise SweepError(f"--storage {url!r}: not a database URL (e.g. sqlite:///optuna.db, "
                         "postgresql://user@host/db)") from None
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def open_storage(url: str, *, heartbeat: int, grace: int | None, max_retry: int) -> optuna.storages.RDBStorage:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # workers sharing one file wait instead of failing
    else:
        engine_kwargs["pool_pre_ping"] = True
    for attempt in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees "already exists" and succeeds on the next try.
                last = exc
                time.sleep(0.5 + attempt)
            except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
                raise SweepError(f"cannot open the Optuna storage {redact(url)}: {first_line(exc)}") from None
    raise SweepError(f"cannot open the Optuna storage {redact(url)}: {first_line(last)}")


class TrialLock:
    """Serialises "count the study's trials, then create one" across workers. ``release`` is
    idempotent: the objective releases it as soon as its trial exists in the storage."""

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None], close: Callable[[], None]):
        self._acquire, self._release, self._close = acquire, release, close
        self._held = False

    def acquire(self) -> None:
        self._acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._release()

    def close(self) -> None:
        self.release()
        self._close()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def make_lock(url: str, study_name: str) -> TrialLock:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        import sqlalchemy

        # A session-level advisory lock on a dedicated connection: a killed worker's lock dies with it.
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        key = zlib.crc32(f"processor.tune:{study_name}".encode())
        return TrialLock(lambda: conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key}),
                         lambda: conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key}),
                         lambda: (conn.close(), engine.dispose()))
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        from filelock import FileLock

        lock = FileLock(str(Path(parsed.database).with_name(Path(parsed.database).name + ".lock")))
        return TrialLock(lock.acquire, lock.release, lambda: None)
    if backend != "sqlite":
        print(f"note: no cross-process lock for {backend} storage; with several workers the study may "
              "end with a few more than --n-trials trials", file=sys.stderr)
    mutex = threading.Lock()
    return TrialLock(mutex.acquire, mutex.release, lambda: None)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of stale trials that Optuna's retry callback re-queued under a new number."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up the study's --n-trials budget: everything except failures that were
    retried, interrupted (Ctrl-C) or stopped the sweep (bad data...)."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.state != TrialState.FAIL
            or (t.number not in retried and not t.user_attrs.get(NOT_COUNTED_ATTR))]


# --------------------------------------------------------------------------------------------
# Gate verdict (processor.gate's own checks on the trial's output directory)
# --------------------------------------------------------------------------------------------
@dataclass
class Gate:
    checks: Path
    thresholds: Any

    def verdict(self, output_dir: Path) -> tuple[bool, list[str]]:
        from processor.gate import gate_output_dir

        outcome = gate_output_dir(output_dir, self.thresholds, strict=self.thresholds.strict)
        failed = [f"{c['name']}: {c['detail'] or c['value']}" for c in outcome.report["checks"] if not c["passed"]]
        return outcome.exit_code == 0, failed


def open_gate(checks: Path | None) -> Gate:
    from processor.gate import DEFAULT_CHECKS, GateUsageError, load_thresholds

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


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _tag_run(run_id: str | None, tags: dict[str, Any], status: str | None = None) -> None:
    if not run_id:
        return
    client = _client()
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
        if run_id and ctx.mlflow_on and _client().get_run(run_id).info.status == "RUNNING":
            _tag_run(run_id, {"optuna.state": "FAIL", "optuna.stale": "true", "optuna.retried_as": trial.number},
                     status="KILLED")


def objective(ctx: Context, trial: optuna.Trial) -> float:
    from processor.data import ContractError
    from processor.model import ModelNotAvailableError
    from processor.train_loop import UsageError, train

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
    value = float(result.metrics[OBJECTIVE])
    trial.set_user_attr("epochs_run", int(result.metrics.get("epochs_run", 0)))
    tags = {"optuna.state": "COMPLETE"}
    if ctx.gate is not None:
        try:
            passed, failures = ctx.gate.verdict(out)
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
def run_worker(ctx: Context, n_trials: int, timeout: float | None, seed: int) -> None:
    """Run trials until the study holds ``n_trials`` counted trials (or ``timeout`` seconds passed)."""
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
            ctx.study.optimize(lambda t: objective(ctx, t), n_trials=1, catch=(TrialFailed,),
                               callbacks=[lambda study, t: _progress(ctx, study, t)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4g}"
    return str(value)


def _progress(ctx: Context, study: optuna.Study, t: FrozenTrial) -> None:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
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


# --------------------------------------------------------------------------------------------
# Summary: table, parent run artifacts, gate
# --------------------------------------------------------------------------------------------
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


def summary(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    passing = sorted((t for t in complete if t.user_attrs.get("gate_pass")), key=lambda t: -t.value)
    best = max(complete, key=lambda t: t.value) if complete else None

    def brief(t: FrozenTrial | None) -> dict[str, Any] | None:
        return None if t is None else {"number": t.number, "value": t.value, "params": t.params,
                                       "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
                                       "output_dir": t.user_attrs.get("output_dir")}

    return {"study_name": study.study_name, "objective": OBJECTIVE, "direction": "maximize",
            "n_trials": len(trials), "n_counted": len(counted(trials)),
            "states": {s.name: sum(1 for t in trials if t.state == s) for s in TrialState if
                       any(t.state == s for t in trials)},
            "best": brief(best), "gate_checked": any("gate_pass" in t.user_attrs for t in complete),
            "gate_passing": [t.number for t in passing], "best_passing": brief(passing[0] if passing else None)}


def _write_atomic(path: Path, text: str) -> None:
    write_text_atomic(path, text)


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


def log_summary(ctx: Context, data: dict[str, Any], table: Any) -> None:
    """Local copies in the output dir; parent-run params/tags/metrics/artifacts when MLflow is on."""
    _write_atomic(ctx.output_dir / "trials.csv", table.to_csv(index=False))
    _write_atomic(ctx.output_dir / "summary.json", json.dumps(data, indent=2, default=str))
    notes = write_plots(ctx.study, ctx.output_dir / "plots") if data["states"].get("COMPLETE") else ["no completed trial"]
    for note in notes:
        print(f"note: plot skipped: {note}", file=sys.stderr)
    if not ctx.mlflow_on:
        return
    import mlflow

    best = data["best"]
    tags = {"sweep.n_trials": data["n_trials"], "sweep.gate_passing": ",".join(map(str, data["gate_passing"]))}
    if best:
        tags.update({"best.trial_number": best["number"], "best.mlflow_run_id": best["mlflow_run_id"] or "",
                     **{f"best.param.{k}": v for k, v in best["params"].items()}})
        mlflow.log_metric(f"best_{OBJECTIVE}", best["value"],
                          step=sum(n for s, n in data["states"].items() if s in ("COMPLETE", "PRUNED", "FAIL")))
    mlflow.set_tags({k: str(v) for k, v in tags.items()})
    mlflow.log_metrics({f"n_{s.lower()}": float(n) for s, n in data["states"].items()})
    for name in ("trials.csv", "summary.json"):
        mlflow.log_artifact(str(ctx.output_dir / name))
    if (ctx.output_dir / "plots").is_dir():
        mlflow.log_artifacts(str(ctx.output_dir / "plots"), artifact_path="plots")


def print_summary(data: dict[str, Any], table: Any, gate: Gate | None) -> None:
    import pandas as pd

    shown = table.drop(columns=[c for c in ("mlflow_run_id", "worker") if c in table], errors="ignore")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print("\n" + shown.to_string(index=False))
    states = ", ".join(f"{n} {s.lower()}" for s, n in data["states"].items())
    print(f"\nstudy {data['study_name']}: {data['n_trials']} trials ({states})")
    best = data["best"]
    if best:
        params = " ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
        print(f"best: trial {best['number']} {OBJECTIVE}={best['value']:.4f} {params}"
              + (f"  mlflow run {best['mlflow_run_id']}" if best["mlflow_run_id"] else ""))
    if gate is None:
        return
    passing = data["gate_passing"]
    where = gate.checks
    if passing:
        bp = data["best_passing"]
        print(f"gate ({where}): trials {', '.join(map(str, passing))} would pass; best passing: trial "
              f"{bp['number']} ({OBJECTIVE}={bp['value']:.4f})")
    else:
        print(f"gate ({where}): no completed trial would pass")


def run_gate_best(data: dict[str, Any], gate: Gate, model_name: str | None) -> int:
    import mlflow

    bp = data["best_passing"]
    if bp is None:
        print("--gate-best: no completed trial passes the gate checks; nothing to gate", file=sys.stderr)
        return 1
    if not bp["mlflow_run_id"]:
        print(f"--gate-best: trial {bp['number']} has no MLflow run", file=sys.stderr)
        return 1
    cmd = [sys.executable, "-m", "processor.gate", "--run-id", bp["mlflow_run_id"], "--checks", str(gate.checks),
           "--tracking-uri", mlflow.get_tracking_uri()]
    if model_name:
        cmd += ["--model-name", model_name]
    print(f"\n--gate-best: trial {bp['number']}: {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd, check=False).returncode


# --------------------------------------------------------------------------------------------
# MLflow parent run
# --------------------------------------------------------------------------------------------
def parent_run(ctx: Context, meta: dict[str, str], project_run: str | None) -> str:
    """The study's parent run: stored in the study, created once (under the trial lock)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client()
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
        _client().set_tag(project_run, "sweep.parent_run_id", parent)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor.tune", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/tiny.yaml", help="base config (default configs/tiny.yaml)")
    # The same data/model flags as the train loop (over the base config, under the overrides' order).
    for flag in TRAIN_FLAGS:
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, default=None, metavar="VALUE",
                       help=f"overrides {TRAIN_LOOP_FLAGS[flag]} (as in the train loop)")
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
    if not args.study_name.strip():
        raise SweepError("--study-name must not be empty")


def base_config(args: argparse.Namespace) -> Config:
    """config file < section.key=value overrides < flags, as in the train loop."""
    cfg = load_config(args.config)
    for text in args.overrides:
        key, value = parse_override(text)
        apply_override(cfg, key, value, source=text)
    for flag in TRAIN_FLAGS:
        value = getattr(args, flag, None)
        if value is not None and value != "":  # "" = an MLproject parameter left empty
            apply_override(cfg, TRAIN_LOOP_FLAGS[flag], value, source=f"--{flag.replace('_', '-')}")
    return check(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    from processor.data import ContractError

    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module prints its own line per trial
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
        safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", args.study_name.strip())
        output_dir = Path(args.output_dir or Path("outputs") / "sweeps" / safe_name)
        url = normalize_url(args.storage.strip() or default_storage(output_dir))
        storage = open_storage(url, heartbeat=args.heartbeat, grace=args.grace_period, max_retry=args.max_retry)
        seed = args.sampler_seed if args.sampler_seed is not None else sweep.sampler.get("seed", base.seed)
        study = optuna.create_study(study_name=args.study_name, storage=storage, load_if_exists=True,
                                    direction="maximize", sampler=make_sampler(sweep.sampler, seed),
                                    pruner=make_pruner(sweep.pruner, base.training.epochs))
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise SweepError(f"study {args.study_name!r} in {redact(url)} minimises; use another --study-name")
        lock = make_lock(url, args.study_name)
        with lock.held():
            stored = study.user_attrs.get(SPACE_ATTR)
            if stored is None:
                study.set_user_attr(SPACE_ATTR, sweep.fingerprint())
            elif stored != sweep.fingerprint():
                old, new = json.loads(stored), json.loads(sweep.fingerprint())
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise SweepError(f"study {args.study_name!r} in {redact(url)} was created with another search "
                                 f"space (changed: {', '.join(changed)}); use a new --study-name or the "
                                 "original sweep file")
        ctx = Context(study=study, sweep=sweep, base=base, output_dir=output_dir, lock=lock, gate=gate,
                      mlflow_on=base.mlflow.enabled, quiet=not args.verbose, keep_checkpoints=args.keep_checkpoints)
        done_before = len(counted(study.get_trials(deepcopy=False)))
        print(f"[tune] study {args.study_name} in {redact(url)}: {done_before} of {args.n_trials} trials done; "
              f"sampler {sweep.sampler['type']} seed {seed}, pruner {sweep.pruner['type']}; outputs {output_dir}",
              flush=True)
        data, table = _sweep(ctx, args, url, seed)
    except ContractError as exc:
        return error(nothing_trained(exc), exc.exit_code)
    except UserError as exc:  # config, sweep file, arguments, model not available
        return error(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue the study", file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.close()
        if threads_before is not None:  # main() may run inside a larger process (tests, notebooks)
            import torch

            torch.set_num_threads(threads_before)
    print_summary(data, table, gate)
    if not data["states"].get("COMPLETE"):
        print("no trial completed", file=sys.stderr)
        return 1
    if args.gate_best and gate is not None:
        return run_gate_best(data, gate, args.gate_model_name)
    return 0


def _sweep(ctx: Context, args: argparse.Namespace, url: str, seed: int) -> tuple[dict[str, Any], Any]:
    if not ctx.mlflow_on:
        run_worker(ctx, args.n_trials, args.timeout, seed)
        data, table = summary(ctx.study), trials_table(ctx.study)
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
        data, table = summary(ctx.study), trials_table(ctx.study)
        data["mlflow_parent_run_id"] = run_id
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
