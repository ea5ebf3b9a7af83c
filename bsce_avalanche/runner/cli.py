"""``bsce-experiment``: run experiments, grids of them, and compare their results.

    bsce-experiment run                                   # offline default (digits, CE vs BSCE)
    bsce-experiment run --config experiments/configs/cifar100_b0_10steps.yaml --output-dir runs/c100
    bsce-experiment grid --config ... --strategies replay lwf --losses ce bsce --seeds 0 1 2
    bsce-experiment compare runs/c100 --output runs/c100
    torchrun --standalone --nproc_per_node=4 -m bsce_avalanche run --config ...   # DDP, see distributed.py
    wandb sweep experiments/sweeps/cifar100_b0_10steps.yaml; wandb agent ENTITY/PROJECT/SWEEP_ID  # see sweep.py

Every config key is an option of run, grid and sweep-run (bsce-experiment run --help); an option
replaces the config file's value and its grid over that key. A user error (config, command line,
files, data) is one line on stderr and exit code 2 (--debug: the traceback); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Optional, Sequence, Union, get_args, get_origin, get_type_hints

from .config import (CHOICES, RANGES, ConfigError, ExperimentConfig, combination_error, expand_grid, load_config,
                     parse_value)
from .errors import TrainingDiverged

# Parsing the arguments and checking the config import neither torch nor Avalanche (--help and a typo answer
# at once): the commands that run something import the training machinery (experiment, compare, distributed).

_KEYS = fields(ExperimentConfig)
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


def _add_run_arguments(p: argparse.ArgumentParser, resume: bool = True) -> None:
    p.add_argument("--config", help="YAML config, see experiments/configs/ (default: experiments/configs/"
                                    "default.yaml in a checkout, else the built-in defaults below)")
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


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The config file (or the default one) with the options' overrides; a key set by an option leaves
    the config file's grid (``run --loss ce`` runs CE only)."""
    overrides = {f.name: getattr(args, f.name) for f in _KEYS if getattr(args, f.name) is not None}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value)
    grid = {key: getattr(args, flag) for flag, key in _GRID_FLAGS.items() if getattr(args, flag, None)}
    for flag, key in _GRID_FLAGS.items():
        if key in grid and key in overrides:
            raise ConfigError(f"--{flag} and --{key} (or --set {key}=...) both set {key}: give one of them.")
    # the offline default: experiments/configs/default.yaml in a checkout, else built-in defaults
    default = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "default.yaml"
    cfg = load_config(args.config or (default if default.is_file() else None),
                      {k: v for k, v in overrides.items() if k not in grid})
    for selector, recipe in cfg.recipes.items():
        if "recipes" not in overrides and (clash := sorted(set(recipe) & set(overrides))):
            raise ConfigError(f"--set/option {clash[0]} is also set by recipes[{selector!r}], which wins for the "
                              f"{selector} runs: change it in the recipe (--set 'recipes=...') or drop the recipe.")
    grid = {**{k: v for k, v in cfg.grid.items() if k not in overrides}, **grid}
    return cfg.replace(grid=grid) if grid != cfg.grid else cfg


def run_configs(cfg: ExperimentConfig, resume: bool = False, jobs: int = 1, overwrite: bool = False) -> Optional[Path]:
    """Run every combination of ``cfg`` into ``output_dir/<run name>/``, ``jobs`` at once, then compare them."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}.")
    runs, out = expand_grid(cfg), Path(cfg.output_dir)
    skipped = {run.run_name: combination_error(run) for run in runs if combination_error(run)}
    if len(skipped) == len(runs):
        raise ConfigError(next(iter(skipped.values())) if len(runs) == 1 else
                          f"no combination of the grid can run: {'; '.join(sorted(set(skipped.values())))}")
    from . import distributed
    from .compare import compare
    from .experiment import run_experiment

    if jobs > 1 and distributed.launched_distributed():
        raise ConfigError("--jobs starts processes of its own: do not combine it with torchrun (use --jobs 1).")
    main = distributed.is_main_process()  # under torchrun every rank runs this; rank 0 reports
    say = print if main else (lambda *args, **kwargs: None)
    runs = [run for run in runs if run.run_name not in skipped]
    jobs = min(jobs, len(runs))
    say(f"bsce-experiment: {len(runs)} run(s) -> {out}" + (f", {jobs} at once" if jobs > 1 else ""), flush=True)
    for name, reason in skipped.items():
        say(f"  skipping {name}: {reason}", flush=True)
    if jobs > 1:
        results = _run_in_processes(runs, out, resume, jobs, overwrite)
    else:
        results = ((run_cfg, run_experiment(run_cfg, out / run_cfg.run_name, resume=resume, overwrite=overwrite))
                   for run_cfg in runs)
    for run_cfg, result in results:
        say(f"  {run_cfg.run_name}: average incremental accuracy {100 * result['average_incremental_accuracy']:.2f}%, "
            f"last {100 * result['last_accuracy']:.2f}%, {result['train_time_s']:.0f} s", flush=True)
        if sync := (result.get("wandb") or {}).get("sync_command"):
            say(f"  W&B run saved offline; upload it with: {sync}", flush=True)
    if not main:
        return None
    table = compare([out / r.run_name / "results.json" for r in runs], out)
    print(f"comparison: {table}", flush=True)
    print(table.read_text().split("\n\n")[1], flush=True)
    return table


class RunProcessDied(RuntimeError):
    """A ``--jobs`` worker process died (killed by a signal, e.g. the out-of-memory killer)."""


def _run_in_processes(runs: list, out: Path, resume: bool, jobs: int, overwrite: bool = False, worker=None):
    """Yield ``(config, results)`` of each run as it finishes, ``jobs`` fresh processes at a time, each
    with ``cores // jobs`` torch threads unless its config sets ``threads`` (same numbers as alone).

    :param worker: what a process runs, ``_run_one`` (a module-level function; tests pass another).
    :raises RunProcessDied: a worker process died."""
    worker = worker or _run_one
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // jobs)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    # waiting workers ignore Ctrl-C (no tracebacks); a worker's run takes it like a single run
    with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1,
                             initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        futures = {pool.submit(worker, run_cfg.replace(progress=False), out / run_cfg.run_name, resume, threads,
                               overwrite):
                   run_cfg for run_cfg in runs}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise RunProcessDied(
                        f"the process of run {futures[future].run_name} died (killed, e.g. by the out-of-memory "
                        "killer), and the runs under way with it; the finished runs are saved: run the same command "
                        "with --resume to continue the others from their last finished step.") from None
                yield futures[future], result
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the runs under way finish (and are saved)
            raise


def _run_one(cfg: ExperimentConfig, out: Path, resume: bool, threads: int, overwrite: bool = False) -> dict:
    import torch

    from .experiment import run_experiment

    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(cfg.threads or threads)
    return run_experiment(cfg, out, resume=resume, overwrite=overwrite)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a cluster pre-empting the job, a W&B agent stopping a run) unwinds like Ctrl-C: the W&B run is closed
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return _command(args)
    except (ConfigError, OSError, TrainingDiverged, RunProcessDied, KeyboardInterrupt) as err:
        if args.debug:
            raise
        if isinstance(err, KeyboardInterrupt):
            resume = " (--resume continues from the last finished step)" if args.command in ("run", "grid") else ""
            print(f"bsce-experiment: interrupted{resume}", file=sys.stderr)
            return 130
        # exit 1: a divergence (recorded in the run's results.json) or a killed worker; 2: the user's to fix
        # (config, files, data)
        diverged = isinstance(err, (TrainingDiverged, RunProcessDied))
        print(f"bsce-experiment: error: {err if diverged else ' '.join(str(err).split())}", file=sys.stderr)
        return 1 if diverged else 2


def _command(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit code."""
    if args.command == "compare":
        from .compare import compare

        first = Path(args.paths[0])
        print(compare(args.paths, args.output or (first if first.is_dir() else first.parent)).read_text())
        return 0
    if args.command == "sweep-validate":
        from . import sweep  # sweep.py builds on this module

        return sweep.sweep_validate(args.paths)
    cfg = config_from_args(args)  # checked before torch and Avalanche are imported
    from . import distributed

    finished = False
    try:
        if args.command == "sweep-run":
            from . import sweep

            sweep.sweep_run(cfg)
        else:
            run_configs(cfg, resume=args.resume, jobs=args.jobs, overwrite=args.overwrite)
        finished = True
    finally:
        distributed.shutdown(wait=finished)  # leave the process group (torchrun), if one was joined
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
