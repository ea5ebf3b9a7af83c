"""The experiment grid as a W&B sweep (README): :func:`sweep_run`, the agent's program (``sweep-run``), runs
the agent's combination (its ``wandb.config``) over the base config as ``run`` does, into
``<output_dir>/sweep-<SWEEP_ID>/<RUN_ID>/`` (a re-run resumes); one that cannot run is skipped (exit code 0).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from .arguments import build_parser, config_from_args
from .config import ConfigError, ExperimentConfig
from .config_files import load_config, load_yaml
from .grid import check_recipe_overrides, combination_error
from .runs import run_configs
from .schema import RUNNER_SET

__all__ = ["sweep_run", "sweep_config", "sweep_combinations", "sweep_validate"]


def sweep_config(base: ExperimentConfig, params: dict) -> ExperimentConfig:
    """``base`` with one combination of a sweep's parameters: one run (a base grid over keys
    the sweep sets is theirs; over other keys, an error)."""
    own = {k: v for k, v in base.to_dict().items() if k not in RUNNER_SET}  # the runner sets those again
    cfg = load_config(None, {**own, "grid": {k: v for k, v in base.grid.items() if k not in params}, **params})
    if cfg.grid:
        raise ConfigError(f"the base config has a grid over {sorted(cfg.grid)}: add {', '.join(cfg.grid)} to the "
                          "sweep's parameters (one sweep run is one experiment).")
    check_recipe_overrides(cfg, params, "the sweep's parameter")  # a recipe's key is not swept past it
    return cfg


def sweep_run(base: ExperimentConfig) -> None:
    """The agent's combination over ``base``, run like ``bsce-experiment run`` (or skipped)."""
    if not os.environ.get("WANDB_SWEEP_ID"):
        raise ConfigError("sweep-run is the program of a W&B sweep agent (wandb agent ENTITY/PROJECT/SWEEP_ID); "
                          "to run one combination here: bsce-experiment run --config ... --strategy ... --loss ...")
    import wandb  # here: sweep-validate imports neither wandb nor torch

    from . import distributed

    # rank 0 joins the agent's run, other torchrun ranks only read its parameters; bounded like the
    # logger's start (wandb's default waits 90 s without network)
    run = wandb.init(mode=None if distributed.is_main_process() else "disabled",
                     settings=wandb.Settings(init_timeout=30.0))
    params = dict(run.config)
    cfg = sweep_config(base, params)
    if not cfg.wandb:
        raise ConfigError("a sweep run logs to W&B: remove wandb: false from the base config.")
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    if reason := combination_error(cfg):
        print(f"sweep-run: skipping {cfg.run_name} ({shown}): {reason}", flush=True)
        run.summary.update({"skipped": True, "skip_reason": reason})
        run.tags = (*(run.tags or ()), "skipped")
    run.finish()  # the experiment's W&B logger continues it: wandb gives it the agent's run id
    if reason:
        return
    print(f"sweep-run: {cfg.run_name} ({shown})", flush=True)
    sweep_dir = Path(cfg.output_dir) / f"sweep-{run.sweep_id}"
    # the sweep's runs on this machine share their first experiences
    shared = {"first_experience_cache": str(sweep_dir / "first_experience")} \
        if cfg.first_experience_cache is True else {}
    run_configs(cfg.replace(output_dir=str(sweep_dir / run.id), **shared), resume=True, announce=False)


def sweep_combinations(path: str | os.PathLike) -> list[tuple[dict, ExperimentConfig, str | None]]:
    """Every combination of a grid sweep file as ``sweep-run`` builds it: ``(parameters, config, why
    sweep-run skips it or None)``; the first problem is a :class:`ConfigError` naming the file."""
    sweep = load_yaml(path)
    if not isinstance(sweep, dict) or sweep.get("method") != "grid":
        raise ConfigError(f"{path}: method must be grid (the sweep enumerates the experiment grid).")
    command = [str(token) for token in sweep.get("command") or []]
    if "sweep-run" not in command:
        raise ConfigError(f"{path}: the command must run our entry point: ${{env}} ${{interpreter}} -m "
                          "bsce_avalanche sweep-run --config=...")
    options = command[command.index("sweep-run") + 1:]
    if any(token.startswith("${") for token in options):
        raise ConfigError(f"{path}: the parameters reach sweep-run through wandb.config: remove "
                          f"{[t for t in options if t.startswith('${')]} from the command.")
    base = config_from_args(build_parser().parse_args(["sweep-run", *options]))
    keys, values = list(sweep.get("parameters") or {}), []
    for key, spec in (sweep.get("parameters") or {}).items():
        if not isinstance(spec, dict) or ("value" in spec) == ("values" in spec):
            raise ConfigError(f"{path}: parameter {key!r} needs value: X or values: [...] (a grid sweep).")
        values.append(spec["values"] if "values" in spec else [spec["value"]])
        if not isinstance(values[-1], list) or not values[-1]:
            raise ConfigError(f"{path}: parameter {key!r}: values must be a non-empty list.")
    combinations = []
    for combo in itertools.product(*values):
        params = dict(zip(keys, combo))
        try:
            cfg = sweep_config(base, params)
        except ConfigError as err:
            raise ConfigError(f"{path}: combination {params}: {err}") from None
        combinations.append((params, cfg, combination_error(cfg)))
    return combinations


def sweep_validate(paths) -> int:
    """``bsce-experiment sweep-validate FILE...``: 0 when every file is valid, else 2."""
    status = 0
    for path in paths:
        try:
            combinations = sweep_combinations(path)
        except (ConfigError, OSError) as err:
            print(f"{path}: INVALID: {err}", file=sys.stderr)
            status = 2
            continue
        skipped = [(params, reason) for params, _, reason in combinations if reason]
        print(f"{path}: ok: {len(combinations)} combination(s), {len(combinations) - len(skipped)} run(s), "
              f"{len(skipped)} skipped", flush=True)
        for params, reason in skipped:
            print(f"  skipped: {params}: {reason}")
    return status
