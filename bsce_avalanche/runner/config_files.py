"""Config files: YAML read strictly (a key set twice, or a syntax error, is a one-line :class:`ConfigError`
naming the line), the configs shipped with the package (:func:`shipped_configs`), and :func:`load_config`:
a file or a shipped config's name, with overrides, as a checked :class:`~.config.ExperimentConfig`."""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Optional

import yaml

from .._choices import did_you_mean
from .config import ExperimentConfig
from .errors import ConfigError
from .schema import FIELD_NAMES, RUNNER_SET, runner_set_error

__all__ = ["load_yaml", "parse_value", "DEFAULT_CONFIG", "shipped_configs", "resolve_config", "load_config"]


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
    defaults) and apply ``overrides``; bad keys or values, or a key the runner sets (``recipe``:
    :data:`~.schema.RUNNER_SET`), are a :class:`ConfigError`."""
    loaded, overrides = {}, overrides or {}
    if path is not None:
        path = resolve_config(path)
        loaded = load_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of keys to values.")
    from_file = {k: v for k, v in loaded.items() if k not in overrides}  # what the file alone decides
    for key in {**loaded, **overrides}:
        if key not in FIELD_NAMES:
            raise ConfigError(f"Unknown config key {key!r}{did_you_mean(key, FIELD_NAMES)}"
                              + (f" in {path}" if key in from_file else "") + ".")
        if key in RUNNER_SET:
            raise ConfigError(runner_set_error(key, f" (in {path})" if key in from_file else ""))
    try:
        return ExperimentConfig(**{**loaded, **overrides})
    except ConfigError as err:
        try:  # the file's own value at fault: name the file
            ExperimentConfig(**from_file)
        except ConfigError as own:
            if str(own) == str(err):
                raise ConfigError(f"{path}: {err}") from None
        raise
