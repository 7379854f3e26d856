"""The words the gate leaves in MLflow: the registered version's description and the run's own
description (the run page's "Description", MLflow tag ``mlflow.note.content``), from one text.

The version description is ``summary + verdict``. The run's description keeps what training wrote
there and gets the gate's verdict as its last paragraph (replaced, not repeated, when the run is
gated again); a run with no description yet gets the summary first, so its page always says what
the run is."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processor import metrics_file as mf
from processor import model_card

from processor.gate.checks import CheckResult
from processor.gate.evidence import Evidence

NOTE_TAG = "mlflow.note.content"  # MLflow's run description
# The gate's paragraph of a run description starts with this; a rerun replaces that paragraph.
GATE_PARAGRAPH = "Shipping gate"


def run_summary(ev: Evidence) -> str:
    """What the run trained (base, LoRA, loss), on what data, and how it scored, from the verified
    metrics.json."""
    m = ev.metrics or {}

    def get(*keys: str) -> Any:
        return mf.get(m, *keys)

    def num(x: Any, fmt: str = ".3f") -> str:
        return format(x, fmt) if mf.number(x) is not None else "n/a"

    model, data = get("model") or {}, get("data") or {}
    what = (f"{model.get('base_id') or model.get('name') or 'unknown base'}"
            + (" (demo base, not Qwen's weights)" if model.get("is_demo") else "")
            + f" + LoRA r={model.get('lora_r', 'n/a')}, focal loss gamma {num(get('loss', 'gamma'), 'g')}.")
    trained = " ".join(
        f"{split} {Path(str(data.get(f'{split}_file', '?'))).name} ({data.get(f'n_{split}', '?')} events, "
        f"sha256 {str(data.get(f'{split}_sha256', ''))[:12]})" for split in ("train", "val"))
    conf = get("bootstrap", "confidence")
    scored = (f"val macro-F1 {num(get('val_macro_f1'))} ({num(conf, '.0%')} bootstrap CI "
              f"{num(get('bootstrap', 'val_macro_f1', 'low'))}-{num(get('bootstrap', 'val_macro_f1', 'high'))}); "
              + ", ".join(f"F1 {n} {num(get('per_class', n, 'f1'))}" for n in ("long", "short")))
    return f"{what} Data: {trained}. Scores: {scored}."


def verdict(checks: Sequence[CheckResult], strict: bool, checks_file: Path) -> str:
    """``passed all N shipping checks (...) with FILE`` or ``failed K of N shipping checks: name (detail)``."""
    on = f"{' on CI lower bounds' if strict else ''} with {Path(checks_file).name}"
    failed = [c for c in checks if not c.passed]
    if not failed:
        return f"passed all {len(checks)} shipping checks ({', '.join(c.name for c in checks)}){on}"
    named = "; ".join(f"{c.name} ({c.detail or f'{c.value}, needs {c.threshold}'})" for c in failed)
    return f"failed {len(failed)} of {len(checks)} shipping checks{on}: {named}"


def version_description(run_id: str, checks: Sequence[CheckResult], ev: Evidence, strict: bool,
                        checks_file: Path) -> str:
    """What the version is, what it was trained on, how it scored (with its CI) and the gate's verdict,
    from the verified metrics.json."""
    return (f"{run_summary(ev)} Gate: {verdict(checks, strict, checks_file)}. Run {run_id}. "
            f"Model card: runs:/{run_id}/{model_card.RUN_ARTIFACT} (also MODEL_CARD.md in model_final.zip).")


def gate_paragraph(checks: Sequence[CheckResult], strict: bool, checks_file: Path,
                   registration: dict[str, Any] | None) -> str:
    """The run description's last paragraph: the verdict and where the model went."""
    text = f"{GATE_PARAGRAPH}: {verdict(checks, strict, checks_file)}."
    if registration:
        text += (f" Registered as {registration['model_name']} version {registration['version']}, "
                 f"alias {registration['alias']} ({registration['uri']}).")
    elif any(not c.passed for c in checks):
        text += " Not registered."
    return text


def run_note(existing: str | None, ev: Evidence, paragraph: str) -> str:
    """The run's description with ``paragraph`` as its gate verdict: what training (or a user) wrote is
    kept, an earlier verdict is replaced; an empty description gets the run summary first."""
    kept = [p for p in (existing or "").strip().split("\n\n") if p.strip() and not p.startswith(GATE_PARAGRAPH)]
    if not kept:
        kept = [run_summary(ev)]
    return "\n\n".join([*kept, paragraph])
