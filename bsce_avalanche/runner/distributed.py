"""Data-parallel training of one experiment with DDP, under ``torchrun`` (``WORLD_SIZE > 1``)::

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST0:29500 -m bsce_avalanche run --config ...   # node_rank=1 on the other

The config's ``batch_size`` is the global batch. Only the training forward pass goes through DDP;
the rest (buffers, exemplars, BiC, the BSCE prior, evaluation on the whole test set) is replicated
from one seed, with RNGs re-aligned from rank 0 before every step and ranks compared after it
(:func:`consistency_digests`); rank 0 alone writes. Avalanche 0.6 shards data once the process group
exists, but wraps no model in DDP, picks GPU ``RANK`` (wrong on a second node) and shards the test set
with padding duplicates: :func:`setup` and :func:`prepare_strategy` fill those gaps. Results match one
process statistically (per-rank shuffling and BatchNorm statistics, float summation order).
"""

from __future__ import annotations

import gc
import hashlib
import os
import warnings
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader, SingleDatasetDataLoader
from avalanche.training import ER_ACE
from avalanche.training.utils import cycle
from torch.nn.parallel import DistributedDataParallel

from ..compat import (ReshufflingDistributedSampler, rebind_strategy_hooks, reshuffling_distributed_sampler,
                      set_distributed_device, strategy_hook)
from .checkpoint import rng_state, set_rng_state
from .config import ConfigError

__all__ = ["launched_distributed", "is_distributed", "is_main_process", "world_size", "setup", "shutdown", "barrier",
           "run_on_main", "sync_rng", "per_rank_batch_size", "prepare_strategy", "consistency_digests", "describe"]

T = TypeVar("T")


def launched_distributed() -> bool:
    """True when started by ``torchrun`` (or similar) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (also before the process group exists: reads ``RANK``); True when not distributed."""
    return (dist.get_rank() if is_distributed() else int(os.environ.get("RANK", "0") or 0)) == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def setup(device: torch.device) -> torch.device:
    """Join the process group if launched with ``WORLD_SIZE > 1`` (idempotent: a grid calls it once per run);
    return this rank's device: a CUDA ``device`` becomes ``cuda:LOCAL_RANK``."""
    if not launched_distributed():
        return device
    use_cuda = device.type == "cuda"
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: "
                              "use --nproc_per_node <= the number of GPUs.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not is_distributed():
        backend = os.environ.get("BSCE_DIST_BACKEND") or ("nccl" if use_cuda else "gloo")
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
        set_distributed_device(device, use_cuda)  # DistributedHelper's, with GPU LOCAL_RANK rather than RANK
        reshuffling_distributed_sampler(True)  # Avalanche's loaders must reshuffle every epoch (until shutdown)
    return device


def shutdown(wait: bool = True) -> None:
    """Leave the process group; ``wait`` for all ranks first (not after an error: another rank may be stuck in a
    collective)."""
    if is_distributed():
        gc.collect()  # free the DDP wrappers of finished runs (kept by reference cycles) first
        if wait:
            dist.barrier()
        dist.destroy_process_group()
        reshuffling_distributed_sampler(False)


def per_rank_batch_size(batch_size: int) -> int:
    """The training mini-batch of one rank: ``batch_size`` is the global one."""
    n = world_size()
    if batch_size % n:
        raise ConfigError(f"batch_size {batch_size} is the global mini-batch and must be divisible by the number of "
                          f"processes ({n}); e.g. use batch_size {batch_size - batch_size % n or n}.")
    return batch_size // n


def run_on_main(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on rank 0, its result (or exception) sent to every rank: for reading files
    (resume points, checkpoints) that other nodes may not see."""
    if not is_distributed():
        return fn(*args, **kwargs)
    payload: list = [None]
    if is_main_process():
        try:
            payload[0] = (True, fn(*args, **kwargs))
        except Exception as err:  # re-raised on every rank below
            payload[0] = (False, err)
    dist.broadcast_object_list(payload, src=0)
    ok, value = payload[0]
    if not ok:
        raise value
    return value


def sync_rng() -> None:
    """Give every rank rank 0's RNG states (before every step: rank-0-only work such as W&B logging may consume
    random numbers, while replicated state, e.g. replay buffers, exemplars and sampler seeds, must stay equal)."""
    if not is_distributed():
        return
    state = [rng_state() if is_main_process() else None]
    dist.broadcast_object_list(state, src=0)
    if not is_main_process():
        if len(state[0].get("cuda", ())) != (torch.cuda.device_count() if torch.cuda.is_available() else 0):
            state[0].pop("cuda", None)  # ranks see different GPUs (CUDA_VISIBLE_DEVICES per rank)
        set_rng_state(state[0])


def _digest(value: Any) -> str:
    h = hashlib.sha1()
    if isinstance(value, dict):
        for key, tensor in value.items():
            h.update(key.encode())
            t = tensor.detach().cpu().contiguous()
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    else:
        h.update(repr(value).encode())
    return h.hexdigest()[:16]


def consistency_digests(model: torch.nn.Module, prior_history: Optional[list]) -> dict:
    """``{"model": [digest per rank], "prior": [...], "consistent": bool}`` of the model state and the BSCE
    priors (collective); a mismatch is also a warning on rank 0."""
    mine = (_digest(model.state_dict()), _digest(prior_history))
    if not is_distributed():
        return {"model": [mine[0]], "prior": [mine[1]], "consistent": True}
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, mine)
    models, priors = [g[0] for g in gathered], [g[1] for g in gathered]
    consistent = len(set(models)) == 1 and len(set(priors)) == 1
    if not consistent and is_main_process():
        warnings.warn(f"Ranks diverged: model digests {models}, prior digests {priors}. Results are those of rank 0.",
                      RuntimeWarning, stacklevel=2)
    return {"model": models, "prior": priors, "consistent": consistent}


def describe(global_batch_size: int) -> Optional[dict]:
    """The ``distributed`` entry of ``results.json`` (None when not distributed)."""
    if not is_distributed():
        return None
    return {"world_size": world_size(), "backend": dist.get_backend(), "global_batch_size": global_batch_size,
            "per_rank_batch_size": per_rank_batch_size(global_batch_size), "consistent_per_step": []}


def prepare_strategy(strategy, device: torch.device, global_batch_size: int):
    """Make an Avalanche strategy train data-parallel; a no-op when not distributed.

    Patches the *instance*, never Avalanche's classes: ``forward`` (the training forward pass with
    grad runs through DDP; evaluation, old models, BiC stage 2 and ER-ACE's memory batch use the
    plain module), ``make_eval_dataloader`` (unsharded), ``_after_training_epoch`` (BatchNorm
    buffers from rank 0), ``_before_training_exp`` (ER-ACE's memory loader sharded) and
    ``_after_training_exp`` (``train_mb_size`` global while plugins train on full datasets: BiC).
    Each replacement is made by its own function below, from the strategy's method it wraps.
    """
    if not is_distributed():
        return strategy
    strategy.forward = _ddp_forward(strategy, device)
    strategy.make_eval_dataloader = _unsharded_eval_dataloader(strategy)
    # Avalanche's check only warns about plugins without a ``supports_distributed`` flag
    # (LwF's, iCaRL's, BiC's...); ranks are instead compared after every step
    # (consistency_digests), which checks what the flag only promises: rebind_strategy_hooks turns it off.
    rebind_strategy_hooks(strategy, after_training_epoch=_rank0_buffers_after_epoch(strategy),
                          before_training_exp=_sharded_er_ace_memory(strategy),
                          after_training_exp=_global_batch_after_exp(strategy, global_batch_size))
    return strategy


def _ddp_forward(strategy, device: torch.device):
    """``strategy.forward`` whose training forward pass with grad runs through DDP (wrapped again when the model's
    parameters change); the rest on the plain module. The DDP wrapper is not a plugin: checkpoints stay as in a
    single process."""

    def wrap(module):
        ddp = DistributedDataParallel(  # broadcasts rank 0's weights and buffers
            module.to(device), device_ids=[device.index] if device.type == "cuda" else None
        )
        return ddp, _parameter_ids(module)

    ddp, params = wrap(strategy.model)
    original_forward = strategy.forward

    def forward():
        nonlocal ddp, params
        if strategy.is_training and torch.is_grad_enabled():
            # GDumb re-initialises the model; a growing IncrementalClassifier (initial size
            # below the number of classes) replaces its parameters: wrap the new ones
            if ddp.module is not strategy.model or params != _parameter_ids(strategy.model):
                ddp, params = wrap(strategy.model)
            strategy.model = ddp
            try:
                return original_forward()
            finally:
                strategy.model = ddp.module
        return original_forward()

    return forward


def _unsharded_eval_dataloader(strategy):
    """``strategy.make_eval_dataloader`` that loads the whole test set on every rank (Avalanche shards it, with
    padding duplicates)."""
    original_make_eval = strategy.make_eval_dataloader

    def make_eval_dataloader(**kwargs):
        original_make_eval(**kwargs)
        loader = strategy.dataloader
        if isinstance(loader, SingleDatasetDataLoader) and loader.distributed_sampling:
            strategy.dataloader = SingleDatasetDataLoader(loader.datasets[0], batch_size=loader.batch_sizes[0],
                                                          distributed_sampling=False, **loader.loader_kwargs)
        elif isinstance(loader, MultiDatasetDataLoader) and loader.distributed_sampling:
            warnings.warn(f"Evaluation loader {type(loader).__name__} is sharded across ranks.", stacklevel=2)

    return make_eval_dataloader


def _rank0_buffers_after_epoch(strategy):
    """The ``_after_training_epoch`` hook, after giving every rank rank 0's buffers (BatchNorm statistics)."""
    original_after_epoch = strategy_hook(strategy, "_after_training_epoch")

    def _after_training_epoch(**kwargs):
        for buf in strategy.model.buffers():
            dist.broadcast(buf, src=0)
        return original_after_epoch(**kwargs)

    return _after_training_epoch


def _sharded_er_ace_memory(strategy):
    """The ``_before_training_exp`` hook, then ER-ACE's memory loader sharded across ranks."""
    original_before_exp = strategy_hook(strategy, "_before_training_exp")

    def _before_training_exp(**kwargs):
        original_before_exp(**kwargs)
        # ER-ACE draws memory batches from a plain DataLoader, identical on all ranks: shard it
        if isinstance(strategy, ER_ACE) and strategy.replay_loader is not None:
            buffer = strategy.storage_policy.buffer
            if len(buffer) < strategy.batch_size_mem * world_size():
                strategy.replay_loader = None  # a single process would not replay yet either
            else:
                sampler = ReshufflingDistributedSampler(buffer, shuffle=True, drop_last=True)
                strategy.replay_loader = cycle(torch.utils.data.DataLoader(
                    buffer, batch_size=strategy.batch_size_mem, sampler=sampler, drop_last=True))

    return _before_training_exp


def _global_batch_after_exp(strategy, global_batch_size: int):
    """The ``_after_training_exp`` hook with ``train_mb_size`` the global batch (plugins that train on full
    datasets there, BiC's bias layer, are not sharded)."""
    original_after_exp = strategy_hook(strategy, "_after_training_exp")

    def _after_training_exp(**kwargs):
        per_rank, strategy.train_mb_size = strategy.train_mb_size, global_batch_size
        try:
            return original_after_exp(**kwargs)
        finally:
            strategy.train_mb_size = per_rank

    return _after_training_exp


def _parameter_ids(module) -> tuple:
    return tuple(id(p) for p in module.parameters())
