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

from processor import metrics_file as mf
from processor.schema import LABELS

FILE_IN_ZIP = "MODEL_CARD.md"
RUN_ARTIFACT = "model_card.md"


def _mapping(x: Any) -> dict[str, Any]:
    # The gate renders cards for runs whose metrics.json may be doctored or broken: never trust a shape.
    return dict(x) if isinstance(x, Mapping) else {}


def _num(x: Any, fmt: str = ".3f") -> str:
    return format(x, fmt) if mf.number(x) is not None else "n/a"


def _ci(m: Mapping[str, Any], *path: str) -> str:
    ci = mf.get(m, "bootstrap", *path)
    if not isinstance(ci, Mapping):
        return ""
    return f" (CI {_num(ci.get('low'))}-{_num(ci.get('high'))})"


def _base(m: Mapping[str, Any], serving: Mapping[str, Any]) -> list[str]:
    base = _mapping(serving.get("base"))
    model = _mapping(m.get("model"))
    is_demo = base.get("is_demo", model.get("is_demo"))
    m = _mapping(m)
    lines = [f"- Base: `{base.get('base_id') or model.get('base_id') or base.get('name') or 'unknown'}` "
             f"(asked for as `{base.get('name') or model.get('name') or 'n/a'}`, revision "
             f"`{base.get('revision') or model.get('revision') or 'unknown'}`)"]
    if is_demo:
        lines.append("- **Demo base**: a small Qwen2-architecture model built and pretrained locally on synthetic "
                     "events, not Qwen's weights. It exists to run the pipeline end to end without a model hub.")
    else:
        lines.append("- Not the demo base: weights resolved by id/revision and checked against sha256 "
                     f"`{str(base.get('weights_sha256') or 'n/a')[:16]}`.")
    lines.append(f"- Adapter: LoRA r={model.get('lora_r', 'n/a')}, alpha={model.get('lora_alpha', 'n/a')}; "
                 f"last-token classification head; focal loss gamma {_num(mf.get(m, 'loss', 'gamma'), 'g')}; "
                 f"template `{serving.get('template', 'n/a')}`; seed {m.get('seed', 'n/a')}")
    alpha = mf.get(m, "prior_correction", "alpha")
    if mf.number(alpha):
        lines.append(f"- Prior correction {_num(alpha, 'g')}: that fraction of log(training class shares before "
                     "oversampling) is added to the logits, so predictions follow the real class mix, not "
                     "the oversampled thirds")
    return lines


def _data(m: Mapping[str, Any]) -> list[str]:
    d = _mapping(m.get("data"))
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
    balance = _mapping(m.get("class_balance"))
    after = _mapping(balance.get("after"))
    if after:
        lines.append(f"- Training data after oversampling ({'applied' if balance.get('applied') else 'not needed'}): "
                     + ", ".join(f"{n} {_num(after.get(n), '.1%')}" for n in LABELS)
                     + f" ({d.get('n_train_fit', 'n/a')} events)")
    ceiling = d.get("bayes_ceiling")
    lines.append(f"- Bayes ceiling (val macro-F1 of the noise-free labelling rules, from the data card): {_num(ceiling)}"
                 if ceiling is not None else "- Bayes ceiling: unknown (no data card describing these exact files)")
    return lines


def _scores(m: Mapping[str, Any]) -> list[str]:
    conf = mf.get(m, "bootstrap", "confidence")
    lines = [f"- val macro-F1 {_num(m.get('val_macro_f1'))}{_ci(m, 'val_macro_f1')}, accuracy "
             f"{_num(m.get('val_accuracy'))} ({_num(conf, '.0%')} bootstrap CIs)",
             "- per class F1: " + ", ".join(f"{n} {_num(mf.get(m, 'per_class', n, 'f1'))}{_ci(m, 'f1', n)}"
                                            for n in LABELS),
             f"- best epoch {m.get('best_epoch', 'n/a')} of {m.get('epochs_run', 'n/a')}; "
             f"{_num(m.get('tokens_per_event'), '.1f')} tokens per event"]
    base = _mapping(m.get("baselines"))
    if base:
        lines.append("- baselines on the same split: " + ", ".join(
            f"{name} {_num(mf.get(b, 'val_macro_f1'))}" for name, b in base.items()))
    else:
        lines.append("- baselines: not computed by this run")
    return lines


def _trust(m: Mapping[str, Any]) -> list[str]:
    lines = []
    cal = m.get("calibration")
    if isinstance(cal, Mapping):
        lines.append(f"- calibration: temperature {_num(cal.get('temperature'))}; ECE {_num(cal.get('ece_before'))} "
                     f"-> {_num(cal.get('ece_after'))}, Brier {_num(cal.get('brier_before'))} -> "
                     f"{_num(cal.get('brier_after'))} ({cal.get('fitting') or cal.get('method') or 'temperature scaling'})")
    else:
        lines.append("- calibration: not measured by this run")
    ab = m.get("abstention")
    if isinstance(ab, Mapping):
        mc = ab.get("min_confidence")
        lines.append(f"- abstention: min_confidence {'none (never abstains)' if mc is None else _num(mc, 'g')} by "
                     f"default; coverage/precision per threshold in metrics.json `abstention.grid`")
    drift = m.get("drift")
    if isinstance(drift, Mapping):
        lines.append(f"- drift: the package carries the training feature profile; PSI of val vs train, "
                     f"largest {_num(drift.get('max_psi'))}")
    leak = m.get("leakage")
    if isinstance(leak, Mapping):
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


def _use(m: Mapping[str, Any], serving: Mapping[str, Any]) -> list[str]:
    is_demo = _mapping(serving.get("base")).get("is_demo", mf.get(m, "model", "is_demo"))
    lines = ["- Intended use: classify events of the upstream contract (same feature keys, schema fingerprint "
             f"`{str(m.get('schema_fingerprint', 'n/a'))[:16]}`) as long / short / no_trade, as one input to a "
             "trading decision, with the probabilities (calibrated when a temperature is stored) and, if set, "
             "abstention.",
             "- Not for: events of another contract version (the pyfunc refuses them), instruments or regimes the "
             "training data did not cover (check the drift report), or trading on the label alone.",
             f"- The val set has {mf.get(m, 'data', 'n_val') or 'n/a'} events: the CIs above are the honest width "
             "of these scores."]
    if is_demo:
        lines.append("- Built on the demo base: a pipeline demonstration, not a model to trade with.")
    return lines


def render(metrics: Mapping[str, Any], serving: Mapping[str, Any], *, gate: Mapping[str, Any] | None = None,
           run_id: str | None = None) -> str:
    """The card as markdown. ``gate`` is the gate's report (its JSON form), when there is one."""
    metrics, serving = _mapping(metrics), _mapping(serving)
    title = f"# Model card: {_mapping(serving.get('base')).get('name') or 'model'} event classifier"
    sections = [
        ("Model", _base(metrics, serving)),
        ("Data", _data(metrics)),
        ("Validation scores", _scores(metrics)),
        ("Trust", _trust(metrics)),
        ("Gate verdict", _verdict(gate)),
        ("Intended use and limits", _use(metrics, serving)),
    ]
    out = [title, "", "Written from the run's metrics.json and serving.json by processor.model_card"
           + (f" (MLflow run `{run_id}`)." if run_id else "."), ""]
    for name, lines in sections:
        out += [f"## {name}", "", *lines, ""]
    return "\n".join(out)
