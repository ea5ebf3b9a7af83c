"""``BalancedSoftmaxPlugin``: train any softmax-CE Avalanche strategy with BSCE.

A thin plugin in the shape of Avalanche's ``LwFPlugin``: its callbacks drive a
:class:`~bsce_avalanche.priors.ClassPrior` (online: a :class:`~bsce_avalanche.priors.WindowPrior`), and the
criterion it wraps adds ``tau * log(prior)`` to the logits only for the training mini-batch's own loss.
``strategy.mb_output`` is never changed, so evaluation, metrics and other loss terms (LwF / iCaRL distillation,
BiC, GEM) see the plain logits.
"""

from __future__ import annotations

import weakref
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche.training import DER, ER_ACE, ER_AML
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import SupervisedPlugin

from .losses import BalancedSoftmaxCrossEntropyLoss
from .priors import PRIOR_MODES, make_prior

__all__ = ["BalancedSoftmaxPlugin", "PRIOR_MODES"]

#: Strategies whose training loss never goes through ``strategy._criterion``.
#: The strategy each plugin last trained (a weak reference, outside the plugin: checkpoints save its attributes).
_OWNERS: "weakref.WeakKeyDictionary[BalancedSoftmaxPlugin, weakref.ref]" = weakref.WeakKeyDictionary()
_INCOMPATIBLE_STRATEGIES = {
    ER_ACE: "ER-ACE replaces the criterion with its own asymmetric loss (ACECriterion) from the second experience "
            "on, and already protects old classes by masking new-class logits; use ER_ACE without "
            "BalancedSoftmaxPlugin.",
    ER_AML: "ER-AML trains with its own metric-learning loss (AMLCriterion) from the second experience on, not the "
            "criterion; use ER_AML without the plugin.",
    DER: "DER computes its classification losses with F.cross_entropy directly, not through the criterion; use DER "
         "without the plugin.",
}


class _BalancedCriterion:
    """Base of the criterion wrappers installed by the plugin."""

    def __init__(self, original, strategy, plugin: "BalancedSoftmaxPlugin"):
        self.original, self.strategy, self.plugin = original, strategy, plugin

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
            logits = logits + self.plugin.class_prior.adjustment(logits, targets)
            self.plugin._adjusted = True
        return self.original(logits, targets)


class _ICaRLCriterion(_BalancedCriterion):
    """iCaRL's loss with its classification term made a (balanced) softmax cross-entropy.

    For a mini-batch of N samples with logits ``z`` (C units), labels ``y``, the old model's logits ``z_old``
    and the old classes ``O`` (empty in the first experience)::

        loss = mean_i CE(z_i + tau * log prior, y_i)
               + w * mean_{i, j in O} BCE(sigmoid(z_ij), sigmoid(z_old_ij))

    i.e. the softmax CE averaged over the N samples plus the distillation of Avalanche's
    ``ICaRLLossPlugin`` averaged over the N x |O| old-class units, weighted by ``w``
    (``distillation_weight``). iCaRL's own loss (``ICaRLLossPlugin``, srebuffi/iCaRL) is one sigmoid BCE
    averaged over all N x C units, one-hot targets on the new classes' units and ``sigmoid(z_old)`` on
    the old ones': per sample, its distillation is the sum over ``O`` divided by C, ours that sum
    divided by |O| (C / |O| times heavier at ``w = 1``: 10x at the second of ten steps of 10 classes
    out of 100 units). ``tau = 0`` is the same loss without the prior, the ablation of BSCE alone.
    ``ICaRLLossPlugin`` stores the old model's logits in ``before_forward`` for its ``__call__`` to
    consume; they are consumed here, so no stale logits remain.
    """

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        if not self._is_training_loss(logits):
            return self.original(logits, targets)
        icarl = self.original
        old_logits, icarl.old_logits = icarl.old_logits, None
        loss = F.cross_entropy(logits + self.plugin.class_prior.adjustment(logits, targets), targets.long())
        self.plugin._adjusted = True
        if old_logits is not None and len(icarl.old_classes) > 0 and self.plugin.distillation_weight > 0:
            old = list(icarl.old_classes)
            loss = loss + self.plugin.distillation_weight * F.binary_cross_entropy_with_logits(
                logits[:, old], torch.sigmoid(old_logits[:, old]))
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

    :param prior: where the class prior comes from, recomputed for every training experience:

        * ``"auto"`` (default): ``"sampling"`` when the loader's sampling is known (PyTorch
          ``DataLoader`` with a random/sequential sampler, Avalanche's task-balanced and replay
          loaders), otherwise ``"batch"``.
        * ``"sampling"``: the label distribution the training loader really draws; an error for
          loaders whose sampling is unknown.
        * ``"dataset"``: the class counts of all the data trained on in the experience (new data +
          memory), as in the paper; over-corrects with Avalanche's ``ReplayDataLoader`` (README).
        * ``"batch"``: the label counts of the mini-batches drawn so far in the experience (a
          ``bincount`` and a ``log`` per mini-batch).
        * ``"window"``: online learning (ER-LAS, Huang et al., TMLR 2024): the label counts of the
          last ``window`` mini-batches trained, the current one included, stream and memory samples
          as in ``strategy.mb_y``, across experiences (never reset); a fixed-length bincount per mini-batch
          into a ring buffer on the device, no host sync.
        * a sequence or tensor of per-class counts or frequencies, used as is.

        Classes absent from the prior are removed from the training softmax. Under DDP the mini-batch
        counts of ``"batch"`` and ``"window"`` are all-reduced: every rank uses the global batch's prior.
    :param tau: strength of the logit adjustment (``0`` = plain CE, ``1`` = BSCE).
    :param window: the window length ``l`` in mini-batches, with ``prior="window"`` only (ER-LAS: 1 on
        CIFAR, 10 on ImageNet).
    :param distillation_weight: with Avalanche's ``ICaRL`` only, the weight ``w`` of its distillation term
        (the loss is written out in ``_ICaRLCriterion``'s docstring and the README).

    If a training experience's first iteration ends without the plugin having adjusted a loss (a
    strategy that hands its criterion a copy or a slice of ``mb_output`` instead of the logits), it
    raises rather than let the experience train with plain CE.

    ``prior_history``: the prior (frequencies) of each experience trained (window: the window's at the
    experience's end); ``prior``: the current one. ``state_dict()`` / ``load_state_dict()``: the
    prior's state (history, window), also saved with the plugin by the runner's checkpoints.

    The prior belongs to one strategy: a plugin reused for another strategy (a seed loop that builds the
    plugin once) starts that strategy with a fresh prior (empty window, no history); after
    ``load_state_dict`` the next strategy continues the loaded one (resuming). ``window`` is at most
    :data:`~bsce_avalanche.priors.MAX_WINDOW` mini-batches (the ring holds window x classes counts).
    """

    def __init__(self, prior: Union[str, Sequence[float], Tensor] = "auto", tau: float = 1.0,
                 window: Optional[int] = None, distillation_weight: float = 1.0):
        super().__init__()
        self.class_prior = make_prior(prior, tau, window)  # validates prior, tau and window
        if isinstance(distillation_weight, bool) or not isinstance(distillation_weight, (int, float)) or \
                not 0 <= distillation_weight < float("inf"):
            raise ValueError(f"distillation_weight must be a finite number >= 0, got {distillation_weight!r}.")
        self.distillation_weight = float(distillation_weight)
        self._adjusted = False  # whether a training loss went through the adjustment in this experience
        self._loader = None  # the current experience's loader; dropped at its end, so never checkpointed
        self._wrapper: Optional[_BalancedCriterion] = None

    @property
    def prior(self) -> Optional[Tensor]:
        """Class frequencies of the current experience's prior (None before training)."""
        return self.class_prior.prior

    @property
    def prior_history(self) -> list[list[float]]:
        return self.class_prior.history

    @property
    def tau(self) -> float:
        return self.class_prior.tau

    def state_dict(self) -> dict:
        return self.class_prior.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.class_prior.load_state_dict(state)
        _OWNERS.pop(self, None)  # a restored prior continues with the next strategy this plugin trains

    def before_training(self, strategy, **kwargs):
        owner = _OWNERS.get(self)
        if owner is not None and owner() is not strategy:  # reused for another strategy: its own prior, afresh
            self.class_prior = self.class_prior.fresh()
        _OWNERS[self] = weakref.ref(strategy)
        mine = [p for p in strategy.plugins if isinstance(p, BalancedSoftmaxPlugin)]
        if len(mine) > 1:
            raise ValueError(f"BalancedSoftmaxPlugin is attached {len(mine)} times to {type(strategy).__name__}; the "
                             "log-prior would be added more than once. Keep a single instance in `plugins=[...]`.")
        for cls, why in _INCOMPATIBLE_STRATEGIES.items():
            if isinstance(strategy, cls):
                raise TypeError(f"BalancedSoftmaxPlugin cannot balance {cls.__name__}: {why}")
        criterion = strategy._criterion
        if isinstance(criterion, _BalancedCriterion) and criterion.plugin is self:
            criterion = criterion.original  # left over from an interrupted train()
        self._wrapper = self._make_wrapper(criterion, strategy)
        strategy._criterion = self._wrapper

    def before_training_epoch(self, strategy, **kwargs):
        # Plugins may replace the loader up to the first epoch: it is final here.
        if strategy.dataloader is not self._loader:
            self._loader = strategy.dataloader
            self.class_prior.start_experience(self._loader)

    def before_training_exp(self, strategy, **kwargs):
        self._adjusted = False

    def after_training_iteration(self, strategy, **kwargs):
        if not self._adjusted:  # a Python flag: no host sync
            raise RuntimeError(
                f"BalancedSoftmaxPlugin: a training iteration of {type(strategy).__name__} ended without its loss "
                "going through the BSCE adjustment: the strategy called its criterion on something other than "
                "strategy.mb_output (a copy or a slice), so it would train with plain CE. Balance that strategy's "
                "loss with bsce_avalanche.balanced_softmax_cross_entropy instead of the plugin.")

    def after_training_exp(self, strategy, **kwargs):
        self.class_prior.end_experience()
        self._loader = None  # do not keep the loader (and its data) alive

    def after_training(self, strategy, **kwargs):
        if self._wrapper is not None and strategy._criterion is self._wrapper:
            strategy._criterion = self._wrapper.original
        self._wrapper = None

    def _make_wrapper(self, criterion, strategy) -> _BalancedCriterion:
        if isinstance(criterion, _BalancedCriterion):
            raise ValueError("The strategy's criterion is already wrapped by another BalancedSoftmaxPlugin; attach "
                             "the plugin once.")
        if isinstance(criterion, BalancedSoftmaxCrossEntropyLoss):
            raise ValueError("The strategy's criterion is already a BalancedSoftmaxCrossEntropyLoss; BSCE would be "
                             "applied twice. Use CrossEntropyLoss() with the plugin, or the loss without the plugin.")
        if isinstance(criterion, ICaRLLossPlugin):
            return _ICaRLCriterion(criterion, strategy, self)
        if isinstance(criterion, nn.CrossEntropyLoss) or criterion is F.cross_entropy:
            if getattr(criterion, "label_smoothing", 0.0) > 0:
                raise ValueError("BalancedSoftmaxPlugin does not support CrossEntropyLoss(label_smoothing>0): "
                                 "smoothing would put target mass on classes the prior excludes. "
                                 "Use label_smoothing=0.")
            return _SoftmaxCECriterion(criterion, strategy, self)
        raise TypeError(f"BalancedSoftmaxPlugin cannot balance the criterion {criterion!r}: BSCE adds the log-prior "
                        "to the logits of a softmax cross-entropy. Build the strategy with "
                        "criterion=torch.nn.CrossEntropyLoss() (or Avalanche's iCaRL).")
