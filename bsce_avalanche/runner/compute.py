"""Compute accounting of every run: per step, the training images the network saw, its gradient steps and
the samples its memory holds after the step (``results.json``: ``images_seen``, ``gradient_steps``,
``images_per_epoch``, ``gradient_steps_per_epoch``, ``samples_stored``), so that rows trained under other
rehearsal protocols can be compared at equal cost.

Counted: the mini-batches of the strategy's training loop, memory samples included (Replay's concatenated or
half-batch memory is in ``mb_x``; ER-ACE's memory batch, ``mb_buffer_x``, is drawn apart and added). Not
counted: passes without a gradient step (iCaRL's herding, BiC's and iCaRL's old-model forward passes) and BiC's
second stage, which trains its bias layer in a loop of its own.
"""

from __future__ import annotations

from typing import Optional

from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer

__all__ = ["ComputeCounter", "samples_stored", "COMPUTE_KEYS"]

from .results_format import COMPUTE_KEYS  # the per-step lists of results.json it fills


class ComputeCounter(SupervisedPlugin, supports_distributed=True):
    """Training images, gradient steps and epochs of the experience being trained, on this process.

    Reads host-side shapes only: no device sync per iteration. The first-experience cache saves and restores
    these counts with the model (``first_experience._epoch_state``), so a cached first experience reports the
    training it stands for.
    """

    def __init__(self, per_experience: bool = True):
        super().__init__()
        self.per_experience = per_experience  # False: counts summed until reset() (the runner's online tasks)
        self.reset()

    def reset(self):
        self.images = self.iterations = self.epochs = 0

    def before_training_exp(self, strategy, **kwargs):
        if self.per_experience:
            self.reset()

    def after_training_iteration(self, strategy, **kwargs):
        images = strategy.mb_x.shape[0]
        if getattr(strategy, "replay_loader", None) is not None:  # ER-ACE: a memory batch beside mb_x
            images += strategy.mb_buffer_x.shape[0]
        self.images += images
        self.iterations += 1  # one optimiser step each

    def after_training_epoch(self, strategy, **kwargs):
        self.epochs += 1

    def state(self) -> dict:
        return {"images": self.images, "iterations": self.iterations, "epochs": self.epochs}

    def step_record(self, world_size: int = 1) -> dict:
        """This experience's entries of :data:`COMPUTE_KEYS` but ``samples_stored`` (images over all ranks;
        gradient steps are those of one rank: DDP steps together)."""
        images = self.images * world_size
        per_epoch = (lambda n: n / self.epochs) if self.epochs else (lambda n: None)
        return {"images_seen": images, "gradient_steps": self.iterations, "images_per_epoch": per_epoch(images),
                "gradient_steps_per_epoch": per_epoch(self.iterations)}


def samples_stored(strategy) -> Optional[int]:
    """The samples the strategy's memory holds: Avalanche storage policies (Replay's, ConcatReplayPlugin's,
    ER-ACE's, GDumb's, BiC's) on the strategy or a plugin, BiC's validation memory, iCaRL's exemplars; None where
    none is found."""
    total, found = 0, False
    for owner in (strategy, *strategy.plugins):
        attributes = vars(owner)
        policy = attributes.get("storage_policy")
        if isinstance(policy, ExemplarsBuffer):
            total, found = total + len(policy.buffer), True
        validation = attributes.get("val_buffer")  # BiC: held-out memory per class, for its second stage
        if isinstance(validation, dict):
            total, found = total + sum(len(b.buffer) for b in validation.values()), True
        exemplars = attributes.get("x_memory")  # iCaRL: one tensor of exemplars per class
        if isinstance(exemplars, list):
            total, found = total + sum(len(x) for x in exemplars), True
    return total if found else None
