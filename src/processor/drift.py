"""Drift at predict time: how far a batch of events has moved from the training data, per feature.

Training stores a **profile** of its training split in ``serving.json`` (``feature_profile``): for each
contract feature, the bins it is counted in and the share of training events per bin. Prediction counts
its own events in the same bins and computes the **population stability index** per feature::

    PSI = sum over bins of (a - e) * ln(a / e)      a = share in the batch, e = share in training

0 means the same distribution; the usual reading is < 0.1 stable, 0.1-0.2 moderate, > 0.2 a shift worth
a look (the default warning level, ``trust.psi_warn``).

Bins:

* numbers and unbounded integers (``wave_strength``, ``atr``, ``mgann_leg_index``): up to 10 quantile
  bins of the training values (unique edges, so ties give fewer bins); the outer bins are open-ended,
  so a value beyond anything seen in training lands in the first or last bin and moves its share.
* flags, directions and sessions: one bucket per category seen in training, plus an ``other`` bucket
  (share 0 in training) for a contract-valid value training never saw.

An empty bin would make ``ln(a / e)`` infinite: shares are floored at ``EPS`` (1e-4) before the sum, a
common choice that keeps one empty bin's term finite but large (a bin holding 5 % of training and 0 %
of the batch adds 0.05 * ln(0.05 / 1e-4), about 0.31). A bin empty on both sides adds exactly 0.

PSI of a small batch is noisy: with k bins and n events its expected value under no drift is about
(k - 1) / n, so a batch under ``MIN_EVENTS`` is reported as too few for a check and never fails one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from processor.bins import bin_index, quantile_edges
from processor.cli import DataError
from processor.config import PSI_WARN  # the default; a profile stores the level its run was trained with
from processor.blocks import ValDrift
from processor.schema import FEATURES, contract_spec

PROFILE_VERSION = 1
N_BINS = 10
MIN_EVENTS = 100
EPS = 1e-4
OTHER = "other"

_SPEC: dict[str, dict[str, Any]] = contract_spec()["keys"]
_CAST = {"boolean": bool, "integer": int, "string": str}


class DriftError(DataError):
    """The input drifted past the limit the caller set (``--max-psi``): exit 1, nothing predicted."""


def _kind(feature: str) -> str:
    """``bins`` for numbers and range-only integers, ``categories`` for flags and enums."""
    spec = _SPEC[feature]
    if spec["type"] == "boolean" or "enum" in spec:
        return "categories"
    return "bins"


def _frame(events: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    return events if isinstance(events, pd.DataFrame) else pd.DataFrame(list(events))


def _categorical(feature: str, values: pd.Series) -> pd.Series:
    # check_frame gives Python values, load_events numpy dtypes: one type per feature before comparing.
    return values.astype(_CAST[_SPEC[feature]["type"]])


def fit_profile(train: pd.DataFrame | Iterable[Mapping[str, Any]], *, psi_warn: float = PSI_WARN) -> dict[str, Any]:
    """The JSON-able training profile of every contract feature (fit on the training split as loaded:
    oversampled duplicates would move the shares)."""
    frame = _frame(train)
    if len(frame) == 0:
        raise ValueError("cannot fit a feature profile on no events")
    features: dict[str, Any] = {}
    for name in FEATURES:
        if _kind(name) == "bins":
            edges = quantile_edges(frame[name].to_numpy(dtype=np.float64), N_BINS)
            entry: dict[str, Any] = {"kind": "bins", "edges": list(edges)}
        else:
            entry = {"kind": "categories",
                     "categories": sorted(_categorical(name, frame[name]).unique().tolist())}
        entry["shares"] = [float(s) for s in _shares(entry, frame[name], name)]
        features[name] = entry
    return {"version": PROFILE_VERSION, "n_events": int(len(frame)), "psi_warn": float(psi_warn),
            "features": features}


def _shares(entry: Mapping[str, Any], values: pd.Series, feature: str) -> np.ndarray:
    """Share of ``values`` per bin of ``entry`` (categories: the last bucket is ``other``)."""
    if entry["kind"] == "bins":
        index = bin_index(entry["edges"], values.to_numpy(dtype=np.float64))
        n_bins = len(entry["edges"]) + 1
    else:
        categories = list(entry["categories"])
        codes = pd.Index(categories).get_indexer(_categorical(feature, values))
        index = np.where(codes < 0, len(categories), codes)  # -1 = not a training category
        n_bins = len(categories) + 1
    counts = np.bincount(index, minlength=n_bins)
    return counts / max(int(counts.sum()), 1)


def psi_value(actual: np.ndarray, expected: np.ndarray) -> float:
    """``sum((a - e) * ln(a / e))`` with both share vectors floored at :data:`EPS`."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPS)
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature of one batch against the training profile.

    ``psi`` is empty when nothing was checked: ``too_few`` (n < ``MIN_EVENTS``) or ``no_profile`` (a
    model packaged before profiles existed); ``note`` then says which, in words."""

    n_events: int
    psi: dict[str, float] = field(default_factory=dict)
    warn_at: float = PSI_WARN
    too_few: bool = False
    no_profile: bool = False
    n_train: int | None = None
    min_events: int = MIN_EVENTS

    @property
    def checked(self) -> bool:
        return bool(self.psi)

    @property
    def note(self) -> str | None:
        if self.no_profile:
            return "no drift check: no feature profile in this model (packaged before drift checks existed)"
        if self.too_few:
            return f"too few events for a drift check (n = {self.n_events} < {self.min_events})"
        return None

    def over(self, limit: float) -> dict[str, float]:
        """Features whose PSI exceeds ``limit``, largest first (empty when nothing was checked)."""
        return dict(sorted(((k, v) for k, v in self.psi.items() if v > limit), key=lambda kv: -kv[1]))

    @property
    def warnings(self) -> dict[str, float]:
        return self.over(self.warn_at)

    @property
    def max_psi(self) -> float | None:
        return max(self.psi.values()) if self.psi else None

    def val_drift(self) -> ValDrift:
        """metrics.json's ``drift`` block, for the val split checked against the training profile."""
        return ValDrift(val_psi=self.psi, max_psi=self.max_psi, note=self.note)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(checked=self.checked, note=self.note, max_psi=self.max_psi, over_warn=self.warnings)
        return out

    def table(self) -> str:
        """Every feature's PSI, largest first, the ones above the warning level marked."""
        rows = [f"  {'feature':<22}{'PSI':>9}"]
        for name, value in sorted(self.psi.items(), key=lambda kv: -kv[1]):
            rows.append(f"  {name:<22}{value:>9.4f}{'  > ' + format(self.warn_at, 'g') if value > self.warn_at else ''}")
        return "\n".join(rows)

    def summary(self) -> str:
        """One line: what was checked and what moved."""
        if not self.checked:
            return str(self.note)
        over = self.warnings
        head = f"drift over {self.n_events} events (vs {self.n_train} training events)"
        if not over:
            return f"{head}: no feature has PSI > {self.warn_at:g} (max {self.max_psi:.4f})"
        return f"{head}: {len(over)} feature(s) with PSI > {self.warn_at:g}: {describe(over)}"


def describe(over: Mapping[str, float]) -> str:
    """``atr=1.234, session=0.567``: features and their PSI, for messages."""
    return ", ".join(f"{name}={value:.4f}" for name, value in over.items())


def limit_message(report: DriftReport, max_psi: float) -> str:
    """Why a batch was refused under ``max_psi`` (the features over it, with their PSI)."""
    over = report.over(max_psi)
    return (f"input drifted from the training data: PSI > max_psi {max_psi:g} for {len(over)} feature(s) "
            f"over {report.n_events} events: {describe(over)}")


def psi(profile: Mapping[str, Any], events: pd.DataFrame | Iterable[Mapping[str, Any]], *,
        warn_at: float | None = None) -> DriftReport:
    """PSI per profiled feature of ``events`` (a frame or records with the contract features)."""
    # Counted before any frame is built: a one-event request is never checked, so it pays nothing here.
    n = len(events) if isinstance(events, (pd.DataFrame, Sequence)) else len(events := list(events))
    warn = float(profile.get("psi_warn", PSI_WARN) if warn_at is None else warn_at)
    common = {"n_events": int(n), "warn_at": warn, "n_train": profile.get("n_events")}
    if n < MIN_EVENTS:
        return DriftReport(too_few=True, **common)
    frame = _frame(events)
    values = {name: psi_value(_shares(entry, frame[name], name), np.asarray(entry["shares"]))
              for name, entry in profile["features"].items()}
    return DriftReport(psi=values, **common)


def check(profile: Mapping[str, Any] | None, events: pd.DataFrame | Iterable[Mapping[str, Any]], *,
          warn_at: float | None = None) -> DriftReport:
    """:func:`psi` against a model's training profile (``ServingSpec.feature_profile``); a model without
    one gets a report that says so (never an error: old packages still predict)."""
    if not profile:
        n = len(events) if isinstance(events, (pd.DataFrame, Sequence)) else len(list(events))
        return DriftReport(n_events=int(n), no_profile=True,
                           warn_at=PSI_WARN if warn_at is None else float(warn_at))
    return psi(profile, events, warn_at=warn_at)
