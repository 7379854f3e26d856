"""The shipped head's pure transforms of class probabilities: prior correction and temperature.

A leaf (numpy and scipy only): :class:`processor.record.ShippedHead` applies them at serving time and
:mod:`processor.calibrate` fits them, so the record of what ships needs neither calibration's fitting
code nor anything it imports.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import softmax

# Probabilities of 0 (a float32 softmax underflows) would give log 0 = -inf.
TINY = np.finfo(np.float64).tiny


def log_probs(p: np.ndarray) -> np.ndarray:
    """``log p`` clipped away from -inf; it is the logits up to a per-row constant, which softmax ignores."""
    return np.log(np.clip(p, TINY, None))


def apply_prior_bias(probs: Any, logit_bias: Any | None) -> np.ndarray:
    """``softmax(log p + bias)``, which equals ``softmax(logits + bias)``; no bias returns ``probs``."""
    p = np.asarray(probs)
    if logit_bias is None:
        return p
    return softmax(log_probs(p.astype(np.float64)) + np.asarray(logit_bias, dtype=np.float64),
                   axis=1).astype(p.dtype, copy=False)


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``, which equals ``softmax(logits / T)``. ``T == 1`` returns the input as is."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    p = np.asarray(probs)
    if temperature == 1.0:
        return p
    return softmax(log_probs(p.astype(np.float64)) / temperature, axis=1).astype(p.dtype, copy=False)
