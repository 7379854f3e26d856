"""Class-weighted multi-class focal loss and class-weight resolution.

Hand-written on purpose: ``torchvision.ops.sigmoid_focal_loss`` is the binary/sigmoid variant (one
independent sigmoid per class, no softmax), and ``kornia.losses.focal_loss`` takes a scalar ``alpha``
that is applied as a foreground/background balance with class 0 as background -- here class 0 is
``long``, a real class, and we want one weight per class. The reduction is delegated to
``torch.nn.functional.nll_loss`` so that, at ``gamma == 0``, the result is bit-for-bit
``torch.nn.functional.cross_entropy(logits, targets, weight=weight)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from processor.blocks import LossBlock
from processor.schema import LABELS

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"focal loss gamma must be a finite number >= 0, got {gamma!r}")
    return float(gamma)


def _check_mae(mae: float) -> float:
    if isinstance(mae, bool) or not isinstance(mae, Real) or not math.isfinite(mae) or mae < 0:
        raise ValueError(f"loss mae weight must be a finite number >= 0, got {mae!r}")
    return float(mae)


def _checked_weight(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None,
                    reduction: str) -> torch.Tensor | None:
    """The shapes focal_loss needs (a clear error otherwise); ``weight`` on the logits' device and dtype."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [N, C], got {tuple(logits.shape)}")
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must have shape [N] = [{logits.shape[0]}], got {tuple(targets.shape)}"
        )
    if weight is None:
        return None
    if weight.shape != (logits.shape[1],):
        raise ValueError(
            f"weight must have shape [C] = [{logits.shape[1]}], got {tuple(weight.shape)}"
        )
    return weight.to(device=logits.device, dtype=logits.dtype)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    mae: float = 0.0,
) -> torch.Tensor:
    """Multi-class, class-weighted focal loss ``FL = -w_y (1 - p_y)^gamma log p_y``, plus
    ``mae * w_y * (1 - p_y)`` when ``mae > 0``.

    Args:
        logits: ``[N, C]`` unnormalised scores.
        targets: ``[N]`` integer class ids in ``[0, C)``.
        gamma: focusing parameter, ``>= 0``; ``0`` gives (weighted) cross-entropy exactly.
        weight: optional ``[C]`` per-class weights ``w``.
        reduction: ``"mean"`` divides the summed loss by the summed weight of the targets
            (``sum_i w_{y_i}``, or ``N`` without weights), exactly like
            ``F.cross_entropy(weight=...)``; ``"sum"`` sums; ``"none"`` returns ``[N]``.
        mae: weight of the mean-absolute-error term ``1 - p_y`` (the MAE of the probability vector up
            to a factor 2; symmetric cross-entropy's reverse term up to a constant). It is bounded, so a
            mislabeled event cannot pull as hard as under ``-log p_y`` (Ghosh et al., 2017). ``0`` = off.

    Works from ``log_softmax`` so huge logits (e.g. +-1e4) give finite values and gradients.
    Not torchvision's ``sigmoid_focal_loss`` (sigmoid-only) nor kornia's (scalar ``alpha`` with class
    0 as background), because this task is softmax over three real classes with per-class weights.
    """
    gamma = _check_gamma(gamma)
    mae = _check_mae(mae)
    weight = _checked_weight(logits, targets, weight, reduction)
    log_p = F.log_softmax(logits, dim=1)
    scaled = log_p
    if gamma > 0:
        # 1 - p computed as -expm1(log p) keeps precision when p is close to 1.
        one_minus_p = -torch.expm1(log_p)
        # Clamp away from exactly 0: for 0 < gamma < 1 the derivative of x**gamma is infinite at 0,
        # and inf * 0 (log p == 0) would make the gradient NaN. The clamp moves the forward value by
        # at most tiny**gamma * |log p|, i.e. nothing measurable.
        one_minus_p = one_minus_p.clamp_min(torch.finfo(log_p.dtype).tiny)
        scaled = one_minus_p.pow(gamma) * log_p
    # nll_loss picks -w_y * input[i, y_i] and applies cross_entropy's exact normalisation.
    loss = F.nll_loss(scaled, targets, weight=weight, reduction=reduction)
    if mae == 0:
        return loss
    p_target = log_p.gather(1, targets[:, None]).squeeze(1).exp()
    w = torch.ones_like(p_target) if weight is None else weight[targets]
    term = mae * w * (1 - p_target)
    return loss + (term if reduction == "none" else term.sum() if reduction == "sum" else term.sum() / w.sum())


class FocalLoss(torch.nn.Module):
    """``torch.nn.Module`` wrapper around :func:`focal_loss`; the class weights live in a buffer
    so they follow ``.to(device)`` and are saved in the ``state_dict``."""

    weight: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        weight: torch.Tensor | Sequence[float] | None = None,
        reduction: Reduction = "mean",
        mae: float = 0.0,
    ) -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        self.mae = _check_mae(mae)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction: Reduction = reduction
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).detach().clone()
        if w is not None and w.ndim != 1:
            raise ValueError(f"weight must be 1-D (one value per class), got shape {tuple(w.shape)}")
        self.register_buffer("weight", w)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, targets, gamma=self.gamma, weight=self.weight, reduction=self.reduction,
                          mae=self.mae)

    def block(self) -> LossBlock:
        """metrics.json's ``loss``: the settings this loss trained with."""
        return LossBlock(type="focal", gamma=float(self.gamma), mae=float(self.mae))

    def extra_repr(self) -> str:
        w = None if self.weight is None else [round(v, 4) for v in self.weight.tolist()]
        return f"gamma={self.gamma}, mae={self.mae}, weight={w}, reduction={self.reduction!r}"


def _parse_explicit(values: Sequence[object], n_classes: int, raw: object) -> list[float]:
    if len(values) != n_classes:
        raise ValueError(
            f"class_weights {raw!r}: expected {n_classes} values (one per class), got {len(values)}"
        )
    out: list[float] = []
    for v in values:
        if isinstance(v, str):
            try:
                f = float(v.strip())
            except ValueError:
                raise ValueError(f"class_weights {raw!r}: {v.strip()!r} is not a number") from None
        elif isinstance(v, bool) or not isinstance(v, Real):
            raise ValueError(f"class_weights {raw!r}: {v!r} is not a number")
        else:
            f = float(v)
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"class_weights {raw!r}: every weight must be finite and > 0, got {v!r}")
        out.append(f)
    return out


def resolve_class_weights(
    spec: str | Sequence[float] | None,
    labels_in_train: Sequence[str] | np.ndarray,
    classes: tuple[str, ...] = LABELS,
) -> list[float] | None:
    """Turn a ``class_weights`` setting into one weight per class (in ``classes`` order) or ``None``.

    ``spec``:
        * ``"auto"`` -- sklearn ``compute_class_weight("balanced")``, i.e.
          ``n_samples / (n_classes * count_c)``, from the class counts of ``labels_in_train``.
          The weights reflect exactly the labels passed: pass the labels the model is really trained
          on. If those were oversampled to balance, the weights come out ~1 (the imbalance was already
          handled); pass the pre-oversampling labels to keep the weights of the raw distribution.
        * ``"none"`` (or ``None``) -- no weighting.
        * ``len(classes)`` positive numbers, as a list/tuple or a comma-separated string ``"1,2,2"``.

    ``labels_in_train`` holds label names (``"long"``...), or integer class ids indexing ``classes``.
    Raises ``ValueError`` with a readable message for anything else.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key == "none":
            return None
        if key == "auto":
            return _balanced_weights(labels_in_train, classes)
        if "," in spec:
            return _parse_explicit(spec.split(","), len(classes), spec)
        raise ValueError(
            f"class_weights {spec!r}: expected 'auto', 'none', or {len(classes)} comma-separated "
            f"positive numbers like '1,2,2'"
        )
    if isinstance(spec, (list, tuple, np.ndarray)):
        return _parse_explicit(list(spec), len(classes), spec)
    raise ValueError(
        f"class_weights {spec!r}: expected 'auto', 'none', or a list of {len(classes)} positive numbers"
    )


def _balanced_weights(labels: Sequence[str] | np.ndarray, classes: tuple[str, ...]) -> list[float]:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("class_weights 'auto' needs a non-empty 1-D sequence of training labels")
    if np.issubdtype(y.dtype, np.integer):
        bad = sorted({int(v) for v in y if not 0 <= v < len(classes)})
        if bad:
            raise ValueError(f"class_weights 'auto': class ids {bad} are outside 0..{len(classes) - 1}")
        y = np.asarray(classes, dtype=object)[y]
    y = y.astype(object)
    present = set(y.tolist())
    unknown = sorted(str(v) for v in present - set(classes))
    if unknown:
        raise ValueError(f"class_weights 'auto': unknown labels {unknown}; expected {list(classes)}")
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(
            f"class_weights 'auto': no training examples of {missing}, so balanced weights are undefined"
        )
    weights = compute_class_weight("balanced", classes=np.asarray(classes, dtype=object), y=y)
    return [float(w) for w in weights]
