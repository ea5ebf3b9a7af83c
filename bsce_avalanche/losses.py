"""The Balanced Softmax Cross-Entropy (BSCE) as a pure function and a thin module.

BSCE (Jodelet, Liu & Murata, ICANN 2021 / CVIU 2022) trains with ``cross_entropy(logits + tau * log(prior),
targets)``, ``prior[j]`` the frequency of class ``j`` in the training data, and predicts with the plain ``logits``:
the bias toward frequent (new) classes stays in the adjustment, out of the weights (``tau=0``: plain cross-entropy,
``tau=1``: BSCE).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._numbers import plain_number
from .catalog import MAX_TAU, ZERO_PRIOR_OFFSET, check_tau as _check_tau

__all__ = ["ZERO_PRIOR_OFFSET", "MAX_TAU", "as_class_counts", "log_prior_adjustment", "posthoc_adjustment",
           "logit_adjusted", "check_targets_have_prior", "balanced_softmax_cross_entropy",
           "BalancedSoftmaxCrossEntropyLoss"]

CountsLike = Union[Tensor, Sequence[float]]
_REDUCTIONS = ("mean", "sum", "none")


def as_class_counts(counts: CountsLike, name: str = "class_counts") -> Tensor:
    """Class counts (or frequencies: only their ratios matter), checked, as a 1-D float64 tensor."""
    try:
        tensor = torch.as_tensor(counts, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a 1-D sequence or tensor of non-negative numbers, got "
                        f"{type(counts).__name__}: {err}") from None
    if tensor.dim() != 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one entry per class), got shape "
                         f"{tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all():
        bad = torch.nonzero(~torch.isfinite(tensor)).flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf at classes {bad[:10]}; pass finite counts.")
    if (tensor < 0).any():
        bad = torch.nonzero(tensor < 0).flatten().tolist()
        raise ValueError(f"{name} contains negative values at classes {bad[:10]}; counts must be >= 0.")
    if tensor.sum() <= 0:
        raise ValueError(f"{name} is all zeros: at least one class needs a positive count to define a prior.")
    return tensor


def log_prior_adjustment(class_counts: CountsLike, tau: float = 1.0, num_classes: int | None = None, *,
                         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The vector ``tau * log(prior)`` that BSCE adds to the logits.

    :param class_counts: number (or frequency) of training samples per class.
    :param tau: strength of the adjustment; ``0`` gives a zero vector (plain CE).
    :param num_classes: length of the result: shorter counts are padded with zeros, longer ones
        are an error unless the extra entries are zero.
    :return: zero-count classes get :data:`ZERO_PRIOR_OFFSET` when ``tau > 0``. A prior uniform over
        the classes present gives zeros for them (a constant, which the softmax ignores), so BSCE is
        then exactly, not only up to rounding, the cross-entropy over those classes.
    """
    counts = as_class_counts(class_counts)
    tau = _check_tau(tau)
    if num_classes is not None:
        num_classes = plain_number(num_classes)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        if counts.numel() > num_classes:
            if counts[num_classes:].any():
                last = int(torch.nonzero(counts).max())
                raise ValueError(f"The prior has samples of class {last} but the model has only {num_classes} "
                                 f"output units: give the model at least {last + 1} outputs (or use an "
                                 "IncrementalClassifier that grows with the data).")
            counts = counts[:num_classes]
        elif counts.numel() < num_classes:
            counts = torch.cat([counts, counts.new_zeros(num_classes - counts.numel())])
    if tau == 0.0:
        return torch.zeros(counts.numel(), dtype=dtype, device=device)
    present = counts > 0
    log_prior = torch.log(counts.clamp_min(1e-300) / counts.sum())
    smallest = float(log_prior[present].min())
    if tau * smallest <= ZERO_PRIOR_OFFSET / 2:  # only extreme given priors get here (tau <= MAX_TAU)
        raise ValueError(f"tau * log(prior) = {tau:g} * {smallest:.4g} for the rarest class falls below "
                         f"{ZERO_PRIOR_OFFSET / 2:g}, where a class counts as absent: use a smaller tau or a less "
                         "extreme prior.")
    if bool((counts[present] == counts[present][0]).all()):  # uniform: a constant, i.e. nothing
        log_prior = torch.zeros_like(log_prior)
    adjustment = torch.where(present, tau * log_prior, torch.full_like(log_prior, ZERO_PRIOR_OFFSET))
    return adjustment.to(device=device, dtype=dtype)


def posthoc_adjustment(class_counts: CountsLike, tau: float = 1.0, num_classes: int | None = None, *,
                       device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The vector that post-hoc logit adjustment (Menon et al., ICLR 2021) adds to a CE-trained model's logits
    at prediction time: ``-tau * log(prior)`` for the classes present in the prior, :data:`ZERO_PRIOR_OFFSET`
    for the absent ones (never predicted, at any ``tau``, as BSCE's training loss removes them).

    BSCE adds ``+tau * log(prior)`` while training and predicts with the plain logits; post-hoc adjustment
    trains with plain CE and subtracts it when predicting. Arguments as :func:`log_prior_adjustment`.
    """
    counts = as_class_counts(class_counts)
    size = counts.numel() if num_classes is None else num_classes
    adjustment = log_prior_adjustment(counts, tau, num_classes, dtype=torch.float64)
    present = log_prior_adjustment(counts, 1.0, size, dtype=torch.float64) > ZERO_PRIOR_OFFSET / 2
    return torch.where(present, -adjustment, torch.full_like(adjustment, ZERO_PRIOR_OFFSET)).to(device=device,
                                                                                                 dtype=dtype)


def logit_adjusted(logits: Tensor, class_counts: CountsLike, tau: float = 1.0) -> Tensor:
    """``logits - tau * log(prior)``, classes absent from the prior at :data:`ZERO_PRIOR_OFFSET`: the scores
    whose argmax is the post-hoc logit-adjusted prediction (in at least float32)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}.")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype) + posthoc_adjustment(class_counts, tau, logits.shape[1], device=logits.device, dtype=dtype)


def check_targets_have_prior(targets: Tensor, adjustment: Tensor) -> None:
    """Raise if a target class lies outside the logits or has zero prior (one host-device sync)."""
    num_classes = adjustment.numel()
    if targets.numel() == 0:
        return
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"Target class {hi if hi >= num_classes else lo} is outside the model's {num_classes} "
                         f"output units: labels must lie in [0, {num_classes - 1}].")
    zero = adjustment[targets] <= ZERO_PRIOR_OFFSET / 2
    if zero.any():
        classes = sorted(set(targets[zero].tolist()))
        raise ValueError(f"Targets of classes {classes[:10]} have a zero count in the prior, so BSCE cannot train "
                         "on them (their probability under the prior is 0). Give these classes a positive count, "
                         "or use a prior computed from the training data (prior='auto').")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    return reduction


def _class_indices(targets: Tensor, logits: Tensor) -> Tensor:
    """``targets`` as ``long`` class indices, one per row of ``logits``; float targets are refused, as by
    ``F.cross_entropy``."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor of class indices, got {type(targets).__name__}.")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        fix = " (e.g. Keras-style labels): pass targets.view(-1)" if targets.dim() == 2 and targets.shape[1] == 1 \
            else ""
        raise ValueError(f"targets must have shape (N,) = ({logits.shape[0]},), one class index per row of the "
                         f"logits, got {tuple(targets.shape)}{fix}.")
    if targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}: convert whole-number "
                        "labels with targets.long() (class-probability targets are not supported).")
    return targets.long()


def balanced_softmax_cross_entropy(logits: Tensor, targets: Tensor, class_counts: CountsLike, tau: float = 1.0,
                                   reduction: str = "mean") -> Tensor:
    """Balanced Softmax Cross-Entropy: ``cross_entropy(logits + tau * log(prior), targets)``; validates
    everything, targets included (one host sync), unlike the module form.

    :param logits: ``(N, C)`` unnormalised scores.
    :param targets: ``(N,)`` integer class indices.
    :param class_counts: ``(C,)`` samples (or frequency) per class; zero-count classes leave the softmax.
    :param tau: adjustment strength (``0`` = plain CE, ``1`` = BSCE).
    :param reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in ``F.cross_entropy``.
    """
    _check_reduction(reduction)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}.")
    counts = as_class_counts(class_counts)
    if counts.numel() != logits.shape[1]:
        raise ValueError(f"class_counts has {counts.numel()} entries but logits have {logits.shape[1]} classes: "
                         "pass one count per output unit.")
    # in at least float32, as the module: fp16 cannot hold tau * log(prior) nor ZERO_PRIOR_OFFSET
    adjustment = log_prior_adjustment(counts, tau, device=logits.device,
                                      dtype=torch.promote_types(logits.dtype, torch.float32))
    targets = _class_indices(targets, logits)
    check_targets_have_prior(targets, adjustment)
    return F.cross_entropy(logits + adjustment, targets, reduction=reduction)


class BalancedSoftmaxCrossEntropyLoss(nn.Module):
    """Module form of :func:`balanced_softmax_cross_entropy` holding the class counts.

    ``class_counts`` (and ``tau``) may be set after construction, e.g. once per experience: they are
    validated and the log-prior computed when set, and moved to the logits' device and dtype once; a
    call is then ``F.cross_entropy(logits + adjustment, targets)`` without host syncs. A target of a
    zero-count class is an error; that check (one host sync) runs only when some count is zero. The
    adjustment is applied in at least float32. ``reduction`` is a plain attribute strategies may toggle.
    """

    def __init__(self, class_counts: CountsLike | None = None, tau: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.register_buffer("_counts", None)
        self._tau = _check_tau(tau)
        self._adjustment: Tensor | None = None  # tau * log prior, float64 on the CPU
        self._cast: Tensor | None = None  # the same on the logits' last device and dtype
        self._has_zero_counts = False
        if class_counts is not None:
            self.class_counts = class_counts
        self.register_load_state_dict_post_hook(BalancedSoftmaxCrossEntropyLoss._after_load)

    @property
    def class_counts(self) -> Tensor | None:
        return self._counts

    @class_counts.setter
    def class_counts(self, counts: CountsLike) -> None:
        self._counts = as_class_counts(counts).to(torch.float32)
        self._set_adjustment()

    @property
    def tau(self) -> float:
        return self._tau

    @tau.setter
    def tau(self, tau: float) -> None:
        self._tau = _check_tau(tau)
        self._set_adjustment()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        counts = state_dict.get(prefix + "_counts")
        if counts is not None:  # any number of classes, into a loss with or without counts: set, validated
            self.class_counts = counts
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def _after_load(module, incompatible_keys) -> None:
        module._set_adjustment()  # load_state_dict copied counts into the buffer in place

    def _set_adjustment(self) -> None:
        counts = self._counts
        self._adjustment = None if counts is None else log_prior_adjustment(counts, self._tau, dtype=torch.float64)
        self._has_zero_counts = counts is not None and bool((counts == 0).any())
        self._cast = None

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        adjustment = self._cast
        dtype = torch.promote_types(logits.dtype, torch.float32)
        if adjustment is None or adjustment.device != logits.device or adjustment.dtype != dtype:
            if self._adjustment is None:
                raise RuntimeError("BalancedSoftmaxCrossEntropyLoss has no class counts yet: set "
                                   "`loss.class_counts = counts` before calling it.")
            adjustment = self._cast = self._adjustment.to(device=logits.device, dtype=dtype)
        if logits.dim() != 2 or logits.shape[1] != adjustment.numel():
            raise ValueError(f"logits of shape {tuple(logits.shape)} do not match the {adjustment.numel()} class "
                             "counts: pass (N, C) logits with one count per output unit.")
        targets = _class_indices(targets, logits)
        if self._has_zero_counts:
            check_targets_have_prior(targets, adjustment)
        return F.cross_entropy(logits + adjustment, targets, reduction=self.reduction)

    def extra_repr(self) -> str:
        n = None if self._counts is None else self._counts.numel()
        return f"num_classes={n}, tau={self.tau}, reduction={self.reduction!r}"
