"""Synthetic structural-trading events: a feature sampler and (later) a labeled sample-data generator.

``sample_features`` draws unlabeled, contract-valid feature dicts with realistic dependencies
between the features. It is what the tiny demo model is pretrained on, so it must not depend on
any user's data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from processor.schema import FEATURES, SESSIONS

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
        np.select([ext_dir == 1, ext_dir == -1], [0.35, 0.05], 0.10),
        np.select([ext_dir == -1, ext_dir == 1], [0.35, 0.05], 0.10),
    )
    # FVGs print in the direction of the internal structure.
    fvg_up, fvg_down = _flag_pair(
        rng,
        np.select([int_dir == 1, int_dir == -1], [0.45, 0.08], 0.20),
        np.select([int_dir == -1, int_dir == 1], [0.45, 0.08], 0.20),
    )
    has_fvg = fvg_up | fvg_down
    fvg_retest = rng.random(n) < np.where(has_fvg, 0.5, 0.03)

    # No structure at all -> no MGann leg; otherwise a geometric leg count (early legs commonest).
    has_structure = (ext_dir != 0) | (int_dir != 0)
    leg = np.minimum(rng.geometric(0.35, size=n), _LEG_MAX)
    mgann_leg_index = np.where(has_structure, leg, 0)
    p_first = np.select([mgann_leg_index == 0, mgann_leg_index <= 2, mgann_leg_index <= 4], [0.3, 0.7, 0.45], 0.2)
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
