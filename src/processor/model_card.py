"""The model card: one markdown page, written from a run's own artifacts, never by hand.

``processor.package`` writes it into every ``model_final.zip`` as ``MODEL_CARD.md`` (the gate verdict is
"not judged yet" there: the zip is sealed before any gate runs); the gate writes it again with its
verdict as the run artifact ``model_card.md`` and links it from the registered version's description.
Every number comes from ``metrics.json`` (and ``serving.json`` for the base); a section whose numbers
the run did not produce says so instead of being left out silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processor.blocks import DataBlock, ModelBlock, number
from processor.record import Metrics, ServingSpec
from processor.schema import LABELS

FILE_IN_ZIP = "MODEL_CARD.md"
RUN_ARTIFACT = "model_card.md"


def _mapping(x: Any) -> dict[str, Any]:
    # The gate renders cards for runs whose metrics.json may be doctored or broken: never trust a shape.
    return dict(x) if isinstance(x, Mapping) else {}


def _num(x: Any, fmt: str = ".3f") -> str:
    return format(x, fmt) if number(x) is not None else "n/a"


def _or(x: Any, missing: str = "n/a") -> Any:
    return missing if x is None else x


def _ci(m: Metrics, label: str | None = None) -> str:
    """`` (CI low-high)`` of macro-F1 (or of one class's F1); nothing when the run has no CI."""
    ci = m.macro_f1_ci if label is None else m.class_f1_ci(label)
    return "" if ci.low is None and ci.high is None else f" (CI {_num(ci.low)}-{_num(ci.high)})"


def _base(m: Metrics, spec: ServingSpec) -> list[str]:
    base, model = spec.base, m.model or ModelBlock()
    is_demo = base.is_demo if base.is_demo is not None else model.is_demo
    lines = [f"- Base: `{base.base_id or model.base_id or base.name or 'unknown'}` "
             f"(asked for as `{base.name or model.name or 'n/a'}`, revision "
             f"`{base.revision or model.revision or 'unknown'}`)"]
    if is_demo:
        lines.append("- **Demo base**: a small Qwen2-architecture model built and pretrained locally on synthetic "
                     "events, not Qwen's weights. It exists to run the pipeline end to end without a model hub.")
    else:
        lines.append("- Not the demo base: weights resolved by id/revision and checked against sha256 "
                     f"`{str(base.weights_sha256 or 'n/a')[:16]}`.")
    members = f" x {model.members} members, their softmax averaged" if (model.members or 1) > 1 else ""
    lines.append(f"- Adapter: LoRA r={_or(model.lora_r)}, alpha={_or(model.lora_alpha)}{members}; "
                 f"last-token classification head; focal loss gamma {_num(_gamma(m), 'g')}; "
                 f"template `{spec.template or 'n/a'}`; seed {_or(m.seed)}")
    alpha = m.prior_correction.alpha if m.prior_correction else None
    if alpha:
        lines.append(f"- Prior correction {_num(alpha, 'g')}: that fraction of log(training class shares before "
                     "oversampling) is added to the logits, so predictions follow the real class mix, not "
                     "the oversampled thirds")
    return lines


def _gamma(m: Metrics) -> float | None:
    return m.loss.gamma if m.loss else None


def _data(m: Metrics) -> list[str]:
    d = m.data or DataBlock()
    lines = []
    for split, file, sha, size, counts in (("train", d.train_file, d.train_sha256, d.n_train, d.train_counts),
                                           ("val", d.val_file, d.val_sha256, d.n_val, d.val_counts)):
        counts = counts or {}
        total = sum(v for v in counts.values() if v is not None)
        shares = (", ".join(f"{n} {counts.get(n, 0)} ({counts.get(n, 0) / total:.0%})" for n in LABELS)
                  if total and all(counts.get(n, 0) is not None for n in LABELS) else "n/a")
        span = (d.time_range or {}).get(split)
        when = f"; time {span[0]} .. {span[1]}" if isinstance(span, list) and len(span) == 2 else "; no timestamps"
        lines.append(f"- {split}: `{Path(file or '?').name}` sha256 `{(sha or 'n/a')[:16]}`, {_or(size)} events: "
                     f"{shares}{when}")
    after = m.shares_after() or {}
    if after:
        lines.append(f"- Training data after oversampling ({'applied' if m.oversampled else 'not needed'}): "
                     + ", ".join(f"{n} {_num(after.get(n), '.1%')}" for n in LABELS)
                     + f" ({_or(d.n_train_fit)} events)")
    ceiling = d.bayes_ceiling
    lines.append(f"- Bayes ceiling (val macro-F1 of the noise-free labelling rules, from the data card): {_num(ceiling)}"
                 if ceiling is not None else "- Bayes ceiling: unknown (no data card describing these exact files)")
    return lines


def _scores(m: Metrics) -> list[str]:
    lines = [f"- val macro-F1 {_num(m.macro_f1)}{_ci(m)}, accuracy "
             f"{_num(m.accuracy)} ({_num(m.confidence, '.0%')} bootstrap CIs)",
             "- per class F1: " + ", ".join(f"{n} {_num(m.class_f1(n))}{_ci(m, n)}" for n in LABELS),
             f"- best epoch {_num(m.best_epoch, 'g')} of {_num(m.epochs_run, 'g')}; "
             f"{_num(m.tokens_per_event, '.1f')} tokens per event"]
    base = m.baseline_scores()
    if base:
        lines.append("- baselines on the same split: " + ", ".join(f"{name} {_num(f1)}" for name, f1 in base.items()))
    else:
        lines.append("- baselines: not computed by this run")
    return lines


def _trust(m: Metrics) -> list[str]:
    lines = []
    cal = m.calibration
    if cal is not None:
        lines.append(f"- calibration: temperature {_num(cal.temperature)}; ECE {_num(cal.ece_before)} "
                     f"-> {_num(cal.ece_after)}, Brier {_num(cal.brier_before)} -> "
                     f"{_num(cal.brier_after)} ({cal.fitting or cal.method or 'temperature scaling'})")
    else:
        lines.append("- calibration: not measured by this run")
    if m.abstention is not None:
        mc = m.abstention.min_confidence
        lines.append(f"- abstention: min_confidence {'none (never abstains)' if mc is None else _num(mc, 'g')} by "
                     f"default; coverage/precision per threshold in metrics.json `abstention.grid`")
    if m.drift is not None:
        lines.append(f"- drift: the package carries the training feature profile; PSI of val vs train, "
                     f"largest {_num(m.drift.max_psi)}")
    leak = m.leakage
    if leak is not None:
        if leak.leakage_risk is True:
            lines.append(f"- temporal leakage: **RISK**: {_or(leak.val_overlapping, 'some')} val events are not later "
                         "than the latest train event of their symbol; the val scores may overstate the model")
        elif leak.leakage_risk is False:
            lines.append("- temporal leakage: none (every val event is later than the training events of its symbol)")
        else:
            lines.append(f"- temporal leakage: not established ({leak.reason or 'not checked'})")
    else:
        lines.append("- temporal leakage: not checked by this run")
    return lines


def _verdict(gate: Mapping[str, Any] | None) -> list[str]:
    if not gate:
        return ["- not judged yet: the package is sealed before the shipping gate runs; the registered "
                "version's description links the card the gate wrote with its verdict"]
    checks = [c for c in gate.get("checks") or [] if isinstance(c, Mapping)]
    lines = [f"- **{str(gate.get('status', 'unknown')).upper()}**"
             + (" (strict: CI lower bounds)" if gate.get("strict") else "")]
    for c in checks:
        lines.append(f"  - {c.get('name')}: {'pass' if c.get('passed') else 'FAIL'} ({c.get('value')} vs {c.get('threshold')})")
    reg = _mapping(gate.get("registration"))
    if reg.get("version"):
        lines.append(f"- registered as `{reg.get('model_name')}` version {reg.get('version')} ({reg.get('uri')})")
    return lines


def _use(m: Metrics, spec: ServingSpec) -> list[str]:
    is_demo = spec.base.is_demo if spec.base.is_demo is not None else (m.model or ModelBlock()).is_demo
    lines = ["- Intended use: classify events of the upstream contract (same feature keys, schema fingerprint "
             f"`{str(m.schema_fingerprint or 'n/a')[:16]}`) as long / short / no_trade, as one input to a "
             "trading decision, with the probabilities (calibrated when a temperature is stored) and, if set, "
             "abstention.",
             "- Not for: events of another contract version (the pyfunc refuses them), instruments or regimes the "
             "training data did not cover (check the drift report), or trading on the label alone.",
             f"- The val set has {(m.data or DataBlock()).n_val or 'n/a'} events: the CIs above are the honest width "
             "of these scores."]
    if is_demo:
        lines.append("- Built on the demo base: a pipeline demonstration, not a model to trade with.")
    return lines


def run_summary(m: Metrics) -> str:
    """One paragraph: what the model is, what it was trained on, how it scored against the baselines on
    the same split. The run's description (written by training) and the registered version's (the
    gate's, which adds its verdict) both start with it."""
    model, data = m.model or ModelBlock(), m.data or DataBlock()
    what = (f"{model.base_id or model.name or 'unknown base'}"
            + (" (demo base, not Qwen's weights)" if model.is_demo else "")
            + f" + LoRA r={_or(model.lora_r)}" + (f" x {model.members}" if (model.members or 1) > 1 else "")
            + f", focal loss gamma {_num(_gamma(m), 'g')}.")
    trained = " ".join(
        f"{split} {Path(file or '?').name} ({_or(n, '?')} events, sha256 {(sha or '')[:12]})"
        for split, file, n, sha in (("train", data.train_file, data.n_train, data.train_sha256),
                                    ("val", data.val_file, data.n_val, data.val_sha256)))
    ci = m.macro_f1_ci
    scored = (f"val macro-F1 {_num(m.macro_f1)} ({_num(m.confidence, '.0%')} bootstrap CI "
              f"{_num(ci.low)}-{_num(ci.high)}); "
              + ", ".join(f"F1 {n} {_num(m.class_f1(n))}" for n in ("long", "short")))
    baselines = "; ".join(f"{name} {_num(f1)}" for name, f1 in m.baseline_scores().items())
    return (f"{what} Data: {trained}. Scores: {scored}"
            + (f". Baselines on the same split (val macro-F1): {baselines}." if baselines else "."))


def render(metrics: Mapping[str, Any], serving: Mapping[str, Any], *, gate: Mapping[str, Any] | None = None,
           run_id: str | None = None) -> str:
    """The card as markdown. ``gate`` is the gate's report (its JSON form), when there is one."""
    m = metrics if isinstance(metrics, Metrics) else Metrics.from_dict(metrics)
    spec = serving if isinstance(serving, ServingSpec) else ServingSpec.from_dict(_mapping(serving))
    title = f"# Model card: {spec.base.name or 'model'} event classifier"
    sections = [
        ("Model", _base(m, spec)),
        ("Data", _data(m)),
        ("Validation scores", _scores(m)),
        ("Trust", _trust(m)),
        ("Gate verdict", _verdict(gate)),
        ("Intended use and limits", _use(m, spec)),
    ]
    out = [title, "", "Written from the run's metrics.json and serving.json by processor.model_card"
           + (f" (MLflow run `{run_id}`)." if run_id else "."), ""]
    for name, lines in sections:
        out += [f"## {name}", "", *lines, ""]
    return "\n".join(out)
