"""``ERACE``: Avalanche's ER-ACE with the memory of the original, updated after training each experience.

What Avalanche 0.6.0's ``ER_ACE`` (``avalanche/training/supervised/er_ace.py``) does differently from the
original ER-ACE (Caccia et al., ICLR 2022; Mammoth's ``models/er_ace.py``, the authors' ``pclucas14/AML``):

* **When the memory is filled.** Avalanche's ``_before_training_exp`` (lines 155-171) calls
  ``storage_policy.update`` *before* training each experience ("so that we have current data in"): from the
  second experience on, the memory batches mix the current experience's samples into the rehearsal (half of a
  class-balanced memory of 2000 after 10 classes: 1000 current samples, 1000 old ones, where Replay's holds 2000
  old ones), and the draws of the update shift the RNG before the first experience's training, so its first
  model is not Naive's. The original adds each mini-batch to its reservoir *after* the optimiser step
  (Mammoth ``observe``: ``self.buffer.add_data(...)`` after ``self.opt.step()``): the memory only ever holds
  samples already trained on.
* **The memory policy.** Avalanche: a class-balanced memory filled with all of an experience at once
  (``ClassBalancedBuffer(adaptive_size=True)``, line 92); the original: a reservoir over the stream (Mammoth's
  ``Buffer``), its memory batch drawn without replacement per step (``buffer.get_data``) where Avalanche cycles a
  shuffled ``DataLoader`` with ``drop_last`` (lines 163-170).
* **The loss.** Avalanche's ``ACECriterion`` (``avalanche/training/regularization.py``, lines 190-210):
  ``(CE(memory batch) + CE over the current batch's classes only) / 2``; Mammoth: the *sum* of the two, its
  current-batch logits masked to the batch's classes *and* to every class from the last seen one on
  (``mask[:, seen_so_far.max():] = 1``), and a cosine classifier (``CustomLinear``, scale 10) by default. Both
  train the first experience with plain CE and no memory batch (Avalanche: ``self.criterion()`` while
  ``replay_loader is None``, lines 133-135; Mammoth: masking and replay from ``current_task > 0``).
* **Batches.** Both draw ``batch_size`` new + ``batch_size_mem`` memory samples per step (50/50 in the paper).

:class:`ERACE` changes the first point only, keeping Avalanche's loss, memory batch and class-balanced memory:
the memory is updated in ``_after_training_exp`` (after the plugins', so a first experience restored from the
runner's cache, RNG included, is in place first), the memory loader is built from the memory as it stands at
the start of the experience (earlier experiences' samples only), and with an empty memory the training loop is
Naive's, mini-batch for mini-batch. Its memory loader shuffles with a generator of its own (seeded from
``torch.initial_seed()`` and the experience), so that it leaves the global RNG, from which the memory's draws
and the training loader's order come, as Naive's loop leaves it: with the same storage policy, ER-ACE then keeps
the very samples Replay keeps, wherever training draws the global RNG alike (no per-batch augmentation draws).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Optional

import torch
from avalanche import __version__ as avalanche_version
from avalanche.training import ER_ACE
from avalanche.training.storage_policy import ExemplarsBuffer
from avalanche.training.utils import cycle
from torch.utils.data import DataLoader

from .compat import VERIFIED_AVALANCHE

__all__ = ["ERACE"]


class ERACE(ER_ACE):
    """Avalanche's ``ER_ACE`` whose memory holds earlier experiences' samples only, updated after training
    each experience (as the original's), so that its first experience is Naive's training.

    ``ERACE(model=..., optimizer=..., mem_size=2000, batch_size_mem=128, train_mb_size=128)``; Avalanche's
    arguments, plus ``storage_policy`` (default: Avalanche's ``ClassBalancedBuffer(mem_size, adaptive_size=True)``),
    e.g. the policy of the Replay it is compared with.
    """

    def __init__(self, *, storage_policy: Optional[ExemplarsBuffer] = None, **kwargs):
        super().__init__(**kwargs)
        if avalanche_version not in VERIFIED_AVALANCHE:  # it replaces ER_ACE._before_training_exp
            warnings.warn(f"bsce_avalanche.ERACE was verified on Avalanche {', '.join(VERIFIED_AVALANCHE)} only, not "
                          f"{avalanche_version}: check that ER_ACE still fills its memory in _before_training_exp.",
                          RuntimeWarning, stacklevel=2)
        if storage_policy is not None:
            if storage_policy.max_size != self.mem_size:
                raise ValueError(f"storage_policy.max_size ({storage_policy.max_size}) differs from mem_size "
                                 f"({self.mem_size}); build the policy with max_size=mem_size.")
            self.storage_policy = storage_policy
        self._loader_seed = torch.initial_seed()  # no draw: the global RNG is left as it is

    def _before_training_exp(self, **kwargs):
        # not ER_ACE's, which fills the memory with this experience first
        buffer = self.storage_policy.buffer
        self.replay_loader = None
        if len(buffer) >= self.batch_size_mem:
            # a fresh generator per experience: a run resumed between experiences draws the same batches
            step = f"{self._loader_seed}/{self.clock.train_exp_counter}".encode()
            generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(step).digest()[:8], "little"))
            self.replay_loader = cycle(DataLoader(buffer, batch_size=self.batch_size_mem, shuffle=True,
                                                  drop_last=True, generator=generator))
        super(ER_ACE, self)._before_training_exp(**kwargs)

    def _after_training_exp(self, **kwargs):
        super()._after_training_exp(**kwargs)
        self.storage_policy.post_adapt(self, self.experience)
