"""Compatibility fixes for avalanche-lib 0.6.0 on current PyTorch, in one place.

Each fix patches a name inside an Avalanche module at run time (never the installed files) and keeps
Avalanche's algorithm. :func:`apply_avalanche_fixes` (idempotent) goes before building the affected
strategies (under DDP, after joining the process group).
"""

from __future__ import annotations

import inspect
import math
from typing import Optional

import torch
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, DistributedSampler

from avalanche.benchmarks.utils import _taskaware_classification_subset, data_loader
from avalanche.training.plugins import bic
from avalanche.training.supervised import icarl

__all__ = ["apply_avalanche_fixes", "ReshufflingDistributedSampler"]


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
    icarl._ICaRLPlugin.construct_exemplar_set = _construct_exemplar_set
    applied.append("icarl herding (one sync per pick)")
    return applied
