"""``bsce-experiment``: run experiments, grids of them, and compare their results.

    bsce-experiment run                                   # offline default (digits, CE vs BSCE)
    bsce-experiment run --config cifar100_b0_10steps --output-dir runs/c100   # a shipped config, or a path
    bsce-experiment grid --config ... --strategies replay lwf --losses ce bsce --seeds 0 1 2
    bsce-experiment compare runs/c100 --output runs/c100
    torchrun --standalone --nproc_per_node=4 -m bsce_avalanche run --config ...   # DDP, see distributed.py
    wandb sweep experiments/sweeps/cifar100_b0_10steps.yaml; wandb agent ENTITY/PROJECT/SWEEP_ID  # see sweep.py

Every config key is an option of run, grid and sweep-run (bsce-experiment run --help); an option
replaces the config file's value and its grid over that key. A user error (config, command line,
files, data) is one line on stderr and exit code 2 (--debug: the traceback); Ctrl-C exits with 130.
The options are built in :mod:`.arguments`, the runs run by :mod:`.runs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .arguments import build_parser, config_from_args
from .config import ConfigError
from .errors import TrainingDiverged
from .runs import RunProcessDied, exit_on_sigterm, run_configs

__all__ = ["main", "build_parser", "config_from_args", "run_configs"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    exit_on_sigterm()  # SIGTERM (a cluster pre-empting the job, a W&B agent stopping a run) unwinds like Ctrl-C
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
        from . import sweep

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
