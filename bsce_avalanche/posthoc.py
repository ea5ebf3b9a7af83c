"""``LogitAdjustmentPlugin``: post-hoc logit adjustment, the free alternative to BSCE.

Post-hoc logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) trains with
plain cross-entropy and predicts with ``logits - tau * log(prior)``; BSCE trains with ``logits + tau *
log(prior)`` and predicts with the plain logits. Both take the prior from the same place
(:class:`~bsce_avalanche.priors.ClassPrior`, or :class:`~bsce_avalanche.priors.WindowPrior` online, driven
exactly as :class:`~bsce_avalanche.BalancedSoftmaxPlugin` drives it), so the two differ in one thing: when the
correction is applied.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from avalanche.training.plugins import SupervisedPlugin

from .losses import posthoc_adjustment
from .priors import make_prior

__all__ = ["LogitAdjustmentPlugin"]


class LogitAdjustmentPlugin(SupervisedPlugin, supports_distributed=True):
    """Evaluate a CE-trained Avalanche strategy with post-hoc logit adjustment.

    ``Replay(model, opt, CrossEntropyLoss(), mem_size=2000, plugins=[LogitAdjustmentPlugin()])``

    Training is untouched (the same weights, bit for bit, as without the plugin). At evaluation,
    ``strategy.mb_output`` becomes ``logits - tau * log(prior)`` in ``after_eval_forward``, so every metric,
    logger and later plugin sees the adjusted scores; classes absent from the prior are never predicted.
    The prior is that of the last training experience, from the same sources as ``BalancedSoftmaxPlugin``'s
    ``prior=`` (``"auto"``: the label distribution the training loader draws, e.g. experience + memory under
    ``ConcatReplayPlugin``, the 50/50 mix of Avalanche's replay loader; ``"window"``: the labels of the last
    ``window`` training mini-batches when training ended; or fixed counts).

    :param prior: as ``BalancedSoftmaxPlugin``'s.
    :param tau: strength (``1``: Menon et al.'s ``logits - log prior``; ``0``: the plain logits).
    :param window: with ``prior="window"`` only, the window in mini-batches.
    :param adjust_outputs: ``False`` leaves ``mb_output`` alone; :meth:`adjust` then gives the adjusted scores
        (the runner records the plain and the adjusted predictions from one forward pass).

    ``prior_history``: the prior of each experience trained; :meth:`adjust` uses the last one.
    Refuses a strategy that also trains with ``BalancedSoftmaxPlugin`` (the correction would be applied twice).
    """

    def __init__(self, prior: Union[str, Sequence[float], Tensor] = "auto", tau: float = 1.0,
                 window: Optional[int] = None, adjust_outputs: bool = True):
        super().__init__()
        self.class_prior = make_prior(prior, tau, window)  # validates prior, tau and window
        if not isinstance(adjust_outputs, bool):
            raise TypeError(f"adjust_outputs must be True or False, got {adjust_outputs!r}.")
        self.adjust_outputs = adjust_outputs
        self._counts: Optional[Tensor] = None  # the last trained experience's class counts
        self._cached: Optional[Tensor] = None  # their adjustment, sized and placed like the last logits
        self._loader = None  # the current experience's loader; dropped at its end

    @property
    def tau(self) -> float:
        return self.class_prior.tau

    @property
    def prior_history(self) -> list[list[float]]:
        return self.class_prior.history

    def state_dict(self) -> dict:
        return {"prior": self.class_prior.state_dict(),
                "counts": None if self._counts is None else self._counts.double().cpu().tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.class_prior.load_state_dict(state["prior"])
        self._counts = None if state["counts"] is None else torch.tensor(state["counts"], dtype=torch.float64)
        self._cached = None

    def before_training(self, strategy, **kwargs):
        from .plugin import BalancedSoftmaxPlugin  # the plugin module imports Avalanche's strategies

        if any(isinstance(p, BalancedSoftmaxPlugin) and p.tau > 0 for p in strategy.plugins):
            raise ValueError("LogitAdjustmentPlugin cannot be combined with BalancedSoftmaxPlugin (tau > 0): the "
                             "log-prior correction would be applied twice (in training and at evaluation); keep one.")

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.dataloader is not self._loader:  # final from the first epoch on, as for BSCE
            self._loader = strategy.dataloader
            self.class_prior.start_experience(self._loader)

    def after_training_iteration(self, strategy, **kwargs):
        if self.class_prior.counts_batches:  # count the mini-batch's labels (batch and window priors)
            self.class_prior.adjustment(strategy.mb_output.detach(), strategy.mb_y)

    def after_training_exp(self, strategy, **kwargs):
        counts = self.class_prior.counts  # a window prior's: the window's at the experience's end
        self.class_prior.end_experience()
        self._counts = None if counts is None else counts.detach().double().cpu()
        self._cached = None
        self._loader = None

    def adjust(self, logits: Tensor) -> Tensor:
        """``logits - tau * log(prior)`` (classes absent from the prior at a large negative offset); the plain
        logits before any training experience ended."""
        if self._counts is None:
            return logits
        adj = self._cached
        if adj is None or adj.numel() != logits.shape[1] or adj.device != logits.device or adj.dtype != logits.dtype:
            # the model may have fewer units than classes counted so far (never more classes trained than units)
            adj = self._cached = posthoc_adjustment(self._counts, self.tau, logits.shape[1], device=logits.device,
                                                    dtype=logits.dtype)
        return logits + adj

    def after_eval_forward(self, strategy, **kwargs):
        if self.adjust_outputs:
            strategy.mb_output = self.adjust(strategy.mb_output)
