"""The search space: the sweep file (params, sampler, pruner) read and checked against the base
config, and the trial config built from a sample."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import optuna
import yaml
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution,
                                  distribution_to_json)

from processor.cli import UserError
from processor.config import Config, ConfigError, apply_override, check
from processor.knobs import SWEEPABLE


OBJECTIVE = "val_macro_f1"
DEFAULT_STUDY = "train-loop-v3-sweep"
PARENT_ATTR = "mlflow_parent_run_id"

SPACE_ATTR = "sweep_search_space"
NOT_COUNTED_ATTR = "not_counted"  # why a FAIL trial does not use up one of the n trials


class SweepError(UserError, ValueError):
    """The sweep cannot run as asked (sweep file, storage, flags); exit code 2."""


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
    out = {SWEEPABLE[name].key: value for name, value in params.items() if SWEEPABLE[name].key}
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
        knob = SWEEPABLE[name]
        if knob.sweep is int and isinstance(d, FloatDistribution):
            raise w.error(("params", name, "type"), f"{knob.help} is an integer: use type int or categorical")
        for value in _candidates(d):
            if knob.sweep is int and not float(value).is_integer():
                raise w.error(("params", name), f"{value!r} is not an integer ({knob.help} is one)")
            params = {name: value}
            if name == "lora_alpha_ratio":
                if value <= 0:
                    raise w.error(("params", name), f"ratio must be > 0, got {value!r}")
                continue
            try:
                trial_config(base, params, Path(base.packaging.output_dir))
            except ConfigError as exc:
                detail = str(exc).replace("invalid config: ", "")
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
                                   f"(any of {', '.join(SWEEPABLE)})")
    space: dict[str, BaseDistribution] = {}
    for name, spec in params.items():
        if name not in SWEEPABLE:
            raise w.error(("params", str(name)), f"unknown parameter (known: {', '.join(SWEEPABLE)})")
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
