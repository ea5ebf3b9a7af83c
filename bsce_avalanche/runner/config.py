"""Experiment configuration: one dataclass, loaded from YAML, overridden from the CLI, and checked
(types, names, :data:`RANGES`, benchmark facts) before anything is built."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Hashable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from .._choices import check_choice, did_you_mean
from .._numbers import plain_number
from .errors import ConfigError
from ..benchmarks import BENCHMARKS, CLASS_ORDER_NAMES, get_class_order, resolve_protocol
from ..icarl import ICARL_EVAL_MODES
from ..losses import MAX_TAU, _check_tau
from ..models import AMP_DTYPES, MODELS
from ..priors import PRIOR_MODES
from .strategies import MEMORY_SELECTIONS, REPLAY_PROTOCOLS, STRATEGIES, uses_replay_option

__all__ = ["ExperimentConfig", "ConfigError", "load_config", "expand_grid", "combination_error", "method_label",
           "CHOICES", "RANGES", "load_yaml", "parse_value"]

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
    "amp": tuple(AMP_DTYPES),
    "wandb_mode": ("online", "offline", "disabled"),
}
#: Valid values of the numeric keys, as intervals (``--help`` shows them; null stays valid where allowed).
RANGES: dict[str, str] = {
    **dict.fromkeys(("n_steps", "width", "epochs", "batch_size", "eval_batch_size", "memory_per_class", "threads"),
                    "[1, inf)"),
    **dict.fromkeys(("memory_size", "bic_stage2_epochs", "weight_decay", "lwf_alpha", "num_workers"), "[0, inf)"),
    **dict.fromkeys(("lr", "lwf_temperature"), "(0, inf)"),
    "momentum": "[0, 1)", "lr_gamma": "(0, 1]", "bic_val_fraction": "(0, 1)",
    "tau": f"[0, {MAX_TAU:g}]", "seed": f"[0, {2**32 - 1}]",
}
#: Keys a benchmark's builder may take (``BenchmarkInfo.options``).
_BENCHMARK_OPTIONS = ("data_dir", "download", "fast_augment")


def _benchmarks_with(option: str, default: bool = False) -> str:
    return ", ".join(n for n, b in BENCHMARKS.items() if option in b.options and (b.fast_augment or not default))


def _key(default, help: str):
    """A config key: its default and its meaning (``--help`` and the docs read it)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ExperimentConfig:
    """Everything that defines one run (see ``experiments/configs/*.yaml``)."""

    name: str = _key("digits-replay", "experiment name: the W&B runs' name prefix and group")
    # data
    benchmark: str = _key("digits", "the class-incremental benchmark")
    protocol: str = _key("B0", "B<k>: k classes in the first experience, then n_steps equal steps "
                               "(B0: n_steps equal experiences); any k that splits the benchmark's classes")
    n_steps: int = _key(5, "number of incremental steps of the protocol")
    class_order: Union[str, int, list] = _key(
        "icarl", f"order the classes arrive in: {', '.join(CLASS_ORDER_NAMES)}, an int seed, or a list of class ids")
    data_dir: Optional[str] = _key(None, f"folder holding the dataset ({_benchmarks_with('data_dir')}; null: "
                                         "$BSCE_DATA_DIR, else ~/.cache/bsce_avalanche)")
    download: bool = _key(False, f"allow downloading the dataset ({_benchmarks_with('download')})")
    fast_augment: Optional[bool] = _key(
        None, f"uint8 images cropped and flipped in batches on the device ({_benchmarks_with('fast_augment')}); "
              f"null: the benchmark's default (on for {_benchmarks_with('fast_augment', default=True)})")
    data_path: str = _key(
        "loader", "how batches are fetched: loader (Avalanche's per-sample DataLoader) or device (images kept on "
                  f"the training device, whole batches gathered there from the same sampler; "
                  f"{', '.join(n for n, b in BENCHMARKS.items() if b.in_memory)}, num_workers 0)")
    # model and method
    model: str = _key("auto", "the network (auto: the benchmark's default)")
    width: int = _key(16, "base width of the CIFAR ResNets: stages of width, 2x, 4x channels (16 in the papers)")
    incremental_head: bool = _key(True, "Avalanche's IncrementalClassifier, which masks the units of classes not "
                                        "seen yet; false: a fixed linear head over all classes")
    strategy: str = _key("replay", "the Avalanche strategy")
    loss: str = _key("bsce", "training loss: ce (cross-entropy) or bsce (BalancedSoftmaxPlugin)")
    tau: float = _key(1.0, "strength of the BSCE adjustment, logits + tau * log(prior) (0: plain CE)")
    prior: str = _key("auto", "where BSCE's class prior comes from (see the README)")
    memory_size: int = _key(200, "replay memory, in samples, shared by all seen classes")
    memory_per_class: Optional[int] = _key(None, "memory per class instead of memory_size (B50 protocols: 20)")
    replay: str = _key("half_batch", "rehearsal protocol of replay and of lwf with lwf_memory: "
                       + "; ".join(f"{k}: {v}" for k, v in REPLAY_PROTOCOLS.items())
                       + " (the other strategies have their own)")
    memory_selection: str = _key("random", "how replay and lwf with lwf_memory choose their memory: "
                                 + "; ".join(f"{k}: {v}" for k, v in MEMORY_SELECTIONS.items()))
    lwf_alpha: float = _key(1.0, "weight of LwF's distillation loss")
    lwf_temperature: float = _key(2.0, "temperature of LwF's distillation")
    lwf_memory: bool = _key(False, "LwF with a replay memory (memory_size)")
    icarl_eval: str = _key("nme", "iCaRL's classifier at evaluation: nearest mean of exemplars or the trained head "
                                  "(results.json reports the other too)")
    bic_stage2_epochs: int = _key(30, "epochs of BiC's bias-correction stage")
    bic_val_fraction: float = _key(0.1, "fraction of BiC's memory held out for its bias correction")
    # optimisation
    epochs: int = _key(10, "training epochs per step")
    batch_size: int = _key(32, "training mini-batch size (the global batch under torchrun)")
    eval_batch_size: int = _key(256, "evaluation mini-batch size (thousands with data_path: device)")
    amp: str = _key("none", "bf16: the feature extractor runs under bf16 autocast; logits and losses stay float32")
    lr: float = _key(0.05, "SGD learning rate")
    momentum: float = _key(0.9, "SGD momentum")
    weight_decay: float = _key(0.0, "SGD weight decay")
    lr_milestones: list = _key([], "epochs at which the learning rate is multiplied by lr_gamma, each below "
                                   "epochs, e.g. [80, 120]")
    lr_gamma: float = _key(0.1, "learning-rate factor at each milestone")
    # run
    seed: int = _key(0, "seed of everything (class order 'random' included)")
    device: str = _key("auto", "auto: cuda when available, else cpu")
    num_workers: int = _key(0, "DataLoader worker processes")
    threads: Optional[int] = _key(None, "torch CPU threads (null: torch's default)")
    output_dir: str = _key("outputs/default", "where results, W&B files and the comparison go")
    progress: bool = _key(True, "show a progress bar")
    checkpoint: bool = _key(True, "write checkpoint.pt after every step (for --resume)")
    first_experience_cache: Union[bool, str] = _key(
        True, "train the first experience once per seed, and start the runs that train it alike from it (same "
              "numbers): true: cached in first_experience/ beside the run folders; a folder: cached there; false: off")
    # logging
    wandb: bool = _key(True, "log to Weights & Biases (offline without an API key)")
    wandb_project: str = _key("bsce-avalanche", "W&B project")
    wandb_entity: Optional[str] = _key(None, "W&B entity (null: your default)")
    wandb_mode: Optional[str] = _key(None, "W&B mode (null: $WANDB_MODE, else online with an API key, else offline)")
    grid: dict = _key({}, "lists of values for some keys, one run per combination, e.g. {loss: [ce, bsce]}")

    def __post_init__(self):  # every key checked, by dataclasses.replace too
        hints = get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        try:
            for key, valid in CHOICES.items():
                if getattr(self, key) is not None:
                    check_choice(key, getattr(self, key), valid)
            _check_tau(self.tau)  # the library's bound, with its reason
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
        if milestones and milestones[-1] >= self.epochs:  # the schedule restarts at every experience
            fix = (f"set milestones below {self.epochs} (e.g. --set 'lr_milestones=[{self.epochs - 1}]') or [] for a "
                   "constant rate") if self.epochs > 1 else "with one epoch, set lr_milestones: []"
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
        if self.memory_selection == "herding" and self.memory_per_class and uses_replay_option(vars(self)):
            raise ConfigError("memory_selection: herding shares memory_size among the classes seen so far; it does "
                              "not take memory_per_class: set memory_size instead, or use memory_selection: random.")
        if self.first_experience_cache == "":
            raise ConfigError("first_experience_cache must be true, false or a folder, got an empty string.")
        for key, values in self.grid.items():
            if key not in _FIELD_NAMES or key == "grid":
                raise ConfigError(f"grid key {key!r} is not a config key{did_you_mean(key, _FIELD_NAMES)}.")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list, got {values!r}.")
        if self.grid:
            expand_grid(self)  # every combination's values, checked now rather than mid-grid

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
        return f"{method_label(vars(self))}-seed{self.seed}"


_FIELD_NAMES = [f.name for f in fields(ExperimentConfig)]
_DEFAULTS = {f.name: f.default for f in fields(ExperimentConfig) if f.default is not MISSING}


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
    default left out), e.g. ``replay-bsce``, ``lwf+mem-ce-concat``, ``icarl-bsce-head``. Takes a
    config dict, so that results written by other versions get labels too."""
    c = {**_DEFAULTS, **config}
    parts = [c["strategy"] + ("+mem" if c["strategy"] == "lwf" and c["lwf_memory"] else ""), c["loss"]]
    if c["strategy"] == "icarl":
        parts.append(c["icarl_eval"])
    if uses_replay_option(c):
        parts += [c[k] for k in ("replay", "memory_selection") if c[k] != _DEFAULTS[k]]
    if c["loss"] == "bsce" and c["prior"] != "auto":
        parts.append(f"prior_{c['prior']}")
    if c["loss"] == "bsce" and c["tau"] != 1.0:
        parts.append(f"tau{c['tau']:g}")
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


def load_config(path: Optional[str | Path] = None, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults) and apply ``overrides``; bad keys or values: :class:`ConfigError`."""
    loaded, overrides = {}, overrides or {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; see experiments/configs/ for examples.")
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


def expand_grid(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per combination of the ``grid`` values (the config itself if no grid); an invalid
    combination is a :class:`ConfigError` naming it."""
    keys, runs = list(config.grid), []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        combination = dict(zip(keys, values))
        try:
            runs.append(config.replace(grid={}, **combination))
        except ConfigError as err:
            raise ConfigError(f"grid combination {combination}: {err}") from None
    return runs if keys else [config]
