"""``BalancedSoftmaxPlugin``: train any softmax-CE Avalanche strategy with BSCE.

The plugin adapts three callbacks to the maths in :mod:`bsce_avalanche.losses` and the
prior estimation in :mod:`bsce_avalanche.priors`:

* ``before_training``: check the strategy, wrap its criterion;
* ``before_training_epoch``: compute the class prior once per experience (when the
  strategy's training loader changes), from label tensors;
* ``after_training``: give the strategy its original criterion back.

The wrapped criterion adds ``tau * log(prior)`` to the logits only for the training
mini-batch's own loss (``criterion(strategy.mb_output, ...)`` while training).
``strategy.mb_output`` itself is never changed, so evaluation outputs, eval loss,
metrics and the inputs of other loss terms (LwF / iCaRL distillation, BiC, GEM's
reference gradients) all see the plain logits.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche.training.plugins import SupervisedPlugin

from .losses import (
    BalancedSoftmaxCrossEntropyLoss,
    _check_tau,
    as_class_counts,
    check_targets_have_prior,
    log_prior_adjustment,
)
from .priors import RunningClassCounts, loader_class_counts

__all__ = ["BalancedSoftmaxPlugin", "PRIOR_MODES"]

#: Prior modes accepted by ``BalancedSoftmaxPlugin(prior=...)``.
PRIOR_MODES = ("auto", "sampling", "dataset", "batch")


def _incompatible_strategies():
    """Strategies whose training loss never goes through ``strategy._criterion``."""
    from avalanche.training import DER, ER_ACE, ER_AML

    return {
        ER_ACE: "ER-ACE replaces the criterion with its own asymmetric loss (ACECriterion) "
        "from the second experience on, and already protects old classes by masking "
        "new-class logits; use ER_ACE without BalancedSoftmaxPlugin.",
        ER_AML: "ER-AML trains with its own metric-learning loss (AMLCriterion) from the "
        "second experience on, not the criterion; use ER_AML without the plugin.",
        DER: "DER computes its classification losses with F.cross_entropy directly, not "
        "through the criterion; use DER without the plugin.",
    }


class _BalancedCriterion:
    """Base of the criterion wrappers installed by the plugin."""

    def __init__(self, original, strategy, plugin: "BalancedSoftmaxPlugin"):
        self.original = original
        self.strategy = strategy
        self.plugin = plugin

    def _is_training_loss(self, logits: Tensor) -> bool:
        return self.strategy.is_training and logits is self.strategy.mb_output

    # Strategies (e.g. MIR) toggle ``criterion.reduction``: forward it.
    @property
    def reduction(self):
        return self.original.reduction

    @reduction.setter
    def reduction(self, value):
        self.original.reduction = value

    def __repr__(self):
        return f"{type(self).__name__}({self.original!r}, tau={self.plugin.tau})"


class _SoftmaxCECriterion(_BalancedCriterion):
    """``criterion(logits + tau * log prior, y)`` for a softmax cross-entropy criterion."""

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self._is_training_loss(logits):
            logits = logits + self.plugin.adjustment(logits, targets)
        return self.original(logits, targets)


class _ICaRLCriterion(_BalancedCriterion):
    """iCaRL's loss with its classification term replaced by BSCE.

    iCaRL trains with a sigmoid BCE whose targets are one-hot for the label and the old
    model's sigmoid outputs for old classes (distillation). We keep that distillation
    term (BCE between the new and old sigmoid outputs on old classes, averaged over
    elements as iCaRL does) and replace the one-hot classification part with BSCE.
    ``ICaRLLossPlugin`` stores the old model's logits in ``before_forward`` and expects
    its ``__call__`` to consume them; we consume them here, so no stale logits remain.
    """

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        if not self._is_training_loss(logits):
            return self.original(logits, targets)
        icarl = self.original
        old_logits, icarl.old_logits = icarl.old_logits, None
        loss = F.cross_entropy(logits + self.plugin.adjustment(logits, targets), targets.long())
        if old_logits is not None and len(icarl.old_classes) > 0:
            old = list(icarl.old_classes)
            loss = loss + F.binary_cross_entropy_with_logits(
                logits[:, old], torch.sigmoid(old_logits[:, old])
            )
        return loss

    @property
    def reduction(self):
        return "mean"

    @reduction.setter
    def reduction(self, value):
        raise ValueError("iCaRL's balanced loss supports only reduction='mean'.")


class BalancedSoftmaxPlugin(SupervisedPlugin, supports_distributed=True):
    """Train an Avalanche strategy with the Balanced Softmax Cross-Entropy.

    ``Replay(model, opt, CrossEntropyLoss(), mem_size=2000, plugins=[BalancedSoftmaxPlugin()])``

    :param prior: where the class prior comes from, recomputed for every training
        experience:

        * ``"auto"`` (default): the label distribution the training loader really draws
          (``"sampling"``) when its sampling is known (PyTorch ``DataLoader`` with a
          random/sequential sampler, Avalanche's task-balanced and replay loaders),
          otherwise the running label counts of the mini-batches (``"batch"``).
        * ``"sampling"``: the loader's effective label distribution; an error for
          loaders whose sampling is unknown.
        * ``"dataset"``: the class counts of all the data trained on in the experience
          (new data + memory), as in the paper. With Avalanche's ``ReplayDataLoader``
          (half of each mini-batch from memory) this over-corrects: see the README.
        * ``"batch"``: the label counts of the mini-batches drawn so far in the
          experience (costs a ``bincount`` and a ``log`` per mini-batch).
        * a sequence or tensor of per-class counts or frequencies, used as is.
    :param tau: strength of the logit adjustment (``0`` = plain CE, ``1`` = BSCE).

    After training, ``plugin.prior_history`` holds the prior (frequencies) used in each
    experience, and ``plugin.prior`` the current one.
    """

    def __init__(self, prior: Union[str, Sequence[float], Tensor] = "auto", tau: float = 1.0):
        super().__init__()
        if isinstance(prior, str):
            if prior not in PRIOR_MODES:
                import difflib

                close = difflib.get_close_matches(prior, PRIOR_MODES, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"Unknown prior mode {prior!r}; use one of {PRIOR_MODES} or a sequence "
                    f"of per-class counts.{hint}"
                )
            self.mode = prior
            self.fixed_counts: Optional[Tensor] = None
        else:
            self.mode = "fixed"
            self.fixed_counts = as_class_counts(prior, name="prior")
        self.tau = _check_tau(tau)
        self.prior_history: list[list[float]] = []
        self._counts: Optional[Tensor] = None  # counts of the current experience
        self._adjustment: Optional[Tensor] = None  # cached tau * log prior, logits-sized
        self._running = RunningClassCounts()
        self._use_batch_counts = self.mode == "batch"
        self._loader = None  # the loader the current prior was computed for
        self._wrapper: Optional[_BalancedCriterion] = None

    # ------------------------------------------------------------------ callbacks
    def before_training(self, strategy, **kwargs):
        self._check_strategy(strategy)
        criterion = strategy._criterion
        if isinstance(criterion, _BalancedCriterion) and criterion.plugin is self:
            criterion = criterion.original  # left over from an interrupted train()
        self._wrapper = self._make_wrapper(criterion, strategy)
        strategy._criterion = self._wrapper

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.dataloader is self._loader:
            return  # same experience: the prior is already computed
        self._loader = strategy.dataloader
        self._adjustment = None
        self._running.reset()
        if self.mode == "fixed":
            self._counts = self.fixed_counts
            return
        weighting = "dataset" if self.mode == "dataset" else "sampling"
        counts = None if self.mode == "batch" else loader_class_counts(self._loader, weighting)
        if counts is None and self.mode in ("sampling", "dataset"):
            raise ValueError(
                f"prior={self.mode!r} cannot be derived for the training loader "
                f"{type(self._loader).__name__} (unknown sampling); use prior='auto' or "
                "'batch' (counts the labels of the mini-batches), or a fixed prior."
            )
        self._use_batch_counts = counts is None
        self._counts = counts

    def after_training_exp(self, strategy, **kwargs):
        counts = self._running.counts if self._use_batch_counts else self._counts
        if counts is not None:
            counts = counts.double().cpu()
            if self._use_batch_counts:  # sized like the logits: trim to the classes seen, as the others
                counts = counts[: int(torch.nonzero(counts).max()) + 1]
            self.prior_history.append((counts / counts.sum()).tolist())

    def after_training(self, strategy, **kwargs):
        if self._wrapper is not None and strategy._criterion is self._wrapper:
            strategy._criterion = self._wrapper.original
        self._wrapper = None
        self._loader = None  # do not keep the last loader (and its data) alive

    # ------------------------------------------------------------------ the maths
    @property
    def prior(self) -> Optional[Tensor]:
        """Class frequencies of the current experience's prior (None before training)."""
        counts = self._running.counts if self._use_batch_counts else self._counts
        return None if counts is None else (counts.double() / counts.sum()).cpu()

    def adjustment(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``tau * log(prior)`` sized like ``logits``; cached, so usually free."""
        num_classes = logits.shape[1]
        if self._use_batch_counts:
            counts = self._running.update(targets, num_classes)
            return log_prior_adjustment(counts, self.tau, num_classes, device=logits.device, dtype=logits.dtype)
        adj = self._adjustment
        if adj is None or adj.numel() != num_classes or adj.device != logits.device:
            if self._counts is None:
                raise RuntimeError("BalancedSoftmaxPlugin has no prior: was before_training_epoch skipped?")
            adj = log_prior_adjustment(self._counts, self.tau, num_classes, device=logits.device)
            self._adjustment = adj
        if self.mode == "fixed":
            check_targets_have_prior(targets, adj)  # a user prior may miss trained classes
        return adj

    # ------------------------------------------------------------------ checks
    def _check_strategy(self, strategy) -> None:
        mine = [p for p in strategy.plugins if isinstance(p, BalancedSoftmaxPlugin)]
        if len(mine) > 1:
            raise ValueError(
                f"BalancedSoftmaxPlugin is attached {len(mine)} times to "
                f"{type(strategy).__name__}; the log-prior would be added more than once. "
                "Keep a single instance in `plugins=[...]`."
            )
        for cls, why in _incompatible_strategies().items():
            if isinstance(strategy, cls):
                raise TypeError(f"BalancedSoftmaxPlugin cannot balance {cls.__name__}: {why}")

    def _make_wrapper(self, criterion, strategy) -> _BalancedCriterion:
        from avalanche.training.losses import ICaRLLossPlugin

        if isinstance(criterion, _BalancedCriterion):
            raise ValueError(
                "The strategy's criterion is already wrapped by another "
                "BalancedSoftmaxPlugin; attach the plugin once."
            )
        if isinstance(criterion, BalancedSoftmaxCrossEntropyLoss):
            raise ValueError(
                "The strategy's criterion is already a BalancedSoftmaxCrossEntropyLoss; "
                "BSCE would be applied twice. Use CrossEntropyLoss() with the plugin, or "
                "the loss without the plugin."
            )
        if isinstance(criterion, ICaRLLossPlugin):
            return _ICaRLCriterion(criterion, strategy, self)
        if isinstance(criterion, nn.CrossEntropyLoss) or criterion is F.cross_entropy:
            if getattr(criterion, "label_smoothing", 0.0) > 0:
                raise ValueError(
                    "BalancedSoftmaxPlugin does not support CrossEntropyLoss(label_smoothing>0): "
                    "smoothing would put target mass on classes the prior excludes. "
                    "Use label_smoothing=0."
                )
            return _SoftmaxCECriterion(criterion, strategy, self)
        raise TypeError(
            f"BalancedSoftmaxPlugin cannot balance the criterion {criterion!r}: BSCE adds "
            "the log-prior to the logits of a softmax cross-entropy. Build the strategy "
            "with criterion=torch.nn.CrossEntropyLoss() (or Avalanche's iCaRL)."
        )
