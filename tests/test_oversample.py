"""Pipeline step 2: oversampling the training frame's minority classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.oversample import OversampleError, oversample
from processor.schema import LABELS


def _frame(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """A training-like frame: labels in shuffled order, a unique id/line per row, a feature column."""
    labels = [label for label, k in counts.items() for _ in range(k)]
    order = np.random.default_rng(seed).permutation(len(labels))
    labels = [labels[i] for i in order]
    n = len(labels)
    return pd.DataFrame({
        "line": np.arange(1, n + 1, dtype=np.int64),
        "id": pd.Series([f"ev-{i:05d}" for i in range(n)], dtype="str"),
        "wave_strength": np.round(np.linspace(0, 1, n), 2),
        "fvg_up": np.arange(n) % 2 == 0,
        "label": pd.Series(labels, dtype="str"),
    })


def _assert_rows_come_from(result: pd.DataFrame, original: pd.DataFrame) -> None:
    # Every original row is still there, first and in order; every added row copies an original one.
    n = len(original)
    pd.testing.assert_frame_equal(result.iloc[:n], original.reset_index(drop=True))
    by_line = original.set_index("line")
    added = result.iloc[n:]
    pd.testing.assert_frame_equal(
        added.drop(columns="line").reset_index(drop=True),
        by_line.loc[added["line"]].reset_index(drop=True),
    )


@settings(max_examples=150, deadline=None)
@given(
    counts=st.tuples(st.integers(1, 400), st.integers(1, 400), st.integers(1, 400)),
    order_seed=st.integers(0, 2**16),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_class_ends_within_30_to_40_percent(counts: tuple[int, int, int], order_seed: int, seed: int) -> None:
    df = _frame(dict(zip(LABELS, counts, strict=True)), order_seed)
    result = oversample(df, seed=seed)
    shares = {c: k / len(df) for c, k in zip(LABELS, counts, strict=True)}
    assert result.applied == (min(shares.values()) < 0.25)
    assert result.counts_before == dict(zip(LABELS, counts, strict=True))
    assert result.before == pytest.approx(shares)
    if result.applied:
        for label in LABELS:
            assert 0.30 <= result.after[label] <= 0.40
            assert result.counts_after[label] == (result.frame["label"] == label).sum()
        assert len(result.frame) == sum(result.counts_after.values())
        _assert_rows_come_from(result.frame, df)
    else:
        pd.testing.assert_frame_equal(result.frame, df)
        assert result.after == result.before and result.counts_after == result.counts_before
    assert list(result.before) == list(LABELS) and list(result.after) == list(LABELS)


def test_single_example_class_is_replicated() -> None:
    df = _frame({"long": 1, "short": 40, "no_trade": 120})
    result = oversample(df, seed=0)
    assert result.applied
    assert result.counts_after == {"long": 120, "short": 120, "no_trade": 120}
    lone = df.loc[df["label"] == "long"].iloc[0]
    copies = result.frame.loc[result.frame["label"] == "long"]
    assert (copies["id"] == lone["id"]).all() and (copies["line"] == lone["line"]).all()
    _assert_rows_come_from(result.frame, df)


@pytest.mark.parametrize("missing", LABELS)
def test_absent_class_is_an_error(missing: str) -> None:
    df = _frame({label: (0 if label == missing else 30) for label in LABELS})
    with pytest.raises(OversampleError, match=rf"\['{missing}'\] have no training example"):
        oversample(df, seed=0)


def test_balanced_data_is_unchanged() -> None:
    df = _frame({"long": 30, "short": 35, "no_trade": 35})
    result = oversample(df, seed=0)
    assert not result.applied
    pd.testing.assert_frame_equal(result.frame, df)
    assert result.counts_after == result.counts_before == {"long": 30, "short": 35, "no_trade": 35}


def test_threshold_decides() -> None:
    df = _frame({"long": 20, "short": 30, "no_trade": 50})  # minority share 0.20
    assert oversample(df, seed=0, threshold=0.25).applied
    assert not oversample(df, seed=0, threshold=0.2).applied  # 0.20 is not below 0.20


def test_deterministic_by_seed() -> None:
    df = _frame({"long": 15, "short": 25, "no_trade": 300})
    a, b = oversample(df, seed=5), oversample(df, seed=5)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    c = oversample(df, seed=6)
    assert not a.frame["line"].equals(c.frame["line"])


def test_input_frame_is_not_modified() -> None:
    df = _frame({"long": 10, "short": 20, "no_trade": 100})
    df.index = df.index + 1000  # a non-default index must not leak through either
    copy = df.copy()
    result = oversample(df, seed=0)
    pd.testing.assert_frame_equal(df, copy)
    assert list(result.frame.index) == list(range(len(result.frame)))


def test_custom_label_column_and_bad_input() -> None:
    df = _frame({"long": 10, "short": 20, "no_trade": 100}).rename(columns={"label": "target"})
    assert oversample(df, seed=0, label_col="target").counts_after == {c: 100 for c in LABELS}
    with pytest.raises(OversampleError, match="no 'label' column"):
        oversample(df, seed=0)
    bad = _frame({"long": 10, "short": 20, "no_trade": 100})
    bad.loc[3, "label"] = "buy"
    with pytest.raises(OversampleError, match=r"unknown label\(s\) \['buy'\]"):
        oversample(bad, seed=0)
    with pytest.raises(OversampleError, match="empty"):
        oversample(bad.iloc[:0], seed=0)
    with pytest.raises(OversampleError, match="threshold"):
        oversample(bad, seed=0, threshold=1.5)


def test_generated_training_file_gets_balanced(make_sample_data) -> None:
    data = pytest.importorskip("processor.data")
    out = make_sample_data(n=600, seed=1)
    train, val = data.load_split(out / "train.jsonl", out / "val.jsonl")
    result = oversample(train, seed=1)
    assert result.applied  # the default mix has minorities below 25 %
    assert result.after == {c: pytest.approx(1 / 3) for c in LABELS}
    assert list(result.frame.columns) == list(train.columns)
    assert result.frame.dtypes.equals(train.dtypes)
    _assert_rows_come_from(result.frame, train)
