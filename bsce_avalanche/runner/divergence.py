"""Stop a run at its first non-finite training loss, naming the step, iteration and likely cause
(a NaN or inf loss poisons the weights, whose evaluation still gives meaningless accuracies)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from avalanche.training.plugins import SupervisedPlugin

from . import distributed
from .errors import TrainingDiverged

__all__ = ["NonFiniteLossGuard", "TrainingDiverged"]

#: Training iterations between two reads of the check on an accelerator (reading a device
#: value waits for all the queued work: after every mini-batch it would stall it), on the CPU.
DEVICE_CHECK_EVERY, CPU_CHECK_EVERY = 50, 1
_NONE = 2**62  # encoded "no non-finite loss yet", above any encoded iteration


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(x).all() if torch.is_floating_point(x) else torch.ones((), dtype=torch.bool, device=x.device)


class NonFiniteLossGuard(SupervisedPlugin, supports_distributed=True):
    """Raise :class:`TrainingDiverged` at the first non-finite training loss.

    Each iteration's loss and input are checked on their device, without a host sync, into a running
    "first bad iteration", read after every iteration on the CPU, every ``DEVICE_CHECK_EVERY`` on an
    accelerator, and at every epoch's end (before anything is evaluated or saved), with the weights (a
    last update can overflow them after a finite loss). Under DDP the ranks agree on the earliest.
    """

    def __init__(self):
        super().__init__()
        self._iteration = self._epoch = 0
        self._first_bad = None  # device scalar: 4 * iteration + 2 * (loss is nan) + (input finite)

    def before_training_exp(self, strategy, **kwargs):
        self._iteration = self._epoch = 0
        self._first_bad = None

    def after_training_iteration(self, strategy, **kwargs):
        loss = strategy.loss.detach()
        every = CPU_CHECK_EVERY if loss.device.type == "cpu" else DEVICE_CHECK_EVERY
        # the input is checked here only when the read is deferred (on the CPU a full-batch
        # isfinite costs more than the other checks together); else once the loss is bad
        input_ok = _finite(strategy.mb_x).long() if every > 1 else 1
        code = 4 * self._iteration + 2 * torch.isnan(loss).any().long() + input_ok
        code = torch.where(torch.isfinite(loss).all(), _NONE, code)
        self._first_bad = code if self._first_bad is None else torch.minimum(self._first_bad, code)
        self._iteration += 1
        if self._iteration % every == 0:
            self._check(strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self._check(strategy)
        if not torch.stack([torch.isfinite(p).all() for p in strategy.model.parameters()]).all():
            self._fail(strategy, self._iteration - 1,
                       f"the weights became non-finite in the last update of the epoch; {self._lr_cause(strategy)}")
        self._epoch += 1

    def _check(self, strategy) -> None:
        if self._first_bad is None:
            return
        if distributed.is_distributed():
            dist.all_reduce(self._first_bad, op=dist.ReduceOp.MIN)
        code = int(self._first_bad)
        if code != _NONE:
            iteration, nan, input_ok = code // 4, code % 4 >= 2, code % 2 == 1
            if iteration == self._iteration - 1:  # the bad mini-batch is still there
                input_ok = input_ok and bool(_finite(strategy.mb_x))
            # (BSCE's tau is no cause: it is bounded, MAX_TAU, so that tau * log(prior) stays finite)
            cause = self._lr_cause(strategy) if input_ok else \
                "the mini-batch holds non-finite input values: check the data and its transforms."
            self._fail(strategy, iteration, f"the loss is {'nan' if nan else 'inf'}; {cause}")

    def _fail(self, strategy, iteration: int, reason: str):
        raise TrainingDiverged(strategy.experience.current_experience, self._epoch, iteration, reason)

    @staticmethod
    def _lr_cause(strategy) -> str:
        lr = strategy.optimizer.param_groups[0]["lr"]
        if not math.isfinite(lr):
            return f"the learning rate is {lr}: use a finite, positive lr."
        return f"the learning rate ({lr}) is probably too high: lower lr (or check the data)."
