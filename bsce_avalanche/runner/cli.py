"""``bsce-experiment``: run experiments, grids of them, and compare their results.

    bsce-experiment run                                   # offline default (digits, CE vs BSCE)
    bsce-experiment run --config experiments/configs/cifar100_b0_10steps.yaml --output-dir runs/c100
    bsce-experiment grid --config ... --strategies replay lwf --losses ce bsce --seeds 0 1 2
    bsce-experiment compare runs/c100 --output runs/c100
    torchrun --standalone --nproc_per_node=4 -m bsce_avalanche run --config ...   # DDP, see distributed.py
    wandb sweep experiments/sweeps/cifar100_b0_10steps.yaml; wandb agent ENTITY/PROJECT/SWEEP_ID  # see sweep.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, ExperimentConfig, expand_grid, load_config, parse_value
from .divergence import TrainingDiverged

# CLI flag -> config key, for the common overrides (everything else: --set key=value)
_OVERRIDES = {
    "benchmark": str, "protocol": str, "n_steps": int, "class_order": parse_value, "data_dir": str,
    "strategy": str, "loss": str, "tau": float, "prior": str, "memory_size": int,
    "memory_per_class": int, "epochs": int, "batch_size": int, "lr": float,
    "lr_milestones": parse_value, "seed": int, "device": str, "model": str,
    "wandb_project": str, "wandb_entity": str, "wandb_mode": str, "name": str,
}


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see experiments/configs/); default: the offline digits demo")
    p.add_argument("--output-dir", help="where results, W&B files and the comparison go")
    for key, typ in _OVERRIDES.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=typ, default=None, metavar=key.upper())
    p.add_argument("--download", action="store_true", default=None, help="allow dataset downloads")
    p.add_argument("--no-wandb", dest="wandb", action="store_false", default=None, help="do not log to W&B")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted runs from their last finished step; skip finished ones")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the runs already in the output directory (default: refuse to)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set lwf_memory=true (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsce-experiment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a config (all its grid combinations), then compare them")
    _add_run_arguments(run)
    grid = sub.add_parser("grid", help="run strategies x losses x seeds, then compare them")
    _add_run_arguments(grid)
    grid.add_argument("--strategies", nargs="+", help="e.g. replay lwf icarl")
    grid.add_argument("--losses", nargs="+", help="ce and/or bsce")
    grid.add_argument("--seeds", nargs="+", type=int, help="e.g. 0 1 2")
    sub.add_parser("sweep-run", add_help=False,
                   help="one combination of a W&B sweep, the agent's program (see bsce_avalanche/runner/sweep.py)")
    sub.add_parser("sweep-validate", add_help=False, help="check W&B sweep files (experiments/sweeps/*.yaml) offline")
    cmp_ = sub.add_parser("compare", help="markdown table + plots from results.json files")
    cmp_.add_argument("paths", nargs="+", help="results.json files or directories holding them")
    cmp_.add_argument("--output", help="directory for comparison.md and PNGs (default: the first path)")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    overrides = {k: getattr(args, k) for k in list(_OVERRIDES) + ["download", "wandb", "progress"]
                 if getattr(args, k, None) is not None}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    grid = {}
    for flag, key in (("strategies", "strategy"), ("losses", "loss"), ("seeds", "seed")):
        values = getattr(args, flag, None)
        if values:
            grid[key] = values
            overrides.pop(key, None)
    config_path = args.config
    if config_path is None:
        config_path = _default_config_path()
    cfg = load_config(config_path, overrides)
    if grid:
        cfg = cfg.replace(grid={**{k: v for k, v in cfg.grid.items() if k not in grid}, **grid})
    return cfg


def _default_config_path() -> Optional[Path]:
    """The offline default: experiments/configs/default.yaml in a checkout, else built-in defaults."""
    candidate = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "default.yaml"
    return candidate if candidate.is_file() else None


def run_configs(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> Optional[Path]:
    from . import distributed
    from .compare import compare
    from .experiment import run_experiment

    main = distributed.is_main_process()  # under torchrun every rank runs this; rank 0 reports
    say = print if main else (lambda *args, **kwargs: None)
    runs = expand_grid(cfg)
    out = Path(cfg.output_dir)
    say(f"bsce-experiment: {len(runs)} run(s) -> {out}", flush=True)
    for run_cfg in runs:
        result = run_experiment(run_cfg, out / run_cfg.run_name, resume=resume, overwrite=overwrite)
        line = (f"  {run_cfg.run_name}: average incremental accuracy "
                f"{100 * result['average_incremental_accuracy']:.2f}%, last {100 * result['last_accuracy']:.2f}%, "
                f"{result['train_time_s']:.0f} s")
        say(line, flush=True)
        sync = (result.get("wandb") or {}).get("sync_command")
        if sync:
            say(f"  W&B run saved offline; upload it with: {sync}", flush=True)
    if not main:
        return None
    table = compare([out / r.run_name / "results.json" for r in runs], out)
    print(f"comparison: {table}", flush=True)
    print(table.read_text().split("\n\n")[1], flush=True)
    return table


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (e.g. a cluster pre-empting the job) unwinds like Ctrl-C, so the W&B run is
    closed; the last checkpoint is complete either way and ``--resume`` continues."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["sweep-run"], ["sweep-validate"]):  # their own parsers: any --key=value
        from . import sweep

        return (sweep.sweep_run if argv[0] == "sweep-run" else sweep.sweep_validate)(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _exit_cleanly_on_sigterm()
    finished = False
    try:
        if args.command in ("run", "grid"):
            run_configs(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
        elif args.command == "compare":
            from .compare import compare

            table = compare(args.paths, args.output or (args.paths[0] if Path(args.paths[0]).is_dir()
                                                         else Path(args.paths[0]).parent))
            print(table.read_text())
        finished = True
    except (ConfigError, FileNotFoundError) as err:
        print(f"bsce-experiment: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:  # recorded in the run's results.json
        print(f"bsce-experiment: error: {err}", file=sys.stderr)
        return 1
    finally:
        from . import distributed

        distributed.shutdown(wait=finished)  # leave the process group (torchrun), if one was joined
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
