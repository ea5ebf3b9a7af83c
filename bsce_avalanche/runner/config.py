"""Experiment configuration: one dataclass, loaded from YAML, overridden from the CLI.

Every key is checked: unknown keys, wrong types and unknown names (strategy, benchmark,
loss, ...) are errors that name the closest valid choice.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = ["ExperimentConfig", "ConfigError", "load_config", "expand_grid", "combination_error", "CHOICES"]

#: Valid values of the name-like keys.
CHOICES = {
    "benchmark": ("digits", "cifar100", "imagenet_subset", "imagenet", "tiny_imagenet"),
    "protocol": ("B0", "B50"),
    "strategy": ("naive", "replay", "lwf", "icarl", "er_ace", "bic", "gdumb"),
    "loss": ("ce", "bsce"),
    "prior": ("auto", "sampling", "dataset", "batch"),
    "model": ("auto", "small_cnn", "resnet8", "resnet20", "resnet32", "resnet18", "resnet18_cifar"),
    "icarl_eval": ("nme", "head"),
    "device": ("auto", "cpu", "cuda"),
}


class ConfigError(ValueError):
    """A configuration problem, with a message that says how to fix it."""


@dataclass
class ExperimentConfig:
    """Everything that defines one run (see ``experiments/configs/*.yaml``)."""

    name: str = "digits-replay"
    # data
    benchmark: str = "digits"
    protocol: str = "B0"
    n_steps: int = 5
    class_order: Union[str, int, list] = "icarl"
    data_dir: Optional[str] = None
    download: bool = False
    fast_augment: bool = True
    # model and method
    model: str = "auto"
    width: int = 16  # base width of the CIFAR ResNets: stages of width, 2x, 4x (16 in the papers)
    # IncrementalClassifier head: units of classes not seen yet are masked (Avalanche's
    # usual class-incremental setup); False: a fixed linear head over all classes.
    incremental_head: bool = True
    strategy: str = "replay"
    loss: str = "bsce"
    tau: float = 1.0
    prior: str = "auto"
    memory_size: int = 200
    memory_per_class: Optional[int] = None
    lwf_alpha: float = 1.0
    lwf_temperature: float = 2.0
    lwf_memory: bool = False
    icarl_eval: str = "nme"
    bic_stage2_epochs: int = 30
    bic_val_fraction: float = 0.1
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 256
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: list = field(default_factory=list)
    lr_gamma: float = 0.1
    # run
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)
    output_dir: str = "outputs/default"
    progress: bool = True
    checkpoint: bool = True  # write checkpoint.pt after every step (for --resume)
    # logging
    wandb: bool = True
    wandb_project: str = "bsce-avalanche"
    wandb_entity: Optional[str] = None
    wandb_mode: Optional[str] = None
    # grid: lists of values for some keys, e.g. {"loss": ["ce", "bsce"], "seed": [0, 1]}
    grid: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "ExperimentConfig":
        hints = get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        for key, valid in CHOICES.items():
            _check_choice(key, getattr(self, key), valid)
        for key in ("n_steps", "epochs", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}.")
        if self.memory_size < 0:
            raise ConfigError(f"memory_size must be >= 0, got {self.memory_size}.")
        if self.strategy in ("replay", "icarl", "er_ace", "bic", "gdumb") and self.memory_size == 0 and not self.memory_per_class:
            raise ConfigError(f"strategy {self.strategy!r} needs a memory: set memory_size > 0.")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if self.tau < 0:
            raise ConfigError(f"tau must be >= 0, got {self.tau}.")
        for key, values in self.grid.items():
            if key not in _FIELD_NAMES or key == "grid":
                raise ConfigError(f"grid key {key!r} is not a config key{_suggest(key, _FIELD_NAMES)}.")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list, got {values!r}.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    @property
    def method_label(self) -> str:
        """What distinguishes this method from others in a comparison (not the seed)."""
        parts = [self.strategy + ("+mem" if self.strategy == "lwf" and self.lwf_memory else ""), self.loss]
        if self.strategy == "icarl":
            parts.append(self.icarl_eval)
        if self.loss == "bsce" and self.prior != "auto":
            parts.append(f"prior_{self.prior}")
        if self.loss == "bsce" and self.tau != 1.0:
            parts.append(f"tau{self.tau:g}")
        return "-".join(parts)

    @property
    def run_name(self) -> str:
        return f"{self.method_label}-seed{self.seed}"


_FIELD_NAMES = [f.name for f in fields(ExperimentConfig)]


def _suggest(value: str, valid) -> str:
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_choice(key: str, value, valid) -> None:
    if key == "class_order" or value in valid:
        return
    raise ConfigError(f"Unknown {key} {value!r}{_suggest(value, valid)}; valid: {', '.join(valid)}.")


def _coerce(name: str, value: Any, hint) -> Any:
    """Check ``value`` against the field's type; accept ints for floats."""
    origin = get_origin(hint)
    if origin is Union:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{name} has the wrong type: {errors[0]}" if errors else f"bad {name}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} must be a number, got {type(value).__name__} {value!r}.")
    if hint in (int, str, bool, list, dict):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ConfigError(
            f"{name} must be of type {hint.__name__}, got {type(value).__name__} {value!r}."
        )
    return value


def parse_value(text: str) -> Any:
    """Parse a command-line override value with YAML rules (``3``, ``0.1``, ``[1,2]``, ``null``)."""
    return yaml.safe_load(text)


def load_config(path: Optional[str | Path] = None, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults) and apply ``overrides``.

    :raises ConfigError: unknown keys (with the closest key), wrong types, bad names.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; see experiments/configs/ for examples.")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of keys to values.")
        data.update(loaded)
    data.update(overrides or {})
    unknown = [k for k in data if k not in _FIELD_NAMES]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"Unknown config key {key!r}{_suggest(key, _FIELD_NAMES)}"
            + (f" in {path}" if path else "")
            + "."
        )
    return ExperimentConfig(**data)


def combination_error(config: ExperimentConfig) -> Optional[str]:
    """Why this combination of (individually valid) settings cannot run, or None.

    Kept out of :meth:`ExperimentConfig.validate` so that a grid over strategies and
    losses can still be written down; the runner refuses such runs, a W&B sweep skips them.
    """
    if config.strategy == "er_ace" and config.loss == "bsce":
        return "er_ace cannot be combined with loss: bsce (ER-ACE uses its own loss); use loss: ce."
    return None


def expand_grid(config: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per combination of the ``grid`` values (the config itself if no grid)."""
    if not config.grid:
        return [config]
    keys = list(config.grid)
    runs = []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        runs.append(config.replace(grid={}, **dict(zip(keys, values))))
    return runs
