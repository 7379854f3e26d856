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

from processor.record import Metrics, ServingSpec, number
from processor.schema import LABELS

FILE_IN_ZIP = "MODEL_CARD.md"
RUN_ARTIFACT = "model_card.md"


def _mapping(x: Any) -> dict[str, Any]:
    # The gate renders cards for runs whose metrics.json may be doctored or broken: never trust a shape.
    return dict(x) if isinstance(x, Mapping) else {}


def _num(x: Any, fmt: str = ".3f") -> str:
    return format(x, fmt) if number(x) is not None else "n/a"


def _ci(m: Metrics, label: str | None = None) -> str:
    """`` (CI low-high)`` of macro-F1 (or of one class's F1); nothing when the run has no CI."""
    ci = m.macro_f1_ci if label is None else m.class_f1_ci(label)
    return "" if ci.low is None and ci.high is None else f" (CI {_num(ci.low)}-{_num(ci.high)})"


def _base(m: Metrics, spec: ServingSpec) -> list[str]:
    base, model = spec.base, m.block("model")
    is_demo = base.is_demo if base.is_demo is not None else model.get("is_demo")
    lines = [f"- Base: `{base.base_id or model.get('base_id') or base.name or 'unknown'}` "
             f"(asked for as `{base.name or model.get('name') or 'n/a'}`, revision "
             f"`{base.revision or model.get('revision') or 'unknown'}`)"]
    if is_demo:
        lines.append("- **Demo base**: a small Qwen2-architecture model built and pretrained locally on synthetic "
                     "events, not Qwen's weights. It exists to run the pipeline end to end without a model hub.")
    else:
        lines.append("- Not the demo base: weights resolved by id/revision and checked against sha256 "
                     f"`{str(base.weights_sha256 or 'n/a')[:16]}`.")
    lines.append(f"- Adapter: LoRA r={model.get('lora_r', 'n/a')}, alpha={model.get('lora_alpha', 'n/a')}; "
                 f"last-token classification head; focal loss gamma {_num(m.value('loss', 'gamma'), 'g')}; "
                 f"template `{spec.template or 'n/a'}`; seed {m.seed if m.seed is not None else 'n/a'}")
    alpha = m.num("prior_correction", "alpha")
    if alpha:
        lines.append(f"- Prior correction {_num(alpha, 'g')}: that fraction of log(training class shares before "
                     "oversampling) is added to the logits, so predictions follow the real class mix, not "
                     "the oversampled thirds")
    return lines


def _data(m: Metrics) -> list[str]:
    d = m.block("data")
    lines = []
    for split in ("train", "val"):
        counts = _mapping(d.get(f"{split}_counts"))
        total = sum(v for v in counts.values() if isinstance(v, (int, float))) or 0
        shares = (", ".join(f"{n} {counts.get(n, 0)} ({counts.get(n, 0) / total:.0%})" for n in LABELS)
                  if total and all(isinstance(counts.get(n, 0), (int, float)) for n in LABELS) else "n/a")
        span = _mapping(d.get("time_range")).get(split)
        when = f"; time {span[0]} .. {span[1]}" if isinstance(span, list) and len(span) == 2 else "; no timestamps"
        lines.append(f"- {split}: `{Path(str(d.get(f'{split}_file', '?'))).name}` sha256 "
                     f"`{str(d.get(f'{split}_sha256', 'n/a'))[:16]}`, {d.get(f'n_{split}', 'n/a')} events: {shares}{when}")
    after = m.shares_after() or {}
    if after:
        lines.append(f"- Training data after oversampling ({'applied' if m.oversampled else 'not needed'}): "
                     + ", ".join(f"{n} {_num(after.get(n), '.1%')}" for n in LABELS)
                     + f" ({d.get('n_train_fit', 'n/a')} events)")
    ceiling = d.get("bayes_ceiling")
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
    cal = m.block("calibration")
    if m.has("calibration"):
        lines.append(f"- calibration: temperature {_num(cal.get('temperature'))}; ECE {_num(cal.get('ece_before'))} "
                     f"-> {_num(cal.get('ece_after'))}, Brier {_num(cal.get('brier_before'))} -> "
                     f"{_num(cal.get('brier_after'))} ({cal.get('fitting') or cal.get('method') or 'temperature scaling'})")
    else:
        lines.append("- calibration: not measured by this run")
    ab = m.block("abstention")
    if m.has("abstention"):
        mc = ab.get("min_confidence")
        lines.append(f"- abstention: min_confidence {'none (never abstains)' if mc is None else _num(mc, 'g')} by "
                     f"default; coverage/precision per threshold in metrics.json `abstention.grid`")
    drift = m.block("drift")
    if m.has("drift"):
        lines.append(f"- drift: the package carries the training feature profile; PSI of val vs train, "
                     f"largest {_num(drift.get('max_psi'))}")
    leak = m.block("leakage")
    if m.has("leakage"):
        risk = leak.get("leakage_risk")
        if risk is True:
            lines.append(f"- temporal leakage: **RISK**: {leak.get('val_overlapping', 'some')} val events are not later "
                         "than the latest train event of their symbol; the val scores may overstate the model")
        elif risk is False:
            lines.append("- temporal leakage: none (every val event is later than the training events of its symbol)")
        else:
            lines.append(f"- temporal leakage: not established ({leak.get('reason') or 'not checked'})")
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
    is_demo = spec.base.is_demo if spec.base.is_demo is not None else m.value("model", "is_demo")
    lines = ["- Intended use: classify events of the upstream contract (same feature keys, schema fingerprint "
             f"`{str(m.schema_fingerprint or 'n/a')[:16]}`) as long / short / no_trade, as one input to a "
             "trading decision, with the probabilities (calibrated when a temperature is stored) and, if set, "
             "abstention.",
             "- Not for: events of another contract version (the pyfunc refuses them), instruments or regimes the "
             "training data did not cover (check the drift report), or trading on the label alone.",
             f"- The val set has {m.value('data', 'n_val') or 'n/a'} events: the CIs above are the honest width "
             "of these scores."]
    if is_demo:
        lines.append("- Built on the demo base: a pipeline demonstration, not a model to trade with.")
    return lines


def run_summary(m: Metrics) -> str:
    """One paragraph: what the model is, what it was trained on, how it scored against the baselines on
    the same split. The run's description (written by training) and the registered version's (the
    gate's, which adds its verdict) both start with it."""
    model, data = m.block("model"), m.block("data")
    what = (f"{model.get('base_id') or model.get('name') or 'unknown base'}"
            + (" (demo base, not Qwen's weights)" if model.get("is_demo") else "")
            + f" + LoRA r={model.get('lora_r', 'n/a')}, focal loss gamma {_num(m.value('loss', 'gamma'), 'g')}.")
    trained = " ".join(
        f"{split} {Path(str(data.get(f'{split}_file', '?'))).name} ({data.get(f'n_{split}', '?')} events, "
        f"sha256 {str(data.get(f'{split}_sha256', ''))[:12]})" for split in ("train", "val"))
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
