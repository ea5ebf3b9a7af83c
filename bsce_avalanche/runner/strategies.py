"""The Avalanche strategies the runner builds, by name: config choices, ``--help`` and the
README's table come from :data:`STRATEGIES`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from avalanche.training import BiC, ER_ACE, GDumb, ICaRL, LwF, Naive
from avalanche.training.plugins import LRSchedulerPlugin, ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from ..compat import fix_strategy
from ..icarl import set_icarl_eval
from ..replay import ConcatReplayPlugin, herding_buffer

__all__ = ["STRATEGIES", "StrategyInfo", "build_strategy", "REPLAY_PROTOCOLS", "MEMORY_SELECTIONS",
           "uses_replay_option", "online_keys_error"]

#: The rehearsal protocols of ``replay`` and ``lwf`` with ``lwf_memory`` (config key ``replay``).
REPLAY_PROTOCOLS = {
    "half_batch": "Avalanche's ReplayPlugin: half of every mini-batch drawn from the memory, which is cycled",
    "concat": "the paper's (and iCaRL's, PyCIL's, FACIL's): the memory concatenated into the training set, "
              "each sample drawn once per epoch (ConcatReplayPlugin)",
}
#: How that memory is chosen (config key ``memory_selection``).
MEMORY_SELECTIONS = {
    "random": "class-balanced random samples (Avalanche's ClassBalancedBuffer)",
    "herding": "iCaRL's herding on the features, class-balanced (bsce_avalanche.herding_buffer)",
}


@dataclass(frozen=True)
class StrategyInfo:
    #: ``build(cfg, model, n_classes, common)``; ``common``: the keyword arguments of every Avalanche strategy
    build: Callable
    description: str
    memory: bool  #: needs ``memory_size`` (or ``memory_per_class``) > 0
    without_bsce: Optional[str] = None  #: why it cannot train with ``loss: bsce``, or None
    #: how it trains the first experience (empty memory, no old model): ``"plain"`` for Naive's loop on the
    #: experience's data (such strategies share first-experience models), else its own name
    first_experience: str = "plain"
    #: config keys its first experience depends on besides the common ones, e.g. a memory filled or a
    #: validation split made before training
    first_experience_keys: tuple[str, ...] = ()
    ce_loss: str = "softmax_ce"  #: its training loss with ``loss: ce`` (``bsce`` is always a softmax CE)


def _memory_total(cfg, n_classes: int) -> int:
    return cfg.memory_per_class * n_classes if cfg.memory_per_class else cfg.memory_size


def uses_replay_option(config: Mapping) -> bool:
    """Whether ``replay`` and ``memory_selection`` apply (Replay, LwF with memory; the others keep a
    memory of their own kind, or none)."""
    return config["strategy"] == "replay" or (config["strategy"] == "lwf" and config["lwf_memory"])


def _replay_plugin(cfg, n_classes: int):
    """The rehearsal plugin of ``cfg.replay`` over a class-balanced memory."""
    if cfg.memory_selection == "herding":
        buffer = herding_buffer(cfg.memory_size)
    elif cfg.memory_per_class:
        buffer = ClassBalancedBuffer(max_size=_memory_total(cfg, n_classes), adaptive_size=False,
                                     total_num_classes=n_classes)
    else:
        buffer = ClassBalancedBuffer(max_size=cfg.memory_size, adaptive_size=True)
    if cfg.replay == "concat":
        return ConcatReplayPlugin(buffer.max_size, storage_policy=buffer)
    return ReplayPlugin(buffer.max_size, batch_size_mem=cfg.batch_size_mem, storage_policy=buffer)


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
    return ER_ACE(model=model, criterion=CrossEntropyLoss(), mem_size=_memory_total(cfg, n_classes),
                  batch_size_mem=cfg.batch_size_mem or cfg.batch_size, **common)


def _bic(cfg, model, n_classes, common):
    return BiC(model=model, criterion=CrossEntropyLoss(), mem_size=_memory_total(cfg, n_classes),
               val_percentage=cfg.bic_val_fraction, stage_2_epochs=cfg.bic_stage2_epochs,
               lr=cfg.bic_stage2_lr, **common)


def _gdumb(cfg, model, n_classes, common):
    return GDumb(model=model, criterion=CrossEntropyLoss(), mem_size=_memory_total(cfg, n_classes), **common)


STRATEGIES: dict[str, StrategyInfo] = {
    "naive": StrategyInfo(_naive, "fine-tuning on each experience, no memory (Avalanche's Naive)", memory=False),
    "replay": StrategyInfo(_naive, "Naive + a rehearsal memory (replay: its protocol)", memory=True),
    "lwf": StrategyInfo(_lwf, "Learning without Forgetting (distillation); lwf_memory: true adds rehearsal",
                        memory=False),
    # iCaRL's first mini-batch also runs an extra forward pass in train mode (BatchNorm statistics)
    "icarl": StrategyInfo(_icarl, "iCaRL: herding memory, distillation; evaluates with icarl_eval", memory=True,
                          first_experience="icarl", ce_loss="sigmoid_bce"),
    # ER-ACE fills its memory before training (random draws); BiC holds out a validation split
    "er_ace": StrategyInfo(_er_ace, "ER-ACE: replay with an asymmetric cross-entropy", memory=True,
                           without_bsce="ER-ACE uses its own loss", first_experience="er_ace",
                           first_experience_keys=("memory_size", "memory_per_class")),
    "bic": StrategyInfo(_bic, "BiC: replay, then a bias-correction layer trained on held-out memory",
                        memory=True, first_experience="bic",
                        first_experience_keys=("memory_size", "memory_per_class", "bic_val_fraction")),
    "gdumb": StrategyInfo(_gdumb, "GDumb: trains from scratch on a class-balanced memory", memory=True,
                          first_experience="gdumb", first_experience_keys=("memory_size", "memory_per_class")),
}


def online_keys_error(cfg) -> Optional[str]:
    """Why ``batch_size_mem`` cannot apply to this run, or None (checked with the config)."""
    if cfg.batch_size_mem is not None and not (cfg.strategy == "er_ace" or (uses_replay_option(vars(cfg))
                                                                             and cfg.replay == "half_batch")):
        return "batch_size_mem applies to er_ace and to replay: half_batch (Avalanche's ReplayPlugin) only: remove it."
    return None


def build_strategy(cfg, model, n_classes: int, device, plugins: list, evaluator):
    """The Avalanche strategy named by ``cfg.strategy`` (``plugins`` are added to it)."""
    optimizer = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    plugins = list(plugins)
    if cfg.lr_milestones:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.lr_milestones, cfg.lr_gamma)
        plugins.append(LRSchedulerPlugin(scheduler, reset_scheduler=True, reset_lr=True))
    if uses_replay_option(vars(cfg)):  # replay, and lwf with lwf_memory
        plugins.append(_replay_plugin(cfg, n_classes))
    common = dict(optimizer=optimizer, train_mb_size=cfg.batch_size, train_epochs=cfg.epochs,
                  eval_mb_size=cfg.eval_batch_size, device=device, plugins=plugins, evaluator=evaluator)
    strategy = STRATEGIES[cfg.strategy].build(cfg, model, n_classes, common)
    fix_strategy(strategy)  # this strategy's plugins only: BiC on torch >= 2.2, iCaRL's herding on GPUs
    return strategy
