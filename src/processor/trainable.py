"""Can this split train a 3-class classifier at all? Checked before any model is loaded.

A split can meet the event contract and still be unusable: a class absent from train cannot be
learned (oversampling cannot create it, and the prior correction would take the log of a zero share),
and a class with fewer events than the calibration folds (``trust.calibration_folds``) cannot reach
every stratified fold: the per-class F1 and the cross-fitted temperature of such a class rest on a
handful of events. The same floor applies to train and val, so that one number says how rare is too
rare.

The train loop refuses such a split (exit 1, one line) with :func:`require_trainable`;
``python -m processor.validate --train/--val`` warns about it with :func:`check_trainable`.
"""

from __future__ import annotations

import pandas as pd

from processor.cli import DataError
from processor.schema import LABELS


class UntrainableSplitError(DataError):
    """The split cannot train a 3-class classifier (exit 1); the message is one line."""

    one_line = True


def check_trainable(train_df: pd.DataFrame, val_df: pd.DataFrame, folds: int, *,
                    names: tuple[str, str] = ("train", "val")) -> list[str]:
    """One line per problem of the split (empty when it can train): a class with no train event, or a
    class with fewer than ``folds`` events in train or in val. ``names`` name the splits (file names)."""
    problems: list[str] = []
    for frame, name in zip((train_df, val_df), names):
        found = frame["label"].value_counts()
        counts = {label: int(found.get(label, 0)) for label in LABELS}
        shown = ", ".join(f"{label} {n}" for label, n in counts.items())
        absent = [label for label, n in counts.items() if n == 0]
        rare = [label for label, n in counts.items() if 0 < n < folds]
        if absent and name == names[0]:
            problems.append(f"{name}: no {' and no '.join(absent)} event ({shown}): a 3-class classifier "
                            "needs every class in train")
            absent = []
        rare += absent
        if rare:
            problems.append(f"{name}: {', '.join(rare)} {'has' if len(rare) == 1 else 'have'} fewer events "
                            f"than the {folds} calibration folds (trust.calibration_folds) ({shown})")
    return problems


def require_trainable(train_df: pd.DataFrame, val_df: pd.DataFrame, folds: int, *,
                      names: tuple[str, str] = ("train", "val")) -> None:
    """Raise :class:`UntrainableSplitError` (one line, every problem) unless the split can train."""
    problems = check_trainable(train_df, val_df, folds, names=names)
    if problems:
        raise UntrainableSplitError("the split cannot train a 3-class classifier: " + "; ".join(problems))
