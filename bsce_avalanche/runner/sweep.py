"""The experiment grid as a W&B sweep: one run per agent job, on as many machines as you like.

Create the sweep once (needs network and ``wandb login``), then start agents anywhere the
package is installed, from the repository root::

    bsce-experiment sweep-validate experiments/sweeps/cifar100_b0_10steps.yaml   # offline check
    wandb sweep experiments/sweeps/cifar100_b0_10steps.yaml
    #   -> "Run sweep agent with: wandb agent ENTITY/PROJECT/SWEEP_ID"
    wandb agent ENTITY/PROJECT/SWEEP_ID                      # on each machine
    CUDA_VISIBLE_DEVICES=1 wandb agent ENTITY/PROJECT/SWEEP_ID   # one agent per GPU
    wandb agent --count 4 ENTITY/PROJECT/SWEEP_ID            # at most 4 runs (batch-job limits)

For every combination of the sweep's parameters the agent runs the sweep's ``command``,
e.g. (``${args}`` expands to one ``--key=value`` per parameter)::

    /usr/bin/env python -m bsce_avalanche sweep-run \\
        --config=experiments/configs/cifar100_b0_10steps.yaml --strategy=replay --loss=bsce --seed=0

with ``WANDB_SWEEP_ID``, ``WANDB_RUN_ID``, ``WANDB_SWEEP_PARAM_PATH``, ``WANDB_PROJECT`` and
``WANDB_ENTITY`` in the environment. :func:`sweep_run` builds the :class:`ExperimentConfig`
from the base config file plus the parameters (every sweep parameter is a config key;
the base config's ``grid`` must be covered by them), and calls :func:`run_experiment`,
which logs into the run the agent created: our ``WandBLogger`` calls ``wandb.init`` with
``id=$WANDB_RUN_ID``, and wandb attaches the run to the sweep (``WANDB_SWEEP_ID``, with
the sweep's project and entity, whatever the config says). Under an agent W&B logging is
always on.

* **Invalid combinations** (a grid sweep cannot exclude any; e.g. ``er_ace`` with
  ``loss: bsce``) are skipped cleanly: a message, a W&B run whose summary holds
  ``skipped: true`` and ``skip_reason``, no results, exit code 0.
* **Results** go to ``<output_dir>/sweep-<SWEEP_ID>/<run name>-<RUN_ID>/results.json`` on
  the machine that ran the combination (``--output-dir`` overrides ``output_dir``); the W&B
  run holds the same metrics. Runs resume from their checkpoint when the agent re-runs a
  pre-empted run (same run id, same directory).
* **Multi-GPU runs** in a sweep: launch the entry point under torchrun in the ``command``
  (``${env} torchrun --standalone --nproc_per_node=4 -m bsce_avalanche sweep-run ...
  ${args}``); only rank 0 creates the W&B run (see :mod:`bsce_avalanche.distributed`).

Without network, run one combination as the agent would, offline::

    WANDB_MODE=offline python -m bsce_avalanche sweep-run \\
        --config=experiments/configs/default.yaml --strategy=replay --loss=bsce --seed=0 --epochs=1
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .config import _FIELD_NAMES, ConfigError, ExperimentConfig, _suggest, combination_error, load_config
from .divergence import TrainingDiverged

__all__ = [
    "sweep_run",
    "sweep_validate",
    "build_sweep_config",
    "parse_sweep_args",
    "parse_sweep_value",
    "agent_parameters",
    "agent_command",
    "validate_sweep_file",
    "sweep_combinations",
]

#: Classes of each benchmark (to check protocol / n_steps splits without loading data).
BENCHMARK_CLASSES = {"digits": 10, "cifar100": 100, "tiny_imagenet": 200, "imagenet_subset": 100, "imagenet": 1000}
#: Sweep methods W&B knows; ``grid`` is the one that enumerates our grid.
SWEEP_METHODS = ("grid", "random", "bayes")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


# ---------------------------------------------------------------------- parameters
def parse_sweep_value(text: str) -> Any:
    """A value as the agent writes it (``str(value)``): ``replay``, ``0``, ``0.1``,
    ``1e-05``, ``True``, ``None``, ``[80, 120]``."""
    if text in ("None", "null", "~"):
        return None
    value = yaml.safe_load(text) if text.strip() else text
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)  # YAML 1.1 reads "1e-05" as a string
    return value


def parse_sweep_args(args: Sequence[str]) -> dict:
    """``--key=value`` (or ``--key value``) pairs, as ``${args}`` expands, to a dict."""
    params: dict = {}
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"sweep-run expects --key=value parameters, got {token!r}.")
        key, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise ConfigError(f"sweep parameter --{key} has no value (use --{key}=VALUE).")
            value, i = items[i + 1], i + 1
        params[key.replace("-", "_")] = parse_sweep_value(value)
        i += 1
    return params


def agent_parameters() -> dict:
    """The run's parameters from the file the agent writes (``$WANDB_SWEEP_PARAM_PATH``).

    The command line (``${args}``) carries the same values; this also covers sweep
    commands without ``${args}``.
    """
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    return {
        k: v["value"] for k, v in data.items()
        if isinstance(v, dict) and "value" in v and k not in ("wandb_version", "_wandb")
    }


def _resolve_path(path: str | os.PathLike) -> Path:
    """A config path as given, else relative to the repository (agents may start elsewhere)."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    candidate = _PACKAGE_ROOT / p
    return candidate if candidate.is_file() else p


def build_sweep_config(config_path: Optional[str | os.PathLike], params: dict) -> ExperimentConfig:
    """The base config (or the defaults) with the sweep's parameters; one run, no grid.

    :raises ConfigError: unknown keys, invalid values, or a base-config ``grid`` over keys
        the sweep does not set.
    """
    unknown = [k for k in params if k not in _FIELD_NAMES or k == "grid"]
    if unknown:
        raise ConfigError(
            f"sweep parameter {unknown[0]!r} is not a config key{_suggest(unknown[0], _FIELD_NAMES)}."
        )
    cfg = load_config(_resolve_path(config_path) if config_path else None, params)
    left = sorted(k for k in cfg.grid if k not in params)
    if left:
        raise ConfigError(
            f"the base config {config_path} has a grid over {left}: add {', '.join(left)} to the "
            "sweep's parameters (one sweep run is one experiment)."
        )
    return cfg.replace(grid={})


def _under_agent() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def _agent_settings(cfg: ExperimentConfig) -> ExperimentConfig:
    """Under an agent: log to W&B, into the sweep's project and entity."""
    changes: dict = {}
    if not cfg.wandb:
        print("sweep-run: wandb: false in the config is ignored under a W&B agent.", flush=True)
        changes["wandb"] = True
    for key, env in (("wandb_project", "WANDB_PROJECT"), ("wandb_entity", "WANDB_ENTITY")):
        if os.environ.get(env):
            changes[key] = os.environ[env]
    return cfg.replace(**changes) if changes else cfg


def _run_dir(cfg: ExperimentConfig, output_dir: Optional[str]) -> Path:
    base = Path(output_dir or cfg.output_dir)
    sweep_id, run_id = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if sweep_id:
        base = base / f"sweep-{sweep_id}"
    return base / (f"{cfg.run_name}-{run_id}" if run_id else cfg.run_name)


def _log_skipped(cfg: ExperimentConfig, reason: str, out: Path) -> None:
    """A finished W&B run that says why the combination was skipped (the sweep shows it)."""
    from .wandb_logger import WandBLogger

    logger = WandBLogger(
        project=cfg.wandb_project, entity=cfg.wandb_entity, name=f"{cfg.name}/{cfg.run_name}",
        group=f"{cfg.name}/{cfg.strategy}", job_type=cfg.loss,
        tags=[cfg.benchmark, cfg.strategy, cfg.loss, "skipped"], config=cfg.to_dict(), dir=out,
        mode=cfg.wandb_mode,
    )
    logger.summary({"skipped": True, "skip_reason": reason})
    logger.finish()


# ---------------------------------------------------------------------- entry points
def _sweep_run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bsce-experiment sweep-run", allow_abbrev=False,
        description="Run one combination of a W&B sweep (the agent's program). Every other "
        "--key=value is a config key, e.g. --strategy=replay --loss=bsce --seed=0.",
    )
    p.add_argument("--config", help="base YAML config (default: built-in defaults)")
    p.add_argument("--output-dir", help="root of the results (default: the config's output_dir)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                   help="continue from a checkpoint in the run's directory (default: on under an agent)")
    return p


def sweep_run(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of a sweep's ``command`` (``bsce-experiment sweep-run ...``).

    :return: 0 after a finished or a skipped (invalid) combination, 2 on a config error.
    """
    from . import distributed
    from .cli import _exit_cleanly_on_sigterm

    args, rest = _sweep_run_parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    _exit_cleanly_on_sigterm()  # the agent stops runs with SIGTERM
    say = print if distributed.is_main_process() else (lambda *a, **k: None)
    finished = False
    try:
        params = {**agent_parameters(), **parse_sweep_args(rest)}
        cfg = build_sweep_config(args.config, params)
        if _under_agent():
            cfg = _agent_settings(cfg)
        out = _run_dir(cfg, args.output_dir)
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        reason = combination_error(cfg)
        if reason:
            say(f"sweep-run: skipping {cfg.run_name} ({shown}): {reason}", flush=True)
            if _under_agent() and distributed.is_main_process():
                _log_skipped(cfg, reason, out)
            finished = True
            return 0
        from .experiment import run_experiment

        say(f"sweep-run: {cfg.run_name} ({shown}) -> {out}", flush=True)
        resume = _under_agent() if args.resume is None else args.resume
        result = run_experiment(cfg, out, resume=resume)
        say(f"sweep-run: {cfg.run_name}: average incremental accuracy "
            f"{100 * result['average_incremental_accuracy']:.2f}%, last {100 * result['last_accuracy']:.2f}%",
            flush=True)
        finished = True
        return 0
    except (ConfigError, FileNotFoundError) as err:
        print(f"bsce-experiment sweep-run: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:  # recorded in the run's results.json
        print(f"bsce-experiment sweep-run: error: {err}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown(wait=finished)


def sweep_validate(argv: Optional[Sequence[str]] = None) -> int:
    """``bsce-experiment sweep-validate FILE...``: check sweep files offline (exit 2 on errors)."""
    p = argparse.ArgumentParser(prog="bsce-experiment sweep-validate",
                                description="Check W&B sweep files: structure, command, and every combination's config.")
    p.add_argument("paths", nargs="+", help="sweep YAML files (e.g. experiments/sweeps/*.yaml)")
    args = p.parse_args(argv)
    status = 0
    for path in args.paths:
        try:
            report = validate_sweep_file(path)
        except ConfigError as err:
            print(f"{path}: INVALID: {err}", file=sys.stderr)
            status = 2
            continue
        print(f"{path}: ok: {report['combinations']} combination(s), {report['runs']} run(s), "
              f"{len(report['skipped'])} skipped", flush=True)
        for params, reason in report["skipped"]:
            print(f"  skipped: {params}: {reason}")
    return status


# ---------------------------------------------------------------------- validation
def load_sweep(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist.")
    try:
        sweep = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep file {path} is not valid YAML: {err}") from None
    if not isinstance(sweep, dict):
        raise ConfigError(f"sweep file {path} must hold a mapping (method, parameters, command, ...).")
    return sweep


def sweep_combinations(sweep: dict) -> list[dict]:
    """Every parameter combination of a grid sweep, in the agent's order (one dict each)."""
    params = sweep.get("parameters") or {}
    keys = list(params)
    choices = [params[k]["values"] if "values" in params[k] else [params[k]["value"]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def agent_command(sweep: dict, params: dict, interpreter: str = "python",
                  program: Optional[str] = None) -> list[str]:
    """The command line a ``wandb agent`` runs for ``params`` (its macro expansion)."""
    args = [f"--{k}={v}" for k, v in params.items()]
    macros = {
        "env": ["/usr/bin/env"], "interpreter": [interpreter],
        "program": [program or sweep.get("program", "")], "args": args,
        "args_no_hyphens": [a[2:] for a in args],
    }
    command = sweep.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]
    out: list[str] = []
    for token in map(str, command):
        if token.startswith("${") and token.endswith("}"):
            out += macros.get(token[2:-1], [])
        else:
            out.append(token)
    return out


def _check_structure(sweep: dict) -> None:
    method = sweep.get("method")
    if method not in SWEEP_METHODS:
        raise ConfigError(f"method must be one of {SWEEP_METHODS}, got {method!r}.")
    metric = sweep.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            raise ConfigError("metric must be a mapping with a name (e.g. average_incremental_accuracy).")
        if metric.get("goal", "minimize") not in ("maximize", "minimize"):
            raise ConfigError(f"metric.goal must be maximize or minimize, got {metric.get('goal')!r}.")
    params = sweep.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError("parameters must be a non-empty mapping of config keys to {value: ...} / {values: [...]}.")
    for key, spec in params.items():
        if key not in _FIELD_NAMES or key == "grid":
            raise ConfigError(f"parameter {key!r} is not a config key{_suggest(key, _FIELD_NAMES)}.")
        if not isinstance(spec, dict):
            raise ConfigError(f"parameter {key!r} must be a mapping such as {{value: X}} or {{values: [...]}}.")
        forms = [f for f in ("value", "values", "distribution") if f in spec]
        if len(forms) != 1 or (method == "grid" and forms[0] == "distribution"):
            raise ConfigError(f"parameter {key!r} needs exactly one of value: X or values: [...]"
                              + (" (grid sweeps cannot sample distributions)." if method == "grid" else "."))
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            raise ConfigError(f"parameter {key!r}: values must be a non-empty list.")
    command = sweep.get("command")
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        raise ConfigError("command must be a list of strings ending in ${args}, e.g. "
                          "[${env}, ${interpreter}, -m, bsce_avalanche, sweep-run, --config=..., ${args}].")
    tokens = [str(c) for c in command]
    if "${args}" not in tokens:
        raise ConfigError("command must pass the parameters with ${args} (--key=value).")
    entry = any(tokens[i:i + 3] == ["-m", "bsce_avalanche", "sweep-run"] for i in range(len(tokens))) or any(
        t.endswith("bsce-experiment") and tokens[i + 1:i + 2] == ["sweep-run"] for i, t in enumerate(tokens)
    )
    if not entry:
        raise ConfigError("command must run our entry point: ... -m bsce_avalanche sweep-run ... "
                          "(or bsce-experiment sweep-run).")
    program = sweep.get("program")
    if program is not None and not (_PACKAGE_ROOT / str(program)).is_file():
        raise ConfigError(f"program {program!r} is not a file of the repository.")


def validate_sweep_file(path: str | os.PathLike) -> dict:
    """Check a sweep file as W&B and our runner will use it; no network, no training.

    Structure (method, metric, parameters, command), the entry point and base config the
    command names, then every combination: the exact ``--key=value`` arguments the agent
    would pass, parsed by ``sweep-run`` into a config (all keys and values valid, the
    base config's grid covered, the benchmark's class split possible). Combinations
    that ``sweep-run`` skips (e.g. er_ace + bsce) are reported, not errors.

    :return: ``{"combinations", "runs", "skipped": [(params, reason)], "configs"}``
    :raises ConfigError: naming the first problem.
    """
    from ..benchmarks.common import resolve_protocol

    sweep = load_sweep(path)
    _check_structure(sweep)
    if sweep["method"] != "grid":
        raise ConfigError(f"{path}: only grid sweeps enumerate the experiment grid; got {sweep['method']!r}.")
    parser = _sweep_run_parser()
    skipped, configs = [], []
    combos = sweep_combinations(sweep)
    for params in combos:
        command = agent_command(sweep, params)
        start = next(i for i, t in enumerate(command) if t == "sweep-run") + 1
        args, rest = parser.parse_known_args(command[start:])
        if args.config and not _resolve_path(args.config).is_file():
            raise ConfigError(f"{path}: the command's base config {args.config} does not exist.")
        try:
            cfg = build_sweep_config(args.config, parse_sweep_args(rest))
        except ConfigError as err:
            raise ConfigError(f"{path}: combination {params}: {err}") from None
        reason = combination_error(cfg)
        if reason:
            skipped.append((params, reason))
            continue
        n_classes = BENCHMARK_CLASSES.get(cfg.benchmark)
        if n_classes:
            try:
                resolve_protocol(n_classes, protocol=cfg.protocol, n_steps=cfg.n_steps)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"{path}: combination {params}: {cfg.benchmark}: {err}") from None
        configs.append(cfg)
    return {"combinations": len(combos), "runs": len(configs), "skipped": skipped, "configs": configs}
