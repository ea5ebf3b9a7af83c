"""The command line of ``bsce-experiment`` (:mod:`.cli`): :func:`build_parser` and :func:`config_from_args`,
also used by a W&B sweep's program (:mod:`.sweep`). Parsing the arguments and checking the config import
neither torch nor Avalanche: ``--help`` and a typo answer at once."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Union, get_args, get_origin, get_type_hints

from .config import ConfigError, ExperimentConfig
from .config_files import DEFAULT_CONFIG, load_config, parse_value, shipped_configs
from .grid import check_recipe_overrides
from .schema import CHOICES, RANGES, RUNNER_SET, runner_set_error

__all__ = ["build_parser", "config_from_args", "set_overrides"]

#: The keys a user sets, each an option (not those the runner sets: :data:`~.schema.RUNNER_SET`).
_KEYS = [f for f in fields(ExperimentConfig) if f.name not in RUNNER_SET]
_HINTS = get_type_hints(ExperimentConfig)
#: grid subcommand option -> config key
_GRID_FLAGS = {"strategies": "strategy", "losses": "loss", "seeds": "seed"}


def _key_help(f) -> str:
    """A config key's meaning, choices and default (as a config file writes it)."""
    default = f.default if f.default is not MISSING else f.default_factory()
    shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
    choices = f"; choices: {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
    choices += f"; range: {RANGES[f.name]}" if f.name in RANGES else ""
    return f"{f.metadata['help']}{choices} (default: {shown})".replace("%", "%%")


def _option_type(hint):
    """int, float and str keys as such; anything else (lists, unions) parsed as YAML."""
    if get_origin(hint) is Union:
        arms = [a for a in get_args(hint) if a is not type(None)]
        hint = arms[0] if len(arms) == 1 else None
    return hint if hint in (int, float, str) else _yaml_value


def _yaml_value(text: str):
    """An option's value with YAML rules (argparse reports the error)."""
    try:
        return parse_value(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the usage of ``run`` lists every config key)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _RunnerSet(argparse.Action):
    """The option of a key the runner sets (:data:`~.schema.RUNNER_SET`): a usage error saying what to set."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {runner_set_error(self.dest)}")


def _add_run_arguments(p: argparse.ArgumentParser, resume: bool = True) -> None:
    p.add_argument("--config", metavar="NAME_OR_PATH",
                   help=f"a YAML config file's path, or a shipped config's name: {', '.join(shipped_configs())} "
                        f"(default: {DEFAULT_CONFIG}, the offline demo: digits, Replay with CE and BSCE)")
    if resume:
        existing = p.add_mutually_exclusive_group()  # what to do with runs already in the output directory
        existing.add_argument("--resume", action="store_true", help="continue interrupted runs from their last "
                                                                    "finished step; skip finished ones (default: off)")
        existing.add_argument("--overwrite", action="store_true", help="replace the runs already in the output "
                                                                       "directory (default: off; they are refused)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key with a YAML value, e.g. --set lr_milestones=[80,120] "
                        "(repeatable; default: none)")
    keys = p.add_argument_group("config keys", "each replaces the config file's value and its grid over that "
                                               "key (run --loss ce runs CE only); the default applies when "
                                               "neither sets the key")
    for key in RUNNER_SET:  # no option, but refused by name (not taken as an abbreviation of --recipes)
        keys.add_argument("--" + key.replace("_", "-"), action=_RunnerSet, nargs="?", help=argparse.SUPPRESS)
    for f in _KEYS:
        flag, hint = "--" + f.name.replace("_", "-"), _HINTS[f.name]
        if bool in (hint, *get_args(hint)):
            keys.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=_key_help(f))
        else:
            keys.add_argument(flag, dest=f.name, type=_option_type(hint), metavar=f.name.upper(), help=_key_help(f))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bsce-experiment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a config (all its grid combinations), then compare them")
    _add_run_arguments(run)
    grid = sub.add_parser("grid", help="run strategies x losses x seeds, then compare them")
    _add_run_arguments(grid)
    for p in (run, grid):
        p.add_argument("--jobs", type=int, default=1,
                       help="runs at once, each in its own process (CPU cores, or sharing one GPU), with CPU cores "
                            "// JOBS torch threads unless threads is set; no progress bars (default: 1)")
    for flag, key in _GRID_FLAGS.items():
        choices = f"; choices: {', '.join(CHOICES[key])}" if key in CHOICES else ""
        grid.add_argument(f"--{flag}", nargs="+", type=int if key == "seed" else str,
                          help=f"grid over {key}{choices}; replaces the config's grid over {key}, combinations "
                               f"that cannot run are skipped (default: the config's {key})")
    sweep_run = sub.add_parser(
        "sweep-run", help="the program of a W&B sweep agent: one combination (see bsce_avalanche/runner/sweep.py)",
        description="Run the combination of the W&B sweep agent's run (its wandb.config) over the config these "
                    "options give, as `run` does; a re-run of the same agent run resumes from its checkpoint.")
    _add_run_arguments(sweep_run, resume=False)
    validate = sub.add_parser("sweep-validate", help="check W&B sweep files offline: every combination's config")
    validate.add_argument("paths", nargs="+", help="sweep files, e.g. experiments/sweeps/*.yaml")
    cmp_ = sub.add_parser("compare", help="markdown table + plots from results.json files")
    cmp_.add_argument("paths", nargs="+", help="results.json files or directories holding them")
    cmp_.add_argument("--output", help="directory for comparison.md and PNGs (default: the first path, or its folder)")
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", help="on an error, show the full traceback (default: one line)")
    return parser


def set_overrides(items) -> dict:
    """The config overrides of ``--set KEY=VALUE`` options (YAML values; a later one wins), of ``bsce-experiment``
    and of the evidence scripts (:mod:`.plans`); an item without ``=`` or with a malformed value is a
    :class:`ConfigError` (an unknown key is one from :func:`~.config.load_config`)."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value)
    return overrides


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The config file (or the default one) with the options' overrides; a key set by an option leaves
    the config file's grid (``run --loss ce`` runs CE only)."""
    overrides = {f.name: getattr(args, f.name) for f in _KEYS if getattr(args, f.name) is not None}
    overrides.update(set_overrides(args.set))
    grid = {key: getattr(args, flag) for flag, key in _GRID_FLAGS.items() if getattr(args, flag, None)}
    for flag, key in _GRID_FLAGS.items():
        if key in grid and key in overrides:
            raise ConfigError(f"--{flag} and --{key} (or --set {key}=...) both set {key}: give one of them.")
    cfg = load_config(args.config or DEFAULT_CONFIG, {k: v for k, v in overrides.items() if k not in grid})
    grid = {**{k: v for k, v in cfg.grid.items() if k not in overrides}, **grid}
    cfg = cfg.replace(grid=grid) if grid != cfg.grid else cfg
    check_recipe_overrides(cfg, overrides, "--set/option")  # the runs as they will run: the grid's final
    return cfg
