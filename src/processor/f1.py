"""F1 of many label vectors at once: one definition for the bootstrap's resamples (processor.scores) and
the tuned tree's fold and offset candidates (processor.tuned_tree). A leaf: numpy only."""

from __future__ import annotations

import numpy as np


def macro_and_class_f1(t: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    """Vectorised F1 over the last axis: returns ``[macro, f1_0, ..., f1_{K-1}]`` stacked on axis 0.

    Same definition as sklearn with ``zero_division=0``: ``F1_k = 2 TP / (2 TP + FP + FN)``, 0 when the
    class is neither present nor predicted. Written by hand only because sklearn scores one resample
    per call, which is ~100x slower for 1000 resamples.
    """
    per_class = []
    for k in range(n_classes):
        is_t, is_p = t == k, p == k
        tp = np.sum(is_t & is_p, axis=-1)
        denom = np.sum(is_t, axis=-1) + np.sum(is_p, axis=-1)
        per_class.append(np.divide(2.0 * tp, denom, out=np.zeros(np.shape(tp)), where=denom > 0))
    f1 = np.stack(per_class, axis=0)
    return np.concatenate([f1.mean(axis=0, keepdims=True), f1], axis=0)
