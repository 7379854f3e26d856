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

from processor import model_card

from processor.gate.checks import CheckResult
from processor.gate.evidence import Evidence

NOTE_TAG = "mlflow.note.content"  # MLflow's run description
# The gate's paragraph of a run description starts with this; a rerun replaces that paragraph.
GATE_PARAGRAPH = "Shipping gate"


def verdict(checks: Sequence[CheckResult], strict: bool, checks_file: Path) -> str:
    """``passed all N shipping checks (...) with FILE`` or ``failed K of N shipping checks: name (detail)``."""
    on = f"{' on CI lower bounds' if strict else ''} with {Path(checks_file).name}"
    failed = [c for c in checks if not c.passed]
    if not failed:
        return f"passed all {len(checks)} shipping checks ({', '.join(c.name for c in checks)}){on}"
    named = "; ".join(f"{c.name} ({c.detail or f'{c.value}, needs {c.threshold}'})" for c in failed)
    return f"failed {len(failed)} of {len(checks)} shipping checks{on}: {named}"


def card_link(experiment_id: str, run_id: str) -> str:
    """A Markdown link to the run's model card in the MLflow UI. The UI renders descriptions as Markdown
    and routes on the URL's fragment: a link of ``#/...`` opens the artifact in the same tab, on whatever
    host serves the UI (the tracking URI the gate used may not be the address a browser reaches)."""
    name = model_card.RUN_ARTIFACT
    return f"[{name}](#/experiments/{experiment_id}/runs/{run_id}/artifacts/{name})"


def version_description(run_id: str, checks: Sequence[CheckResult], ev: Evidence, strict: bool,
                        checks_file: Path, *, experiment_id: str) -> str:
    """What the version is, what it was trained on, how it scored (with its CI) and the gate's verdict,
    from the verified metrics.json, and a link to the model card."""
    return (f"{model_card.run_summary(ev.record)} Gate: {verdict(checks, strict, checks_file)}. Run {run_id}. "
            f"Model card: {card_link(experiment_id, run_id)} (runs:/{run_id}/{model_card.RUN_ARTIFACT}; "
            "also MODEL_CARD.md in model_final.zip).")


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
        kept = [model_card.run_summary(ev.record)]
    return "\n\n".join([*kept, paragraph])
