"""One typed config for a training run: YAML template, overridden by ``key=value`` and CLI flags.

Precedence (lowest first): dataclass defaults < ``--config FILE`` < ``section.key=value`` overrides <
explicit flags (``--lr 3e-4``): a flag wins. :func:`resolve_config` is the one place that applies them,
for the train loop and the sweep alike, and checks the result once. Unknown keys and values of the wrong
type are errors that name the file and the key, never a stack trace.

Every numeric setting has two ranges, both in :data:`RANGES` (the one place they are written):

* the **valid** range: a value outside it (or inf / nan) is refused before anything is loaded or
  trained: ``ConfigError`` (exit 2), one line naming the key, e.g. ``training.lr must be a finite
  number in (0, 1], got inf``. The bounds are where training stops making sense at all, not taste:
  a learning rate above 1 makes AdamW step further than any LoRA weight's scale on the first batch
  (``--lr 1e6`` is refused, not trained); a focal gamma above 10 weights the loss of an event given
  probability 0.5 by 0.5**10 < 0.001, so the model stops learning from anything it half knows.
* the **typical** range: what the project and the literature use (lr 1e-6..1e-2, gamma 0..5, ...).
  Outside it the run goes ahead and ``check`` prints one ``warning: ...`` line per key on stderr,
  so that an unusual value is a visible choice, never a silent one.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from processor.cli import UserError, parse_bool
from processor.names import BASELINES, ZIP_NAME
from processor.serialize import TEMPLATE_NAME, TEMPLATES
from processor.tuned_tree import Search as TreeSearch

EARLY_STOP_METRICS = ("val_macro_f1", "val_accuracy", "val_loss")
DEVICES = ("auto", "cpu", "cuda", "mps")
# auto = bf16 on a GPU that supports it, else fp32 (a bf16 checkpoint is upcast at load on a CPU).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Population stability index per feature at predict time: warn above this (processor.drift, which
# also falls back to it for a profile that does not store its own level).
PSI_WARN = 0.2
# Torch's CPU threads when a packaged model is loaded to predict (processor.package; the serving host
# overrides it with $PROCESSOR_TORCH_THREADS). 1, measured by benchmarks/bench_serving.py on 2 cores:
# the demo model's forward pass is too small to gain much from a second thread, and two threads
# contend with other processes on a busy machine (1000_at_2_threads in benchmarks/results/serving.json).
SERVING_THREADS = 1


@dataclass(frozen=True)
class Range:
    """A closed (or, with ``*_open``, open-ended) interval, and the narrower typical one."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    typical: tuple[float, float] | None = None  # warn outside it; None = every valid value is usual

    def __contains__(self, x: float) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return math.isfinite(x) and above and below

    def text(self) -> str:
        def show(v: float) -> str:
            return str(v) if isinstance(v, int) else f"{v:g}"

        return f"{'(' if self.lo_open else '['}{show(self.lo)}, {show(self.hi)}{')' if self.hi_open else ']'}"

    def usual(self, x: float) -> bool:
        return self.typical is None or self.typical[0] <= x <= self.typical[1]


# Every numeric key of the config (list keys: each item), valid and typical range (see the module doc).
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),  # numpy's seed range
    "lora.r": Range(1, 1024, typical=(2, 256)),
    "lora.alpha": Range(1, 8192, typical=(1, 1024)),
    "lora.dropout": Range(0.0, 1.0, hi_open=True, typical=(0.0, 0.5)),
    "training.batch_size": Range(1, 65536, typical=(1, 1024)),
    "training.grad_accum": Range(1, 4096, typical=(1, 256)),
    "training.lr": Range(0.0, 1.0, lo_open=True, typical=(1e-6, 1e-2)),
    "training.epochs": Range(1, 10000, typical=(1, 200)),
    "training.patience": Range(1, 10000, typical=(1, 100)),
    "training.weight_decay": Range(0.0, 1.0, typical=(0.0, 0.3)),
    "training.warmup_ratio": Range(0.0, 1.0, hi_open=True, typical=(0.0, 0.3)),
    "training.max_length": Range(8, 131072, typical=(16, 4096)),
    "training.eval_batch_size": Range(1, 65536, typical=(1, 1024)),
    "training.prior_correction": Range(0.0, 1.0),
    "training.torch_threads": Range(0, 4096),
    "training.loraplus_ratio": Range(0.0, 1024.0, typical=(0.0, 64.0)),
    "training.head_warmup_epochs": Range(0, 10000, typical=(0, 10)),
    "training.members": Range(1, 64, typical=(1, 5)),
    "training.weight_average": Range(0.0, 1.0, hi_open=True, typical=(0.0, 0.999)),
    "loss.gamma": Range(0.0, 10.0, typical=(0.0, 5.0)),
    "loss.mae": Range(0.0, 100.0, typical=(0.0, 10.0)),
    "loss.class_weights": Range(0.0, 1e6, lo_open=True, typical=(0.01, 100.0)),
    "eval.bootstrap_resamples": Range(100, 10**7, typical=(100, 100_000)),
    "eval.confidence": Range(0.5, 1.0, hi_open=True, typical=(0.8, 0.99)),
    "eval.tuned_trials": Range(1, 10000, typical=(5, 200)),
    "eval.tuned_folds": Range(2, 20, typical=(3, 10)),
    "eval.tuned_max_trees": Range(8, 100000, typical=(50, 5000)),
    "trust.calibration_folds": Range(2, 100, typical=(2, 20)),
    "trust.ece_bins": Range(2, 1000, typical=(5, 50)),
    "trust.min_confidence": Range(0.0, 1.0),
    "trust.abstention_grid": Range(0.0, 1.0),
    "trust.psi_warn": Range(0.0, 10.0, lo_open=True, typical=(0.05, 1.0)),
}


class ConfigError(UserError, ValueError):
    """A config file, override or flag is wrong; the message says where and why."""


@dataclass
class LoraConfig:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    # "all-linear" = every linear layer of the decoder (peft's shorthand), or an explicit list.
    target_modules: str | list[str] = "all-linear"


@dataclass
class TrainingConfig:
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 3.0e-4
    epochs: int = 5
    early_stop_metric: str = "val_macro_f1"
    patience: int = 2
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_length: int = 64
    eval_batch_size: int = 64
    device: str = "auto"
    # Weights and mixed precision: auto|bf16|fp16|fp32 (processor.model.resolve_precision).
    precision: str = "auto"
    # Recompute activations in the backward pass: less memory, ~30 % more time. Worth it only for long
    # texts or big batches; an event is 13-28 tokens (processor.model.checkpointing_args).
    gradient_checkpointing: bool = False
    # Undo this fraction of oversampling's prior shift at prediction (logit adjustment by
    # alpha * log(train class shares before oversampling); processor.calibrate.prior_logit_bias).
    # 0 = off (predictions as if every class were a third of the events), 1 = the full correction.
    prior_correction: float = 0.0
    # CPU threads for torch (0 = torch's default, one per core). Small models run faster on one
    # thread, and so does any model when other processes share the cores.
    torch_threads: int = 0
    # LoRA+ (processor.trainer.FocalTrainer.create_optimizer): the LoRA B matrices' learning rate is this
    # many times lr. 0 or 1 = off (plain LoRA: one learning rate).
    loraplus_ratio: float = 0.0
    # Epochs at the start that train the classification head alone, LoRA frozen (linear probe, then
    # fine-tune; processor.trainer.HeadWarmup). 0 = off: a tie on the v3 selection runs (docs/quality.md).
    head_warmup_epochs: int = 0
    # Evaluate and ship an exponential moving average of the trainable weights, this decay per optimizer
    # step (processor.trainer.WeightAverage). 0 = off: a tie on the v3 selection runs (docs/quality.md).
    # The average lives in memory: --resume restarts it from the checkpoint's (averaged) weights.
    weight_average: float = 0.0
    # Train this many LoRA adapters on the one base, member k with seed + 1000 k (init, data order,
    # dropout), and ship their averaged softmax (processor.model.ensemble_probabilities): K x the training
    # time and K forward passes per event. 1 = one adapter, the run as it always was.
    members: int = 1


@dataclass
class LossConfig:
    type: str = "focal"
    gamma: float = 1.5
    # Weight of a bounded (1 - p_y) term beside focal, robust to label noise (processor.loss); 0 = off.
    mae: float = 0.0
    # "auto" (from class counts), "none", or an explicit list in label order (long, short, no_trade).
    class_weights: list[float] | str = "auto"


@dataclass
class DataConfig:
    train_file: str = "data/train.jsonl"
    val_file: str = "data/val.jsonl"
    oversample: bool = True
    # How events become text (processor.serialize): "words-v1" (one word per feature, quantile bins
    # fitted on train), "qwen-v1" (the same, one Qwen token per feature: 13 tokens on a real Qwen
    # instead of 28) or the older "compact-v2" (raw digits).
    template: str = TEMPLATE_NAME


@dataclass
class PackagingConfig:
    # Empty: each run gets its own directory, outputs/<run name>-<short run id>, so repeated runs (a hand
    # sweep of `mlflow run . -P gamma=...`) never collide. A directory given here or by --output-dir is
    # protected: a finished run in it is never overwritten without --overwrite.
    output_dir: str = ""
    zip_final: str = ZIP_NAME
    # Copy the base checkpoint into the logged MLflow model, for serving hosts without a model hub or
    # cache (air-gapped). Always done for the small demo base; for a real Qwen it adds ~1 GB per model.
    bundle_base: bool = False


@dataclass
class MlflowConfig:
    enabled: bool = True
    experiment: str = "train-loop-v3"
    # Log the pyfunc model with the run (the gate registers it; it is never registered here).
    log_model: bool = True


@dataclass
class EvalConfig:
    # Bootstrap settings for the confidence intervals written to metrics.json.
    bootstrap_resamples: int = 1000
    confidence: float = 0.90
    # Which classic models the run fits on the same split (processor.evaluate.baselines): a list of
    # names from processor.names.BASELINES; true = all of them, false = none (older YAML files).
    baselines: bool | list[str] = field(default_factory=lambda: list(BASELINES))
    # tuned_gbdt: Optuna trials and CV folds on the training split, the most trees per fit, and
    # whether the per-class decision offsets chosen on out-of-fold probabilities are applied
    # (processor.tuned_tree, where the defaults are declared; docs/benchmarks.md has the budget's figures).
    tuned_trials: int = TreeSearch.trials
    tuned_folds: int = TreeSearch.folds
    tuned_max_trees: int = TreeSearch.max_trees
    tuned_offsets: bool = TreeSearch.offsets

    def baseline_names(self) -> list[str]:
        if isinstance(self.baselines, bool):
            return list(BASELINES) if self.baselines else []
        return list(self.baselines)

    def tree_search(self) -> TreeSearch:
        """The tuned tree's search, as the tuned_* keys above size it."""
        return TreeSearch(trials=self.tuned_trials, folds=self.tuned_folds, max_trees=self.tuned_max_trees,
                          offsets=self.tuned_offsets)


@dataclass
class TrustConfig:
    """Can a trader trust a prediction: calibration, abstention, drift, temporal leakage (issue 12)."""

    # Temperature scaling of the probabilities, fitted by cross-fitting over validation folds so no
    # event's reported calibration comes from a temperature fitted on it (processor.calibrate).
    calibrate: bool = True
    calibration_folds: int = 5
    ece_bins: int = 10
    # Predict no_trade (abstained: true) when the top probability is below this; null = never abstain.
    # predict --min-confidence and the pyfunc's min_confidence param override it at predict time.
    min_confidence: float | None = None
    # Thresholds whose coverage and long/short precision the run reports (metrics.json + PNG).
    abstention_grid: list[float] = field(default_factory=lambda: [0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    psi_warn: float = PSI_WARN
    # Check that validation events are not older than training events (per symbol) when events
    # carry timestamps (processor.leakage).
    check_time_leakage: bool = True


@dataclass
class Config:
    # The embedded demo base; real runs pass qwen-base, a hub id, or a local directory.
    model: str = "qwen-tiny"
    revision: str | None = None
    seed: int = 42
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    packaging: PackagingConfig = field(default_factory=PackagingConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``section.key -> value``, the form logged as MLflow params. Top-level keys go under
        ``run.`` (``run.model``, ``run.seed``): ``mlflow run`` already logged its ``-P model=...``
        parameters under the bare names, and MLflow refuses to change a logged param."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[f"run.{key}"] = value
        return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value to the annotated type. YAML already typed most values; strings come
    from ``key=value`` overrides and are parsed as YAML scalars first."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b" from the command line; one name is a one-item list
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    scalar = _SCALARS.get(tp)
    if scalar is None:
        raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not a user error
    return scalar(value, where)


def _coerce_union(value: Any, options: tuple[Any, ...], where: str) -> Any:
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(f"{where}: {value!r} is not a valid value ({'; '.join(errors)})")


def _to_bool(value: Any, where: str) -> bool:
    # "" is not a value here: a key given empty is a mistake, not "false".
    if isinstance(value, bool) or (isinstance(value, str) and value.strip()):
        try:
            return parse_bool(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads "3e-4" as a string; float() does not.
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return str(value)


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    hints = _hints(type(obj))
    for key, value in values.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping, got {value!r}")
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}"))


def _value(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def numeric_keys(cfg: Config | None = None) -> list[str]:
    """Every dotted key whose value is a number or a list of numbers (what RANGES must cover)."""
    def walk(obj: Any, prefix: str) -> list[str]:
        found = []
        for f in dataclasses.fields(obj):
            key, value = f"{prefix}{f.name}", getattr(obj, f.name)
            hint = str(_hints(type(obj))[f.name])
            if dataclasses.is_dataclass(value):
                found += walk(value, f"{key}.")
            elif ("int" in hint or "float" in hint) and "bool" not in hint:
                found.append(key)
        return found

    return walk(cfg or Config(), "")


def range_problems(cfg: Config) -> tuple[list[str], list[str]]:
    """(refusals, warnings) of the numeric keys against RANGES: inf, nan and values outside the valid
    range are refused; valid values outside the typical range are warned about."""
    problems, warnings = [], []
    for key, rng in RANGES.items():
        value = _value(cfg, key)
        if value is None or isinstance(value, str):  # null min_confidence, class_weights "auto"/"none"
            continue
        for x in value if isinstance(value, list) else [value]:
            kind = "an integer" if isinstance(x, int) else "a finite number"
            if x not in rng:
                problems.append(f"{key} must be {kind} in {rng.text()}, got {x!r}")
            elif not rng.usual(x):
                lo, hi = rng.typical  # type: ignore[misc]
                warnings.append(f"{key}={x!r} is outside the typical range {lo:g}..{hi:g}; going ahead")
    return problems, warnings


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def check(cfg: Config, *, warn: Callable[[str], None] | None = _warn) -> Config:
    """Range checks that types alone cannot express: ConfigError (one line, every refused key) when
    some value is outside its valid range; ``warn`` is called once per value outside its typical one."""
    problems, warnings = range_problems(cfg)
    t, ls = cfg.training, cfg.loss

    def need(ok: bool, msg: str) -> None:
        if not ok:
            problems.append(msg)

    need(t.early_stop_metric in EARLY_STOP_METRICS,
         f"training.early_stop_metric must be one of {', '.join(EARLY_STOP_METRICS)}, got {t.early_stop_metric!r}")
    need(t.device in DEVICES, f"training.device must be one of {', '.join(DEVICES)}, got {t.device!r}")
    need(t.precision in PRECISIONS,
         f"training.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    need(ls.type == "focal", f"loss.type must be 'focal', got {ls.type!r}")
    if isinstance(ls.class_weights, str):
        need(ls.class_weights in ("auto", "none"),
             f"loss.class_weights must be 'auto', 'none' or a list of 3 positive numbers, got {ls.class_weights!r}")
    else:
        need(len(ls.class_weights) == 3,
             f"loss.class_weights must be 3 positive numbers (long, short, no_trade), got {ls.class_weights}")
    need(cfg.data.template in TEMPLATES,
         f"data.template must be one of {', '.join(TEMPLATES)}, got {cfg.data.template!r}")
    need(bool(cfg.packaging.zip_final) and Path(cfg.packaging.zip_final).name == cfg.packaging.zip_final,
         f"packaging.zip_final must be a file name, got {cfg.packaging.zip_final!r}")
    unknown = [n for n in cfg.eval.baseline_names() if n not in BASELINES]
    need(not unknown, f"eval.baselines must be true, false or a list of {', '.join(BASELINES)}; unknown {unknown}")
    need(bool(cfg.trust.abstention_grid), "trust.abstention_grid must be a non-empty list of numbers in [0, 1]")
    if problems:
        # One line whatever the number of problems: the CLI prints it as ``error: invalid config: ...``.
        raise ConfigError("invalid config: " + "; ".join(problems))
    for message in warnings if warn is not None else ():
        warn(message)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``training.lr=1e-3`` -> (``training.lr``, ``1e-3``). Values are parsed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. training.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_override(cfg: Config, dotted: str, value: Any, *, source: str) -> None:
    """Set one ``section.key``; ``source`` (the flag or override text) is named in errors."""
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        hints = _hints(type(node))
        if part not in hints:
            where = ".".join(parts[:i]) or "the config"
            raise ConfigError(f"{source}: unknown key {part!r} in {where} (known keys: {', '.join(sorted(hints))})")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):
                raise ConfigError(f"{source}: {dotted!r} is a section; set one of its keys, e.g. {dotted}.KEY=VALUE")
            setattr(node, part, _coerce(value, hints[part], f"{source} ({dotted})"))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{source}: {part!r} is not a section")


def resolve_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                   flags: Iterable[tuple[str, Any, str]] = ()) -> Config:
    """The config of a command, lowest first: defaults < the YAML file at ``path`` < ``overrides``
    (``section.key=value`` texts, in order) < ``flags`` (``(key, value, option)``; a value of None or ""
    -- a flag not given, an MLproject parameter left empty -- leaves the key alone). A flag wins. Values
    are checked once, on the result: a file's value that a flag replaces is never judged."""
    cfg = Config()
    if path is not None:
        _apply(cfg, load_yaml(path), str(path))
    for text in overrides:
        key, value = parse_override(text)
        apply_override(cfg, key, value, source=text)
    for key, value, option in flags:
        if value is not None and value != "":
            apply_override(cfg, key, value, source=option)
    return check(cfg)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file, then dotted overrides (``{"training.lr": 1e-3}``), checked: for code
    that builds a config without a command line (tests, benchmarks, the demo)."""
    return resolve_config(path, flags=[(key, value, key) for key, value in (overrides or {}).items()])


def save_config(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    return path
