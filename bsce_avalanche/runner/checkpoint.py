"""Checkpoints of a running Avalanche strategy, to resume an interrupted experiment.

Avalanche 0.6.0's ``save_checkpoint`` pickles the whole strategy with dill, which fails
on torch 2.14's optimizer state. Here the checkpoint is one ``torch.save`` of:

* the model's ``state_dict`` (loaded back into the same model object, so the optimizer
  and Avalanche's parameter bookkeeping keep pointing at it);
* the optimizer's ``state_dict`` plus the name of every parameter it optimises;
* the state (``__dict__``) of every plugin that holds one: replay buffers, iCaRL's
  exemplars and class means, LwF / iCaRL / BiC old models, the clock, the BSCE
  priors, LR schedulers — saved together so shared references survive;
* strategy attributes that hold memory (ER-ACE's ``storage_policy``);
* the Python, NumPy and torch RNG states, and the caller's ``extra`` (results so far).

It is written to a temporary file and renamed, so a crash while writing never
corrupts the previous checkpoint.
"""

from __future__ import annotations

import os
import random
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .fileio import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "restore_strategy", "CheckpointError"]

FORMAT_VERSION = 1
#: Strategy attributes (not plugins) that hold training state.
_STRATEGY_ATTRIBUTES = ("storage_policy",)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored into this strategy."""


def _plugin_key(index: int, plugin) -> str:
    return f"{index}:{type(plugin).__name__}"


def _is_excluded(plugin, strategy, exclude: Iterable) -> bool:
    from avalanche.training.plugins import EvaluationPlugin

    return plugin is strategy.evaluator or isinstance(plugin, EvaluationPlugin) or any(plugin is e for e in exclude)


class _SchedulerState:
    """A plugin's LR scheduler, saved as its ``state_dict``: pickling the scheduler would
    pickle a copy of the optimizer it steps, detached from the strategy's optimizer."""

    def __init__(self, state: dict):
        self.state = state


def _plugin_state(plugin) -> dict:
    from torch.optim.lr_scheduler import LRScheduler

    return {
        k: _SchedulerState(v.state_dict()) if isinstance(v, LRScheduler) else v
        for k, v in plugin.__dict__.items()
    }


def _restore_plugin_state(plugin, state: dict) -> None:
    for key, value in state.items():
        if isinstance(value, _SchedulerState):
            getattr(plugin, key).load_state_dict(value.state)
        else:
            setattr(plugin, key, value)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, strategy, *, extra: Any = None, exclude: Iterable = ()) -> None:
    """Atomically write the training state of ``strategy`` (between experiences)."""
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    payload = {
        "format": FORMAT_VERSION,
        "model": strategy.model.state_dict(),
        "optimizer": strategy.optimizer.state_dict(),
        "optimizer_param_names": [[names.get(id(p)) for p in g["params"]] for g in strategy.optimizer.param_groups],
        "optimized_param_id": None if getattr(strategy, "optimized_param_id", None) is None else True,
        "plugins": {
            _plugin_key(i, p): _plugin_state(p)
            for i, p in enumerate(strategy.plugins)
            if not _is_excluded(p, strategy, exclude)
        },
        "strategy": {a: getattr(strategy, a) for a in _STRATEGY_ATTRIBUTES if hasattr(strategy, a)},
        "rng": rng_state(),
        "extra": extra,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (trusted files only: it unpickles)."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a bsce-avalanche checkpoint of format {FORMAT_VERSION}.")
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


def restore_strategy(strategy, payload: dict, exclude: Iterable = ()) -> Any:
    """Put the state saved by :func:`save_checkpoint` back into a freshly built strategy.

    The strategy must be built from the same configuration (same plugins in the same
    order). Returns the checkpoint's ``extra``. Restores the RNG states last.
    """
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

    current = {
        _plugin_key(i, p): p for i, p in enumerate(strategy.plugins) if not _is_excluded(p, strategy, exclude)
    }
    if set(current) != set(payload["plugins"]):
        raise CheckpointError(
            "The checkpoint was written by a strategy with other plugins "
            f"({sorted(payload['plugins'])} vs {sorted(current)}): resume with the same config."
        )
    for key, state in payload["plugins"].items():
        _restore_plugin_state(current[key], state)
    for attr, value in payload["strategy"].items():
        setattr(strategy, attr, value)
    set_rng_state(payload["rng"])
    return payload["extra"]
