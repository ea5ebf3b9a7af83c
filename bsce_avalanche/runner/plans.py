"""Plans of runs on a fixed protocol, for the evidence scripts of ``experiments/`` (e.g.
``experiments/cifar100_cpu_concat.py``): run them in worker processes (resumable: finished runs are
skipped, interrupted ones resumed), then write one summary row per run, ``comparison.md`` and the plots."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from .compare import compare
from .config import ConfigError
from .config_files import load_config, parse_value
from .grid import check_recipe_overrides, check_unique_names, expand_grid
from .identity import method_label
from .labels import POSTHOC_LABEL
from .results import load_results
from .fileio import write_json_atomic
from .catalog import uses_replay_option

__all__ = ["Plan", "run_plan", "summary_rows", "TINY"]

#: ``--tiny``: digits, 1 epoch, 2 classes (balanced, as CIFAR-100's) then 2 steps of 4 (replaces the protocol's settings)
TINY = {"benchmark": "digits", "model": "small_cnn", "width": 16, "protocol": "B2", "n_steps": 2, "epochs": 1,
        "memory_size": 40, "lr": 0.05, "lr_milestones": [], "bic_stage2_epochs": 2, "data_dir": None,
        "class_order": [1, 4, 0, 2, 3, 5, 6, 7, 8, 9], "progress": False, "recipes": {}}


def _config(config_path: str, overrides: dict, set_keys=()):
    """The run's config: the protocol's file, the run's overrides, then its method's recipe; a key of
    ``set_keys`` (the command line's ``--set``) that the run's recipe also sets is a :class:`ConfigError`
    (the rule of ``bsce-experiment run``: :func:`~.config.check_recipe_overrides`)."""
    config = load_config(config_path, overrides)
    check_recipe_overrides(config, set_keys, "--set")
    return expand_grid(config)[0]


def _example_names(plan: "Plan") -> str:
    """Two planned run names, for ``--only``'s help (computed, so they are the names the plan writes)."""
    try:
        return " ".join(_config(str(plan.config), {"data_dir": None, **run}).run_name for run in plan.runs((0,))[:2])
    except Exception:  # --help never fails
        return "replay-ce-seed0-<digest>"


def _run_one(args: tuple) -> str:
    import traceback
    import warnings

    warnings.simplefilter("ignore")
    config_path, overrides, output_dir = args
    from bsce_avalanche.runner.experiment import run_experiment

    cfg = _config(config_path, overrides)
    start = time.time()
    try:
        result = run_experiment(cfg, Path(output_dir) / cfg.run_name, resume=True)
    except Exception:  # report and go on with the other runs
        return f"{cfg.run_name}: FAILED\n{traceback.format_exc()}"
    return (f"{cfg.run_name}: AIA {100 * result['average_incremental_accuracy']:.2f}%, "
            f"last {100 * result['last_accuracy']:.2f}%, train {result['train_time_s']:.0f} s, "
            f"wall {time.time() - start:.0f} s")


def summary_rows(runs: list[dict], base: Path) -> list[dict]:
    """One row per run (and per iCaRL classifier), the figures RESULTS.md reports."""
    rows = []
    for run in runs:
        cfg = run["config"]
        variants = [(None, run, "")]
        if cfg["strategy"] == "icarl":
            other = "head" if cfg["icarl_eval"] == "nme" else "nme"
            variants = [(cfg["icarl_eval"], run, ""), (other, {**run, **run["icarl_" + other]}, "")]
        if run.get("posthoc"):  # the trained head's logits - log prior, from the same evaluation pass
            variants.append(("head" if cfg["strategy"] == "icarl" else None, {**run, **run["posthoc"]}, POSTHOC_LABEL))
        for evaluation, metrics, suffix in variants:
            rows.append({
                "method": method_label({**cfg, "icarl_eval": evaluation or cfg["icarl_eval"]}) + suffix,
                "strategy": cfg["strategy"],
                "loss": cfg["loss"],
                "prior": cfg["prior"] if cfg["loss"] == "bsce" else None,
                "tau": cfg["tau"] if cfg["loss"] == "bsce" else None,
                "replay": cfg.get("replay", "half_batch") if uses_replay_option(cfg) else None,
                "seed": cfg["seed"],
                "recipe": cfg.get("recipe"),
                "average_incremental_accuracy": metrics["average_incremental_accuracy"],
                "last_accuracy": metrics["last_accuracy"],
                "forgetting": metrics["forgetting"],
                "old_accuracy_last_step": metrics["old_new_accuracy"][-1]["old"],
                "new_accuracy_last_step": metrics["old_new_accuracy"][-1]["new"],
                "new_class_prediction_share_last_step": metrics["new_class_prediction_share"][-1],
                "train_time_s": run["train_time_s"],
                "step_times_s": run["step_times_s"],
                "step0_accuracy": metrics["accuracy_matrix"][0][0],
                "accuracy_matrix": metrics["accuracy_matrix"],
                # compute (None where the run predates the counters)
                **{key: run.get(key) for key in ("images_per_epoch", "gradient_steps_per_epoch", "samples_stored")},
                # trained once per key and seed, shared by the runs with that key
                "first_experience": {k: v for k, v in run["first_experience"].items() if k != "file"}
                if run.get("first_experience") else None,
                "path": str(Path(run["_path"]).resolve().relative_to(base.resolve())),
            })
    return rows


class Plan(NamedTuple):
    """A set of runs on the CPU protocol (``cifar100_cpu.yaml``) and what to report about them."""

    #: seeds -> the config overrides of each run (longest first: better packing on two workers)
    runs: Callable[[tuple], list[dict]]
    #: the default output folder
    output_dir: Path
    #: the protocol's config file (the runs' common settings and the methods' recipes)
    config: Path
    #: ``report(rows, output_dir)``: extra tables and plots, after comparison.md
    report: Optional[Callable[[list, Path], None]] = None


def run_plan(argv, plan: Plan, description: str) -> list[dict]:
    """Parse the command line, run ``plan`` (resumable, ``--workers`` processes), write
    ``OUTPUT_DIR.json``, ``comparison.md``, the plots and ``plan.report``'s; return the rows."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding cifar100.npz (required unless --tiny)")
    parser.add_argument("--output-dir", default=str(plan.output_dir))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="run only these runs, by their folder names in OUTPUT_DIR (<method>-seed<N>-<digest>, "
                             f"e.g. {_example_names(plan)}); an unknown name lists the planned ones")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the CPU protocol for every run, e.g. --set epochs=3; a key a "
                             "method's recipe also sets is an error (experiments/GUIDE.md, recipes): shorten the "
                             "protocol with --set recipes={} --set epochs=1 --set lr_milestones=[]")
    parser.add_argument("--tiny", action="store_true",
                        help="digits, 3 steps, 1 epoch, one seed: checks the script end to end in seconds")
    args = parser.parse_args(argv)
    if not args.data_dir and not args.tiny:
        parser.error("--data-dir is required: the folder holding cifar100.npz (see the README's data section).")

    common = {"data_dir": args.data_dir}
    if args.tiny:
        common = dict(TINY)
        args.seeds = args.seeds[:1]
    set_keys = []
    try:
        for item in args.set:
            key, _, value = item.partition("=")
            common[key.strip()] = parse_value(value)
            set_keys.append(key.strip())
        out = Path(args.output_dir)
        jobs = [(str(plan.config), {**common, **run}, str(out)) for run in plan.runs(tuple(args.seeds))]
        configs = [_config(*job[:2], set_keys) for job in jobs]  # fails fast on a bad config
        # runs made one by the overrides (BiC with and without its recipe, under --set recipes={} or --tiny): once
        kept = {}
        for job, cfg in zip(jobs, configs):
            if kept.setdefault(cfg.run_name, (job, cfg))[1].to_dict() != cfg.to_dict():
                kept[f"{cfg.run_name} ({len(kept)})"] = (job, cfg)  # refused below, naming what differs
        jobs, configs = [job for job, _ in kept.values()], [cfg for _, cfg in kept.values()]
        check_unique_names(configs)
    except ConfigError as err:
        parser.error(str(err))
    names = [cfg.run_name for cfg in configs]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown run(s) {unknown}; planned: {', '.join(names)}")
        jobs = [job for job, name in zip(jobs, names) if name in args.only]
    print(f"{len(jobs)} runs on {args.workers} workers -> {out}", flush=True)
    # SIGTERM unwinds like Ctrl-C, so that the pool's exit terminates the worker processes
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.time()
    try:
        if args.workers > 1:
            with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
                for line in pool.imap_unordered(_run_one, jobs):
                    print(line, flush=True)
        else:
            for job in jobs:
                print(_run_one(job), flush=True)
    except KeyboardInterrupt:  # the runs keep their last finished step
        raise SystemExit("interrupted: the same command resumes it (finished runs are skipped, interrupted ones "
                         "continue from their last finished step).") from None
    runs = [r for r in load_results([out]) if r.get("finished")]
    rows = summary_rows(runs, out.parent)
    write_json_atomic(out.with_suffix(".json"), rows)
    table = compare([out], out)
    if plan.report is not None:
        plan.report(rows, out)
    print(f"wall time {time.time() - started:.0f} s; {out.with_suffix('.json')}, {table}")
    if len(runs) < len(jobs):
        raise SystemExit(f"{len(jobs) - len(runs)} run(s) did not finish: see the messages above")
    return rows


