"""A config's runs: the ``grid`` expanded (:func:`expand_grid`), each method's ``recipes`` applied
(:func:`apply_recipes`), the rule that a recipe never silently overrides a setting (:func:`check_recipe_overrides`),
and the combinations that cannot run (:func:`combination_error`) or are one run twice (:func:`check_unique_names`).

The configs are :class:`~.config.ExperimentConfig`'s, named in the annotations without being imported: its
checks expand the grid with this module."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Optional

from .catalog import STRATEGIES
from .errors import ConfigError
from .schema import FIELD_NAMES

__all__ = ["combination_error", "apply_recipes", "check_recipe_overrides", "expand_grid", "check_unique_names"]


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
            differ = sorted(k for k in FIELD_NAMES if getattr(run, k) != getattr(other, k))
            raise ConfigError(f"two runs are the same run {run.run_name!r}: they differ only in "
                              f"{', '.join(differ) or 'nothing'}, which do not change results; remove one of them.")
