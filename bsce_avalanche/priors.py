"""Class priors for BSCE, computed from label tensors, never from images.

BSCE's prior is the label distribution of the mini-batches actually trained on: for a plain loader
the training set's class frequency; Avalanche's ``ReplayDataLoader`` (half of every mini-batch from
the cycled memory) draws old classes far more often. :func:`loader_class_counts` derives it exactly,
in expectation, from the loader's datasets and batch sizes (else: the mini-batches' running label
counts). :class:`ClassPrior` holds the policy and the cached log-adjustment, one experience at a time;
:class:`WindowPrior`, beside it, is ER-LAS's sliding-window prior (Huang et al., TMLR 2024): the label counts of
the last ``l`` mini-batches, kept across experiences, for online continual learning. :func:`make_prior` builds
the one a prior mode names.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.benchmarks.utils.flat_data import ConstantSequence, FlatData, LazyIndices, LazyRange

from . import compat
from ._choices import check_choice
from .catalog import MAX_WINDOW, PRIOR_MODES
from .losses import ZERO_PRIOR_OFFSET, _check_tau, as_class_counts, check_targets_have_prior, log_prior_adjustment

__all__ = ["dataset_labels", "class_counts", "loader_class_counts", "window_log_prior", "make_prior", "ClassPrior",
           "WindowPrior", "PRIOR_MODES", "MAX_WINDOW"]



def _index_tensor(indices) -> Tensor:
    """An Avalanche ``FlatData``'s index list (a list, ``LazyIndices`` or ``LazyRange``) as a tensor."""
    if isinstance(indices, LazyRange):
        return torch.arange(len(indices)) + compat.lazy_range_start(indices)
    if isinstance(indices, LazyIndices):
        indices = compat.lazy_indices_list(indices)
    return torch.as_tensor(np.asarray(indices, dtype=np.int64))


def _flat_data_labels(flat) -> Optional[Tensor]:
    """Vectorised read of an Avalanche ``FlatData`` of labels (concat + subset tree), or None for
    a structure we do not know. Element by element costs ~0.6 us per label (ImageNet: 1.28M). Its private
    parts are read through :mod:`.compat` (None on an Avalanche version they were not verified on)."""
    parts = compat.flat_data_parts(flat)
    if parts is None:
        return None
    datasets, indices = parts
    leaves = []
    for leaf in datasets:
        if isinstance(leaf, DataAttribute):
            leaf = leaf.data
        if isinstance(leaf, ConstantSequence):
            leaves.append(torch.full((len(leaf),), int(compat.constant_sequence_value(leaf)), dtype=torch.long))
        elif isinstance(leaf, FlatData):
            sub = _flat_data_labels(leaf)
            if sub is None:
                return None
            leaves.append(sub)
        elif isinstance(leaf, (Tensor, np.ndarray, list, tuple, range)):
            leaves.append(torch.as_tensor(np.asarray(leaf)).long().flatten())
        else:
            return None
    if not leaves:
        return None
    labels = torch.cat(leaves)
    if indices is not None:
        labels = labels[_index_tensor(indices)]
    return labels


def dataset_labels(dataset) -> Tensor:
    """The class label of every sample of ``dataset`` (its ``targets``; no sample is loaded), 1-D ``long``."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ValueError(f"Cannot compute a class prior: the training dataset ({type(dataset).__name__}) has no "
                         "`targets` attribute. Build it with labels (e.g. an Avalanche classification dataset, or set "
                         "`dataset.targets`), or pass a fixed prior=[...] / prior='batch' to BalancedSoftmaxPlugin.")
    data = getattr(targets, "data", None)  # Avalanche DataAttribute -> FlatData
    labels = _flat_data_labels(data) if isinstance(data, FlatData) else None
    if labels is None and isinstance(targets, Tensor):
        labels = targets.detach().cpu().flatten()
    elif labels is None:
        labels = torch.as_tensor(np.asarray(targets if isinstance(targets, np.ndarray) else list(targets)))
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        if labels.numel() and not torch.equal(labels, labels.round()):
            raise ValueError("Dataset targets are not integer class labels; BSCE needs class indices.")
    labels = labels.long().flatten()
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"Dataset targets contain a negative label ({int(labels.min())}).")
    return labels


def class_counts(labels_or_dataset, num_classes: int | None = None) -> Tensor:
    """Number of samples per class (float64), from a label tensor or a dataset."""
    if isinstance(labels_or_dataset, Tensor):
        labels = labels_or_dataset.long().flatten().cpu()
    else:
        labels = dataset_labels(labels_or_dataset)
    return torch.bincount(labels, minlength=num_classes or 0).double()


def _add(total: Optional[Tensor], counts: Tensor) -> Tensor:
    """``total + counts``, the shorter one padded with zeros (``None`` is no counts yet)."""
    if total is None:
        return counts
    if total.numel() < counts.numel():
        total, counts = counts, total
    out = total.clone()
    out[: counts.numel()] += counts
    return out


def _samples_drawn(n: int, batch: int, n_batches: int, drop_last: bool, cycles: bool) -> float:
    """Samples drawn from a shuffled dataset of size ``n`` by ``n_batches`` batches that cycle through
    it, or stop after one pass (ceil or floor of n / batch batches) unless ``cycles``."""
    per_pass = n // batch if drop_last else math.ceil(n / batch)
    if per_pass == 0:
        return 0.0
    full, rest = divmod(n_batches if cycles else min(n_batches, per_pass), per_pass)
    return full * (per_pass * batch if drop_last else n) + rest * batch


def _shard_size(loader, n: int, drop_last: bool) -> int:
    """Samples per process of a dataset of size ``n``: under distributed sampling (DDP) one rank's
    shard, which sets how often a small dataset (replay memory) cycles."""
    if not getattr(loader, "distributed_sampling", False) or not torch.distributed.is_initialized():
        return n
    replicas = torch.distributed.get_world_size()
    return n // replicas if drop_last else math.ceil(n / replicas)


def loader_class_counts(loader, weighting: str = "sampling") -> Optional[Tensor]:
    """Expected number of samples per class that one epoch of ``loader`` yields.

    :param weighting: ``"sampling"``: what the loader really draws (a cycled replay buffer counts as
        often as it is drawn); ``"dataset"``: the class counts of all the data it draws from (new
        data + memory, the paper's ``n_j``).
    :return: float64, or None when the loader's sampling is unknown (custom samplers, infinite loaders).
    """
    if weighting not in ("sampling", "dataset"):
        raise ValueError(f"weighting must be 'sampling' or 'dataset', got {weighting!r}.")
    if isinstance(loader, MultiDatasetDataLoader):  # task-balanced, group-balanced and replay loaders
        if loader.never_ending:
            return None
        drop_last = bool(loader.loader_kwargs.get("drop_last", False))
        total = None
        for i, (dataset, batch) in enumerate(zip(loader.datasets, loader.batch_sizes)):
            n = len(dataset)
            if n == 0:
                continue
            weight = 1.0
            if weighting == "sampling":
                cycles = loader.oversample_small_datasets and i != loader.termination_dataset
                shard = _shard_size(loader, n, drop_last)  # what this process's sampler iterates
                weight = _samples_drawn(shard, batch, len(loader), drop_last, cycles) / n
            total = _add(total, class_counts(dataset) * weight)
        return total
    if isinstance(loader, DataLoader):
        sampler = loader.batch_sampler.sampler if isinstance(loader.batch_sampler, BatchSampler) else None
        if isinstance(sampler, SequentialSampler) or (isinstance(sampler, RandomSampler) and not sampler.replacement
                                                      and sampler.num_samples == len(loader.dataset)):
            return class_counts(loader.dataset)
    return None


def window_log_prior(counts: Tensor, tau: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``tau * log(prior)`` of integer label ``counts`` on their device, without a host sync: up to a
    constant (``log(count / max count)``, which the softmax ignores; exactly 0 for a uniform prior), zero-count
    classes at :data:`~bsce_avalanche.losses.ZERO_PRIOR_OFFSET`. ``counts`` must not be all zero."""
    if tau == 0.0:
        return torch.zeros(counts.shape, dtype=dtype, device=counts.device)
    counts = counts.double()
    log_ratio = torch.log(counts.clamp_min(1.0) / counts.max())  # <= 0, one sample in 2**31 >= -21.5
    return torch.where(counts > 0, tau * log_ratio, torch.full_like(counts, ZERO_PRIOR_OFFSET)).to(dtype)


def _check_window(window) -> int:
    """``window`` (mini-batches) as an int, or a ValueError saying what is wrong with it."""
    if window is None:
        raise ValueError("prior='window' needs window=l, the number of mini-batches whose labels make the prior "
                         "(ER-LAS: 1 on CIFAR, 10 on ImageNet).")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int (mini-batches), got {window!r}.")
    if window > MAX_WINDOW:
        raise ValueError(f"window={window} is beyond what memory allows: the window holds window x classes label "
                         f"counts (int64), so at most {MAX_WINDOW:,} mini-batches ({MAX_WINDOW * 8 * 100 / 1e9:g} GB "
                         "with 100 classes); ER-LAS uses 1 to 10.")
    return int(window)


def _check_ring(ring, ring_next, window) -> Optional[str]:
    """What is wrong with a window's saved ring (``(window, classes)`` counts) and position, or None."""
    if ring is None:
        return None
    if not isinstance(ring, Tensor) or ring.dim() != 2 or ring.shape[0] != window:
        shape = tuple(ring.shape) if isinstance(ring, Tensor) else type(ring).__name__
        return f"its window ring is {shape}, not ({window}, classes)"
    if isinstance(ring_next, bool) or not isinstance(ring_next, int) or not 0 <= ring_next < window:
        return f"its window position is {ring_next!r}, not in [0, {window})"
    return None


def make_prior(mode: Union[str, Sequence[float], Tensor] = "auto", tau: float = 1.0,
               window: Optional[int] = None) -> Union["ClassPrior", "WindowPrior"]:
    """BSCE's class prior for ``mode`` (one of :data:`PRIOR_MODES`, or per-class counts): a :class:`WindowPrior` of
    ``window`` mini-batches for ``"window"``, else a :class:`ClassPrior`; ``tau``: the strength of the adjustment."""
    if isinstance(mode, str) and mode == "window":
        return WindowPrior(window, tau)
    return ClassPrior(mode, tau, window)


class _Prior:
    """What both priors share: ``tau``, ``history`` (the prior, as frequencies, at the end of every experience),
    ``prior`` and the ``(mode, window)`` a saved state must match. ``counts`` (a property or attribute of each):
    the label counts the prior is made of now, or None."""

    mode: str
    window: Optional[int]
    counts: Optional[Tensor]

    def __init__(self, tau: float):
        self.tau = _check_tau(tau)
        self.history: list[list[float]] = []  # the prior (frequencies) of every experience

    @property
    def prior(self) -> Optional[Tensor]:
        """Class frequencies of the current experience, or of the current window (None before the first one)."""
        counts = self.counts
        return None if counts is None else (counts.double() / counts.sum()).cpu()

    def _record(self, counts: Optional[Tensor], trim: bool) -> Optional[list[float]]:
        """Append ``counts`` as frequencies (``trim``: to the classes seen) to :attr:`history` and return them."""
        if counts is None:
            return None
        counts = counts.double().cpu()
        if trim:  # sized like the logits: trim to the classes seen, as the others
            counts = counts[: int(torch.nonzero(counts).max()) + 1]
        self.history.append((counts / counts.sum()).tolist())
        return self.history[-1]

    def _check_settings(self, state: dict) -> None:
        if (state["mode"], state["window"]) != (self.mode, self.window):
            raise ValueError(f"This state is of a prior with mode={state['mode']!r}, window={state['window']!r}, not "
                             f"mode={self.mode!r}, window={self.window!r}: build the prior with the same settings.")


class ClassPrior(_Prior):
    """BSCE's class prior, one training experience at a time, and its log-adjustment.

    :class:`~bsce_avalanche.BalancedSoftmaxPlugin` drives it: :meth:`start_experience` on a new training
    loader, :meth:`adjustment` for every training mini-batch, :meth:`end_experience` at the end.

    :param mode: one of :data:`PRIOR_MODES` (see ``BalancedSoftmaxPlugin``) but ``"window"``, or per-class counts
        (or frequencies) used as they are. ``ClassPrior("window", window=l)`` builds a :class:`WindowPrior`
        (as :func:`make_prior` does).
    :param tau: strength of the adjustment (``0`` = plain CE, ``1`` = BSCE).
    :param window: only with ``mode="window"``.
    """

    window = None  # no window (WindowPrior's setting): in the state_dict, which must match on loading

    def __new__(cls, mode: Union[str, Sequence[float], Tensor] = "auto", tau: float = 1.0,
                window: Optional[int] = None):
        if cls is ClassPrior and isinstance(mode, str) and mode == "window":  # as before WindowPrior
            return WindowPrior(window, tau)
        return super().__new__(cls)

    def __init__(self, mode: Union[str, Sequence[float], Tensor] = "auto", tau: float = 1.0,
                 window: Optional[int] = None):
        if isinstance(mode, str):
            check_choice("prior mode", mode, PRIOR_MODES, "a sequence of per-class counts")
            if mode == "window":  # only a subclass gets here: ClassPrior("window") is a WindowPrior
                raise TypeError(f"{type(self).__name__} has no window mode: build a WindowPrior (make_prior).")
            self.fixed_counts: Optional[Tensor] = None
        else:
            self.fixed_counts = as_class_counts(mode, name="prior")
            mode = "fixed"
        self.mode = mode
        super().__init__(tau)
        if window is not None:
            raise ValueError(f"window={window!r} applies only to prior='window' (got prior={mode!r}): remove it, or "
                             "use prior='window'.")
        self.counts: Optional[Tensor] = None  # the current experience's class counts
        self.counts_batches = mode == "batch"  # counts = running label counts of the mini-batches
        self._adjustment: Optional[Tensor] = None  # cached tau * log prior, logits-sized

    def __setstate__(self, state: dict) -> None:
        """Unpickled (from a checkpoint): a window prior saved before :class:`WindowPrior` (a ClassPrior of mode
        ``"window"``) becomes one."""
        if state.get("mode") == "window":
            self.__class__ = WindowPrior
            state = {k: v for k, v in state.items() if k in WindowPrior.STATE_ATTRIBUTES}
        self.__dict__.update(state)

    def start_experience(self, loader) -> None:
        """Compute the counts of the experience that ``loader`` draws, from label tensors."""
        self._adjustment = None
        if self.fixed_counts is not None:
            self.counts = self.fixed_counts
        elif self.mode == "batch":
            self.counts = None
        else:
            self.counts = loader_class_counts(loader, "dataset" if self.mode == "dataset" else "sampling")
            if self.counts is None and self.mode != "auto":
                raise ValueError(f"prior={self.mode!r} cannot be derived for the training loader "
                                 f"{type(loader).__name__} (unknown sampling); use prior='auto' or 'batch' (counts "
                                 "the labels of the mini-batches), or a fixed prior.")
        self.counts_batches = self.counts is None

    def adjustment(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``tau * log(prior)`` sized like ``logits``: cached, except while counting the
        mini-batch labels (a ``bincount`` and a ``log`` per mini-batch, all-reduced under
        ``torch.distributed`` so that every rank uses the same prior)."""
        num_classes = logits.shape[1]
        if self.counts_batches:
            batch = torch.bincount(targets.long().flatten(), minlength=num_classes).double()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(batch)
            same_device = self.counts is not None and self.counts.device == batch.device
            self.counts = _add(self.counts, batch) if same_device else batch
            return log_prior_adjustment(self.counts, self.tau, num_classes, device=logits.device, dtype=logits.dtype)
        adj = self._adjustment
        if adj is None or adj.numel() != num_classes or adj.device != logits.device:
            if self.counts is None:
                raise RuntimeError("ClassPrior has no counts: call start_experience(loader) first.")
            adj = self._adjustment = log_prior_adjustment(self.counts, self.tau, num_classes, device=logits.device)
        if self.fixed_counts is not None:
            check_targets_have_prior(targets, adj)  # a user's prior may miss trained classes
        return adj

    def end_experience(self) -> Optional[list[float]]:
        """Record the experience's prior (frequencies) in :attr:`history` and return it."""
        return self._record(self.counts, trim=self.counts_batches)

    def state_dict(self) -> dict:
        """What the prior has learnt from the data: the history."""
        return {"mode": self.mode, "window": self.window, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` into a prior built with the same mode."""
        self._check_settings(state)
        self.history = [list(h) for h in state["history"]]

    def fresh(self) -> "ClassPrior":
        """A prior of the same settings that has seen no data (no history)."""
        return ClassPrior(self.fixed_counts if self.mode == "fixed" else self.mode, self.tau)

    def check_state(self) -> None:
        """Nothing to check (as :meth:`WindowPrior.check_state`, for a prior restored by attribute)."""


class WindowPrior(_Prior):
    """ER-LAS's sliding-window prior (Huang et al., TMLR 2024), for online continual learning: the label counts of
    the last ``window`` training mini-batches, the current one included, stream and memory samples alike, kept
    across experiences (never reset), and its log-adjustment.

    Driven as :class:`ClassPrior` is (``BalancedSoftmaxPlugin(prior="window", window=l)`` builds one): every
    :meth:`adjustment` records its mini-batch's labels in a ring buffer of ``(window, classes)`` counts held on the
    device, over the oldest row (one fixed-length bincount, a ``scatter_add_``, no host sync), and returns the
    window's ``tau * log(prior)``.

    :param window: the number ``l`` of mini-batches in the prior (ER-LAS: 1 on CIFAR, 10 on ImageNet), at most
        :data:`MAX_WINDOW`.
    :param tau: strength of the adjustment (``0`` = plain CE, ``1`` = BSCE).
    """

    mode = "window"
    counts_batches = True  # counted from the training mini-batches: every one goes through adjustment()
    #: The attributes a checkpoint holds (and an old checkpoint's window ClassPrior is read into).
    STATE_ATTRIBUTES = ("tau", "window", "history", "_ring", "_ring_next")

    def __init__(self, window: int, tau: float = 1.0):
        super().__init__(tau)
        self.window = _check_window(window)
        self._ring: Optional[Tensor] = None  # (window, classes) label counts, one row per mini-batch
        self._ring_next = 0  # the row the next mini-batch overwrites (the oldest)

    @property
    def counts(self) -> Optional[Tensor]:
        """The label counts of the last ``window`` mini-batches (None before the first one)."""
        return None if self._ring is None else self._ring.sum(0)

    window_counts = counts  # its name when the window was a mode of ClassPrior

    def start_experience(self, loader) -> None:
        """Nothing: the window runs on across experiences."""

    def adjustment(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Record the mini-batch's label counts (all-reduced under ``torch.distributed``: the global batch) in
        the ring buffer, over the oldest row, and return the window's ``tau * log(prior)``."""
        num_classes = logits.shape[1]
        targets = targets.long().flatten()
        # a bincount of fixed length (torch.bincount on CUDA reads max(targets) back to size its output)
        batch = torch.zeros(num_classes, dtype=torch.long, device=targets.device)
        batch.scatter_add_(0, targets, torch.ones_like(targets))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch)
        ring = self._ring
        if ring is None:
            ring = torch.zeros(self.window, num_classes, dtype=torch.long, device=batch.device)
        elif ring.device != batch.device:  # e.g. restored from a checkpoint on the CPU
            ring = ring.to(batch.device)
        if ring.shape[1] < num_classes:  # more classes (an IncrementalClassifier grew)
            ring = torch.cat([ring, ring.new_zeros(self.window, num_classes - ring.shape[1])], dim=1)
        elif ring.shape[1] > num_classes:
            batch = torch.cat([batch, batch.new_zeros(ring.shape[1] - num_classes)])
        ring[self._ring_next] = batch
        self._ring, self._ring_next = ring, (self._ring_next + 1) % self.window
        return window_log_prior(ring.sum(0)[:num_classes], self.tau, logits.dtype)

    def end_experience(self) -> Optional[list[float]]:
        """Record the window's prior at the experience's end (frequencies, to the classes seen) in :attr:`history`
        and return it."""
        return self._record(self.counts, trim=True)

    def state_dict(self) -> dict:
        """What the prior has learnt from the data: the history and the window (on the CPU)."""
        return {"mode": self.mode, "window": self.window, "history": [list(h) for h in self.history],
                "ring": None if self._ring is None else self._ring.cpu().clone(), "ring_next": self._ring_next}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` into a prior built with the same window."""
        self._check_settings(state)
        if problem := _check_ring(state["ring"], state["ring_next"], self.window):
            raise ValueError(f"This window prior's state is damaged: {problem}.")
        self.history = [list(h) for h in state["history"]]
        self._ring = None if state["ring"] is None else state["ring"].clone()
        self._ring_next = int(state["ring_next"])

    def fresh(self) -> "WindowPrior":
        """A prior of the same settings that has seen no data (no history, an empty window)."""
        return WindowPrior(self.window, self.tau)

    def check_state(self) -> None:
        """Raise a one-line ``ValueError`` where the prior's state (restored by attribute, e.g. from a
        checkpoint) cannot run: a window ring of another length than ``window``, a position outside it."""
        if problem := _check_ring(self._ring, self._ring_next, self.window):
            raise ValueError(f"This window prior's state is damaged: {problem}.")
