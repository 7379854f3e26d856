"""Synthetic structural-trading events: the feature sampler and the labeled sample-data generator.

``sample_features(n, rng)`` draws unlabeled, contract-valid feature dicts with realistic dependencies
between the features (internal structure follows the external swing, CHoCHs and FVGs print in the
direction of the structure, retests need an FVG, stronger waves after a CHoCH, ...). It is what the
tiny demo model is pretrained on, so it never depends on any user's data.

``generate`` / ``write_sample_data`` / ``python -m demo_kit.sample_data`` turn those features into a
labeled data set (``train.jsonl``, ``val.jsonl``, ``data_card.json``) that follows the event contract.

Labeling rules
--------------
Labels come from the rule sets of :mod:`demo_kit.rules` (v1 default, v2, v3; each described
there), applied to the features exactly as written to the files.

Label noise
-----------
After the rules, each label is independently replaced with probability ``noise`` by one of the two
*other* classes, chosen uniformly (symmetric noise). The noise-free label of every written record can
be recomputed with ``label_event(record, rules)``.

Class mixes
-----------
``mix`` sets the shares of the noise-free rule labels:

* ``default`` -- the natural distribution the rules produce on ``sample_features`` events
  (v1: about 14 % long, 14 % short, 72 % no_trade before noise);
* ``rare`` -- 6 % long, 6 % short, 88 % no_trade (exact up to rounding);
* ``balanced`` -- 1/3 each (exact up to rounding).

``rare`` and ``balanced`` draw a larger pool of events and pick, per class, the required number
uniformly at random from the pool (seeded), keeping generation order, so events stay i.i.d. in time.
Noise then moves every observed share toward 1/3: observed ~= share * (1 - 1.5 * noise) + noise / 2
(with noise 0.1: default ~17/17/66 %, rare ~10/10/80 %, balanced 1/3 each).

Split and records
-----------------
Events get increasing timestamps (UTC, 5-minute bars, inside the session's hours: asia 00-07,
london 07-13, new_york 13-21, weekdays only), ids ``ev-000001``... in time order, and a ``symbol``.
The most recent ``round(n * val_fraction)`` events form ``val.jsonl``, the rest ``train.jsonl``
(a chronological split, as a real exporter would do; ids are unique across both files).

``split`` changes only which events go where (the events are the same for a seed): ``chronological``
(default, above; val may start one bar after train), ``time`` (``--time-split``: the same train
events, then val events less than ``embargo_bars`` 5-minute bars after the last train event are
dropped, so every val event is at least the embargo later than every train event of any symbol --
markets move together, and a label's horizon must not reach into the val period) or ``random``
(``--random-split``: val overlaps train in time; only to demonstrate ``processor.leakage``).

Data card
---------
``data_card.json`` records the generator settings, per-file class counts and shares (observed and
noise-free), file hashes, and ``bayes_ceiling``: the validation macro-F1 that the noise-free rules
themselves score against the noisy validation labels (``bayes_ceiling(val_records, rules)``). A model
cannot be expected to beat it, so every model score should be read against it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from demo_kit.rules import RULES, bayes_ceiling, check_rules, label_event, rule_parameters
from processor import __version__
from processor.cli import EXIT_DATA, UserError, run
from processor.io import atomic_target
from processor.names import DATA_CARD
from processor.schema import FEATURES, LABEL2ID, LABELS, SESSIONS

# Instruments and the median ATR (price units) of each: ATR is only meaningful per symbol, which is
# why no labeling rule may depend on its absolute value.
SYMBOL_ATR: dict[str, float] = {
    "EURUSD": 1.1e-3,
    "GBPUSD": 1.4e-3,
    "USDJPY": 0.16,
    "XAUUSD": 3.0,
    "US500": 12.0,
}
SYMBOL_P: tuple[float, ...] = (0.3, 0.15, 0.15, 0.2, 0.2)
SESSION_P: tuple[float, ...] = (0.25, 0.4, 0.35)
_DIRS = np.array([-1, 0, 1])
_EXT_DIR_P = (0.4, 0.2, 0.4)
_ATR_SIGMA = 0.35  # lognormal spread around the symbol's median
_ATR_DIGITS = 4  # significant digits written for atr
_LEG_MAX = 100  # contract maximum of mgann_leg_index


def _flag_pair(rng: np.random.Generator, p_up: np.ndarray, p_down: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two mutually exclusive flags from one uniform draw (an event is never both up and down)."""
    u = rng.random(p_up.shape[0])
    up = u < p_up
    down = (u >= p_up) & (u < p_up + p_down)
    return up, down


def _round_sig(x: np.ndarray, digits: int) -> list[float]:
    # Formatting then parsing gives the shortest float that prints with `digits` significant digits.
    return [float(f"{v:.{digits}g}") for v in x]


def _sample_columns(n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Column-wise draw of n events (features plus ``symbol``), numpy arrays / lists."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    symbols = list(SYMBOL_ATR)
    symbol = rng.choice(len(symbols), size=n, p=SYMBOL_P)
    session = rng.choice(len(SESSIONS), size=n, p=SESSION_P)
    ext_dir = rng.choice(_DIRS, size=n, p=_EXT_DIR_P)

    # Internal structure usually follows the external swing; against it (a pullback) less often.
    u = rng.random(n)
    int_dir = np.where(
        ext_dir != 0,
        np.where(u < 0.65, ext_dir, np.where(u < 0.85, -ext_dir, 0)),
        rng.choice(_DIRS, size=n, p=(0.35, 0.3, 0.35)),
    )

    # A change of character is likelier in the direction of the external structure.
    choch_up, choch_down = _flag_pair(
        rng,
        np.select([ext_dir == 1, ext_dir == -1], [0.5, 0.05], 0.10),
        np.select([ext_dir == -1, ext_dir == 1], [0.5, 0.05], 0.10),
    )
    # FVGs print in the direction of the internal structure.
    fvg_up, fvg_down = _flag_pair(
        rng,
        np.select([int_dir == 1, int_dir == -1], [0.5, 0.08], 0.20),
        np.select([int_dir == -1, int_dir == 1], [0.5, 0.08], 0.20),
    )
    has_fvg = fvg_up | fvg_down
    fvg_retest = rng.random(n) < np.where(has_fvg, 0.6, 0.03)

    # No structure at all -> no MGann leg; otherwise a geometric leg count (early legs commonest).
    has_structure = (ext_dir != 0) | (int_dir != 0)
    leg = np.minimum(rng.geometric(0.35, size=n), _LEG_MAX)
    mgann_leg_index = np.where(has_structure, leg, 0)
    p_first = np.select([mgann_leg_index == 0, mgann_leg_index <= 2, mgann_leg_index <= 4], [0.3, 0.8, 0.5], 0.2)
    mgann_leg_first_fvg = has_fvg & (rng.random(n) < p_first)

    # Waves that broke character are stronger.
    has_choch = choch_up | choch_down
    wave = np.where(has_choch, rng.beta(4.0, 2.5, size=n), rng.beta(2.0, 2.5, size=n))
    wave_strength = np.clip(np.round(wave, 2), 0.0, 1.0)
    # The pullback filter is a separate indicator that mostly agrees with the wave strength.
    agrees = rng.random(n) < 0.85
    pb_ok = np.where(agrees, wave_strength >= 0.5, wave_strength < 0.5)

    median = np.array([SYMBOL_ATR[s] for s in symbols])[symbol]
    atr = median * rng.lognormal(0.0, _ATR_SIGMA, size=n)

    return {
        "symbol": [symbols[i] for i in symbol],
        "ext_dir": ext_dir,
        "int_dir": int_dir,
        "ext_choch_up": choch_up,
        "ext_choch_down": choch_down,
        "fvg_up": fvg_up,
        "fvg_down": fvg_down,
        "fvg_retest": fvg_retest,
        "mgann_leg_index": mgann_leg_index,
        "mgann_leg_first_fvg": mgann_leg_first_fvg,
        "pb_wave_strength_ok": pb_ok,
        "wave_strength": wave_strength,
        "atr": _round_sig(atr, _ATR_DIGITS),
        "session": [SESSIONS[i] for i in session],
    }


_INT_KEYS = ("ext_dir", "int_dir", "mgann_leg_index")
_FLOAT_KEYS = ("wave_strength", "atr")


def _to_python(key: str, value: Any) -> Any:
    """Plain Python types, so records serialize to JSON exactly as the contract shows them."""
    if key in _INT_KEYS:
        return int(value)
    if key in _FLOAT_KEYS:
        return float(value)
    if key in ("session", "symbol"):
        return str(value)
    return bool(value)


def _rows(columns: dict[str, Any], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    n = len(columns["session"])
    return [{k: _to_python(k, columns[k][i]) for k in keys} for i in range(n)]


def sample_features(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Draw n unlabeled, contract-valid feature dicts (the 13 FEATURES, contract order).

    Types are plain Python: int for ``ext_dir``/``int_dir``/``mgann_leg_index``, bool for the flags,
    float for ``wave_strength`` (2 decimals, in [0, 1]) and ``atr`` (> 0, 4 significant digits,
    scale depends on a hidden symbol), str for ``session``. Deterministic given the generator state.
    """
    return _rows(_sample_columns(n, rng), FEATURES)


# --------------------------------------------------------------------------------------------------
# Class mixes

# Shares of the noise-free labels, in LABELS order; None = whatever the rules produce.
MIXES: dict[str, tuple[float, float, float] | None] = {
    "default": None,
    "rare": (0.06, 0.06, 0.88),
    "balanced": (1 / 3, 1 / 3, 1 / 3),
}


def _target_counts(n: int, shares: tuple[float, ...]) -> list[int]:
    """Largest-remainder rounding: counts that sum exactly to n."""
    raw = [n * s for s in shares]
    counts = [int(np.floor(x)) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: np.concatenate([np.asarray(a[k]), np.asarray(b[k])]) for k in a}


def _take(columns: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
    return {k: np.asarray(v)[idx] for k, v in columns.items()}


def _draw_events(n: int, rules: str, mix: str, rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    """n events (columns) and their noise-free class ids, following the requested class mix."""
    columns = _sample_columns(n, rng)
    clean = _clean_ids(columns, rules)
    shares = MIXES[mix]
    if shares is None:
        return columns, clean
    targets = _target_counts(n, shares)
    # Grow a pool until every class has enough members; growth is seeded, so this is deterministic.
    chunk = max(4 * n, 1000)
    for _ in range(100):
        if all(int(np.sum(clean == c)) >= t for c, t in enumerate(targets)):
            break
        more = _sample_columns(chunk, rng)
        columns = _concat(columns, more)
        clean = np.concatenate([clean, _clean_ids(more, rules)])
    else:  # pragma: no cover - the rules give every class a few percent, so this cannot happen
        raise RuntimeError(f"could not reach mix {mix!r} with rules {rules!r}")
    picked = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(clean == c), size=t, replace=False) for c, t in enumerate(targets)
    ]))
    return _take(columns, picked), clean[picked]


def _clean_ids(columns: dict[str, Any], rules: str) -> np.ndarray:
    rows = _rows(columns, FEATURES)
    return np.array([LABEL2ID[label_event(r, rules)] for r in rows], dtype=np.int64)


def _add_noise(clean: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Symmetric label noise: with probability ``noise`` a label becomes one of the two others."""
    flip = rng.random(clean.shape[0]) < noise
    offset = rng.integers(1, len(LABELS), size=clean.shape[0])  # 1 or 2: never the same class
    return np.where(flip, (clean + offset) % len(LABELS), clean)


# --------------------------------------------------------------------------------------------------
# Timestamps

SESSION_HOURS: dict[str, tuple[int, int]] = {"asia": (0, 7), "london": (7, 13), "new_york": (13, 21)}
_START = datetime(2024, 1, 2, tzinfo=timezone.utc)  # a Tuesday
_BAR = timedelta(minutes=5)


def _next_weekday(day: datetime) -> datetime:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _timestamps(sessions: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Strictly increasing 5-minute-bar times, each inside its event's session hours."""
    out: list[str] = []
    current = _START - _BAR
    for session in sessions:
        h0, h1 = SESSION_HOURS[session]
        # A random gap (mean ~2 h) so events are spread out rather than packed into every bar.
        earliest = current + _BAR * int(rng.geometric(1 / 24))
        day = earliest.replace(hour=0, minute=0, second=0, microsecond=0)
        if day.weekday() >= 5:
            day = _next_weekday(day)
        start, end = day + timedelta(hours=h0), day + timedelta(hours=h1)
        if earliest >= end:
            day = _next_weekday(day)
            start, end = day + timedelta(hours=h0), day + timedelta(hours=h1)
        start = max(start, earliest)
        bars = int((end - start) / _BAR)  # >= 1: start < end and both lie on bar boundaries
        current = start + _BAR * int(rng.integers(0, bars))
        out.append(current.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


# --------------------------------------------------------------------------------------------------
# Generation

SPLITS: tuple[str, ...] = ("chronological", "time", "random")
DEFAULT_EMBARGO_BARS = 12  # one hour of 5-minute bars
_SPLIT_TEXT = {
    "chronological": "chronological: the most recent events are validation",
    "time": "time-ordered with an embargo: the most recent events are validation, minus those less than "
            "the embargo after the last training event",
    "random": "random: validation events drawn uniformly from the whole period (overlaps training in "
              "time; for leakage demonstrations only)",
}


def _split_masks(n: int, n_val: int, split: str, embargo_bars: int, stamps: Sequence[str],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Boolean masks (train, val) over the n events in time order, and the data-card entries of the
    split beyond its name (none for the default, so its card stays as it was)."""
    is_val = np.zeros(n, dtype=bool)
    if split == "random":
        # Drawn after every other draw of the seed: the events are the same as in the default split.
        is_val[rng.choice(n, size=n_val, replace=False)] = True
        return ~is_val, is_val, {}
    is_val[n - n_val:] = True
    if split == "chronological":
        return ~is_val, is_val, {}
    times = pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601")
    last_train = times[n - n_val - 1]
    embargo = _BAR * embargo_bars
    dropped = is_val & (times < last_train + embargo).to_numpy()
    if dropped.sum() == n_val:
        raise ValueError(f"an embargo of {embargo_bars} bars leaves no validation events "
                         f"(all {n_val} fall within it); use fewer --embargo-bars or a larger --val-fraction")
    kept_val = is_val & ~dropped
    gap = times[kept_val].min() - last_train
    extra = {"embargo_bars": int(embargo_bars), "embargo_minutes": embargo_bars * _BAR.seconds // 60,
             "dropped_by_embargo": int(dropped.sum()), "gap_minutes": gap.total_seconds() / 60}
    return ~is_val, kept_val, extra


@dataclass(frozen=True)
class SampleData:
    """A generated data set: contract records (dicts in contract key order) and its data card."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    card: dict[str, Any]


def _validate(n: int, val_fraction: float, seed: int, noise: float, rules: str, mix: str,
              split: str = "chronological", embargo_bars: int = DEFAULT_EMBARGO_BARS) -> int:
    """Check the arguments; return the number of validation events (before any embargo)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (train and val both need events), got {n!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(noise) <= 1.0:
        raise ValueError(f"noise must be between 0 and 1, got {noise!r}")
    check_rules(rules)
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r}; choose one of: {', '.join(MIXES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if isinstance(embargo_bars, bool) or not isinstance(embargo_bars, (int, np.integer)) or embargo_bars < 0:
        raise ValueError(f"embargo_bars must be a non-negative integer, got {embargo_bars!r}")
    n_val = int(round(n * float(val_fraction)))
    if not 1 <= n_val <= n - 1:
        raise ValueError(
            f"n={n} with val_fraction={val_fraction} gives {n_val} validation and {n - n_val} training "
            "events; both must be at least 1"
        )
    return n_val


def _class_summary(labels: Sequence[str]) -> dict[str, dict[str, float | int]]:
    total = len(labels)
    counts = {c: int(sum(1 for x in labels if x == c)) for c in LABELS}
    return {"counts": counts, "shares": {c: round(counts[c] / total, 4) for c in LABELS}}


def generate(
    n: int = 1300,
    val_fraction: float = 0.2,
    seed: int = 0,
    noise: float = 0.1,
    rules: str = "v1",
    mix: str = "default",
    split: str = "chronological",
    embargo_bars: int = DEFAULT_EMBARGO_BARS,
) -> SampleData:
    """Generate a labeled, contract-valid data set in memory (see the module docstring).

    One seed drives everything (a numpy Generator), so equal arguments give equal records.
    ``embargo_bars`` only matters with ``split="time"``.
    Raises ``ValueError`` with a clear message for bad arguments.
    """
    n_val = _validate(n, val_fraction, seed, noise, rules, mix, split, embargo_bars)
    n, noise = int(n), float(noise)
    rng = np.random.default_rng(seed)
    columns, clean = _draw_events(n, rules, mix, rng)
    noisy = _add_noise(clean, noise, rng)
    features = _rows(columns, ("symbol", *FEATURES))
    stamps = _timestamps([f["session"] for f in features], rng)

    records: list[dict[str, Any]] = []
    for i, (f, y) in enumerate(zip(features, noisy, strict=True)):
        record: dict[str, Any] = {"id": f"ev-{i + 1:06d}", "timestamp": stamps[i], "symbol": f["symbol"]}
        record.update((k, f[k]) for k in FEATURES)
        record["label"] = LABELS[int(y)]
        records.append(record)
    in_train, in_val, split_card = _split_masks(n, n_val, split, int(embargo_bars), stamps, rng)
    train = [r for r, keep in zip(records, in_train) if keep]
    val = [r for r, keep in zip(records, in_val) if keep]

    clean_labels = [LABELS[int(c)] for c in clean]
    card: dict[str, Any] = {
        "generator": "demo_kit.sample_data",
        "generator_version": __version__,
        "rules": rules,
        # Only for rule sets that have parameters to record (v3): v1/v2 cards stay byte-identical.
        **({} if rule_parameters(rules) is None else {"rules_parameters": rule_parameters(rules)}),
        "mix": mix,
        "mix_target_shares": None if MIXES[mix] is None else dict(zip(LABELS, MIXES[mix], strict=True)),
        "noise": noise,
        "seed": int(seed),
        "n": n,
        "val_fraction": float(val_fraction),
        "split": _SPLIT_TEXT[split],
        **split_card,
        "n_train": len(train),
        "n_val": len(val),
        "labels_flipped_by_noise": int(np.sum(noisy != clean)),
        "train": _class_summary([r["label"] for r in train]),
        "val": _class_summary([r["label"] for r in val]),
        "train_rule_labels": _class_summary([c for c, keep in zip(clean_labels, in_train) if keep]),
        "val_rule_labels": _class_summary([c for c, keep in zip(clean_labels, in_val) if keep]),
        "bayes_ceiling": bayes_ceiling(val, rules),
        "bayes_ceiling_metric": "val macro-F1 of the noise-free rules against the noisy val labels",
    }
    return SampleData(train=train, val=val, card=card)


# --------------------------------------------------------------------------------------------------
# Writing

def _jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _write_atomic(files: dict[Path, bytes]) -> None:
    """Write every file to a temp file beside it, then move them all into place
    (:func:`processor.io.atomic_target`). Nothing half-written is ever visible under a final name; a
    failure leaves no temp files behind."""
    with contextlib.ExitStack() as stack:
        for path, data in files.items():
            stack.enter_context(atomic_target(path)).write_bytes(data)


def write_sample_data(
    out_dir: str | os.PathLike[str],
    n: int = 1300,
    val_fraction: float = 0.2,
    seed: int = 0,
    noise: float = 0.1,
    rules: str = "v1",
    mix: str = "default",
    split: str = "chronological",
    embargo_bars: int = DEFAULT_EMBARGO_BARS,
) -> dict[str, Any]:
    """Generate and write ``train.jsonl``, ``val.jsonl`` and ``data_card.json`` into ``out_dir``.

    Creates ``out_dir`` if needed. Same arguments give byte-identical files. Returns the data card.
    """
    data = generate(n=n, val_fraction=val_fraction, seed=seed, noise=noise, rules=rules, mix=mix,
                    split=split, embargo_bars=embargo_bars)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_bytes, val_bytes = _jsonl(data.train), _jsonl(data.val)
    card = dict(data.card)
    card["files"] = {
        "train.jsonl": {"rows": len(data.train), "sha256": hashlib.sha256(train_bytes).hexdigest()},
        "val.jsonl": {"rows": len(data.val), "sha256": hashlib.sha256(val_bytes).hexdigest()},
    }
    card_bytes = (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    _write_atomic({out / "train.jsonl": train_bytes, out / "val.jsonl": val_bytes, out / DATA_CARD: card_bytes})
    return card


# --------------------------------------------------------------------------------------------------
# CLI

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo_kit.sample_data",
        description="Write a synthetic labeled event data set (train.jsonl, val.jsonl, data_card.json).",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
    p.add_argument("--n", type=int, default=1300, help="total events, train + val (default 1300)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of events for validation, in (0, 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (non-negative; drives everything)")
    p.add_argument("--noise", type=float, default=0.1, help="symmetric label-noise probability in [0, 1]")
    p.add_argument("--rules", choices=RULES, default="v1", help="labeling rule set")
    p.add_argument("--mix", choices=tuple(MIXES), default="default", help="class mix of the rule labels")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--time-split", dest="split", action="store_const", const="time", default="chronological",
                     help="time-ordered split with an embargo: val events start at least --embargo-bars after "
                          "the last train event (those inside the embargo are dropped)")
    how.add_argument("--random-split", dest="split", action="store_const", const="random",
                     help="val drawn at random from the whole period: overlaps train in time (only to "
                          "demonstrate the leakage check)")
    p.add_argument("--embargo-bars", type=int, default=None, metavar="N",
                   help=f"with --time-split: embargo in 5-minute bars (default {DEFAULT_EMBARGO_BARS}, one hour)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: exit 0 on success, 2 on bad arguments, 1 if the files cannot be written."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.embargo_bars is not None and args.split != "time":
        parser.error("--embargo-bars needs --time-split")
    return run(lambda: _write(args))


def _write(args: argparse.Namespace) -> int:
    embargo = DEFAULT_EMBARGO_BARS if args.embargo_bars is None else args.embargo_bars
    try:
        _validate(args.n, args.val_fraction, args.seed, args.noise, args.rules, args.mix, args.split, embargo)
        card = write_sample_data(
            args.out, n=args.n, val_fraction=args.val_fraction, seed=args.seed,
            noise=args.noise, rules=args.rules, mix=args.mix, split=args.split, embargo_bars=embargo,
        )
    except ValueError as exc:  # bad values; or an embargo that leaves no val events (known once times are drawn)
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write the sample data to {args.out}: {exc}", exit_code=EXIT_DATA) from None
    shares = ", ".join(f"{c} {card['train']['shares'][c]:.1%}" for c in LABELS)
    print(f"wrote {card['n_train']} train and {card['n_val']} val events to {args.out} "
          f"(rules {card['rules']}, mix {card['mix']}, noise {card['noise']}, seed {card['seed']})")
    print(f"train shares: {shares}; Bayes ceiling (val macro-F1 of the rules): {card['bayes_ceiling']:.3f}")
    if args.split != "chronological":
        print(f"split: {card['split']}"
              + (f" ({card['embargo_bars']} bars; {card['dropped_by_embargo']} events dropped; first val event "
                 f"{card['gap_minutes']:g} min after the last train event)" if args.split == "time" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
