"""Compatibility fixes for avalanche-lib 0.6.0 on current PyTorch, in one place.

Each fix patches a name *inside an Avalanche module at run time* (never the installed
files) and keeps the algorithm exactly as Avalanche implements it. Call
:func:`apply_avalanche_fixes` once before building the affected strategies; it is
idempotent.
"""

from __future__ import annotations

import inspect

from torch.optim.lr_scheduler import MultiStepLR

__all__ = ["apply_avalanche_fixes"]


class _MultiStepLRWithoutVerbose(MultiStepLR):
    """``MultiStepLR`` accepting (and ignoring) ``verbose``, which torch 2.x removed.

    Avalanche 0.6.0's BiC calls ``MultiStepLR(..., verbose=False)`` in its
    bias-correction stage and crashes at the end of the second experience.
    """

    def __init__(self, *args, verbose=None, **kwargs):
        super().__init__(*args, **kwargs)


def apply_avalanche_fixes() -> list[str]:
    """Apply the fixes this PyTorch needs; return the names of the ones applied."""
    applied = []
    if "verbose" not in inspect.signature(MultiStepLR.__init__).parameters:
        from avalanche.training.plugins import bic

        if bic.MultiStepLR is MultiStepLR:
            bic.MultiStepLR = _MultiStepLRWithoutVerbose
        applied.append("bic.MultiStepLR(verbose=)")
    return applied
