"""Fixes for avalanche-lib 0.6.0 on current PyTorch, in one place, each applied only where needed and
only while needed: Avalanche's modules stay as shipped.

* :func:`fix_strategy` gives an iCaRL strategy's plugin the herding with one host sync per pick
  (:class:`FastHerdingICaRLPlugin`) and a BiC strategy's plugin the original's distillation, over the classes
  (:class:`FixedBiCPlugin`; its bias-correction stage runs on torch >= 2.2), and optionally the paper's
  concatenated rehearsal (:class:`ConcatRehearsalBiCPlugin`): those plugin instances change class, nothing
  else does. The runner calls it on every strategy it builds; call it on your own ``ICaRL`` or ``BiC``.
* :func:`reshuffling_distributed_sampler` makes Avalanche's loaders reshuffle every epoch under DDP, from
  joining the process group to leaving it (``runner/distributed.py``).

Each fix is applied only on the Avalanche versions it was verified on (:data:`VERIFIED_AVALANCHE`); on
another one it is skipped with a warning (check whether that version still needs it).

Avalanche's private names that the package reads elsewhere are read here too, behind small functions
(:data:`AVALANCHE_PRIVATE_NAMES` lists them; ``tests/test_imports.py`` fails when one disappears): the label
tree of a ``FlatData`` (:func:`flat_data_parts` and friends, the priors' vectorised label read), the private
classes a checkpoint may hold (:data:`CHECKPOINT_PRIVATE_CLASSES`), iCaRL's plugin class
(:data:`ICaRLPlugin`), and the strategy hooks and the device map that DDP training rebinds
(:func:`set_distributed_device`, :func:`strategy_hook`, :func:`rebind_strategy_hooks`). Where a different
version could break a read, it is taken only on :data:`VERIFIED_AVALANCHE` (else the caller's slower public
path, or a warning).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from avalanche import __version__ as avalanche_version
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader, DistributedSampler

from avalanche.benchmarks.utils import _taskaware_classification_subset, classification_dataset, data_loader
from avalanche.benchmarks.utils import data as avalanche_data
from avalanche.benchmarks.utils import flat_data
from avalanche.distributed import DistributedHelper
from avalanche.training import storage_policy
from avalanche.benchmarks.utils.utils import concat_datasets
from avalanche.training.plugins import bic
from avalanche.training.storage_policy import ClassBalancedBuffer, ExemplarsBuffer, ReservoirSamplingBuffer
from avalanche.training.supervised import icarl

__all__ = ["VERIFIED_AVALANCHE", "fix_strategy", "FastHerdingICaRLPlugin", "BiCPluginWithoutVerbose",
           "FixedBiCPlugin", "ConcatRehearsalBiCPlugin", "bic_distillation", "BIC_REHEARSALS",
           "ReshufflingDistributedSampler", "reshuffling_distributed_sampler", "apply_avalanche_fixes",
           "AVALANCHE_PRIVATE_NAMES", "missing_private_names", "flat_data_parts", "lazy_range_start",
           "lazy_indices_list", "constant_sequence_value", "CHECKPOINT_PRIVATE_CLASSES", "ICaRLPlugin",
           "set_distributed_device", "STRATEGY_HOOKS", "strategy_hook", "rebind_strategy_hooks"]

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


def bic_distillation(new_logits: torch.Tensor, old_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """BiC's distillation (Wu et al. 2019, eq. 2): the cross-entropy between the old model's and the new model's
    softmax at temperature ``T`` over the classes (axis 1) of the old classes' logits, averaged over the batch,
    without a T^2 factor: the original's ``softmax_cross_entropy(logits=new / T, onehot_labels=softmax(old / T))``
    (resnet.py L606-609), PyCIL's models/bic.py L107-113."""
    return -(F.softmax(old_logits / T, dim=1) * F.log_softmax(new_logits / T, dim=1)).sum(dim=1).mean()


class FixedBiCPlugin(BiCPluginWithoutVerbose):
    """Avalanche 0.6.0's ``BiCPlugin`` with the original's distillation: softmax over the classes at ``T``
    (:func:`bic_distillation`); its rehearsal is Avalanche's (``half_batch``), :class:`ConcatRehearsalBiCPlugin`
    the paper's.

    What differs between Avalanche 0.6.0 (avalanche/training/plugins/bic.py), the original
    (wuyuebupt/LargeScaleIncrementalLearning @7f687a3, resnet.py, imagenet_main.py, utils_imagenet.py) and PyCIL
    (G-U-N/PyCIL @87cc411, models/bic.py, utils/inc_net.py, utils/data_manager.py):

    * Distillation. Avalanche L292-295: ``softmax(old / 2, dim=0)``, over the *batch*, and ``T`` hard-coded (its
      ``T`` argument, L111, is unused). Original resnet.py L606-609: ``T = 2``, ``tf.nn.softmax`` over the last
      axis (the classes) of the old classes' logits, ``softmax_cross_entropy`` averaged over the batch, no T^2;
      PyCIL models/bic.py L107-113 the same (``dim=1``, ``-mean(sum(p * log q))``). Fixed here (both protocols).
    * Weighting: the same in all three: lambda = n_old / n_seen, loss = (1 - lambda) CE + lambda KD (original
      L629-630, ``itera / (itera + 1)`` for equal steps; PyCIL L64 and L114; Avalanche L246-248).
    * Old logits: from step 2 on, the old model's logits of the previous step's classes go through the previous
      step's bias layer (original L560-578; Avalanche L320-333); PyCIL applies every bias layer
      (inc_net.py L263-272), the new model's training logits too.
    * Bias layer: alpha * logit + beta on the *new* classes' logits only (original L594, alpha = 1, beta = 0 at
      start; PyCIL inc_net.py L237-248; Avalanche BiasLayer over ``adapted_dataset``'s classes, L370-371), at
      evaluation (original L520, Avalanche L219-224); loss CE + 0.1 beta^2 / 2 (original L636-637, Avalanche
      L413-422); PyCIL models/bic.py L118 takes the CE of a softmax (two softmaxes) with weight decay 2e-4.
    * Stage 2: original: after every training epoch, 2 epochs of bias training on non-augmented validation
      images (resnet.py L738-767, imagenet_main.py L48 and L388-394: 200 epochs in all, lr / 10 at 60, 120, 160,
      180); PyCIL: after stage 1, 170 epochs, lr 0.1 / 10 at 60, 100, 140 (L12-14, L177-200); Avalanche: after
      stage 1, ``stage_2_epochs`` (200), SGD lr 0.1 momentum 0.9, / 10 at 50, 100, 150 (L377-385), on the
      validation samples with the training transforms. Not changed here.
    * Memory and validation split. Original imagenet_main.py: memory 2000 = nb_proto 20 x 100 classes (L75);
      20 samples per class (0.1 x 2000 / 10 classes per step, L67 and L110-112; chosen at random,
      utils_imagenet.py L59-72) are held out of every class's training data from the start; at step t each seen
      class, old and new, gives floor(0.1 x 2000 / n_old) validation samples, and each old class
      ceil(2000 / n_old) - that many herding exemplars to the training set (L439-454, L488-489): the 2000 stored
      include the old classes' validation samples (10 %), the new classes' come from their own data, and the
      training set is new data + exemplars, each drawn once per epoch. PyCIL: memory_size herding exemplars; at
      step t >= 1, int(0.1 x memory_size / n_old) random samples of each new class and of each old class's
      exemplars are the validation set, the rest is trained on (models/bic.py L47-55, data_manager.py
      L149-175); step 0 trains on all its data. Avalanche: a validation set of int(val_percentage x mem_size)
      samples (200) split over all seen classes (L149, L298-307), the first of each new class's samples (L157,
      every step, step 0 included), kept in per-class buffers *besides* an experience-balanced memory of
      mem_size (L104): 2200 stored; each mini-batch draws 128 new samples + 128 from the cycled memory
      (ReplayDataLoader, L195-217). :class:`ConcatRehearsalBiCPlugin` follows the original.
    """

    def cross_entropy(self, new_outputs, old_outputs):
        return bic_distillation(new_outputs, old_outputs, self.T)


class ConcatRehearsalBiCPlugin(FixedBiCPlugin):
    """:class:`FixedBiCPlugin` on the paper's rehearsal (the original's, imagenet_main.py L439-454): the training set
    of a step is the new data less its validation samples + the stored exemplars, drawn once per epoch by the
    strategy's own loader; the ``mem_size`` samples stored are the exemplars (``storage_policy``, ``mem_size -
    int(val_percentage * mem_size)``, class-balanced random by default) and the old classes' validation samples
    (``int(val_percentage * mem_size)``, equally split over the classes seen, re-split after each step). At step
    t >= 1 each new class holds out ``validation // n_old`` samples, as many as an old class has (the original's
    floor(0.1 x 2000 / n_old)); step 0 holds out Avalanche's split, so it trains as Avalanche's BiC does.
    Build it with :func:`fix_strategy` (``bic_rehearsal="concat"``)."""

    def use_memory(self, storage_policy: Optional[ExemplarsBuffer] = None) -> None:
        """Make ``storage_policy`` (default: class-balanced random) the exemplar memory, before training."""
        size = self.mem_size - int(self.val_percentage * self.mem_size)
        if storage_policy is None:
            storage_policy = ClassBalancedBuffer(max_size=size, adaptive_size=True)
        elif storage_policy.max_size != size:
            raise ValueError(f"BiC's exemplar memory must hold mem_size less the validation split ({size}), got "
                             f"max_size {storage_policy.max_size}: build it with max_size={size}.")
        if len(self.storage_policy.buffer) or self.val_buffer:
            raise ValueError("BiC's rehearsal can be changed before training only: call fix_strategy(strategy, "
                             "bic_rehearsal='concat') on a new strategy.")
        self.storage_policy = storage_policy

    def before_train_dataset_adaptation(self, strategy, **kwargs):
        if not self.val_buffer:  # step 0: Avalanche's split (no memory yet)
            return super().before_train_dataset_adaptation(strategy, **kwargs)
        new_data = strategy.experience.dataset
        task_id = strategy.clock.train_exp_counter
        per_class = int(self.val_percentage * self.mem_size) // len(self.val_buffer)  # an old class's share
        indices: dict[int, list[int]] = {}
        for i, target in enumerate(new_data.targets):
            indices.setdefault(int(target), []).append(i)
        train = []
        for c, idx in indices.items():
            self.class_to_tasks[c] = task_id
            if c not in self.val_buffer:
                self.val_buffer[c] = ReservoirSamplingBuffer(per_class)
            self.val_buffer[c].update_from_dataset(new_data.subset(idx[:per_class]))  # Avalanche's picks
            train.append(new_data.subset(idx[per_class:]))
        self.seen_classes.update(indices)
        strategy.experience.dataset = concat_datasets(train)  # the memory is chosen from it, as in Avalanche

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        if len(self.storage_policy.buffer):  # the concatenation takes the adapted (train) dataset's transforms
            strategy.adapted_dataset = strategy.adapted_dataset.concat(self.storage_policy.buffer)

    def before_training_exp(self, strategy, **kwargs):
        if self.bias_layer is not None:  # fixed during stage 1; the strategy's own loader draws the data
            self.bias_layer.requires_grad_(False)

    def after_training_exp(self, strategy, **kwargs):
        super().after_training_exp(strategy, **kwargs)
        # the old classes' share of the stored validation samples, now that they are more
        for c, size in zip(self.seen_classes, self.get_group_lengths(len(self.seen_classes))):
            self.val_buffer[c].resize(strategy, size)

    def bias_correction_step(self, strategy, *args, **kwargs):
        # Avalanche's bias layer takes adapted_dataset's classes: the new ones, without the memory
        with _replaced(strategy, "adapted_dataset", strategy.experience.dataset):
            return super().bias_correction_step(strategy, *args, **kwargs)


#: BiC's rehearsal protocols (``fix_strategy(..., bic_rehearsal=)``, the runner's ``replay``).
BIC_REHEARSALS = ("half_batch", "concat")


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


def fix_strategy(strategy, bic_rehearsal: str = "half_batch",
                 bic_memory: Optional[ExemplarsBuffer] = None) -> list[str]:
    """Give this strategy's Avalanche plugins that need a fix their fixed subclass (the instances only);
    return the names of the fixes applied. Idempotent; other strategies and Avalanche's classes are untouched.
    Call it after building the strategy, before training it.

    :param bic_rehearsal: a BiC strategy's rehearsal: ``"half_batch"``, Avalanche's (128 new + 128 memory
        samples per mini-batch, :class:`FixedBiCPlugin`), or ``"concat"``, the paper's
        (:class:`ConcatRehearsalBiCPlugin`).
    :param bic_memory: with ``"concat"``, the exemplar memory (``max_size = mem_size - int(val_percentage *
        mem_size)``); default: class-balanced random.
    """
    if bic_rehearsal not in BIC_REHEARSALS:
        raise ValueError(f"bic_rehearsal must be one of {', '.join(BIC_REHEARSALS)}, got {bic_rehearsal!r}.")
    applied = []
    for plugin in strategy.plugins:
        if type(plugin) is icarl._ICaRLPlugin and _verified("iCaRL herding"):
            plugin.__class__ = FastHerdingICaRLPlugin
            applied.append("iCaRL herding (one sync per pick)")
        elif type(plugin) is bic.BiCPlugin and _verified("BiC distillation and rehearsal"):
            plugin.__class__ = FixedBiCPlugin
            applied.append("BiC distillation over the classes")
            if bic_rehearsal == "concat":
                plugin.__class__ = ConcatRehearsalBiCPlugin
                plugin.use_memory(bic_memory)
                applied.append("BiC concatenated rehearsal")
            if _multistep_lr_lacks_verbose():
                applied.append("BiC MultiStepLR(verbose=)")
    if bic_rehearsal == "concat" and not any(isinstance(p, ConcatRehearsalBiCPlugin) for p in strategy.plugins):
        raise ValueError(f"bic_rehearsal='concat' needs a BiC strategy with Avalanche {', '.join(VERIFIED_AVALANCHE)}'s "
                         f"BiCPlugin, not yet fixed (here: Avalanche {avalanche_version}, plugins "
                         f"{[type(p).__name__ for p in strategy.plugins]}): build a new BiC, or use 'half_batch'.")
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


# ------------------------------------------------------------------ Avalanche's private names, in one place
#: Every private name of Avalanche the package relies on: (module, class or None, attribute; the attribute is
#: an instance's where the class only sets it in ``__init__``). :func:`missing_private_names` checks them.
AVALANCHE_PRIVATE_NAMES = (
    ("avalanche.benchmarks.utils.flat_data", "FlatData", "_datasets"),
    ("avalanche.benchmarks.utils.flat_data", "FlatData", "_indices"),
    ("avalanche.benchmarks.utils.flat_data", "LazyRange", "_start"),
    ("avalanche.benchmarks.utils.flat_data", "LazyRange", "_offset"),
    ("avalanche.benchmarks.utils.flat_data", "LazyIndices", "_to_eager"),
    ("avalanche.benchmarks.utils.flat_data", "LazyIndices", "_eager_list"),
    ("avalanche.benchmarks.utils.flat_data", "ConstantSequence", "_constant_value"),
    ("avalanche.benchmarks.utils.data", None, "_FlatDataWithTransform"),
    ("avalanche.benchmarks.utils.classification_dataset", None, "_TensorClassificationDataset"),
    ("avalanche.training.storage_policy", None, "_ParametricSingleBuffer"),
    ("avalanche.training.supervised.icarl", None, "_ICaRLPlugin"),
    ("avalanche.distributed", "DistributedHelper", "_dev_map"),
    ("avalanche.distributed", "DistributedHelper", "_make_map"),
    ("avalanche.training.templates", "SupervisedTemplate", "_distributed_check"),
    ("avalanche.training.templates", "SupervisedTemplate", "_after_training_epoch"),
    ("avalanche.training.templates", "SupervisedTemplate", "_before_training_exp"),
    ("avalanche.training.templates", "SupervisedTemplate", "_after_training_exp"),
)


def _instance(cls):
    """A small instance of the classes whose private attributes are set in ``__init__``, or ``cls`` itself."""
    if cls is flat_data.FlatData:
        return flat_data.FlatData([[0, 1, 2]], indices=[0, 2])
    if cls is flat_data.LazyRange:
        return flat_data.LazyRange(0, 3)
    if cls is flat_data.LazyIndices:
        return flat_data.LazyIndices([0, 1])
    if cls is flat_data.ConstantSequence:
        return flat_data.ConstantSequence(1, 3)
    if getattr(cls, "__name__", None) == "SupervisedTemplate":  # _distributed_check: set in BaseTemplate.__init__
        from avalanche.training.plugins import EvaluationPlugin

        model = torch.nn.Linear(1, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No loggers specified"
            return cls(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), evaluator=EvaluationPlugin())
    return cls  # DistributedHelper: Avalanche's instance


def missing_private_names(names=AVALANCHE_PRIVATE_NAMES) -> list[str]:
    """The names of ``names`` that the installed Avalanche lacks (``module.Class.attribute``)."""
    import importlib

    missing = []
    for module_name, class_name, attribute in names:
        try:
            owner = importlib.import_module(module_name)
            if class_name is not None:
                owner = _instance(getattr(owner, class_name))
            if hasattr(owner, attribute):
                continue
        except (ImportError, AttributeError, TypeError):
            pass
        missing.append(".".join(filter(None, (module_name, class_name, attribute))))
    return missing


_PRIVATE_READS_OK = avalanche_version in VERIFIED_AVALANCHE


def flat_data_parts(flat) -> Optional[tuple]:
    """A ``FlatData``'s leaves and index list (its ``_datasets`` and ``_indices``: None where it has none), or
    None on an Avalanche version these reads were not verified on (the caller reads element by element)."""
    if not _PRIVATE_READS_OK:
        return None
    return getattr(flat, "_datasets", ()), getattr(flat, "_indices", None)


def lazy_range_start(indices: "flat_data.LazyRange") -> int:
    """The first index of a ``LazyRange`` (``LazyRange[i] == start + offset + i``; its ``__getitem__`` asserts)."""
    return indices._start + indices._offset


def lazy_indices_list(indices: "flat_data.LazyIndices") -> list:
    """A ``LazyIndices`` as the eager list it holds (made eager in place, as Avalanche does on first use)."""
    indices._to_eager()  # fills _eager_list in place, returns None
    return indices._eager_list


def constant_sequence_value(sequence: "flat_data.ConstantSequence"):
    """The value every element of a ``ConstantSequence`` holds."""
    return sequence._constant_value


#: Avalanche's private classes whose instances a checkpoint's replay memory may hold (runner/checkpoint.py).
CHECKPOINT_PRIVATE_CLASSES = (avalanche_data._FlatDataWithTransform, classification_dataset._TensorClassificationDataset,
                              storage_policy._ParametricSingleBuffer)
#: iCaRL's plugin class (Avalanche's ICaRL adds it; the first-experience cache saves its sizes).
ICaRLPlugin = icarl._ICaRLPlugin


def set_distributed_device(device: torch.device, use_cuda: bool) -> None:
    """What Avalanche's ``DistributedHelper.init_distributed`` sets after joining a process group, with the
    given ``device`` (the runner's, from LOCAL_RANK rather than RANK)."""
    DistributedHelper.use_cuda = use_cuda
    if _verified("DistributedHelper device map"):
        DistributedHelper._dev_map = DistributedHelper._make_map(device)


#: The strategy's private training hooks that DDP training wraps (runner/distributed.py).
STRATEGY_HOOKS = ("_after_training_epoch", "_before_training_exp", "_after_training_exp")


def strategy_hook(strategy, name: str):
    """The strategy's bound hook ``name`` (one of :data:`STRATEGY_HOOKS`)."""
    if name not in STRATEGY_HOOKS or not hasattr(strategy, name):
        raise RuntimeError(f"bsce_avalanche.compat: this Avalanche ({avalanche_version}) strategy has no {name} "
                           f"to wrap for DDP training (verified on {', '.join(VERIFIED_AVALANCHE)}).")
    return getattr(strategy, name)


def rebind_strategy_hooks(strategy, **hooks) -> None:
    """Set the instance's hooks (``after_training_epoch=...``: :data:`STRATEGY_HOOKS` without the underscore),
    and turn off Avalanche's check that only warns about plugins without a ``supports_distributed`` flag."""
    for name, hook in hooks.items():
        strategy_hook(strategy, "_" + name)  # it exists
        setattr(strategy, "_" + name, hook)
    strategy._distributed_check = True
