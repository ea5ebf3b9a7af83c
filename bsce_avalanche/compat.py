"""Compatibility fixes for avalanche-lib 0.6.0 on current PyTorch, in one place.

Each fix patches a name *inside an Avalanche module at run time* (never the installed
files) and keeps the algorithm exactly as Avalanche implements it. Call
:func:`apply_avalanche_fixes` once before building the affected strategies (and, under
DDP, after joining the process group); it is idempotent.
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DistributedSampler

from avalanche.benchmarks.utils import data_loader
from avalanche.training.plugins import bic

__all__ = ["apply_avalanche_fixes", "ReshufflingDistributedSampler"]


class _MultiStepLRWithoutVerbose(MultiStepLR):
    """``MultiStepLR`` accepting (and ignoring) ``verbose``, which torch 2.x removed.

    Avalanche 0.6.0's BiC calls ``MultiStepLR(..., verbose=False)`` in its
    bias-correction stage and crashes at the end of the second experience.
    """

    def __init__(self, *args, verbose=None, **kwargs):
        super().__init__(*args, **kwargs)


class ReshufflingDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that draws a new permutation every time it is iterated.

    Avalanche 0.6 builds a fresh ``DistributedSampler`` (seed 0, epoch 0) for every epoch,
    so without this every epoch and every experience would see the same order under DDP.
    The seed is drawn from the global torch RNG, which the runner aligns across ranks, so
    all ranks agree on the permutation (and therefore on the sharding).
    """

    def __init__(self, *args, seed: Optional[int] = None, shuffle: bool = True, **kwargs):
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if shuffle else 0
        super().__init__(*args, seed=seed, shuffle=shuffle, **kwargs)
        self._passes = 0

    def __iter__(self):
        self.set_epoch(self._passes)
        self._passes += 1
        return super().__iter__()


def apply_avalanche_fixes() -> list[str]:
    """Apply the fixes this PyTorch needs; return the names of the ones applied."""
    applied = []
    if "verbose" not in inspect.signature(MultiStepLR.__init__).parameters:
        if bic.MultiStepLR is MultiStepLR:
            bic.MultiStepLR = _MultiStepLRWithoutVerbose
        applied.append("bic.MultiStepLR(verbose=)")
    # Only Avalanche's loaders under distributed sampling build this sampler.
    if not issubclass(data_loader.DistributedSampler, ReshufflingDistributedSampler):
        data_loader.DistributedSampler = ReshufflingDistributedSampler
    applied.append("data_loader.DistributedSampler(reshuffles every pass)")
    return applied
