"""The BSCE maths, checked against an independent float64 NumPy reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bsce_avalanche import (
    BalancedSoftmaxCrossEntropyLoss,
    balanced_softmax_cross_entropy,
    log_prior_adjustment,
)
from bsce_avalanche.losses import ZERO_PRIOR_OFFSET


def reference_bsce(logits, targets, counts, tau=1.0):
    """-log( n_y^tau e^{z_y} / sum_{j: n_j>0} n_j^tau e^{z_j} ), per sample, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    losses = []
    for zi, y in zip(z, np.asarray(targets)):
        keep = n > 0 if tau > 0 else np.ones_like(n, dtype=bool)
        w = np.where(keep, np.power(np.where(keep, n, 1.0), tau), 0.0)
        num = w[y] * np.exp(zi[y] - zi.max())
        den = np.sum(w * np.exp(zi - zi.max()))
        losses.append(-math.log(num / den))
    return np.array(losses)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(16, 5, generator=g) * 3
    targets = torch.randint(0, 5, (16,), generator=g)
    return logits, targets


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_uniform_prior_is_plain_cross_entropy(batch, reduction):
    logits, targets = batch
    got = balanced_softmax_cross_entropy(logits, targets, [7, 7, 7, 7, 7], reduction=reduction)
    torch.testing.assert_close(got, F.cross_entropy(logits, targets, reduction=reduction))


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_matches_independent_reference(batch, tau):
    logits, targets = batch
    counts = [500, 20, 20, 3, 100]
    got = balanced_softmax_cross_entropy(logits.double(), targets, counts, tau=tau, reduction="none")
    np.testing.assert_allclose(got.numpy(), reference_bsce(logits, targets, counts, tau), rtol=1e-10)


def test_tau_zero_is_plain_cross_entropy(batch):
    logits, targets = batch
    got = balanced_softmax_cross_entropy(logits, targets, [500, 1, 2, 3, 4], tau=0.0)
    torch.testing.assert_close(got, F.cross_entropy(logits, targets))


def test_scaling_counts_changes_nothing(batch):
    logits, targets = batch
    counts = torch.tensor([5.0, 1, 2, 9, 4])
    a = balanced_softmax_cross_entropy(logits, targets, counts)
    b = balanced_softmax_cross_entropy(logits, targets, counts * 1000)
    c = balanced_softmax_cross_entropy(logits, targets, counts / counts.sum())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_shifting_logits_changes_nothing(batch):
    logits, targets = batch
    counts = [5, 1, 2, 9, 4]
    a = balanced_softmax_cross_entropy(logits, targets, counts)
    b = balanced_softmax_cross_entropy(logits + 17.0, targets, counts)
    torch.testing.assert_close(a, b)


def test_frequent_class_is_penalised_in_training():
    # Equal logits: the rare class's target gets the larger loss under BSCE (its
    # logit must grow more to win), while plain CE sees no difference.
    logits = torch.zeros(2, 2)
    targets = torch.tensor([0, 1])
    losses = balanced_softmax_cross_entropy(logits, targets, [90, 10], reduction="none")
    assert losses[1] > losses[0]
    np.testing.assert_allclose(losses.numpy(), [-math.log(0.9), -math.log(0.1)], rtol=1e-6)


def test_zero_count_classes_leave_softmax_without_nan():
    logits = torch.randn(8, 4, requires_grad=True)
    targets = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    counts = [30, 10, 0, 0]
    loss = balanced_softmax_cross_entropy(logits, targets, counts)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[:, 2:] == 0), "units with zero prior must get no gradient"
    restricted = balanced_softmax_cross_entropy(logits[:, :2].detach(), targets, counts[:2])
    torch.testing.assert_close(loss.detach(), restricted)


def test_target_with_zero_count_is_an_error():
    with pytest.raises(ValueError, match=r"classes \[2\] have a zero count"):
        balanced_softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 2]), [1, 1, 0])


def test_target_outside_logits_is_an_error():
    with pytest.raises(ValueError, match="outside the model's 3 output units"):
        balanced_softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]), [1, 1, 1])


@pytest.mark.parametrize(
    "counts, message",
    [
        ([1, 2], "2 entries but logits have 3"),
        ([1, -2, 3], "negative values at classes \\[1\\]"),
        ([1, float("nan"), 3], "NaN or inf"),
        ([0, 0, 0], "all zeros"),
        ([[1, 2, 3]], "1-D"),
        ("abc", "must be a 1-D sequence"),
    ],
)
def test_bad_counts_are_clear_errors(counts, message):
    with pytest.raises((ValueError, TypeError), match=message):
        balanced_softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), counts)


@pytest.mark.parametrize("tau", [-0.1, float("inf"), float("nan")])
def test_bad_tau_is_a_clear_error(tau):
    with pytest.raises(ValueError, match="tau must be finite and >= 0"):
        balanced_softmax_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), [1, 1, 1], tau=tau)


def test_adjustment_pads_and_truncates_to_model_width():
    adj = log_prior_adjustment([3, 1], num_classes=4)
    np.testing.assert_allclose(adj[:2].numpy(), np.log([0.75, 0.25]), rtol=1e-6)
    assert torch.all(adj[2:] == ZERO_PRIOR_OFFSET)
    assert log_prior_adjustment([3, 1, 0, 0], num_classes=2).numel() == 2
    with pytest.raises(ValueError, match="samples of class 2 but the model has only 2"):
        log_prior_adjustment([3, 1, 5], num_classes=2)


def test_module_holds_settable_counts_and_reduction(batch):
    logits, targets = batch
    loss = BalancedSoftmaxCrossEntropyLoss()
    with pytest.raises(RuntimeError, match="no class counts yet"):
        loss(logits, targets)
    loss.class_counts = [4, 3, 2, 1, 1]
    expected = balanced_softmax_cross_entropy(logits, targets, [4, 3, 2, 1, 1])
    torch.testing.assert_close(loss(logits, targets), expected)
    loss.reduction = "none"
    assert loss(logits, targets).shape == (16,)
    loss.class_counts = torch.ones(5)
    torch.testing.assert_close(loss(logits, targets), F.cross_entropy(logits, targets, reduction="none"))
    assert "tau=1.0" in repr(loss)
    with pytest.raises(ValueError, match="reduction must be one of"):
        BalancedSoftmaxCrossEntropyLoss(reduction="avg")


@pytest.mark.parametrize("form", ["function", "module"])
def test_float_targets_are_an_error_as_in_torch(batch, form):
    logits, targets = batch
    loss = (
        (lambda z, y: balanced_softmax_cross_entropy(z, y, [1] * 5))
        if form == "function"
        else BalancedSoftmaxCrossEntropyLoss([1] * 5)
    )
    with pytest.raises(TypeError, match=r"integer class indices, got dtype torch.float32.*targets.long\(\)"):
        loss(logits, targets.float() + 0.5)  # used to be truncated silently
    torch.testing.assert_close(loss(logits, targets.int()), loss(logits, targets))  # int32 is fine


def test_module_computes_the_adjustment_when_counts_are_set(batch, monkeypatch):
    from bsce_avalanche import losses

    logits, targets = batch
    counts = [4, 3, 2, 1, 1]
    expected = {
        (tau, dtype): balanced_softmax_cross_entropy(logits.to(dtype), targets, counts, tau=tau)
        for tau in (1.0, 0.5) for dtype in (torch.float32, torch.float64)
    }
    calls = []
    real = losses.log_prior_adjustment
    monkeypatch.setattr(losses, "log_prior_adjustment", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(losses, "check_targets_have_prior", lambda *a: pytest.fail("per-call host sync"))
    loss = BalancedSoftmaxCrossEntropyLoss(counts)
    for _ in range(3):
        torch.testing.assert_close(loss(logits, targets), expected[1.0, torch.float32])
    # another dtype: the adjustment is moved once, the maths are the same
    torch.testing.assert_close(loss(logits.double(), targets), expected[1.0, torch.float64])
    assert len(calls) == 1
    loss.tau = 0.5
    torch.testing.assert_close(loss(logits, targets), expected[0.5, torch.float32])
    assert len(calls) == 2
    with pytest.raises(ValueError, match="tau must be finite"):
        loss.tau = float("nan")
    # load_state_dict copies counts in place: the adjustment follows them
    other = BalancedSoftmaxCrossEntropyLoss([1, 1, 1, 1, 1], tau=0.5)
    other.load_state_dict(loss.state_dict())
    torch.testing.assert_close(other(logits, targets), expected[0.5, torch.float32])


def test_module_refuses_logits_of_another_width(batch):
    logits, targets = batch
    with pytest.raises(ValueError, match=r"shape \(16, 5\) do not match the 1 class counts"):
        BalancedSoftmaxCrossEntropyLoss([3])(logits, targets)  # would broadcast silently


def test_module_refuses_zero_count_targets_and_syncs_only_when_a_count_is_zero(monkeypatch):
    from bsce_avalanche import losses

    logits, targets, counts = torch.zeros(2, 3), torch.tensor([0, 2]), [1, 1, 0]
    with pytest.raises(ValueError, match=r"classes \[2\] have a zero count"):
        BalancedSoftmaxCrossEntropyLoss(counts)(logits, targets)
    checked = BalancedSoftmaxCrossEntropyLoss(counts)(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(checked, torch.tensor(math.log(2.0)))
    monkeypatch.setattr(losses, "check_targets_have_prior", lambda *a: pytest.fail("host sync"))
    BalancedSoftmaxCrossEntropyLoss([1, 1, 2])(logits, targets)  # no zero count: no check


def test_module_applies_the_adjustment_in_float32_to_half_logits():
    counts = [1000, 1, 0]
    logits = torch.zeros(2, 3, dtype=torch.bfloat16)
    expected = balanced_softmax_cross_entropy(logits.float(), torch.tensor([0, 1]), counts)
    loss = BalancedSoftmaxCrossEntropyLoss(counts)(logits, torch.tensor([0, 1]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)
