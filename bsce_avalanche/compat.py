"""Fixes for avalanche-lib 0.6.0 on current PyTorch, in one place, each applied only where needed and
only while needed: Avalanche's modules stay as shipped.

* :func:`fix_strategy` gives an iCaRL strategy's plugin the herding with one host sync per pick
  (:class:`FastHerdingICaRLPlugin`) and a BiC strategy's plugin its bias-correction stage on torch >= 2.2
  (:class:`BiCPluginWithoutVerbose`): those two plugin instances change class, nothing else does. The
  runner calls it on every strategy it builds; call it on your own ``ICaRL`` or ``BiC``.
* :func:`reshuffling_distributed_sampler` makes Avalanche's loaders reshuffle every epoch under DDP, from
  joining the process group to leaving it (``runner/distributed.py``).

Each fix is applied only on the Avalanche versions it was verified on (:data:`VERIFIED_AVALANCHE`); on
another one it is skipped with a warning (check whether that version still needs it).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from typing import Iterator, Optional

import torch
from avalanche import __version__ as avalanche_version
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, DistributedSampler

from avalanche.benchmarks.utils import _taskaware_classification_subset, data_loader
from avalanche.training.plugins import bic
from avalanche.training.supervised import icarl

__all__ = ["VERIFIED_AVALANCHE", "fix_strategy", "FastHerdingICaRLPlugin", "BiCPluginWithoutVerbose",
           "ReshufflingDistributedSampler", "reshuffling_distributed_sampler", "apply_avalanche_fixes"]

#: The Avalanche versions these fixes were checked against (setup.cfg admits any 0.6.x).
VERIFIED_AVALANCHE = ("0.6.0",)


def _verified(fix: str) -> bool:
    """Whether ``fix`` applies to the installed Avalanche; else a warning (once per fix) and False."""
    if avalanche_version in VERIFIED_AVALANCHE:
        return True
    warnings.warn(f"bsce_avalanche.compat: the {fix} fix was verified on Avalanche {', '.join(VERIFIED_AVALANCHE)} "
                  f"only, not {avalanche_version}: not applied (check whether this version still needs it).",
                  RuntimeWarning, stacklevel=3)
    return False


class _MultiStepLRWithoutVerbose(MultiStepLR):
    """``MultiStepLR`` ignoring ``verbose``, which torch 2.x removed: Avalanche 0.6.0's BiC passes it
    in its bias-correction stage (a crash at the end of the second experience)."""

    def __init__(self, *args, verbose=None, **kwargs):
        super().__init__(*args, **kwargs)


class ReshufflingDistributedSampler(DistributedSampler):
    """``DistributedSampler`` drawing a new permutation at every pass: Avalanche 0.6 builds a fresh one
    (seed 0, epoch 0) for every epoch, so every epoch would see the same order under DDP. The seed comes
    from the global torch RNG, which the runner aligns across ranks: all agree on the permutation."""

    def __init__(self, *args, seed: Optional[int] = None, shuffle: bool = True, **kwargs):
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if shuffle else 0
        super().__init__(*args, seed=seed, shuffle=shuffle, **kwargs)
        self._passes = 0

    def __iter__(self):
        self.set_epoch(self._passes)
        self._passes += 1
        return super().__iter__()


def _construct_exemplar_set(self, strategy) -> None:
    """Avalanche 0.6.0's iCaRL herding (``_ICaRLPlugin.construct_exemplar_set``), same picks, with one
    host sync per pick: Avalanche's ``ind_max not in selected`` on a device tensor syncs once per
    picked exemplar (on an H100 shared by four runs, about 240 s in iCaRL's first step of 10 x 200)."""
    tid = strategy.clock.train_exp_counter
    benchmark = strategy.experience.benchmark
    nb_cl = benchmark.n_classes_per_exp[tid]
    seen_before = sum(benchmark.n_classes_per_exp[:tid])
    nb_protos_cl = int(math.ceil(self.memory_size / len(self.observed_classes))) if self.fixed_memory \
        else self.memory_size
    new_classes = self.observed_classes[seen_before: seen_before + nb_cl]
    dataset = strategy.experience.dataset
    targets = torch.tensor(dataset.targets)
    for new_class in new_classes:
        cd = _taskaware_classification_subset(dataset, torch.where(targets == new_class)[0])
        loader = DataLoader(cd.eval(), collate_fn=getattr(cd, "collate_fn", None), batch_size=strategy.eval_mb_size)
        patterns, features = [], []
        for x, _, _ in loader:
            x = x.to(strategy.device)
            patterns.append(x)
            with torch.no_grad():
                features.append(strategy.model.feature_extractor(x).detach())
        patterns = torch.cat(patterns)
        D = torch.cat(features).T
        D = D / torch.norm(D, dim=0)
        mu = torch.mean(D, dim=1)
        order = torch.zeros(patterns.shape[0])
        w_t, i, added, selected = mu, 0, 0, set()
        while added != nb_protos_cl and i < 1000:
            ind_max = int(torch.argmax(torch.mm(w_t.unsqueeze(0), D)))  # the one sync per pick
            if ind_max not in selected:
                order[ind_max] = 1 + added
                added += 1
                selected.add(ind_max)
            w_t = w_t + mu - D[:, ind_max]
            i += 1
        picked = torch.where((order > 0) * (order < nb_protos_cl + 1))[0]
        self.x_memory.append(patterns[picked])
        self.y_memory.append([new_class] * len(picked))
        self.order.append(order[picked])


class FastHerdingICaRLPlugin(icarl._ICaRLPlugin):
    """Avalanche 0.6.0's ``_ICaRLPlugin`` with its herding picking the same exemplars with one host sync
    per pick (:func:`_construct_exemplar_set`)."""

    construct_exemplar_set = _construct_exemplar_set


class BiCPluginWithoutVerbose(bic.BiCPlugin):
    """Avalanche 0.6.0's ``BiCPlugin`` whose bias-correction stage builds its ``MultiStepLR`` without ``verbose``
    (torch >= 2.2 removed it): Avalanche's module name is replaced during that stage only."""

    def bias_correction_step(self, *args, **kwargs):
        with _replaced(bic, "MultiStepLR", _MultiStepLRWithoutVerbose):
            return super().bias_correction_step(*args, **kwargs)


@contextlib.contextmanager
def _replaced(module, name: str, value) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _multistep_lr_lacks_verbose() -> bool:
    return "verbose" not in inspect.signature(MultiStepLR.__init__).parameters


def fix_strategy(strategy) -> list[str]:
    """Give this strategy's Avalanche plugins that need a fix their fixed subclass (the instances only);
    return the names of the fixes applied. Idempotent; other strategies and Avalanche's classes are untouched.
    Call it after building the strategy, before training it."""
    applied = []
    for plugin in strategy.plugins:
        if type(plugin) is icarl._ICaRLPlugin and _verified("iCaRL herding"):
            plugin.__class__ = FastHerdingICaRLPlugin
            applied.append("iCaRL herding (one sync per pick)")
        elif type(plugin) is bic.BiCPlugin and _multistep_lr_lacks_verbose() and _verified("BiC MultiStepLR(verbose=)"):
            plugin.__class__ = BiCPluginWithoutVerbose
            applied.append("BiC MultiStepLR(verbose=)")
    return applied


_sampler_original: Optional[type] = None


def reshuffling_distributed_sampler(enable: bool) -> None:
    """Make Avalanche's loaders build a :class:`ReshufflingDistributedSampler` (``enable``, on joining a DDP
    process group), or restore Avalanche's ``DistributedSampler`` (on leaving it). Idempotent."""
    global _sampler_original
    if enable and _sampler_original is None and _verified("DistributedSampler reshuffling"):
        _sampler_original, data_loader.DistributedSampler = data_loader.DistributedSampler, ReshufflingDistributedSampler
    elif not enable and _sampler_original is not None:
        data_loader.DistributedSampler, _sampler_original = _sampler_original, None


def apply_avalanche_fixes() -> list[str]:
    """Deprecated: patches Avalanche's classes for the whole process. Use :func:`fix_strategy` on the strategy
    that needs a fix (the runner does); this still applies every fix process-wide, as before."""
    warnings.warn("bsce_avalanche.compat.apply_avalanche_fixes() patches Avalanche for the whole process and is "
                  "deprecated: call bsce_avalanche.compat.fix_strategy(strategy) on your ICaRL or BiC strategy "
                  "instead.", DeprecationWarning, stacklevel=2)
    applied = []
    if _multistep_lr_lacks_verbose() and _verified("BiC MultiStepLR(verbose=)"):
        bic.MultiStepLR = _MultiStepLRWithoutVerbose
        applied.append("bic.MultiStepLR(verbose=)")
    if _verified("iCaRL herding"):
        icarl._ICaRLPlugin.construct_exemplar_set = _construct_exemplar_set
        applied.append("icarl herding (one sync per pick)")
    return applied
