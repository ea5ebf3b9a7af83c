"""The experiment config: :class:`ExperimentConfig`, the keys of :mod:`.schema` checked (types, choices,
:data:`~.schema.RANGES`, benchmark facts, combinations of keys, the grid's and the recipes' entries) whenever one
is built, by :func:`~.config_files.load_config`, the command line or ``replace``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from .._choices import check_choice, did_you_mean
from .._numbers import plain_number
from ..benchmarks import BENCHMARKS, get_class_order, resolve_protocol
from ..catalog import MODELS, check_tau
from .catalog import STRATEGIES, online_error, online_keys_error, uses_replay_option
from .errors import ConfigError
from .grid import apply_recipes, expand_grid
from .identity import RESULT_KEYS, run_name
from .schema import CHOICES, DEFAULTS, FIELD_NAMES, RANGES, RUNNER_SET, ConfigKeys, runner_set_error

__all__ = ["ExperimentConfig", "ConfigError"]

#: Keys a benchmark's builder may take (``BenchmarkInfo.options``).
_BENCHMARK_OPTIONS = ("data_dir", "download", "fast_augment")
#: Keys a recipe may set: those that change results, except the ones that say which run it is.
_RECIPE_KEYS = tuple(k for k in RESULT_KEYS if k not in ("strategy", "loss", "seed", "benchmark", "protocol",
                                                           "n_steps", "class_order"))


@dataclass
class ExperimentConfig(ConfigKeys):
    """Everything that defines one run (see the shipped configs, :func:`~.config_files.shipped_configs`): the
    keys of :class:`~.schema.ConfigKeys`, checked. The keys are declared in a base class of their own because
    :mod:`.identity` reads their declarations and :attr:`run_name` is computed there: schema, then identity,
    then this class, so that no module imports itself through another (``tests/test_imports.py``)."""

    def __post_init__(self):  # every key checked, by dataclasses.replace too
        for check in _CHECKS:  # in this order: the first problem found is the one reported
            check(self)

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


def _check_types(config: ExperimentConfig) -> None:
    """Each key's value of its field's type (an int for a float taken, as a float)."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        setattr(config, f.name, _coerce(f.name, getattr(config, f.name), hints[f.name]))


def _check_values(config: ExperimentConfig) -> None:
    """Each key on its own: the name-like keys in :data:`~.schema.CHOICES`, tau within the library's bound, the
    names not empty, the numbers in :data:`~.schema.RANGES`, the learning-rate milestones increasing and below
    ``epochs``."""
    try:
        for key, valid in CHOICES.items():
            if getattr(config, key) is not None:
                check_choice(key, getattr(config, key), valid)
        check_tau(config.tau)  # the library's bound, with its reason
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for key in ("name", "output_dir", "wandb_project"):
        if not getattr(config, key).strip():
            raise ConfigError(f"{key} must not be empty.")
    for key, interval in RANGES.items():
        value = getattr(config, key)
        if value is not None and (error := _range_error(key, value, interval)):
            raise ConfigError(error)
    milestones = config.lr_milestones
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones) or \
            any(a >= b for a, b in zip(milestones, milestones[1:])):
        raise ConfigError(f"lr_milestones must be strictly increasing epochs >= 1, e.g. [80, 120], "
                          f"got {milestones!r}.")
    # a check across keys that the grid varies is made on each combination (expand_grid), not on the base
    if milestones and milestones[-1] >= config.epochs and not {"epochs", "lr_milestones"} & set(config.grid):
        fix = (f"set milestones below {config.epochs} (e.g. --set 'lr_milestones=[{config.epochs - 1}]') or [] for "
               "a constant rate") if config.epochs > 1 else "with one epoch, set lr_milestones: []"
        if any("lr_milestones" in (v if isinstance(v, dict) else {}) for v in config.recipes.values()):
            fix += " (a recipe sets it too: for a quick try, --set recipes={} --epochs 1 --set lr_milestones=[])"
        raise ConfigError(f"lr_milestones {milestones} reach epochs ({config.epochs}): a milestone >= epochs never "
                          f"lowers the learning rate; {fix}.")


def _check_benchmark(config: ExperimentConfig) -> None:
    """What the benchmark allows: its protocol and class order, its builder's options, the CIFAR ResNets' width,
    the device data path."""
    info = BENCHMARKS[config.benchmark]
    try:
        resolve_protocol(info.n_classes, protocol=config.protocol, n_steps=config.n_steps)
        get_class_order(config.class_order, info.n_classes, seed=config.seed)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"benchmark {config.benchmark!r}: {err}") from None
    for key in _BENCHMARK_OPTIONS:
        if getattr(config, key) not in (None, False) and key not in info.options:
            takes = ", ".join(sorted(info.options)) or "none of them"
            raise ConfigError(f"{key} does not apply to benchmark {config.benchmark!r} "
                              f"(of {', '.join(_BENCHMARK_OPTIONS)} it takes {takes}); remove it.")
    if config.width != 16 and not MODELS[config.model_name].blocks_per_stage:
        cifar = ", ".join(n for n, m in MODELS.items() if m.blocks_per_stage)
        raise ConfigError(f"width applies to the CIFAR ResNets ({cifar}), not {config.model_name}.")
    if config.data_path == "device":
        if not info.in_memory or ("fast_augment" in info.options and not config.use_fast_augment):
            in_memory = ", ".join(n for n, b in BENCHMARKS.items() if b.in_memory)
            raise ConfigError(f"data_path: device needs images held in memory as tensors ({in_memory}; with "
                              f"fast_augment on), not benchmark {config.benchmark!r}"
                              + (" with fast_augment: false" if info.in_memory else "")
                              + "; use data_path: loader.")
        if config.num_workers:
            raise ConfigError("data_path: device gathers batches on the device in the main process: "
                              "set num_workers: 0.")


def _check_combinations(config: ExperimentConfig) -> None:
    """Keys that go together: a memory for the strategies that need one, the memory selection BiC and herding
    take, prior and prior_window, the online protocol's strategies and keys; then first_experience_cache."""
    if STRATEGIES[config.strategy].memory and config.memory_size == 0 and not config.memory_per_class:
        raise ConfigError(f"strategy {config.strategy!r} needs a memory: set memory_size > 0.")
    if config.strategy == "bic" and config.replay == "half_batch" and config.memory_selection != "random":
        raise ConfigError("memory_selection applies to bic with replay: concat only (half_batch is Avalanche's BiC, "
                          "with its own random memory): set replay: concat, or memory_selection: random.")
    if config.memory_selection == "herding" and config.memory_per_class and uses_replay_option(vars(config)):
        raise ConfigError("memory_selection: herding shares memory_size among the classes seen so far; it does "
                          "not take memory_per_class: set memory_size instead, or use memory_selection: random.")
    varied = set(config.grid)  # a check across keys that the grid varies is made on each combination (expand_grid)
    if (config.prior == "window") != (config.prior_window is not None) and not {"prior", "prior_window"} & varied:
        raise ConfigError("prior: window needs prior_window (the window in mini-batches, e.g. 1), and "
                          "prior_window applies to prior: window only; set both or neither.")
    if error := online_keys_error(config) or online_error(config):
        raise ConfigError(error)
    if config.first_experience_cache == "":
        raise ConfigError("first_experience_cache must be true, false or a folder, got an empty string.")


def _check_grid_and_recipes(config: ExperimentConfig) -> None:
    """The ``grid``'s keys and lists and the ``recipes``' selectors and keys; then every run they make, checked
    now rather than mid-grid (:func:`~.grid.expand_grid`, :func:`~.grid.apply_recipes`)."""
    for key, values in config.grid.items():
        if key not in FIELD_NAMES or key == "grid":
            raise ConfigError(f"grid key {key!r} is not a config key{did_you_mean(key, FIELD_NAMES)}.")
        if key in RUNNER_SET:
            raise ConfigError(runner_set_error(key, " (in grid)"))
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key} must be a non-empty list, got {values!r}.")
    for selector, values in config.recipes.items():
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
                why = ("not a config key" + did_you_mean(key, FIELD_NAMES) if key not in FIELD_NAMES else
                       "not a training setting a recipe may set (those that change results, except which run "
                       "it is: strategy, loss, seed and the benchmark's split)")
                raise ConfigError(f"recipes[{selector!r}] sets {key!r}: {why}.")
    if config.grid:
        expand_grid(config)  # every combination's values, checked now rather than mid-grid
    elif config.recipes:
        apply_recipes(config)


#: The checks :meth:`ExperimentConfig.__post_init__` makes, in order.
_CHECKS = (_check_types, _check_values, _check_benchmark, _check_combinations, _check_grid_and_recipes)


def _range_error(key: str, value, interval: str) -> Optional[str]:
    """Why ``value`` lies outside ``interval`` (e.g. ``"(0, 1]"``), or None."""
    low, high = interval[1:-1].split(", ")
    above = float(low) < value if interval[0] == "(" else float(low) <= value
    if above and (value < float(high) if interval[-1] == ")" else value <= float(high)):
        return None
    valid = f"in {interval}" if high != "inf" else f">= {low}" if interval[0] == "[" else f"> {low}"
    return f"{key} must be {valid}{' or null' if DEFAULTS.get(key, 0) is None else ''}, got {value}."


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
