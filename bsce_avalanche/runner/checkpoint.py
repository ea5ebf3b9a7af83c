"""Checkpoints of a running Avalanche strategy, to resume an interrupted experiment.

Avalanche 0.6's ``save_checkpoint`` dills the whole strategy, which fails on torch 2.14's optimizer
state. Here one atomic ``torch.save`` holds the model's and the optimizer's state (loaded back into
the same objects, which Avalanche keeps pointing at), every plugin's ``__dict__`` (saved together,
so shared references survive), memory-holding strategy attributes, the RNG states and the caller's
``extra``. Given the ``benchmark``, what the memory shares with its datasets is saved as references
into the same benchmark rebuilt on resume: a buffer pickled as is would carry the whole training set.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import os
import pickle
import random
import re
import types
from typing import Any, Iterable, Optional

import numpy as np
import torch
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .config import ConfigError
from .fileio import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "restore_strategy", "CheckpointError"]

FORMAT_VERSION = 2
#: Strategy attributes (not plugins) that hold training state.
_STRATEGY_ATTRIBUTES = ("storage_policy",)


class CheckpointError(ConfigError, RuntimeError):
    """A checkpoint that cannot be read, or restored into this strategy."""


def _saved_plugins(strategy, exclude: Iterable) -> dict:
    """The plugins whose state a checkpoint holds (not the evaluator, not ``exclude``), by position and class."""
    return {
        f"{i}:{type(p).__name__}": p for i, p in enumerate(strategy.plugins)
        if not (p is strategy.evaluator or isinstance(p, EvaluationPlugin) or any(p is e for e in exclude))
    }


class _SchedulerState:
    """A plugin's LR scheduler, saved as its ``state_dict``: pickling the scheduler would
    pickle a copy of the optimizer it steps, detached from the strategy's optimizer."""

    def __init__(self, state: dict):
        self.state = state


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


#: The rebuilt benchmark's objects while a checkpoint's memory is unpickled.
_RESTORING: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("benchmark_objects", default=None)


def _fingerprint(obj) -> tuple:
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return type(obj).__name__, tuple(obj.shape), str(obj.dtype)
    try:
        return type(obj).__qualname__, len(obj)
    except Exception:
        return type(obj).__qualname__, None


def benchmark_objects(benchmark) -> list:
    """The data containers reachable from the datasets of ``benchmark``'s streams (tensors,
    arrays and sized objects: datasets, label sequences, index lists' holders), in the order
    in which pickling the datasets meets them: the same order for the same benchmark rebuilt.
    Found by pickling into nothing, without the tensors' data."""
    found = []

    class Finder(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, (torch.Tensor, np.ndarray)):
                found.append(obj)
                return int, ()
            if not isinstance(obj, type) and hasattr(type(obj), "__len__"):
                found.append(obj)
            return NotImplemented

    datasets = [exp.dataset for stream in benchmark.streams.values() for exp in stream]
    try:
        Finder(types.SimpleNamespace(write=len), protocol=pickle.HIGHEST_PROTOCOL).dump(datasets)
    except (pickle.PicklingError, TypeError, AttributeError):
        pass  # an unpicklable part (e.g. a lambda transform): references to what was found
    return found


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


def _benchmark_object(key: int, fingerprint: tuple):
    """Unpickles a reference written by :func:`save_checkpoint`."""
    objects = _RESTORING.get()
    if objects is None:
        raise CheckpointError("This checkpoint refers to its benchmark's data: pass benchmark= to restore_strategy.")
    if key >= len(objects) or _fingerprint(objects[key]) != fingerprint:
        raise CheckpointError("The benchmark rebuilt for resuming differs from the checkpoint's (other data or split): "
                              "resume with the same config and data, or delete the checkpoint to start afresh.")
    return objects[key]


def _dumps(state, shared: list) -> bytes:
    """``torch.save`` of ``state`` with each object of ``shared`` saved as a reference."""
    keys = {id(obj): key for key, obj in enumerate(shared)}  # ``shared`` keeps the ids valid

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            key = keys.get(id(obj))
            return NotImplemented if key is None else (_benchmark_object, (key, _fingerprint(obj)))

    buffer = io.BytesIO()
    torch.save(state, buffer, pickle_module=types.SimpleNamespace(__name__="pickle", Pickler=Pickler))
    return buffer.getvalue()


def _global(err: Exception) -> str:
    """The global a ``weights_only`` load refused, from torch's message (or its first line)."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return match.group(1) if match else (str(err).strip().splitlines() or [type(err).__name__])[0]


def save_checkpoint(path: str | os.PathLike, strategy, *, extra: Any = None, exclude: Iterable = (),
                    benchmark=None) -> None:
    """Atomically write the training state of ``strategy`` (between experiences).

    With ``benchmark`` (the one trained on), what the memory shares with the benchmark's
    datasets is saved as references: pass the same benchmark, rebuilt, to :func:`restore_strategy`.
    """
    memory = {
        "plugins": {key: {k: _SchedulerState(v.state_dict()) if isinstance(v, LRScheduler) else v
                          for k, v in vars(p).items()}
                    for key, p in _saved_plugins(strategy, exclude).items()},
        "strategy": {a: getattr(strategy, a) for a in _STRATEGY_ATTRIBUTES if hasattr(strategy, a)},
    }
    payload = {
        "format": FORMAT_VERSION,
        "model": strategy.model.state_dict(),
        "optimizer": strategy.optimizer.state_dict(),
        "optimizer_param_names": optimizer_param_names(strategy),
        "optimized_param_id": None if getattr(strategy, "optimized_param_id", None) is None else True,
        "memory": _dumps(memory, benchmark_objects(benchmark) if benchmark is not None else []),
        "rng": rng_state(),
        "extra": extra,
    }
    # protocol 4 pickles the memory's bytes as they are (protocol 2, torch's default, as UTF-8 text)
    atomic_write(path, lambda tmp: torch.save(payload, tmp, pickle_protocol=4))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (trusted files only: it unpickles); a truncated,
    corrupt or foreign file raises a one-line :class:`CheckpointError` saying what to do."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is unreadable (truncated or corrupt: {detail}): delete it to start the run "
                              "afresh, or use --overwrite.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a bsce-avalanche checkpoint of format {FORMAT_VERSION} (an older "
                              "version's, or another file): delete it to start the run afresh, or use --overwrite.")
    return payload


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
    token = _RESTORING.set(None if benchmark is None else benchmark_objects(benchmark))
    try:
        memory = torch.load(io.BytesIO(payload["memory"]), map_location="cpu", weights_only=False)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"The checkpoint's memory holds an object that is not loaded ({_global(err)}): only "
                              "the buffers, datasets and models this strategy keeps are; delete the checkpoint to "
                              "start the run afresh.") from None
    finally:
        _RESTORING.reset(token)
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
            if isinstance(value, _SchedulerState):
                getattr(current[key], attr).load_state_dict(value.state)
            else:
                setattr(current[key], attr, value)
    for attr, value in memory["strategy"].items():
        setattr(strategy, attr, value)
    set_rng_state(payload["rng"])
    return payload["extra"]
