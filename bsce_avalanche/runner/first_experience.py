"""One first-experience model per key: train the first experience once, start every run from it (README).

:class:`FirstExperiencePlugin` saves the state at the end of the first run's epochs, before any other plugin's
``after_training_exp``, to ``<cache>/seed<seed>-<digest of first_experience_key>.pt``; a later run of that key
loads it and runs the experience's other callbacks (memory update, old model, exemplars, BiC's buffers) on it,
so its numbers are those of a run that trained it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any, Optional

import torch
from avalanche.training.plugins import LRSchedulerPlugin, SupervisedPlugin
from avalanche import __version__ as avalanche_version
from avalanche.training.plugins.clock import Clock
from torch import Tensor

from ..compat import ICaRLPlugin
from ..plugin import BalancedSoftmaxPlugin
from ..priors import ClassPrior
from . import distributed
from .checkpoint import _global, benchmark_digest, optimizer_param_names, rng_state, set_rng_state
from .compute import ComputeCounter
from .config import ConfigError, ExperimentConfig
from .identity import first_experience_settings
from .schema import RESOLVED_ENTRIES
from .fileio import atomic_write, hold_lock
from .catalog import STRATEGIES

__all__ = ["FirstExperiencePlugin", "FirstExperienceError", "first_experience_key", "first_experience_loss",
           "key_digest", "cache_dir"]

FORMAT_VERSION = 2


class FirstExperienceError(ConfigError):
    """A first-experience cache file that cannot be used."""


def first_experience_loss(cfg: ExperimentConfig, counts: Optional[Tensor], n_classes: int) -> str:
    """The first experience's training loss, up to what cannot change the training: ``softmax_ce``,
    ``sigmoid_bce`` (iCaRL with CE), or ``bsce(tau=..., prior=...)``. With ``tau = 0``, or a prior
    uniform over the classes present while the other units are masked (``incremental_head``) or
    absent, BSCE's adjustment is zero: softmax CE exactly (iCaRL too: no distillation yet).

    :param counts: the class counts of BSCE's prior; None with ``prior: batch``; unused with ``loss: ce``.
    """
    if cfg.loss == "ce":
        return STRATEGIES[cfg.strategy].ce_loss
    if cfg.tau == 0:
        return "softmax_ce"
    if cfg.prior == "window":
        return f"bsce(tau={cfg.tau:g}, prior=window{cfg.prior_window})"
    if counts is None:
        return f"bsce(tau={cfg.tau:g}, prior=batch)"
    present = counts[counts > 0]
    if bool((present == present[0]).all()) and (cfg.incremental_head or present.numel() == n_classes):
        return "softmax_ce"
    frequencies = (counts[: int(torch.nonzero(counts).max()) + 1] / counts.sum()).double()
    return f"bsce(tau={cfg.tau:g}, prior={hashlib.sha256(frequencies.numpy().tobytes()).hexdigest()[:12]})"


@functools.cache
def _source_digest() -> str:
    """Digest of this package's source: a code change never reuses a cached first experience."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def first_experience_key(cfg: ExperimentConfig, counts: Optional[Tensor], n_classes: int,
                         device: torch.device = torch.device("cpu"), data: Optional[str] = None) -> dict:
    """Everything that determines the network at the end of the first experience's training (equal
    keys: the same training, bit for bit). The config's part is declared beside each field (``schema._key``'s
    ``effect`` and ``first_experience``; :func:`~.identity.first_experience_settings` reads it, the one source):
    the settings as they are, and the ``resolved`` keys as :data:`~.schema.RESOLVED_ENTRIES` (the strategy's
    ``first_experience`` training, :func:`first_experience_loss`, the model's name, fast_augment resolved).
    Then what else changes the numbers: the data loaded (``data``: :func:`~.checkpoint.benchmark_digest`, so a
    data file replaced in place is not mistaken for the old one), the device, CPU threads and kernels (AVX2,
    AVX-512, ...), DDP processes, the code."""
    key = first_experience_settings(cfg.to_dict())
    resolved = {"training": STRATEGIES[cfg.strategy].first_experience, "loss": first_experience_loss(cfg, counts, n_classes),
                "model": cfg.model_name, "fast_augment": cfg.use_fast_augment}
    assert tuple(resolved) == RESOLVED_ENTRIES
    # The CPU kernels too: one key and seed, other kernels, another network (RESULTS.md §4d: step-0 accuracy 25.0%
    # with AVX2, 30.9% with ATEN_CPU_CAPABILITY=default, 24.0% on an earlier host).
    environment = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "threads": torch.get_num_threads() if device.type == "cpu" else None,
                   "cpu_capability": torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else None,
                   "world_size": distributed.world_size(), "torch": str(torch.__version__), "avalanche": avalanche_version,
                   "source": _source_digest()}
    key.update(resolved, data=data, environment=environment, format=FORMAT_VERSION)
    return key


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cache_dir(cfg: ExperimentConfig, run_dir: Path) -> Optional[Path]:
    """The cache folder of ``first_experience_cache``: beside the run folders, a given one, or None."""
    if cfg.first_experience_cache is False:
        return None
    if cfg.first_experience_cache is True:
        return run_dir.parent / "first_experience"
    return Path(cfg.first_experience_cache)


def _epoch_state(plugin) -> Optional[dict]:
    """What the first experience's epochs leave in ``plugin`` (None: nothing)."""
    if isinstance(plugin, Clock):
        return dict(vars(plugin))
    if isinstance(plugin, ComputeCounter):  # a cached first experience reports the training it stands for
        return plugin.state()
    if isinstance(plugin, LRSchedulerPlugin):
        return {"scheduler": plugin.scheduler.state_dict()}
    if isinstance(plugin, ICaRLPlugin):  # set on the first mini-batch, used for the class means
        return {k: getattr(plugin, k) for k in ("input_size", "output_size", "embedding_size")}
    if isinstance(plugin, BalancedSoftmaxPlugin) and plugin.class_prior.mode == "window":
        return {"window": plugin.state_dict()}  # runs on into the next experience
    if isinstance(plugin, BalancedSoftmaxPlugin) and plugin.class_prior.counts_batches:
        return {"counts": plugin.class_prior.counts}
    return None


def _set_epoch_state(plugin, state: dict) -> None:
    if isinstance(plugin, LRSchedulerPlugin):
        plugin.scheduler.load_state_dict(state["scheduler"])
    elif isinstance(plugin, BalancedSoftmaxPlugin) and "window" in state:
        plugin.load_state_dict(state["window"])
    elif isinstance(plugin, BalancedSoftmaxPlugin):
        plugin.class_prior.counts = state["counts"]
    else:
        vars(plugin).update(state)


def _hold_lock(path: Path) -> Optional[int]:
    """Wait for and hold the lock of ``path``'s key (a descriptor; closing it releases the lock; None: a
    filesystem without locks, where concurrent runs may both train it, with the same result)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return hold_lock(path.with_suffix(".lock"), f"waiting for {path.name}: another run is training this first "
                                                    "experience")
    except OSError as err:
        raise FirstExperienceError(f"cannot write to the first-experience cache folder {path.parent} "
                                   f"({err.strerror or err}): make it writable, or set first_experience_cache to "
                                   "another folder (false: no cache).") from None


def _read(path: Path, key: dict) -> Optional[dict]:
    if not path.is_file():
        return None
    try:  # tensors, numbers and strings only: a file dropped into a shared cache folder runs no code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if isinstance(err, pickle.UnpicklingError):
            detail = f"it holds objects other than tensors, numbers and strings, which are not loaded: {_global(err)}"
        raise FirstExperienceError(f"First-experience cache file {path} cannot be read ({detail}); delete it, and the "
                                   "next run trains its first experience again.") from None
    if not isinstance(payload, dict) or payload.get("key") != key:
        raise FirstExperienceError(f"First-experience cache file {path} was not written for this run's first "
                                   "experience (its key differs); delete it, or set first_experience_cache to "
                                   "another folder.")
    return payload


class FirstExperiencePlugin(SupervisedPlugin, supports_distributed=True):
    """Train the first experience and cache it, or load it from the cache and skip its epochs.

    Put it first in the strategy's plugins (its ``after_training_exp`` must run before the others').
    ``info`` is what ``results.json`` records (key digest, training, cached or not, file, seconds).

    :param cache: the cache folder, or None (no cache: the key is still computed and reported).
    """

    def __init__(self, cfg: ExperimentConfig, n_classes: int, device: torch.device, cache: Optional[Path]):
        super().__init__()
        self.cfg, self.n_classes, self.device, self.cache = cfg, n_classes, device, cache
        self.info: Optional[dict] = None
        self._key = self._payload = None
        self._lock = None  # the cache file's lock while this run trains its first experience
        self._started = 0.0

    def before_training_exp(self, strategy, **kwargs):
        self._started = time.perf_counter()

    def before_training_epoch(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter > 0 or strategy.clock.train_exp_epochs > 0:  # its first epoch only
            return
        counts = None
        if self.cfg.loss == "bsce":  # the counts BalancedSoftmaxPlugin is about to compute
            prior = ClassPrior(self.cfg.prior, self.cfg.tau, self.cfg.prior_window)
            prior.start_experience(strategy.dataloader)
            counts = prior.counts
        data = benchmark_digest(strategy.experience.benchmark)
        self._key = first_experience_key(self.cfg, counts, self.n_classes, self.device, data)
        digest = key_digest(self._key)
        path = self.cache / f"seed{self.cfg.seed}-{digest}.pt" if self.cache else None
        if path and distributed.is_main_process():
            self._lock = _hold_lock(path)  # held until this run's file is written, if it trains
        self._payload = distributed.run_on_main(_read, path, self._key) if path else None
        self.info = {"key": digest, "training": f"{self._key['training']}, {self._key['loss']}",
                     "cached": self._payload is not None, "file": str(path) if path else None}
        if self._payload is not None:
            self._release()
            strategy.stop_training()  # after every plugin's before_training_epoch (BSCE's prior, checks)

    def after_training_exp(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter > 0 or self._key is None:
            return
        if self._payload is not None:
            self._restore(strategy, self._payload)
            self.info["train_time_s"] = self._payload["train_time_s"]
        else:
            self.info["train_time_s"] = time.perf_counter() - self._started
            if self.info["file"] and distributed.is_main_process():
                self._save(strategy, Path(self.info["file"]))
        self._payload = None
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _save(self, strategy, path: Path) -> None:
        payload: dict[str, Any] = {
            "key": self._key, "model": strategy.model.state_dict(), "optimizer": strategy.optimizer.state_dict(),
            "optimizer_param_names": optimizer_param_names(strategy), "rng": rng_state(),
            "plugins": {type(p).__name__: s for p in strategy.plugins if (s := _epoch_state(p)) is not None},
            "train_time_s": self.info["train_time_s"],
        }
        atomic_write(path, lambda tmp: torch.save(payload, tmp))

    def _restore(self, strategy, payload: dict) -> None:
        # the same modules at the same point: a plain load, in place (the optimizer keeps its parameters)
        strategy.model.load_state_dict(payload["model"])
        if optimizer_param_names(strategy) != payload["optimizer_param_names"]:
            raise FirstExperienceError(f"First-experience cache file {self.info['file']} holds another optimizer's "
                                       "state (its parameters differ); delete it.")
        strategy.optimizer.load_state_dict(payload["optimizer"])
        for plugin in strategy.plugins:
            state = payload["plugins"].get(type(plugin).__name__)
            if state is not None:
                _set_epoch_state(plugin, state)
        set_rng_state(payload["rng"])
