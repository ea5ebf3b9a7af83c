"""``ConcatReplayPlugin``: rehearsal by concatenating the memory into the training set.

The rehearsal protocol of the paper (and of iCaRL, PyCIL, FACIL): the strategy's ordinary shuffled
loader draws every new and every memory sample once per epoch, so old classes stay heavily
under-represented (20 memory samples against 500 new ones per class in CIFAR-100 B0-10): the
imbalance BSCE corrects. Avalanche's ``ReplayPlugin`` instead fills half of every mini-batch from
the cycled memory, which already rebalances half of each batch.
"""

from __future__ import annotations

from typing import Optional

import torch
from avalanche.training import ICaRL
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import (ClassBalancedBuffer, ExemplarsBuffer, HerdingSelectionStrategy,
                                               ParametricBuffer)
from torch.utils.data import DataLoader

from ._numbers import plain_number
from .priors import class_counts, loader_class_counts

__all__ = ["ConcatReplayPlugin", "ModelHerdingSelectionStrategy", "herding_buffer"]


def _check_mem_size(mem_size) -> int:
    mem_size = plain_number(mem_size)
    if isinstance(mem_size, bool) or not isinstance(mem_size, int) or mem_size < 1:
        raise ValueError(f"mem_size must be a positive integer, got {mem_size!r}.")
    return mem_size


class ConcatReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Rehearsal with the memory concatenated into each experience's training dataset.

    ``Naive(model, opt, CrossEntropyLoss(), plugins=[ConcatReplayPlugin(2000), BalancedSoftmaxPlugin()])``

    The memory joins ``adapted_dataset`` in ``after_train_dataset_adaptation``, so the strategy's
    own loader draws it, and ``BalancedSoftmaxPlugin``'s ``"sampling"``, ``"dataset"`` and ``"auto"``
    priors (in any plugin order) are the class counts of experience + memory. The memory is updated
    after each experience and saved by the runner's checkpoints (the policy is in ``__dict__``).

    :param mem_size: total number of exemplars kept in memory.
    :param storage_policy: the Avalanche ``ExemplarsBuffer`` that selects the exemplars, with
        ``max_size == mem_size``. Default: ``ClassBalancedBuffer(mem_size)``, random and split equally
        over the classes seen so far; iCaRL's herding: ``herding_buffer(mem_size)``.

    Composes with strategies that train on ``strategy.adapted_dataset`` with their default loader
    (``Naive``, ``LwF``, ...); refuses strategies or plugins with a replay memory of their own
    (``ReplayPlugin``, iCaRL, BiC, ER-ACE, GDumb, ...) and training loaders that would not draw each
    sample once per epoch (e.g. a task-balanced loader over several task labels).
    """

    def __init__(self, mem_size: int = 2000, storage_policy: Optional[ExemplarsBuffer] = None):
        super().__init__()
        mem_size = _check_mem_size(mem_size)
        if storage_policy is None:
            storage_policy = ClassBalancedBuffer(max_size=mem_size, adaptive_size=True)
        elif not isinstance(storage_policy, ExemplarsBuffer):
            raise TypeError(f"storage_policy must be an Avalanche ExemplarsBuffer (e.g. ClassBalancedBuffer, "
                            f"ParametricBuffer), got {type(storage_policy).__name__}.")
        elif storage_policy.max_size != mem_size:
            raise ValueError(f"storage_policy.max_size ({storage_policy.max_size}) differs from mem_size "
                             f"({mem_size}); build the policy with max_size=mem_size.")
        self.mem_size, self.storage_policy = mem_size, storage_policy

    def before_training(self, strategy, **kwargs):
        listed = sum(plugin is self for plugin in strategy.plugins)
        if listed > 1:
            raise ValueError(f"This ConcatReplayPlugin is listed {listed} times in the strategy's plugins (its memory "
                             f"would be concatenated {listed} times); list it once.")
        for owner in (strategy, *strategy.plugins):
            if owner is not self and (isinstance(owner, (ConcatReplayPlugin, ICaRL))
                                      or any(isinstance(value, ExemplarsBuffer) for value in vars(owner).values())):
                raise ValueError(f"ConcatReplayPlugin cannot be combined with {type(owner).__name__}, which keeps a "
                                 "replay memory of its own (old samples would be replayed twice); use one memory, "
                                 "e.g. Naive or LwF with plugins=[ConcatReplayPlugin(mem_size)].")
        check = getattr(getattr(self.storage_policy, "selection_strategy", None), "check_model", None)
        if check is not None:
            check(strategy.model)  # e.g. a herding layer name that the model lacks

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        memory = self.storage_policy.buffer
        if len(memory) > 0:
            # the concatenation takes the adapted (train) dataset's transform group
            strategy.adapted_dataset = strategy.adapted_dataset.concat(memory)

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_epochs > 0:
            return
        # the experience's loader is built: it must draw the concatenated dataset once per epoch, i.e. its per-epoch
        # label counts are proportional to the dataset's (proportional: a DDP rank draws its shard)
        drawn = loader_class_counts(strategy.dataloader, "sampling")
        data = class_counts(strategy.adapted_dataset)
        if drawn is None or drawn.shape != data.shape or not torch.allclose(drawn / drawn.sum(), data / data.sum()):
            raise ValueError(f"ConcatReplayPlugin needs a training loader that draws each sample of the experience + "
                             f"memory once per epoch, but {type(strategy.dataloader).__name__} does not (another "
                             "plugin replaced it, or it balances several task labels); use a class-incremental "
                             "benchmark and a strategy with its default loader.")

    def after_training_exp(self, strategy, **kwargs):
        self.storage_policy.post_adapt(strategy, strategy.experience)


class ModelHerdingSelectionStrategy(HerdingSelectionStrategy):
    """iCaRL's herding on the L2-normalised features of ``strategy.model`` at ``layer_name``.

    Avalanche's ``HerdingSelectionStrategy(model, layer_name)`` binds one model with a permanent hook (a
    local function: its memory cannot be pickled into a checkpoint) and leaves it in eval mode; this
    hooks the current model only while computing the features, restoring every module's mode.
    """

    def __init__(self, layer_name: str = "feature_extractor"):
        if not isinstance(layer_name, str) or not layer_name:
            raise ValueError(f"layer_name must be a module name of the model, got {layer_name!r}.")
        self.layer_name = layer_name

    def check_model(self, model: torch.nn.Module) -> torch.nn.Module:
        try:
            return model.get_submodule(self.layer_name)
        except AttributeError:
            raise ValueError(f"Herding layer {self.layer_name!r} is not a module of {type(model).__name__}; use one of "
                             f"its named_modules(), e.g. {[n for n, _ in model.named_children()]}.") from None

    @torch.no_grad()
    def make_sorted_indices(self, strategy, data):
        model = strategy.model
        features = []
        layer = self.check_model(model)
        hook = layer.register_forward_hook(lambda module, inputs, output: features.append(output.detach().flatten(1)))
        modes = {module: module.training for module in model.modules()}
        model.eval()
        try:
            eval_data = data.eval()
            loader = DataLoader(eval_data, batch_size=strategy.eval_mb_size, collate_fn=eval_data.collate_fn)
            for x, *_ in loader:
                model(x.to(strategy.device))
        finally:
            hook.remove()
            for module, training in modes.items():
                module.training = training
        return self.make_sorted_indices_from_features(torch.nn.functional.normalize(torch.cat(features), dim=1))


def herding_buffer(mem_size: int, layer_name: str = "feature_extractor") -> ParametricBuffer:
    """A class-balanced memory of ``mem_size`` exemplars chosen by iCaRL's herding on the features of
    the model's ``layer_name`` module. Avalanche's ``ParametricBuffer`` re-runs the herding on each
    class's kept exemplars whenever the memory shrinks (iCaRL keeps the first selection's order)."""
    mem_size = _check_mem_size(mem_size)
    return ParametricBuffer(mem_size, groupby="class", selection_strategy=ModelHerdingSelectionStrategy(layer_name))
