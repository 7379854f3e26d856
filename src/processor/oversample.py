"""Pipeline step 2: random oversampling of minority classes in the training set.

Only the training frame ever comes here; validation data keeps its natural class mix so that
scores stay honest. When some class holds less than ``threshold`` of the training rows, every
non-majority class is resampled with replacement (imbalanced-learn's ``RandomOverSampler``,
``sampling_strategy="not majority"``) up to the majority's count, so all three classes end at
exactly 1/3 of the rows -- inside the 30-40 % band whatever the incoming mix. Otherwise the frame
is returned unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from imblearn.over_sampling import RandomOverSampler

from processor.schema import LABELS

DEFAULT_THRESHOLD = 0.25


class OversampleError(ValueError):
    """The training frame cannot be balanced (a class is missing, unknown labels, no rows)."""


@dataclass(frozen=True)
class OversampleResult:
    """The (possibly) oversampled training frame and the class mix before and after.

    ``before``/``after`` are shares and ``counts_before``/``counts_after`` row counts, keyed by
    all three LABELS in LABELS order.
    """

    frame: pd.DataFrame
    applied: bool
    before: dict[str, float]
    after: dict[str, float]
    counts_before: dict[str, int]
    counts_after: dict[str, int]


def class_counts(labels: pd.Series) -> dict[str, int]:
    """Row count of every label in LABELS order (0 for an absent class)."""
    counts = labels.value_counts()
    return {label: int(counts.get(label, 0)) for label in LABELS}


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: counts[label] / total for label in LABELS}


def _check(df: pd.DataFrame, label_col: str, threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise OversampleError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
    if label_col not in df.columns:
        raise OversampleError(f"the training data has no {label_col!r} column (columns: {list(df.columns)})")
    if len(df) == 0:
        raise OversampleError("the training data is empty: nothing to oversample")
    unknown = sorted({str(x) for x in df[label_col].unique()} - set(LABELS))
    if unknown:
        raise OversampleError(f"unknown label(s) {unknown} in {label_col!r}; expected one of {list(LABELS)}")
    counts = class_counts(df[label_col])
    missing = [label for label in LABELS if counts[label] == 0]
    if missing:
        raise OversampleError(
            f"class(es) {missing} have no training example; the classifier needs all three classes "
            f"{list(LABELS)}, and oversampling cannot create a class from nothing. "
            f"Training counts: {counts}"
        )


def oversample(
    df: pd.DataFrame,
    *,
    seed: int,
    label_col: str = "label",
    threshold: float = DEFAULT_THRESHOLD,
) -> OversampleResult:
    """Balance the training frame if some class's share is below ``threshold``.

    The result keeps every column and every original row (first, in their original order),
    followed by the duplicated minority rows in the order the seeded sampler drew them; the index
    is reset to 0..n-1. Duplicates repeat the original row's values, ``id`` included.
    Raises ``OversampleError`` if a class is absent, a label is unknown, or the frame is empty.
    """
    _check(df, label_col, threshold)
    counts_before = class_counts(df[label_col])
    before = _shares(counts_before)
    if min(before.values()) >= threshold:
        frame = df.reset_index(drop=True)
        return OversampleResult(frame, False, before, dict(before), counts_before, dict(counts_before))

    sampler = RandomOverSampler(sampling_strategy="not majority", random_state=seed)
    # Resample row positions rather than the frame itself, so every column keeps its dtype.
    positions = np.arange(len(df)).reshape(-1, 1)
    sampler.fit_resample(positions, df[label_col].astype(str).to_numpy())
    frame = df.iloc[sampler.sample_indices_].reset_index(drop=True)
    counts_after = class_counts(frame[label_col])
    return OversampleResult(frame, True, before, _shares(counts_after), counts_before, counts_after)
