"""Checkpoints of a running Avalanche strategy, to resume an interrupted experiment.

Avalanche 0.6's ``save_checkpoint`` dills the whole strategy, which fails on torch 2.14's optimizer
state. Here one atomic ``torch.save`` holds the model's and the optimizer's state (loaded back into
the same objects, which Avalanche keeps pointing at), every plugin's ``__dict__`` (saved together,
so shared references survive), memory-holding strategy attributes, the RNG states and the caller's
``extra``. Given the ``benchmark``, what the memory shares with its datasets (data, labels, transforms)
is saved as indices into the same benchmark rebuilt on resume: a buffer saved as is would carry the
whole training set.

A checkpoint may sit in a shared folder, so it holds only tensors, numbers, strings and containers of
them, and loads with ``torch.load(weights_only=True)``: a file that holds anything else (a pickled
object that would run code when loaded) is refused with one line. The plugins' objects (replay buffers
and their datasets, old models, priors) are saved as plain tables (:mod:`.plain_state`) and rebuilt from
:data:`ALLOWED`, an exact list of the data classes and functions this runner's strategies keep, plus the
module classes of the strategy's own model (its old copies: LwF's, iCaRL's, BiC's); LR schedulers as
their ``state_dict``. Rather than torch's ``safe_globals`` over the same classes: the file then holds no
object at all, and a forged table can only build instances of listed classes, never call a function.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import pickle
import random
import re
import types
from typing import Any, Iterable

import numpy as np
import torch
from avalanche.benchmarks.utils import classification_dataset, data, data_attribute, flat_data, transform_groups
from avalanche.evaluation.metrics.mean import Mean
from avalanche.models.bic_model import BiasLayer
from avalanche.training import regularization, storage_policy
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data._utils.collate import default_collate

from ..benchmarks.common import TensorImageDataset
from ..compat import CHECKPOINT_PRIVATE_CLASSES
from ..priors import ClassPrior, WindowPrior
from ..replay import ModelHerdingSelectionStrategy
from . import plain_state
from .config import ConfigError
from .fileio import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "restore_strategy", "CheckpointError"]

FORMAT_VERSION = 3
#: Strategy attributes (not plugins) that hold training state.
_STRATEGY_ATTRIBUTES = ("storage_policy",)
#: The classes and functions a checkpoint's plugins may hold besides the model's module classes, by name
#: (what the runner's strategies keep, found by running each): containers, Avalanche's replay buffers and the
#: parts of their datasets (those not shared with the benchmark; with no benchmark given, the leaf datasets
#: too; LazyIndices: FlatData's unflattened index lists), priors, the LR scheduler plugin's mean, LwF's, iCaRL's
#: and BiC's state.
ALLOWED = {plain_state.global_name(obj): obj for obj in (
    set, collections.OrderedDict, collections.defaultdict, collections.Counter, functools.partial,
    data.AvalancheDataset, classification_dataset.TaskAwareSupervisedClassificationDataset,
    classification_dataset.lookup, TensorImageDataset, *CHECKPOINT_PRIVATE_CLASSES,
    data_attribute.DataAttribute, flat_data.FlatData, flat_data.LazyIndices, flat_data.ConstantSequence,
    transform_groups.TransformGroups, transform_groups.EmptyTransformGroups, transform_groups.DefaultTransformGroups,
    transform_groups.TupleTransform, transform_groups.identity, default_collate,
    storage_policy.ReservoirSamplingBuffer, storage_policy.ClassBalancedBuffer, storage_policy.ExperienceBalancedBuffer,
    storage_policy.ParametricBuffer, ModelHerdingSelectionStrategy,
    ClassPrior, WindowPrior, Mean, regularization.LearningWithoutForgetting, nn.BCELoss, BiasLayer,
)}


class CheckpointError(ConfigError, RuntimeError):
    """A checkpoint that cannot be read, or restored into this strategy."""


def _saved_plugins(strategy, exclude: Iterable) -> dict:
    """The plugins whose state a checkpoint holds (not the evaluator, not ``exclude``), by position and class."""
    return {
        f"{i}:{type(p).__name__}": p for i, p in enumerate(strategy.plugins)
        if not (p is strategy.evaluator or isinstance(p, EvaluationPlugin) or any(p is e for e in exclude))
    }


def optimizer_param_names(strategy) -> list:
    """The model's name of every parameter of every optimizer group (None: not the model's)."""
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    return [[names.get(id(p)) for p in group["params"]] for group in strategy.optimizer.param_groups]


def rng_state() -> dict:
    """The RNG states as tensors, numbers and strings (loadable with ``weights_only=True``)."""
    name, keys, *rest = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fingerprint(obj) -> tuple:
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return type(obj).__name__, tuple(obj.shape), str(obj.dtype)
    try:
        return type(obj).__qualname__, len(obj)
    except Exception:
        return type(obj).__qualname__, None


def _reachable(benchmark) -> list:
    """Every object but classes reachable from the datasets of ``benchmark``'s streams, in the order in
    which pickling the datasets meets them: the same order for the same benchmark rebuilt. Found by
    pickling into nothing, without the tensors' data."""
    found = []

    class Finder(pickle.Pickler):
        def reducer_override(self, obj):
            if not isinstance(obj, type):
                found.append(obj)
            return (int, ()) if isinstance(obj, (torch.Tensor, np.ndarray)) else NotImplemented

    datasets = [exp.dataset for stream in benchmark.streams.values() for exp in stream]
    try:
        Finder(types.SimpleNamespace(write=len), protocol=pickle.HIGHEST_PROTOCOL).dump(datasets)
    except (pickle.PicklingError, TypeError, AttributeError):
        pass  # an unpicklable part (e.g. a lambda transform): references to what was found
    return found


def benchmark_objects(benchmark) -> list:
    """The data containers among :func:`_reachable`'s objects: tensors, arrays and sized objects
    (datasets, label sequences, index lists' holders)."""
    return [obj for obj in _reachable(benchmark)
            if isinstance(obj, (torch.Tensor, np.ndarray)) or hasattr(type(obj), "__len__")]


def benchmark_digest(benchmark) -> str:
    """A digest of the data ``benchmark``'s datasets hold: every tensor and array reachable from them
    (images, labels, index lists) and every list of labels or file paths, in :func:`benchmark_objects`'s
    order. The same data, split the same way, gives the same digest; an image or label changed gives
    another. Files read lazily (image folders) count by their paths and labels, not their contents.
    About 0.3 s for CIFAR-100's 180 MB."""
    digest = hashlib.sha256()
    for obj in benchmark_objects(benchmark):
        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().contiguous().numpy()
        if isinstance(obj, np.ndarray):
            array = np.ascontiguousarray(obj)
            digest.update(f"{array.dtype}{array.shape}".encode())
            if array.dtype.kind != "O":
                digest.update(memoryview(array.reshape(-1)).cast("B"))
            continue
        for attr in ("targets", "paths"):  # the labels and files of this package's datasets
            value = vars(obj).get(attr) if hasattr(obj, "__dict__") else None
            if isinstance(value, list):
                digest.update(f"{attr}:{len(value)}:".encode() + "\0".join(map(str, value)).encode())
    return digest.hexdigest()[:16]


def _resolver(benchmark):
    """Resolves the references to ``benchmark``'s objects that :func:`save_checkpoint` wrote."""
    objects = None if benchmark is None else _reachable(benchmark)

    def resolve(key, fingerprint):
        if objects is None:
            raise CheckpointError("This checkpoint refers to its benchmark's data: pass benchmark= to "
                                  "restore_strategy.")
        if not isinstance(key, int) or not 0 <= key < len(objects) or _fingerprint(objects[key]) != fingerprint:
            raise CheckpointError("The benchmark rebuilt for resuming differs from the checkpoint's (other data or "
                                  "split): resume with the same config and data, or delete the checkpoint to start "
                                  "afresh.")
        return objects[key]
    return resolve


def _allowed(strategy) -> dict:
    """:data:`ALLOWED` and the module classes of the strategy's model, which its old copies are made of."""
    return {**ALLOWED, **{plain_state.global_name(type(m)): type(m) for m in strategy.model.modules()}}


def _global(err: Exception) -> str:
    """The global a ``weights_only`` load refused, from torch's message (or its first line after the
    preamble, which suggests ``weights_only=False``)."""
    match = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(err), re.IGNORECASE)
    lines = [line for line in str(err).splitlines() if line.strip() and not line.startswith("Weights only load failed")]
    return match.group(1) if match else (lines or [type(err).__name__])[0]


def save_checkpoint(path: str | os.PathLike, strategy, *, extra: Any = None, exclude: Iterable = (),
                    benchmark=None) -> None:
    """Atomically write the training state of ``strategy`` (between experiences).

    With ``benchmark`` (the one trained on), what the memory shares with the benchmark's
    datasets is saved as references: pass the same benchmark, rebuilt, to :func:`restore_strategy`.
    """
    plugins = _saved_plugins(strategy, exclude)
    memory = {  # schedulers as their state_dict: pickled, one would hold a copy of the optimizer it steps
        "plugins": {key: {k: v for k, v in vars(p).items() if not isinstance(v, LRScheduler)}
                    for key, p in plugins.items()},
        "schedulers": {key: {k: v.state_dict() for k, v in vars(p).items() if isinstance(v, LRScheduler)}
                       for key, p in plugins.items()},
        "strategy": {a: getattr(strategy, a) for a in _STRATEGY_ATTRIBUTES if hasattr(strategy, a)},
    }
    try:
        plain_state.check_plain(extra, "extra")
        memory = plain_state.encode(memory, _allowed(strategy), _reachable(benchmark) if benchmark is not None else (),
                                    _fingerprint)
    except plain_state.PlainStateError as err:
        raise CheckpointError(f"This strategy's state cannot be saved in a checkpoint ({err}): add the class to "
                              "checkpoint.ALLOWED if it holds plain data, or set checkpoint: false.") from None
    payload = {
        "format": FORMAT_VERSION,
        "model": strategy.model.state_dict(),
        "optimizer": strategy.optimizer.state_dict(),
        "optimizer_param_names": optimizer_param_names(strategy),
        "optimized_param_id": None if getattr(strategy, "optimized_param_id", None) is None else True,
        "memory": memory,
        "rng": rng_state(),
        "extra": extra,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; a truncated, corrupt or foreign file, or one that
    holds other objects than tensors, numbers and strings, raises a one-line :class:`CheckpointError` saying
    what to do."""
    try:  # tensors, numbers and strings only: a file dropped into a shared folder runs no code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if isinstance(err, pickle.UnpicklingError):
            detail = f"it holds objects other than tensors, numbers and strings, which are not loaded: {_global(err)}"
        raise CheckpointError(f"{path} is unreadable (truncated or corrupt: {detail}): delete it to start the run "
                              "afresh, or use --overwrite.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a bsce-avalanche checkpoint of format {FORMAT_VERSION} (an older "
                              "version's, or another file): delete it to start the run afresh, or use --overwrite.")
    for key, kind in _PAYLOAD_KEYS.items():
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path} has {'no' if key not in payload else 'a damaged'} {key} entry (cut, or "
                                  "edited by hand): delete it to start the run afresh, or use --overwrite.")
    return payload


#: What a checkpoint of :data:`FORMAT_VERSION` holds: key -> type (``optimized_param_id``: None or True).
_PAYLOAD_KEYS = {"model": dict, "optimizer": dict, "optimizer_param_names": list, "optimized_param_id": (type(None), bool),
                 "memory": dict, "rng": dict}


def _load_model_state(model: nn.Module, state: dict) -> None:
    """``load_state_dict`` that also accepts buffers whose size grew during training
    (e.g. the class means of iCaRL's NCM classifier) and runs modules' own loaders."""
    current = model.state_dict()
    for name, value in state.items():
        if name in current and current[name].shape == value.shape:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if attr in owner._buffers:  # a buffer that grew, or was still None when built
            old = owner._buffers[attr]
            device = old.device if old is not None else next(model.parameters()).device
            owner.register_buffer(attr, torch.empty_like(value, device=device))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"The checkpoint's model does not fit this model: {err}") from None
    for prefix, module in model.named_modules():
        if type(module).load_state_dict is not nn.Module.load_state_dict and module is not model:
            sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            module.load_state_dict(sub)  # e.g. NCMClassifier rebuilds its class-means dict


def restore_strategy(strategy, payload: dict, exclude: Iterable = (), benchmark=None) -> Any:
    """Put the state saved by :func:`save_checkpoint` back into a strategy freshly built from the same config (same
    plugins in the same order), with ``benchmark`` rebuilt as the one saved with; return the checkpoint's ``extra``."""
    try:
        memory = plain_state.decode(payload["memory"], _allowed(strategy), _resolver(benchmark))
    except CheckpointError:
        raise
    except Exception as err:  # a name not allowed, or a malformed table
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"The checkpoint's memory cannot be restored ({detail}): only the buffers, datasets and "
                              "models this strategy keeps are; delete the checkpoint to start the run afresh, or use "
                              "--overwrite.") from None
    device = next(strategy.model.parameters()).device
    _load_model_state(strategy.model, payload["model"])
    strategy.model.to(device)
    params = dict(strategy.model.named_parameters())
    for group, names in zip(strategy.optimizer.param_groups, payload["optimizer_param_names"]):
        missing = [n for n in names if n not in params]
        if missing:
            raise CheckpointError(f"Optimizer parameters {missing[:3]} are not in the model.")
        group["params"] = [params[n] for n in names]
    strategy.optimizer.load_state_dict(payload["optimizer"])
    if payload["optimized_param_id"] is not None:
        # Avalanche resets the optimizer state on the first experience only; we are past it.
        strategy.optimized_param_id = params

    current = _saved_plugins(strategy, exclude)
    if set(current) != set(memory["plugins"]):
        raise CheckpointError(f"The checkpoint was written by a strategy with other plugins "
                              f"({sorted(memory['plugins'])} vs {sorted(current)}): resume with the same config.")
    for key, state in memory["plugins"].items():
        for attr, value in state.items():
            # a cut window ring: one line now, not a traceback mid-training
            if isinstance(value, (ClassPrior, WindowPrior)):
                try:
                    value.check_state()
                except ValueError as err:
                    raise CheckpointError(f"The checkpoint's {type(current[key]).__name__} cannot be restored: {err} "
                                          "Delete the checkpoint to start the run afresh, or use --overwrite.") from None
            setattr(current[key], attr, value)
        for attr, value in memory["schedulers"][key].items():
            getattr(current[key], attr).load_state_dict(value)
    for attr, value in memory["strategy"].items():
        setattr(strategy, attr, value)
    set_rng_state(payload["rng"])
    return payload["extra"]
