"""Temporal leakage between a training and a validation split (issue 12).

A model validated on events that happened *before* (or at the same time as) events it was trained on
has seen the future of its own validation set: market regimes, the moves that labeled the train
events, the very bars of the val events. Its validation score then overstates what it will do on
tomorrow's events. When events carry the contract's optional ``timestamp``, :func:`time_overlap`
checks that every validation event is later than the training events of the same symbol.

Rule, per symbol: a validation event **overlaps** when its timestamp is not later than (``<=``) the
latest training timestamp of its symbol. Equality counts: an event on the very bar of a training event
is not "later". ``gap`` is earliest val time - latest train time of the symbol (> 0: time-ordered;
<= 0: overlap). Symbols are compared with themselves only, so symbol A's val events being older than
symbol B's train events is not an overlap. Events without a ``symbol`` form one group of their own
(``symbol: null`` in the report). A symbol present in one split only has nothing to overlap with.

Times are compared in UTC (``+09:00`` offsets are converted, not ignored). The contract loader
(:mod:`processor.data`) has already checked every timestamp's format, so parsing cannot fail on a
loaded frame; a missing timestamp is ``None`` there.

Missing timestamps: when a split has none, nothing can be checked (``checked: false``,
``leakage_risk: null``). When only some events lack one, the timestamped events are still compared --
an overlap found among them is real (``leakage_risk: true``) -- but no overlap cannot be certified
(``checked: false``, ``leakage_risk: null``, with the counts in ``reason``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from processor.blocks import Leakage, SymbolGap

__all__ = ["LeakageReport", "SymbolOverlap", "time_overlap"]

RULE = ("a val event overlaps when its timestamp (UTC) is not later than the latest train timestamp "
        "of the same symbol; events without a symbol form one group (symbol null)")


@dataclass(frozen=True)
class SymbolOverlap:
    """Train vs val times of one symbol (``symbol`` None: the events without a symbol)."""

    symbol: str | None
    n_train: int  # timestamped events of this symbol
    n_val: int
    latest_train: str | None  # ISO 8601 UTC; None when the split has no event of this symbol
    earliest_val: str | None
    gap_seconds: float | None  # earliest_val - latest_train; None when one split lacks the symbol
    val_overlapping: int  # val events with timestamp <= latest_train

    @property
    def overlaps(self) -> bool:
        return self.val_overlapping > 0


@dataclass(frozen=True)
class LeakageReport:
    """Result of :func:`time_overlap`; :meth:`block` is metrics.json's ``leakage`` and its ``to_dict()``
    what validate's report holds."""

    checked: bool  # every event of both splits had a timestamp
    leakage_risk: bool | None  # True: an overlap was found; False: checked, none; None: unknown
    reason: str  # why not checked (empty when checked)
    n_train: int
    n_val: int
    train_without_timestamp: int
    val_without_timestamp: int
    symbols: list[SymbolOverlap] = field(default_factory=list)

    @property
    def val_overlapping(self) -> int:
        return sum(s.val_overlapping for s in self.symbols)

    @property
    def min_gap_seconds(self) -> float | None:
        gaps = [s.gap_seconds for s in self.symbols if s.gap_seconds is not None]
        return min(gaps) if gaps else None

    @property
    def tag(self) -> str:
        """The MLflow tag value: ``true``, ``false`` or ``unknown``."""
        return "unknown" if self.leakage_risk is None else str(self.leakage_risk).lower()

    def block(self) -> Leakage:
        return Leakage(checked=self.checked, leakage_risk=self.leakage_risk, reason=self.reason, rule=RULE,
                       n_train=self.n_train, n_val=self.n_val, train_without_timestamp=self.train_without_timestamp,
                       val_without_timestamp=self.val_without_timestamp, val_overlapping=self.val_overlapping,
                       min_gap_seconds=self.min_gap_seconds,
                       symbols=tuple(SymbolGap(**asdict(s), overlaps=s.overlaps) for s in self.symbols))

    def to_dict(self) -> dict[str, Any]:
        return self.block().to_dict()

    def summary(self) -> str:
        """One line: the verdict and the numbers behind it."""
        overlapping = [s for s in self.symbols if s.overlaps]
        compared = [s for s in self.symbols if s.gap_seconds is not None]
        if overlapping:
            return (f"temporal leakage risk: {self.val_overlapping} of {self.n_val} val events are not later "
                    f"than the latest train event of their symbol ({len(overlapping)} of {len(compared)} "
                    f"symbols overlap: {', '.join(_name(s.symbol) for s in overlapping)})"
                    + (f"; {self.reason}" if self.reason else ""))
        if not self.checked:
            return f"temporal leakage not checked: {self.reason}"
        gap = self.min_gap_seconds
        return (f"no temporal overlap: val events are later than the train events of their symbol "
                f"({len(compared)} symbol{'s' if len(compared) != 1 else ''} in both splits"
                + (f", smallest gap {format_duration(gap)}" if gap is not None else "") + ")")

    def lines(self) -> list[str]:
        """One line per symbol, for a terminal."""
        out = []
        for s in self.symbols:
            head = f"{_name(s.symbol)}: train {s.n_train}"
            if s.latest_train:
                head += f" up to {s.latest_train}"
            head += f", val {s.n_val}"
            if s.earliest_val:
                head += f" from {s.earliest_val}"
            if s.gap_seconds is None:
                tail = "only in one split"
            elif s.overlaps:
                tail = f"OVERLAP: {s.val_overlapping} val events not later than the last train event"
            else:
                tail = f"gap {format_duration(s.gap_seconds)}"
            out.append(f"{head}: {tail}")
        return out


def _name(symbol: str | None) -> str:
    return "(no symbol)" if symbol is None else symbol


def format_duration(seconds: float) -> str:
    """``2d 3h 05m``, ``55m``, ``-1h 10m`` (a negative gap is an overlap)."""
    sign = "-" if seconds < 0 else ""
    days, rest = divmod(int(round(abs(seconds))), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    parts.append(f"{minutes:02d}m" if parts else f"{minutes}m")
    if secs:
        parts.append(f"{secs:02d}s")
    return sign + " ".join(parts)


def event_times(frame: pd.DataFrame) -> pd.Series:
    """UTC times of a loaded frame's ``timestamp`` column (NaT where absent)."""
    if "timestamp" not in frame:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    # The contract allows a lowercase t/z (RFC 3339); pandas' ISO 8601 parser wants them uppercase.
    text = frame["timestamp"].astype(object).str.upper()
    return pd.to_datetime(text, utc=True, format="ISO8601")


def _symbols(frame: pd.DataFrame) -> pd.Series:
    if "symbol" not in frame:
        return pd.Series(None, index=frame.index, dtype=object)
    return frame["symbol"].astype(object)


def _iso(t: pd.Timestamp) -> str:
    return t.isoformat().replace("+00:00", "Z")


def time_overlap(train_df: pd.DataFrame, val_df: pd.DataFrame) -> LeakageReport:
    """Per-symbol overlap in time of two loaded frames (:func:`processor.data.load_split`); see the module
    docstring for the rule. Frames without a ``timestamp`` or ``symbol`` column are accepted."""
    t_train, t_val = event_times(train_df), event_times(val_df)
    missing_train, missing_val = int(t_train.isna().sum()), int(t_val.isna().sum())
    base = dict(n_train=len(train_df), n_val=len(val_df), train_without_timestamp=missing_train,
                val_without_timestamp=missing_val)
    empty = [name for name, t in (("train", t_train), ("val", t_val)) if t.notna().sum() == 0]
    if empty:
        return LeakageReport(checked=False, leakage_risk=None,
                             reason=f"no {' and no '.join(empty)} event has a timestamp", **base)

    s_train, s_val = _symbols(train_df)[t_train.notna()], _symbols(val_df)[t_val.notna()]
    t_train, t_val = t_train[t_train.notna()], t_val[t_val.notna()]
    names = set(s_train.dropna()) | set(s_val.dropna())
    groups: list[str | None] = sorted(map(str, names))
    if s_train.isna().any() or s_val.isna().any():
        groups.append(None)  # the events without a symbol: one group, compared only with each other
    symbols = []
    for symbol in groups:
        in_train = t_train[s_train.isna() if symbol is None else s_train == symbol]
        in_val = t_val[s_val.isna() if symbol is None else s_val == symbol]
        t_max = in_train.max() if len(in_train) else None
        t_min = in_val.min() if len(in_val) else None
        both = t_max is not None and t_min is not None
        symbols.append(SymbolOverlap(
            symbol=symbol, n_train=int(in_train.size), n_val=int(in_val.size),
            latest_train=_iso(t_max) if t_max is not None else None,
            earliest_val=_iso(t_min) if t_min is not None else None,
            gap_seconds=(t_min - t_max).total_seconds() if both else None,
            val_overlapping=int((in_val <= t_max).sum()) if both else 0,
        ))
    checked = missing_train == 0 and missing_val == 0
    found = any(s.overlaps for s in symbols)
    reason = "" if checked else (
        f"{missing_train} of {len(train_df)} train and {missing_val} of {len(val_df)} val events have no "
        "timestamp: only the timestamped events were compared")
    return LeakageReport(checked=checked, leakage_risk=True if found else (False if checked else None),
                         reason=reason, symbols=symbols, **base)
