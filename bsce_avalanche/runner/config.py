"""Experiment configuration: one dataclass, loaded from YAML, overridden from the CLI, and checked
(types, names, :data:`RANGES`, benchmark facts); what each key changes is :data:`EFFECT` before anything is built."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from .._choices import check_choice, did_you_mean
from .._numbers import plain_number
from ..benchmarks import BENCHMARKS, CLASS_ORDER_NAMES, get_class_order, resolve_protocol
from ..catalog import AMP_MODES, ICARL_EVAL_MODES, MAX_TAU, MAX_WINDOW, MODELS, PRIOR_MODES, check_tau
from .catalog import (MEMORY_SELECTIONS, REPLAY_PROTOCOLS, STRATEGIES, online_error, online_keys_error,
                      uses_replay_option)
from .errors import ConfigError

__all__ = ["ExperimentConfig", "ConfigError", "load_config", "expand_grid", "combination_error", "method_label",
           "run_name", "settings_digest", "result_settings", "first_experience_settings",
           "resolved_first_experience_keys", "RESOLVED_ENTRIES", "differing_settings", "apply_recipes", "check_unique_names",
           "check_recipe_overrides", "CHOICES",
           "RANGES", "DEFAULT_CONFIG", "shipped_configs", "resolve_config", "EFFECTS", "EFFECT", "RESULT_KEYS", "load_yaml", "parse_value"]

#: Valid values of the name-like keys.
CHOICES: dict[str, tuple[str, ...]] = {
    "benchmark": tuple(BENCHMARKS),
    "strategy": tuple(STRATEGIES),
    "loss": ("ce", "bsce"),
    "prior": PRIOR_MODES,
    "model": ("auto", *MODELS),
    "icarl_eval": ICARL_EVAL_MODES,
    "replay": tuple(REPLAY_PROTOCOLS),
    "memory_selection": tuple(MEMORY_SELECTIONS),
    "device": ("auto", "cpu", "cuda"),
    "data_path": ("loader", "device"),
    "amp": tuple(AMP_MODES),
    "wandb_mode": ("online", "offline", "disabled"),
}
#: Keys a benchmark's builder may take (``BenchmarkInfo.options``).
_BENCHMARK_OPTIONS = ("data_dir", "download", "fast_augment")


def _benchmarks_with(option: str, default: bool = False) -> str:
    return ", ".join(n for n, b in BENCHMARKS.items() if option in b.options and (b.fast_augment or not default))


#: What a config key changes (its ``effect``): the run name, the resume check, ``compare``'s grouping and the
#: first-experience key all derive from it.
EFFECTS = {
    "result": "changes the results, from the first experience on (in the first-experience key as it is)",
    "resolved": "changes the results; the first-experience key holds what it resolves to (the strategy's "
                "first-experience training, the loss it trains with, the model's name)",
    "later": "changes the results from the second experience on, or the evaluation only (not in the "
             "first-experience key, except for the strategies its field lists in first_experience)",
    "run": "bookkeeping or environment: never changes what a run computes (may differ when resuming)",
}


#: The entries of the first-experience key that ``resolved`` keys enter it as (``first_experience_key``
#: computes them: the strategy's first-experience training, the first-experience loss, the model's name,
#: the benchmark's fast_augment default resolved).
RESOLVED_ENTRIES = ("training", "loss", "model", "fast_augment")


def _key(default, help: str, *, effect: str = "result", range: Optional[str] = None, label: bool = False,
         only: tuple[str, ...] = (), applies: Optional[Callable[[Mapping], bool]] = None,
         first_experience: Union[tuple[str, ...], str] = ()):
    """A config key: its default, its meaning (``--help`` and the docs read it), its :data:`EFFECTS` entry,
    its valid interval (``range``, e.g. ``"[1, inf)"``), whether :func:`method_label` shows it, and the
    strategies it acts on (``only``; empty: all) or, finer, the configs it acts on (``applies``, a predicate
    over the config dict): elsewhere it changes nothing, so it is no part of a run (:func:`result_settings`
    sets it to its default).

    What the first experience depends on is declared here, once, by ``effect`` and ``first_experience``:
    ``result`` keys enter the first-experience key as they are; ``later`` keys do not, except for the
    strategies ``first_experience`` lists (e.g. BiC's validation split is made from its memory before it
    trains); ``resolved`` keys enter it as the :data:`RESOLVED_ENTRIES` that ``first_experience`` names
    (e.g. ``tau`` as the first-experience loss); ``run`` keys never. :func:`first_experience_settings`
    reads it."""
    assert effect in EFFECTS, effect
    if effect == "resolved":
        names = (first_experience,) if isinstance(first_experience, str) else first_experience
        assert names and set(names) <= set(RESOLVED_ENTRIES), (first_experience, RESOLVED_ENTRIES)
        first_experience = names
    else:
        assert isinstance(first_experience, tuple) and (not first_experience or effect == "later"), first_experience
    metadata = {"help": help, "effect": effect, "range": range, "label": label, "only": only, "applies": applies,
                "first_experience": first_experience}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _bsce(config: Mapping) -> bool:
    """Whether BSCE's settings (tau, prior) apply: with ``loss: ce`` no adjustment is built."""
    return config["loss"] == "bsce"


#: The strategies whose first experience depends on the memory's size: BiC holds out a validation split of
#: its memory before training, GDumb trains on its memory.
_MEMORY_FIRST = ("bic", "gdumb")


@dataclass
class ExperimentConfig:
    """Everything that defines one run (see the shipped configs, :func:`shipped_configs`)."""

    name: str = _key("digits-replay", "experiment name: the W&B runs' name prefix and group", effect="run")
    # data
    benchmark: str = _key("digits", "the class-incremental benchmark")
    protocol: str = _key("B0", "B<k>: k classes in the first experience, then n_steps equal steps "
                               "(B0: n_steps equal experiences); any k that splits the benchmark's classes")
    n_steps: int = _key(5, "number of incremental steps of the protocol", range="[1, inf)")
    class_order: Union[str, int, list] = _key(
        "icarl", f"order the classes arrive in: {', '.join(CLASS_ORDER_NAMES)}, an int seed, or a list of class ids")
    data_dir: Optional[str] = _key(None, f"folder holding the dataset ({_benchmarks_with('data_dir')}; null: "
                                         "$BSCE_DATA_DIR, else ~/.cache/bsce_avalanche)", effect="run")
    download: bool = _key(False, f"allow downloading the dataset ({_benchmarks_with('download')})", effect="run")
    fast_augment: Optional[bool] = _key(
        None, f"uint8 images cropped and flipped in batches on the device ({_benchmarks_with('fast_augment')}); "
              f"null: the benchmark's default (on for {_benchmarks_with('fast_augment', default=True)})",
        effect="resolved", first_experience="fast_augment")
    data_path: str = _key(
        "loader", "how batches are fetched: loader (Avalanche's per-sample DataLoader) or device (images kept on "
                  f"the training device, whole batches gathered there from the same sampler; "
                  f"{', '.join(n for n, b in BENCHMARKS.items() if b.in_memory)}, num_workers 0)")
    # model and method
    model: str = _key("auto", "the network (auto: the benchmark's default)", effect="resolved", first_experience="model")
    width: int = _key(16, "base width of the CIFAR ResNets: stages of width, 2x, 4x channels (16 in the papers)",
                      range="[1, inf)")
    incremental_head: bool = _key(True, "Avalanche's IncrementalClassifier, which masks the units of classes not "
                                        "seen yet; false: a fixed linear head over all classes")
    strategy: str = _key("replay", "the Avalanche strategy", effect="resolved", label=True,
                         first_experience=("training", "loss"))
    loss: str = _key("bsce", "training loss: ce (cross-entropy) or bsce (BalancedSoftmaxPlugin)", effect="resolved",
                     label=True, first_experience="loss")
    tau: float = _key(1.0, "strength of the BSCE adjustment, logits + tau * log(prior) (0: plain CE)",
                      effect="resolved", range=f"[0, {MAX_TAU:g}]", label=True, applies=_bsce, first_experience="loss")
    prior: str = _key("auto", "where BSCE's class prior comes from (see the README)", effect="resolved", label=True,
                      applies=_bsce, first_experience="loss")
    memory_size: int = _key(200, "replay memory, in samples, shared by all seen classes", effect="later",
                            range="[0, inf)", first_experience=_MEMORY_FIRST)
    memory_per_class: Optional[int] = _key(None, "memory per class instead of memory_size (B50 protocols: 20)",
                                           effect="later", range="[1, inf)", first_experience=_MEMORY_FIRST)
    prior_window: Optional[int] = _key(
        None, "with prior: window (only): the prior is the label frequency of the last prior_window training "
              "mini-batches, across steps (ER-LAS's l: 1 on CIFAR; at most MAX_WINDOW, the window holding window x classes "
              "counts)", effect="resolved", range=f"[1, {MAX_WINDOW}]", label=True,
        applies=lambda c: _bsce(c) and c["prior"] == "window", first_experience="loss")
    replay: str = _key("half_batch", "rehearsal protocol of replay, of lwf with lwf_memory and of bic: "
                       + "; ".join(f"{k}: {v}" for k, v in REPLAY_PROTOCOLS.items())
                       + " (the other strategies have their own)", effect="later", label=True, applies=uses_replay_option)
    memory_selection: str = _key("random", "how replay, lwf with lwf_memory and er_ace (random or reservoir) choose their memory: "
                                 + "; ".join(f"{k}: {v}" for k, v in MEMORY_SELECTIONS.items()), effect="later",
                                 label=True, applies=lambda c: uses_replay_option(c) or c["strategy"] == "er_ace")
    online: bool = _key(
        False, "the standard online protocol (ER-LAS, Mammoth, Avalanche's online baselines): each task's data "
               "split by Avalanche's split_online_stream into experiences of batch_size samples, each trained by "
               "one train() call (epochs: 1: every stream sample trained on once), so that the memory (replay's "
               "ReplayPlugin, er_ace's buffer) is updated after every mini-batch with the samples just trained on and "
               "the head grows with the classes seen in the stream; no task boundary reaches training (prior: auto "
               "becomes the prior of each mini-batch experience's loader; prior: window is boundary-free anyway); "
               "evaluation after each task; no first-experience cache; naive, replay and er_ace; use with "
               "memory_selection: reservoir", label=True)
    posthoc_window: Optional[int] = _key(
        None, "the prior of the post-hoc logit adjustment recorded for CE runs (results['posthoc']): null: the last "
              "training experience's loader distribution (auto); an int: the labels of the last posthoc_window "
              "training mini-batches (the window prior, boundary-free: the online protocol's)", effect="later",
        range="[1, inf)")
    weight_aligning: bool = _key(
        False, "Weight Aligning (WA; Zhao et al., CVPR 2020; bsce_avalanche.WeightAligningPlugin): after each step "
               "the new classes' head weights are rescaled to the old classes' mean norm, and the head's weights are "
               "clipped to >= 0 after every optimizer step from the first experience on (as DER's WA code; PyCIL "
               "does not clip), so its first experience differs from the run without it; meant for loss: ce",
        label=True, only=("replay", "lwf"))
    lwf_alpha: float = _key(1.0, "weight of LwF's distillation loss", effect="later", range="[0, inf)", only=('lwf',))
    lwf_temperature: float = _key(2.0, "temperature of LwF's distillation", effect="later", range="(0, inf)", only=('lwf',))
    lwf_memory: bool = _key(False, "LwF with a replay memory (memory_size)", effect="later", label=True, only=('lwf',))
    icarl_eval: str = _key("nme", "iCaRL's classifier at evaluation: nearest mean of exemplars or the trained head "
                                  "(results.json reports the other too)", effect="later", label=True, only=('icarl',))
    icarl_distillation_weight: float = _key(
        1.0, "iCaRL with loss bsce: weight of the distillation term, the sigmoid BCE between the old and the new "
             "model's outputs averaged over the old classes' units (loss ce is iCaRL's own loss, which has no "
             "weight: see the README)", effect="later", range="[0, inf)", only=('icarl',))
    bic_stage2_epochs: int = _key(200, "epochs of BiC's bias-correction stage (Avalanche's BiC: 200, lr / 10 at "
                                       "epochs 50, 100 and 150)", effect="later", range="[0, inf)", only=('bic',))
    bic_stage2_lr: float = _key(0.1, "learning rate of BiC's bias-correction stage (Avalanche's BiC: 0.1)",
                                effect="later", range="(0, inf)", only=('bic',))
    bic_val_fraction: float = _key(0.1, "fraction of BiC's memory held out for its bias correction",
                                   effect="later", range="(0, 1)", only=('bic',), first_experience=("bic",))
    ncm_diagnostic: bool = _key(False, "also report the accuracy of a nearest-class-mean classifier on the model's "
                                       "features, the class means from the replay memory (results.json's ncm): does "
                                       "BSCE change the representation or only the classifier's bias?", effect="run")
    recipes: dict = _key(
        {}, "per-method training recipes, applied to the runs of that method after the grid: {selector: {key: "
            "value}}, a selector being a strategy (icarl) or strategy-loss (icarl-ce), the more specific applied "
            "last; each run's results.json records the values it trained with", effect="run")
    recipe: Optional[str] = _key(None, "the recipes entries applied to this run (set by the runner)", effect="run")
    # optimisation
    epochs: int = _key(10, "training epochs per step", range="[1, inf)")
    batch_size: int = _key(32, "training mini-batch size (the global batch under torchrun)", range="[1, inf)")
    eval_batch_size: int = _key(256, "evaluation mini-batch size (thousands with data_path: device)", effect="run",
                                range="[1, inf)")
    batch_size_mem: Optional[int] = _key(None, "memory mini-batch size of replay (replay: half_batch) and er_ace, "
                                               "added to batch_size (online ER: 10 and 10); null: batch_size",
                                         effect="later", range="[1, inf)")  # the first experience has no memory
    amp: str = _key("none", "bf16: the feature extractor runs under bf16 autocast; logits and losses stay float32")
    compile: bool = _key(False, "torch.compile the feature extractor (inductor, no CUDA graphs; the head, BSCE's "
                                "adjustment and the losses stay eager float32): faster steps after a compilation "
                                "per batch shape and mode (5-20 s on an idle 2-core CPU)")
    lr: float = _key(0.05, "SGD learning rate", range="(0, inf)")
    momentum: float = _key(0.9, "SGD momentum", range="[0, 1)")
    weight_decay: float = _key(0.0, "SGD weight decay", range="[0, inf)")
    lr_milestones: list = _key([], "epochs at which the learning rate is multiplied by lr_gamma, each below "
                                   "epochs, e.g. [80, 120]")
    lr_gamma: float = _key(0.1, "learning-rate factor at each milestone", range="(0, 1]")
    # run
    seed: int = _key(0, "seed of everything (class order 'random' included)", range=f"[0, {2**32 - 1}]")
    device: str = _key("auto", "auto: cuda when available, else cpu", effect="run")
    num_workers: int = _key(0, "DataLoader worker processes (per-sample random transforms run in them)",
                            range="[0, inf)")
    threads: Optional[int] = _key(None, "torch CPU threads (null: torch's default)", effect="run", range="[1, inf)")
    output_dir: str = _key("outputs/default", "where results, W&B files and the comparison go", effect="run")
    progress: bool = _key(True, "show a progress bar", effect="run")
    checkpoint: bool = _key(True, "write checkpoint.pt after every step (for --resume)", effect="run")
    first_experience_cache: Union[bool, str] = _key(
        True, "train the first experience once per seed, and start the runs that train it alike from it (same "
              "numbers): true: cached in first_experience/ beside the run folders; a folder: cached there; false: off",
        effect="run")
    # logging
    wandb: bool = _key(True, "log to Weights & Biases (offline without an API key)", effect="run")
    wandb_project: str = _key("bsce-avalanche", "W&B project", effect="run")
    wandb_entity: Optional[str] = _key(None, "W&B entity (null: your default)", effect="run")
    wandb_mode: Optional[str] = _key(None, "W&B mode (null: $WANDB_MODE, else online with an API key, else offline)",
                                     effect="run")
    grid: dict = _key({}, "lists of values for some keys, one run per combination, e.g. {loss: [ce, bsce]}",
                      effect="run")

    def __post_init__(self):  # every key checked, by dataclasses.replace too
        hints = get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        try:
            for key, valid in CHOICES.items():
                if getattr(self, key) is not None:
                    check_choice(key, getattr(self, key), valid)
            check_tau(self.tau)  # the library's bound, with its reason
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key in ("name", "output_dir", "wandb_project"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key} must not be empty.")
        for key, interval in RANGES.items():
            value = getattr(self, key)
            if value is not None and (error := _range_error(key, value, interval)):
                raise ConfigError(error)
        milestones = self.lr_milestones
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones) or \
                any(a >= b for a, b in zip(milestones, milestones[1:])):
            raise ConfigError(f"lr_milestones must be strictly increasing epochs >= 1, e.g. [80, 120], "
                              f"got {milestones!r}.")
        # a check across keys that the grid varies is made on each combination (expand_grid), not on the base
        varied = set(self.grid)
        if milestones and milestones[-1] >= self.epochs and not {"epochs", "lr_milestones"} & varied:
            fix = (f"set milestones below {self.epochs} (e.g. --set 'lr_milestones=[{self.epochs - 1}]') or [] for a "
                   "constant rate") if self.epochs > 1 else "with one epoch, set lr_milestones: []"
            if any("lr_milestones" in (v if isinstance(v, dict) else {}) for v in self.recipes.values()):
                fix += " (a recipe sets it too: for a quick try, --set recipes={} --epochs 1 --set lr_milestones=[])"
            raise ConfigError(f"lr_milestones {milestones} reach epochs ({self.epochs}): a milestone >= epochs never "
                              f"lowers the learning rate; {fix}.")
        info = BENCHMARKS[self.benchmark]
        try:
            resolve_protocol(info.n_classes, protocol=self.protocol, n_steps=self.n_steps)
            get_class_order(self.class_order, info.n_classes, seed=self.seed)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"benchmark {self.benchmark!r}: {err}") from None
        for key in _BENCHMARK_OPTIONS:
            if getattr(self, key) not in (None, False) and key not in info.options:
                takes = ", ".join(sorted(info.options)) or "none of them"
                raise ConfigError(f"{key} does not apply to benchmark {self.benchmark!r} "
                                  f"(of {', '.join(_BENCHMARK_OPTIONS)} it takes {takes}); remove it.")
        if self.width != 16 and not MODELS[self.model_name].blocks_per_stage:
            cifar = ", ".join(n for n, m in MODELS.items() if m.blocks_per_stage)
            raise ConfigError(f"width applies to the CIFAR ResNets ({cifar}), not {self.model_name}.")
        if self.data_path == "device":
            if not info.in_memory or ("fast_augment" in info.options and not self.use_fast_augment):
                in_memory = ", ".join(n for n, b in BENCHMARKS.items() if b.in_memory)
                raise ConfigError(f"data_path: device needs images held in memory as tensors ({in_memory}; with "
                                  f"fast_augment on), not benchmark {self.benchmark!r}"
                                  + (" with fast_augment: false" if info.in_memory else "")
                                  + "; use data_path: loader.")
            if self.num_workers:
                raise ConfigError("data_path: device gathers batches on the device in the main process: "
                                  "set num_workers: 0.")
        if STRATEGIES[self.strategy].memory and self.memory_size == 0 and not self.memory_per_class:
            raise ConfigError(f"strategy {self.strategy!r} needs a memory: set memory_size > 0.")
        if self.strategy == "bic" and self.replay == "half_batch" and self.memory_selection != "random":
            raise ConfigError("memory_selection applies to bic with replay: concat only (half_batch is Avalanche's BiC, "
                              "with its own random memory): set replay: concat, or memory_selection: random.")
        if self.memory_selection == "herding" and self.memory_per_class and uses_replay_option(vars(self)):
            raise ConfigError("memory_selection: herding shares memory_size among the classes seen so far; it does "
                              "not take memory_per_class: set memory_size instead, or use memory_selection: random.")
        if (self.prior == "window") != (self.prior_window is not None) and not {"prior", "prior_window"} & varied:
            raise ConfigError("prior: window needs prior_window (the window in mini-batches, e.g. 1), and "
                              "prior_window applies to prior: window only; set both or neither.")
        if error := online_keys_error(self) or online_error(self):
            raise ConfigError(error)
        if self.first_experience_cache == "":
            raise ConfigError("first_experience_cache must be true, false or a folder, got an empty string.")
        for key, values in self.grid.items():
            if key not in _FIELD_NAMES or key == "grid":
                raise ConfigError(f"grid key {key!r} is not a config key{did_you_mean(key, _FIELD_NAMES)}.")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list, got {values!r}.")
        for selector, values in self.recipes.items():
            strategy, _, loss = str(selector).partition("-")
            if strategy not in STRATEGIES or (loss and loss not in CHOICES["loss"]):
                examples = [*STRATEGIES, *(f"{n}-{l}" for n in STRATEGIES for l in CHOICES["loss"])]
                raise ConfigError(f"recipes key {selector!r} is not a strategy or strategy-loss (e.g. icarl, "
                                  f"icarl-ce){did_you_mean(str(selector), examples)}.")
            if not isinstance(values, dict) or not values:
                raise ConfigError(f"recipes[{selector!r}] must be a non-empty mapping of config keys to values, e.g. "
                                  f"{{lr: 2.0}}, got {values!r}.")
            for key in values:
                if key not in _RECIPE_KEYS:
                    why = ("not a config key" + did_you_mean(key, _FIELD_NAMES) if key not in _FIELD_NAMES else
                           "not a training setting a recipe may set (those that change results, except which run "
                           "it is: strategy, loss, seed and the benchmark's split)")
                    raise ConfigError(f"recipes[{selector!r}] sets {key!r}: {why}.")
        if self.grid:
            expand_grid(self)  # every combination's values, checked now rather than mid-grid
        elif self.recipes:
            apply_recipes(self)

    @property
    def model_name(self) -> str:
        return self.model if self.model != "auto" else BENCHMARKS[self.benchmark].default_model

    @property
    def use_fast_augment(self) -> bool:
        return BENCHMARKS[self.benchmark].fast_augment if self.fast_augment is None else self.fast_augment

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    @property
    def run_name(self) -> str:
        return run_name(vars(self))


_FIELD_NAMES = [f.name for f in fields(ExperimentConfig)]
_DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ExperimentConfig)}
#: Each key's :data:`EFFECTS` entry: the one table of what a setting changes.
EFFECT: dict[str, str] = {f.name: f.metadata["effect"] for f in fields(ExperimentConfig)}
#: Keys :func:`method_label` shows, where they matter (the run name's readable part).
_LABEL: dict[str, bool] = {f.name: f.metadata["label"] for f in fields(ExperimentConfig)}
_ONLY: dict[str, tuple] = {f.name: f.metadata["only"] for f in fields(ExperimentConfig)}
_APPLIES: dict[str, Optional[Callable[[Mapping], bool]]] = {f.name: f.metadata["applies"]
                                                            for f in fields(ExperimentConfig)}
_FIRST_EXPERIENCE: dict[str, tuple] = {f.name: f.metadata["first_experience"] for f in fields(ExperimentConfig)}
#: Valid values of the numeric keys, as intervals (``--help`` shows them; null stays valid where allowed).
RANGES: dict[str, str] = {f.name: f.metadata["range"] for f in fields(ExperimentConfig) if f.metadata["range"]}
#: Keys that change what a run computes: a resumed run must agree on them, ``compare`` pools only runs that
#: agree on all of them but the seed, and the run name holds them (readably or in its digest).
RESULT_KEYS: tuple[str, ...] = tuple(k for k, effect in EFFECT.items() if effect != "run")
#: Keys a recipe may set: those that change results, except the ones that say which run it is.
_RECIPE_KEYS = tuple(k for k in RESULT_KEYS if k not in ("strategy", "loss", "seed", "benchmark", "protocol",
                                                           "n_steps", "class_order"))


def _applies(key: str, c: Mapping) -> bool:
    """Whether ``key`` acts on the run ``c`` (a full config dict): its field's ``only`` and ``applies``."""
    return (not _ONLY[key] or c["strategy"] in _ONLY[key]) and (_APPLIES[key] is None or _APPLIES[key](c))


def result_settings(config: Mapping) -> dict:
    """The settings of ``config`` (a config dict, from this version or another) that change its results,
    defaults filled in; keys this version does not know are dropped, keys that do not act on this run (their
    field's ``only`` or ``applies``: another strategy's key, tau with ``loss: ce``) left at their default."""
    c = {**_DEFAULTS, **config}
    return {k: c[k] if _applies(k, c) else _DEFAULTS[k] for k in RESULT_KEYS}


def _shown_exactly(key: str, value) -> bool:
    """Whether :func:`method_label` shows a label key's ``value`` exactly (it shows every label key that
    applies, at a value other than its default): floats are printed with ``:g`` (6 significant digits),
    so ``tau: 0.1234567`` is not."""
    return not isinstance(value, float) or float(f"{value:g}") == value


def settings_digest(config: Mapping) -> str:
    """Six hex digits naming every result setting but the seed, by exact value: the settings at a value
    other than their default, less those :func:`method_label` shows exactly (so the runs of one protocol share
    it). Stable across versions: keys at their default are left out, so a key added later changes no name,
    and a label key enters only when the label loses part of its value (``tau: 0.1234567``), so the names of
    runs whose label shows everything did not change when this rule was added."""
    settings = {k: v for k, v in result_settings(config).items()
                if k != "seed" and v != _DEFAULTS[k] and not (_LABEL[k] and _shown_exactly(k, v))}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]


def first_experience_settings(config: Mapping) -> dict:
    """The single source of what a run's first experience depends on among its settings, read off each field's
    declaration (:func:`_key`'s ``effect`` and ``first_experience``): the ``result`` keys as they are, the
    ``later`` keys whose field lists this run's strategy (``memory_size`` for BiC and GDumb), each at its
    default where it does not act on this run. The ``resolved`` keys are not here: they enter the
    first-experience key as what they resolve to (:data:`RESOLVED_ENTRIES`, computed by
    ``first_experience.first_experience_key``; :func:`resolved_first_experience_keys` lists them)."""
    c = {**_DEFAULTS, **config}
    settings = result_settings(c)
    return {k: v for k, v in settings.items()
            if EFFECT[k] == "result" or (EFFECT[k] == "later" and c["strategy"] in _FIRST_EXPERIENCE[k])}


def resolved_first_experience_keys() -> dict[str, tuple[str, ...]]:
    """Each ``resolved`` key and the first-experience key entries it enters as (``tau``: ``("loss",)``)."""
    return {k: _FIRST_EXPERIENCE[k] for k, effect in EFFECT.items() if effect == "resolved"}


def run_name(config: Mapping) -> str:
    """``<method label>-seed<seed>-<settings digest>``, e.g. ``replay-bsce-seed0-3fa9c1``: the usual
    settings readable, every other result setting in the digest (two distinct runs never share a name)."""
    c = {**_DEFAULTS, **config}
    return f"{method_label(c)}-seed{c['seed']}-{settings_digest(c)}"


def differing_settings(configs: Sequence[Mapping]) -> list[str]:
    """The result settings (seed excluded) that are not equal across ``configs``."""
    settings = [result_settings(c) for c in configs]
    return [k for k in RESULT_KEYS if k != "seed" and any(s[k] != settings[0][k] for s in settings[1:])]


def _range_error(key: str, value, interval: str) -> Optional[str]:
    """Why ``value`` lies outside ``interval`` (e.g. ``"(0, 1]"``), or None."""
    low, high = interval[1:-1].split(", ")
    above = float(low) < value if interval[0] == "(" else float(low) <= value
    if above and (value < float(high) if interval[-1] == ")" else value <= float(high)):
        return None
    valid = f"in {interval}" if high != "inf" else f">= {low}" if interval[0] == "[" else f"> {low}"
    return f"{key} must be {valid}{' or null' if _DEFAULTS.get(key, 0) is None else ''}, got {value}."


def method_label(config: Mapping) -> str:
    """What distinguishes a method from others in a comparison (not the seed; settings at their
    default left out), e.g. ``replay-bsce``, ``lwf+mem-ce-concat``, ``icarl-bsce-head``,
    ``replay-ce-concat-wa``. Takes a config dict, so that results written by other versions get labels too."""
    c = {**_DEFAULTS, **config}
    parts = [c["strategy"] + ("+mem" if c["strategy"] == "lwf" and c["lwf_memory"] else ""), c["loss"]]
    if c["strategy"] == "icarl":
        parts.append(c["icarl_eval"])
    if uses_replay_option(c):
        parts += [c[k] for k in ("replay", "memory_selection") if c[k] != _DEFAULTS[k]]
    elif c["strategy"] == "er_ace" and c["memory_selection"] != _DEFAULTS["memory_selection"]:
        parts.append(c["memory_selection"])
    if c["loss"] == "bsce" and c["prior"] != "auto":
        parts.append(f"prior_{c['prior']}" + (f"{c['prior_window']}" if c["prior"] == "window" else ""))
    if c["loss"] == "bsce" and c["tau"] != 1.0:
        parts.append(f"tau{c['tau']:g}")
    if c["weight_aligning"] and c["strategy"] in _ONLY["weight_aligning"]:
        parts.append("wa")
    if c["online"]:
        parts.append("online")
    return "-".join(parts)


def _coerce(name: str, value: Any, hint) -> Any:
    """Check ``value`` against the field's type; accept ints for floats."""
    value = plain_number(value)  # a NumPy or torch scalar as the Python number it holds
    if get_origin(hint) is Union:
        options = [option for option in get_args(hint) if option is not type(None)]
        if value is None and type(None) in get_args(hint):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(name, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{name} has the wrong type: {errors[0]}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{name} must be a finite number, got {type(value).__name__} {value!r}.")
    if hint in (int, str, bool, list, dict):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{name} must be of type {hint.__name__}, got {type(value).__name__} {value!r}.")
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key set twice in one mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = None if key_node.tag == "tag:yaml.org,2002:merge" else self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or key is None:
                continue  # merge keys, and unhashable keys that the base class refuses
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is set twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# YAML 1.1 reads 1e-5 (no dot) as a string; take it as the number everyone means (YAML 1.2 does)
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _parse_yaml(text: str | bytes, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark, started = err.problem_mark or err.context_mark, err.context_mark
        context = f" ({err.context} at line {started.line + 1})" if err.context and err.problem and started else ""
        raise ConfigError(f"{where}, line {mark.line + 1}, column {mark.column + 1}: "
                          f"{err.problem or err.context}{context}.") from None
    except yaml.YAMLError as err:  # e.g. bytes that are not UTF-8
        raise ConfigError(f"{where} is not a YAML text file: {getattr(err, 'reason', err)}.") from None


def load_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error or a key set twice: a :class:`ConfigError` naming the line."""
    return _parse_yaml(Path(path).read_bytes(), str(path))


def parse_value(text: str) -> Any:
    """Parse a command-line override value with YAML rules (``3``, ``0.1``, ``[1,2]``, ``null``)."""
    return _parse_yaml(text, f"YAML value {text!r}")


#: The shipped config ``bsce-experiment run`` runs without ``--config``: the offline demo (digits, Replay, CE and BSCE).
DEFAULT_CONFIG = "default"


def shipped_configs() -> dict[str, Path]:
    """The configs shipped with the package, by name (the file name without ``.yaml``): the default and the
    paper's settings. One copy of each: ``experiments/configs/*.yaml`` in a checkout, installed as package data
    in ``bsce_avalanche/configs/`` (``setup.cfg``)."""
    package = Path(__file__).resolve().parents[1]
    folder = package / "configs"
    if not folder.is_dir():  # a checkout
        folder = package.parent / "experiments" / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"), key=lambda p: (p.stem != DEFAULT_CONFIG, p.stem))}


def resolve_config(config: str | Path) -> Path:
    """The YAML file ``config`` names: a file's path, or a shipped config's name (``cifar100_b0_10steps``, with or
    without ``.yaml``; a file of that name in the working directory comes first); else a one-line
    :class:`ConfigError` listing the shipped names."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if len(path.parts) == 1 and name in shipped:
        return shipped[name]
    names = ", ".join(shipped) or "none found (a broken install?)"
    if len(path.parts) > 1 or path.suffix in (".yaml", ".yml"):
        raise ConfigError(f"Config file {path} does not exist; shipped configs (--config NAME): {names}.")
    raise ConfigError(f"Unknown config {str(config)!r}{did_you_mean(name, shipped)}: give a YAML file's path or "
                      f"a shipped config's name: {names}.")


def load_config(path: Optional[str | Path] = None, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Load a YAML config (a file's path or a shipped config's name, :func:`resolve_config`; None: the built-in
    defaults) and apply ``overrides``; bad keys or values: :class:`ConfigError`."""
    loaded, overrides = {}, overrides or {}
    if path is not None:
        path = resolve_config(path)
        loaded = load_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of keys to values.")
    from_file = {k: v for k, v in loaded.items() if k not in overrides}  # what the file alone decides
    for key in {**loaded, **overrides}:
        if key not in _FIELD_NAMES:
            raise ConfigError(f"Unknown config key {key!r}{did_you_mean(key, _FIELD_NAMES)}"
                              + (f" in {path}" if key in from_file else "") + ".")
    try:
        return ExperimentConfig(**{**loaded, **overrides})
    except ConfigError as err:
        try:  # the file's own value at fault: name the file
            ExperimentConfig(**from_file)
        except ConfigError as own:
            if str(own) == str(err):
                raise ConfigError(f"{path}: {err}") from None
        raise


def combination_error(config: ExperimentConfig) -> Optional[str]:
    """Why this combination of valid settings cannot run, or None: not a validation error, so that a grid
    over strategies and losses can be written down (the runner refuses such runs, a W&B sweep skips them)."""
    reason = STRATEGIES[config.strategy].without_bsce
    if config.loss == "bsce" and reason:
        return f"{config.strategy} cannot be combined with loss: bsce ({reason}); use loss: ce."
    return None


def apply_recipes(config: ExperimentConfig, grid_keys: Sequence[str] = ()) -> ExperimentConfig:
    """``config`` with the ``recipes`` entries of its method applied (``strategy``, then ``strategy-loss``),
    ``recipes`` emptied and ``recipe`` naming what was applied; a recipe setting a key the grid varies
    (``grid_keys``) is a :class:`ConfigError`."""
    applied = [s for s in (config.strategy, f"{config.strategy}-{config.loss}") if s in config.recipes]
    if not applied:
        return config.replace(recipes={}) if config.recipes else config
    values = {}
    for selector in applied:
        for key in config.recipes[selector]:
            if key in grid_keys:
                raise ConfigError(f"grid.{key} and recipes[{selector!r}] both set {key} for the {selector} runs: "
                                  f"vary it in the recipe's runs by editing the recipe, or drop it from one of them.")
        values.update(config.recipes[selector])
    try:
        return config.replace(recipes={}, recipe=", ".join(applied), **values)
    except ConfigError as err:
        raise ConfigError(f"recipes[{applied[-1]!r}] applied to {config.strategy}-{config.loss}: {err} (a quick try "
                          "of a protocol: --set recipes={} --epochs 1 --set lr_milestones=[])") from None


def check_recipe_overrides(config: ExperimentConfig, keys, source: str = "the command line") -> None:
    """The one rule of recipes, in every entry point (``run``, ``grid``, a sweep, the evidence scripts' ``--set``):
    a key that ``source`` sets (``keys``: the command line's ``--set``/options, a sweep's parameters) and that a
    recipe also sets for one of ``config``'s runs is a :class:`ConfigError` naming both; the recipe never wins
    silently. ``recipes`` and ``grid`` themselves are not such keys (they replace the file's)."""
    keys = set(keys) - {"recipes", "recipe", "grid"}
    if not keys or not config.recipes:
        return
    grid = config.grid
    strategies = [config.strategy] if "strategy" not in grid else grid["strategy"]
    losses = [config.loss] if "loss" not in grid else grid["loss"]
    for strategy, loss in itertools.product(strategies, losses):
        for selector in (strategy, f"{strategy}-{loss}"):
            clash = sorted(keys & set(config.recipes.get(selector) or {}))
            if clash:
                key = clash[0]
                raise ConfigError(
                    f"{source} sets {key} and recipes[{selector!r}] also sets {key} for the {strategy}-{loss} runs: "
                    f"one of them would be ignored. Change it in the recipe (--set 'recipes=...'), drop the recipes "
                    f"(--set recipes={{}}), or leave {key} to the recipe.")


def expand_grid(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per combination of the ``grid`` values (the config itself if no grid), each with its
    method's ``recipes`` applied; an invalid combination, or two combinations that are the same run (one
    name), is a :class:`ConfigError` naming them."""
    keys, runs = list(config.grid), []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        combination = dict(zip(keys, values))
        try:
            runs.append(apply_recipes(config.replace(grid={}, **combination), keys))
        except ConfigError as err:
            raise ConfigError(f"grid combination {combination}: {err}") from None
    if not keys:
        return [apply_recipes(config)]
    check_unique_names(runs)
    return runs


def check_unique_names(runs: Sequence[ExperimentConfig]) -> None:
    """Refuse two runs with one name (the same result settings): they would write to one folder."""
    seen: dict[str, ExperimentConfig] = {}
    for run in runs:
        if (other := seen.setdefault(run.run_name, run)) is not run:
            differ = sorted(k for k in _FIELD_NAMES if getattr(run, k) != getattr(other, k))
            raise ConfigError(f"two runs are the same run {run.run_name!r}: they differ only in "
                              f"{', '.join(differ) or 'nothing'}, which do not change results; remove one of them.")
