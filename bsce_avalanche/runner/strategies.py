"""The Avalanche strategies the runner builds, by the names of :data:`~.catalog.STRATEGIES` (config choices,
``--help`` and the README's table come from there)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from avalanche.training import BiC, GDumb, ICaRL, LwF, Naive
from avalanche.training.plugins import LRSchedulerPlugin, ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, ReservoirSamplingBuffer
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from ..compat import fix_strategy
from ..er_ace import ERACE
from ..icarl import set_icarl_eval
from ..replay import ConcatReplayPlugin, herding_buffer
from ..weight_aligning import WeightAligningPlugin
from .identity import result_settings
from .catalog import MEMORY_SELECTIONS, REPLAY_PROTOCOLS, STRATEGIES, StrategyInfo, uses_replay_option

__all__ = ["STRATEGIES", "StrategyInfo", "BUILDERS", "build_strategy", "REPLAY_PROTOCOLS", "MEMORY_SELECTIONS",
           "uses_replay_option"]


def _memory_total(cfg, n_classes: int) -> int:
    return cfg.memory_per_class * n_classes if cfg.memory_per_class else cfg.memory_size


def _memory(cfg, max_size: int, fixed_over: Optional[int] = None):
    """A class-balanced memory of ``max_size`` samples chosen by ``cfg.memory_selection``, shared by the classes
    seen so far, or split over ``fixed_over`` classes from the start."""
    if cfg.memory_selection == "herding":
        return herding_buffer(max_size)
    if cfg.memory_selection == "reservoir":  # a uniform sample of everything trained on (online: per mini-batch)
        return ReservoirSamplingBuffer(max_size)
    if fixed_over:
        return ClassBalancedBuffer(max_size=max_size, adaptive_size=False, total_num_classes=fixed_over)
    return ClassBalancedBuffer(max_size=max_size, adaptive_size=True)


def _rehearsal_memory(cfg, n_classes: int):
    """The memory of replay, LwF with memory and ER-ACE (one memory, so that they hold the same samples):
    ``memory_per_class`` per class from the start, or ``memory_size`` shared by the classes seen so far."""
    if cfg.memory_per_class and cfg.memory_selection not in ("herding", "reservoir"):
        return _memory(cfg, _memory_total(cfg, n_classes), fixed_over=n_classes)
    return _memory(cfg, cfg.memory_size)


class _OnlineReplayPlugin(ReplayPlugin):
    """Avalanche's ``ReplayPlugin`` whose memory update calls the policy's ``post_adapt`` as its deprecated
    ``update`` does, without a ``DeprecationWarning`` at every experience (``online``: every mini-batch)."""

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)


def _replay_plugin(cfg, n_classes: int):
    """The rehearsal plugin of ``cfg.replay`` over a class-balanced memory."""
    buffer = _rehearsal_memory(cfg, n_classes)
    if cfg.replay == "concat":
        return ConcatReplayPlugin(buffer.max_size, storage_policy=buffer)
    return (_OnlineReplayPlugin if cfg.online else ReplayPlugin)(buffer.max_size, batch_size_mem=cfg.batch_size_mem,
                                                                 storage_policy=buffer)


def _naive(cfg, model, n_classes, common):
    return Naive(model=model, criterion=CrossEntropyLoss(), **common)


def _lwf(cfg, model, n_classes, common):
    return LwF(model=model, criterion=CrossEntropyLoss(), alpha=cfg.lwf_alpha, temperature=cfg.lwf_temperature,
               **common)


def _icarl(cfg, model, n_classes, common):
    strategy = ICaRL(feature_extractor=model.feature_extractor, classifier=model.classifier,
                     memory_size=cfg.memory_per_class or cfg.memory_size, fixed_memory=not cfg.memory_per_class,
                     buffer_transform=None, **common)
    set_icarl_eval(strategy, cfg.icarl_eval)
    return strategy


def _er_ace(cfg, model, n_classes, common):
    # Replay's memory, updated as Replay's after each experience (online: each mini-batch, after training on it):
    # the rows differ in their loss and sampling only
    buffer = _rehearsal_memory(cfg, n_classes)
    return ERACE(model=model, criterion=CrossEntropyLoss(), mem_size=buffer.max_size, storage_policy=buffer,
                 batch_size_mem=cfg.batch_size_mem or cfg.batch_size, **common)


def _bic(cfg, model, n_classes, common):
    total = _memory_total(cfg, n_classes)
    strategy = BiC(model=model, criterion=CrossEntropyLoss(), mem_size=total, val_percentage=cfg.bic_val_fraction,
                   stage_2_epochs=cfg.bic_stage2_epochs, lr=cfg.bic_stage2_lr, **common)
    if cfg.replay == "concat":  # the exemplars and the validation split share the memory, as in the original
        fix_strategy(strategy, bic_rehearsal="concat",
                     bic_memory=_memory(cfg, total - int(cfg.bic_val_fraction * total)))
    return strategy


def _gdumb(cfg, model, n_classes, common):
    return GDumb(model=model, criterion=CrossEntropyLoss(), mem_size=_memory_total(cfg, n_classes), **common)


#: Each strategy's builder, ``build(cfg, model, n_classes, common)`` (``common``: the keyword arguments of every
#: Avalanche strategy), keyed by the names of :data:`~.catalog.STRATEGIES`.
BUILDERS: dict[str, Callable] = {"naive": _naive, "replay": _naive, "lwf": _lwf, "icarl": _icarl, "er_ace": _er_ace,
                                 "bic": _bic, "gdumb": _gdumb}


def build_strategy(cfg, model, n_classes: int, device, plugins: list, evaluator):
    """The Avalanche strategy named by ``cfg.strategy`` (``plugins`` are added to it)."""
    optimizer = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    plugins = list(plugins)
    if cfg.lr_milestones:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.lr_milestones, cfg.lr_gamma)
        plugins.append(LRSchedulerPlugin(scheduler, reset_scheduler=True, reset_lr=True))
    if uses_replay_option(vars(cfg)) and cfg.strategy != "bic":  # replay, lwf with lwf_memory (BiC: its plugin)
        plugins.append(_replay_plugin(cfg, n_classes))
    if result_settings(vars(cfg))["weight_aligning"]:  # false for the strategies outside the key's ``only``
        plugins.append(WeightAligningPlugin())  # after the memory: LwF's own plugin, last, copies the aligned model
    common = dict(optimizer=optimizer, train_mb_size=cfg.batch_size, train_epochs=cfg.epochs,
                  eval_mb_size=cfg.eval_batch_size, device=device, plugins=plugins, evaluator=evaluator)
    strategy = BUILDERS[cfg.strategy](cfg, model, n_classes, common)
    fix_strategy(strategy)  # this strategy's plugins only: BiC's distillation, iCaRL's herding on GPUs
    return strategy
