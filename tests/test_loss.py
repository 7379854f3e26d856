"""Focal loss against cross-entropy and an independent softmax-probability reference; class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from processor.loss import FocalLoss, focal_loss, resolve_class_weights
from processor.schema import LABELS


def _batch(seed: int, n: int = 64, c: int = 3, scale: float = 3.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=g) * scale).to(dtype)
    targets = torch.randint(0, c, (n,), generator=g)
    weight = (torch.rand(c, generator=g) * 3 + 0.2).to(dtype)
    return logits, targets, weight


def _reference(logits, targets, gamma, weight, reduction, mae=0.0):
    """FL (+ the MAE term) written from softmax probabilities, independently of log_softmax/nll_loss."""
    p = torch.softmax(logits.double(), dim=1)
    p_y = p[torch.arange(len(targets)), targets]
    w_y = torch.ones_like(p_y) if weight is None else weight.double()[targets]
    per = -w_y * (1 - p_y) ** gamma * torch.log(p_y) + mae * w_y * (1 - p_y)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / w_y.sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_gamma_zero_is_exactly_cross_entropy(seed, reduction, weighted):
    logits, targets, weight = _batch(seed)
    w = weight if weighted else None
    got = focal_loss(logits, targets, gamma=0.0, weight=w, reduction=reduction)
    want = F.cross_entropy(logits, targets, weight=w, reduction=reduction)
    assert got.shape == want.shape
    assert torch.equal(got, want)


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_softmax_reference(seed, gamma, reduction, weighted):
    logits, targets, weight = _batch(seed, dtype=torch.float64)
    w = weight if weighted else None
    got = focal_loss(logits, targets, gamma=gamma, weight=w, reduction=reduction)
    torch.testing.assert_close(got, _reference(logits, targets, gamma, w, reduction), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mae", [0.5, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_mae_term_matches_reference(mae, reduction, weighted):
    logits, targets, weight = _batch(11, dtype=torch.float64)
    w = weight if weighted else None
    got = focal_loss(logits, targets, gamma=0.5, weight=w, reduction=reduction, mae=mae)
    torch.testing.assert_close(got, _reference(logits, targets, 0.5, w, reduction, mae), rtol=1e-10, atol=1e-12)
    module = FocalLoss(gamma=0.5, weight=w, reduction=reduction, mae=mae)
    torch.testing.assert_close(module(logits, targets), got)
    assert f"mae={mae}" in repr(module)


def test_mae_term_is_bounded_where_the_log_term_is_not():
    """Why it is there: a confidently contradicted (possibly mislabeled) event adds at most mae per
    unit weight, while -log p_y grows without bound."""
    logits = torch.tensor([[30.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([1])
    with_mae = focal_loss(logits, target, gamma=0.0, mae=2.0)
    without = focal_loss(logits, target, gamma=0.0)
    assert 1.99 < float(with_mae - without) <= 2.0
    assert float(without) > 29


@pytest.mark.parametrize("mae", [-0.1, float("nan"), True, "1"])
def test_bad_mae_rejected(mae):
    logits, targets, _ = _batch(0)
    with pytest.raises(ValueError, match="mae"):
        focal_loss(logits, targets, gamma=1.0, mae=mae)
    with pytest.raises(ValueError, match="mae"):
        FocalLoss(gamma=1.0, mae=mae)


def test_mean_normalises_by_sum_of_target_weights():
    logits, targets, weight = _batch(7, dtype=torch.float64)
    total = focal_loss(logits, targets, gamma=2.0, weight=weight, reduction="sum")
    mean = focal_loss(logits, targets, gamma=2.0, weight=weight, reduction="mean")
    torch.testing.assert_close(mean, total / weight[targets].sum())


def test_focusing_down_weights_easy_examples():
    logits = torch.tensor([[6.0, 0.0, 0.0],   # confident and correct
                           [0.0, 0.0, 0.0],   # uncertain
                           [0.0, 0.0, 6.0]])  # confidently wrong
    targets = torch.tensor([0, 0, 0])
    ce = F.cross_entropy(logits, targets, reduction="none")
    ratio = focal_loss(logits, targets, gamma=2.0, reduction="none") / ce
    assert ratio[0] < ratio[1] < ratio[2] <= 1.0
    assert ratio[0] < 1e-4  # (1 - p)^2 with p ~ 0.995


def test_loss_decreases_with_gamma():
    logits, targets, weight = _batch(11)
    values = [focal_loss(logits, targets, gamma=g, weight=weight).item() for g in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("gamma", [0.0, 0.25, 1.0, 2.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_extreme_logits_give_finite_values_and_gradients(gamma, weighted):
    logits = torch.tensor([[1e4, -1e4, 0.0],    # certain and right
                           [-1e4, 1e4, 0.0],    # certain and wrong
                           [1e4, 1e4, -1e4],    # tie at huge scale
                           [0.0, 0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 0, 1, 2])
    weight = torch.tensor([1.0, 2.0, 3.0]) if weighted else None
    loss = focal_loss(logits, targets, gamma=gamma, weight=weight)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # The certain-and-right row contributes nothing; the certain-and-wrong one pushes its logits apart.
    assert torch.all(logits.grad[0] == 0)
    assert logits.grad[1, 0] < 0 < logits.grad[1, 1]


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradient_matches_finite_differences(gamma):
    logits, targets, weight = _batch(3, n=6, scale=1.0, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: focal_loss(x, targets, gamma=gamma, weight=weight), (logits,))


def test_module_wraps_functional_and_keeps_weight_as_buffer():
    logits, targets, weight = _batch(4)
    module = FocalLoss(gamma=1.5, weight=weight.tolist())
    torch.testing.assert_close(module(logits, targets), focal_loss(logits, targets, gamma=1.5, weight=weight))
    assert "weight" in dict(module.named_buffers())
    assert torch.equal(module.state_dict()["weight"], weight)
    assert module.double().weight.dtype == torch.float64
    assert FocalLoss(gamma=2.0).weight is None
    assert "gamma=1.5" in repr(module)


@pytest.mark.parametrize("gamma", [-0.1, float("nan"), float("inf"), True, "2"])
def test_bad_gamma_rejected(gamma):
    logits, targets, _ = _batch(0)
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, targets, gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=gamma)


def test_bad_shapes_and_reduction_rejected():
    logits, targets, weight = _batch(0)
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, targets, gamma=1.0, reduction="avg")
    with pytest.raises(ValueError, match="logits"):
        focal_loss(logits[0], targets, gamma=1.0)
    with pytest.raises(ValueError, match="targets"):
        focal_loss(logits, targets[:-1], gamma=1.0)
    with pytest.raises(ValueError, match="weight"):
        focal_loss(logits, targets, gamma=1.0, weight=weight[:2])


# ---- resolve_class_weights -------------------------------------------------------------------

def test_auto_weights_are_balanced_formula():
    labels = ["long"] * 6 + ["short"] * 3 + ["no_trade"] * 1
    n, k = len(labels), len(LABELS)
    expected = [n / (k * labels.count(c)) for c in LABELS]
    got = resolve_class_weights("auto", labels)
    assert got == pytest.approx(expected, rel=1e-12)
    assert all(type(v) is float for v in got)
    # Order follows LABELS, not the order labels first appear in.
    assert resolve_class_weights("auto", list(reversed(labels))) == pytest.approx(expected)
    # Integer class ids and numpy arrays give the same result.
    ids = np.array([LABELS.index(c) for c in labels])
    assert resolve_class_weights(" AUTO ", ids) == pytest.approx(expected)


def test_auto_weights_after_balanced_oversampling_are_one():
    labels = np.array(["long", "short", "no_trade"] * 40)
    assert resolve_class_weights("auto", labels) == pytest.approx([1.0, 1.0, 1.0])


def test_none_spec():
    assert resolve_class_weights("none", ["long"]) is None
    assert resolve_class_weights("None", []) is None
    assert resolve_class_weights(None, []) is None


@pytest.mark.parametrize("spec,expected", [
    ([1, 2, 2], [1.0, 2.0, 2.0]),
    ((0.5, 1.0, 3.25), [0.5, 1.0, 3.25]),
    ("1,2,2", [1.0, 2.0, 2.0]),
    (" 1.5 , 2 ,0.25 ", [1.5, 2.0, 0.25]),
    (np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0]),
])
def test_explicit_weights(spec, expected):
    got = resolve_class_weights(spec, [])
    assert got == expected
    assert all(type(v) is float for v in got)


@pytest.mark.parametrize("spec,match", [
    ([1, 2], "expected 3 values"),
    ("1,2,2,2", "expected 3 values"),
    ([1, 0, 2], "> 0"),
    ("1,-2,2", "> 0"),
    ([1, float("nan"), 2], "finite"),
    ("a,b,c", "not a number"),
    ([1, "x", 2], "not a number"),
    ([1, True, 2], "not a number"),
    ("balanced", "'auto', 'none'"),
    (3, "'auto', 'none'"),
])
def test_bad_specs_raise(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_class_weights(spec, ["long", "short", "no_trade"])


def test_auto_needs_every_class_and_known_labels():
    with pytest.raises(ValueError, match="no training examples of \\['no_trade'\\]"):
        resolve_class_weights("auto", ["long", "short", "long"])
    with pytest.raises(ValueError, match="unknown labels \\['buy'\\]"):
        resolve_class_weights("auto", ["long", "short", "no_trade", "buy"])
    with pytest.raises(ValueError, match="outside"):
        resolve_class_weights("auto", np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="non-empty"):
        resolve_class_weights("auto", [])


def test_weights_feed_the_loss():
    """End to end: resolved weights used in the loss equal weighted CE at gamma 0."""
    labels = ["long"] * 5 + ["short"] * 2 + ["no_trade"] * 3
    w = torch.tensor(resolve_class_weights("auto", labels))
    targets = torch.tensor([LABELS.index(c) for c in labels])
    logits = torch.randn(len(labels), 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(FocalLoss(0.0, w)(logits, targets), F.cross_entropy(logits, targets, weight=w))
    assert math.isfinite(FocalLoss(2.0, w)(logits, targets).item())
