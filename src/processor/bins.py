"""Quantile bins fitted on the training split: the serializer's words for continuous features and the
drift profile's bins both come from here, so both cut the training values the same way."""

from __future__ import annotations

from typing import Any

import numpy as np


def quantile_edges(values: Any, n_bins: int, *, method: str = "linear") -> tuple[float, ...]:
    """The interior edges of ``n_bins`` equal-count bins of ``values``, ascending and distinct.

    Ties (many equal values) collapse edges: fewer, distinct bins are the honest result. ``method`` is
    numpy's quantile method; ``"lower"`` makes every edge a value seen in training.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot fit quantile bins on no values")
    qs = np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], method=method)
    return tuple(float(q) for q in np.unique(qs))


def bin_index(edges: Any, values: Any) -> Any:
    """Bin of each value: the number of edges <= value (0 .. len(edges)); the outer bins are open-ended."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
