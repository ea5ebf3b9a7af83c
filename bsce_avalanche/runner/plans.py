"""Plans of runs on a fixed protocol, for the evidence scripts of ``experiments/`` (e.g.
``experiments/cifar100_cpu_concat.py``): run them as ``bsce-experiment grid`` runs its runs (:func:`.runs.run_each`:
resumable, finished runs skipped, interrupted ones resumed), then write one summary row per run and evaluation,
``comparison.md`` and the plots. :func:`group_rows` groups summary rows as ``compare`` groups runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from .arguments import set_overrides
from .catalog import uses_replay_option
from .compare import compare
from .config import ConfigError, ExperimentConfig
from .config_files import load_config
from .fileio import write_json_atomic
from .grid import check_recipe_overrides, check_unique_names, expand_grid
from .labels import run_label
from .results import group_runs, load_results, posthoc_view
from .runs import RunProcessDied, exit_on_sigterm, run_each

__all__ = ["Plan", "run_plan", "run_resumably", "summary_rows", "group_rows", "TINY"]

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


def _evaluations(run: dict) -> list[dict]:
    """A finished run as ``compare`` sees it, once per evaluation a summary row reports: its own; iCaRL's other
    classifier (the same weights, ``results["icarl_<other>"]``); the post-hoc logit adjustment of a CE run
    (:func:`~.compare.posthoc_view`; iCaRL's: of the trained head). Each one's :func:`~.compare.run_label` is its
    row's method."""
    cfg = run["config"]
    views = [run]
    if cfg["strategy"] == "icarl":
        other = "head" if cfg["icarl_eval"] == "nme" else "nme"
        views.append({**run, **run["icarl_" + other], "config": {**cfg, "icarl_eval": other}})
    if run.get("posthoc"):  # the trained head's logits - log prior, from the same evaluation pass
        views.append(posthoc_view(run))
    return views


def summary_rows(runs: list[dict], base: Path) -> list[dict]:
    """One row per run and evaluation (:func:`_evaluations`), the figures RESULTS.md reports; ``path``: the run's
    results.json, relative to ``base``. Tables pool the rows as :func:`group_rows` does."""
    rows = []
    for run in runs:
        for view in _evaluations(run):
            cfg = view["config"]
            rows.append({
                "method": run_label(view),
                "strategy": cfg["strategy"],
                "loss": cfg["loss"],
                "prior": cfg["prior"] if cfg["loss"] == "bsce" else None,
                "tau": cfg["tau"] if cfg["loss"] == "bsce" else None,
                "replay": cfg.get("replay", "half_batch") if uses_replay_option(cfg) else None,
                "seed": cfg["seed"],
                "recipe": cfg.get("recipe"),
                "average_incremental_accuracy": view["average_incremental_accuracy"],
                "last_accuracy": view["last_accuracy"],
                "forgetting": view["forgetting"],
                "old_accuracy_last_step": view["old_new_accuracy"][-1]["old"],
                "new_accuracy_last_step": view["old_new_accuracy"][-1]["new"],
                "new_class_prediction_share_last_step": view["new_class_prediction_share"][-1],
                "train_time_s": run["train_time_s"],
                "step_times_s": run["step_times_s"],
                "step0_accuracy": view["accuracy_matrix"][0][0],
                "accuracy_matrix": view["accuracy_matrix"],
                # compute (None where the run predates the counters)
                **{key: run.get(key) for key in ("images_per_epoch", "gradient_steps_per_epoch", "samples_stored")},
                # trained once per key and seed, shared by the runs with that key
                "first_experience": {k: v for k, v in run["first_experience"].items() if k != "file"}
                if run.get("first_experience") else None,
                "path": str(Path(run["_path"]).resolve().relative_to(base.resolve())),
            })
    return rows


def group_rows(rows: list[dict], base: Path) -> dict[str, list[dict]]:
    """Summary rows pooled as ``compare`` pools runs (:func:`~.compare.group_runs`): only rows of one method
    label and of the same settings but the seed (and data), so that runs of one label at other settings (e.g.
    epochs) are not averaged together; each group named by its label and, where groups share one, the settings
    that tell them apart (``replay-bsce-concat (epochs=3)``). The settings are read from each row's results.json
    (``base / row["path"]``). A row whose label its run no longer has (another version's labels) is a
    :class:`ConfigError`."""
    if not rows:
        return {}
    views = {}
    for run in load_results(dict.fromkeys(str(base / row["path"]) for row in rows)):
        for view in _evaluations(run):
            views[(run["_path"], run_label(view))] = view
    chosen = []
    for row in rows:
        key = (str(base / row["path"]), row["method"])
        if key not in views:
            raise ConfigError(f"{base / row['path']} has no evaluation labelled {row['method']!r}: its summary row "
                              "was written by another version; write the summary again from the run folders.")
        chosen.append(views[key])
    rows_of = {id(view): row for view, row in zip(chosen, rows)}
    return {name: [rows_of[id(view)] for view in group] for name, group in group_runs(chosen).items()}


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


#: How a plan's command continues (after an interrupt, a killed worker).
RESUMES = ("the same command resumes it (finished runs are skipped, interrupted ones continue from their last "
           "finished step).")


def run_plan(argv, plan: Plan, description: str) -> list[dict]:
    """Parse the command line, run ``plan`` (resumable, ``--workers`` processes: :func:`.runs.run_each`, the path of
    ``bsce-experiment grid``), write ``OUTPUT_DIR.json``, ``comparison.md``, the plots and ``plan.report``'s;
    return the rows."""
    parser = _parser(plan, description)
    args = parser.parse_args(argv)
    if not args.data_dir and not args.tiny:
        parser.error("--data-dir is required: the folder holding cifar100.npz (see the README's data section).")
    runs, out = _planned(parser, args, plan), Path(args.output_dir)
    print(f"{len(runs)} runs on {args.workers} workers -> {out}", flush=True)
    started = time.time()
    run_resumably(runs, out, args.workers)
    return _report(plan, out, len(runs), started)


def _parser(plan: Plan, description: str) -> argparse.ArgumentParser:
    """The evidence scripts' command line (the same for every plan)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder holding cifar100.npz (required unless --tiny)")
    parser.add_argument("--output-dir", default=str(plan.output_dir),
                        help="folder of the runs, one subfolder each; finished runs there are kept and resumed, "
                             "not run again (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2,
                        help="runs at a time, one process each (default: %(default)s; one CPU thread per run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                        help="the seeds of the plan's runs (default: 0 1 2)")
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="run only these runs, by their folder names in OUTPUT_DIR (<method>-seed<N>-<digest>, "
                             f"e.g. {_example_names(plan)}); an unknown name lists the planned ones")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the CPU protocol for every run, e.g. --set epochs=3; a key a "
                             "method's recipe also sets is an error (experiments/GUIDE.md, recipes): shorten the "
                             "protocol with --set recipes={} --set epochs=1 --set lr_milestones=[]")
    parser.add_argument("--tiny", action="store_true",
                        help="digits, 3 steps, 1 epoch, one seed: checks the script end to end in seconds")
    return parser


def _planned(parser: argparse.ArgumentParser, args: argparse.Namespace, plan: Plan) -> list[ExperimentConfig]:
    """The configs of the plan's runs (``--only``'s, if given), each once; a bad config, ``--set`` or ``--only``
    is a usage error (``parser.error``)."""
    common = dict(TINY) if args.tiny else {"data_dir": args.data_dir}
    seeds = args.seeds[:1] if args.tiny else args.seeds
    try:
        overrides = set_overrides(args.set)  # bsce-experiment's --set
        common.update(overrides)
        configs = [_config(str(plan.config), {**common, **run}, overrides) for run in plan.runs(tuple(seeds))]
        # runs made one by the overrides (BiC with and without its recipe, under --set recipes={} or --tiny): once
        kept = {}
        for cfg in configs:
            if kept.setdefault(cfg.run_name, cfg).to_dict() != cfg.to_dict():
                kept[f"{cfg.run_name} ({len(kept)})"] = cfg  # refused below, naming what differs
        configs = list(kept.values())
        check_unique_names(configs)
    except ConfigError as err:
        parser.error(str(err))
    names = [cfg.run_name for cfg in configs]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"unknown run(s) {unknown}; planned: {', '.join(names)}")
        configs = [cfg for cfg in configs if cfg.run_name in args.only]
    return configs


def run_resumably(runs: list[ExperimentConfig], out: Path, workers: int, keep_going: bool = True,
                  **options) -> list[str]:
    """Run (or resume) ``runs`` into ``out``, ``workers`` at a time (:func:`.runs.run_each`, ``options`` passed on:
    ``say``, ``folder``); with ``keep_going``, a run that fails is reported and the others go on; an interrupt
    (Ctrl-C, SIGTERM) or a killed worker ends the command, saying that it resumes. The names of the failed runs."""
    exit_on_sigterm()  # as bsce-experiment: SIGTERM unwinds like Ctrl-C
    try:
        return run_each(runs, out, resume=True, jobs=workers, keep_going=keep_going, quiet=True, **options)
    except KeyboardInterrupt:  # the runs keep their last finished step
        raise SystemExit(f"interrupted: {RESUMES}") from None
    except RunProcessDied as err:
        raise SystemExit(f"the process of run {err.run_name} died (killed, e.g. by the out-of-memory killer), and "
                         f"the runs under way with it: {RESUMES}") from None


def _report(plan: Plan, out: Path, planned: int, started: float) -> list[dict]:
    """``OUTPUT_DIR.json`` (:func:`summary_rows` of the finished runs in ``out``), ``comparison.md`` and the plots,
    ``plan.report``'s; the rows. Fewer finished runs than ``planned`` ends the command (exit 1)."""
    runs = [r for r in load_results([out]) if r.get("finished")]
    rows = summary_rows(runs, out.parent)
    write_json_atomic(out.with_suffix(".json"), rows)
    table = compare([out], out)
    if plan.report is not None:
        plan.report(rows, out)
    print(f"wall time {time.time() - started:.0f} s; {out.with_suffix('.json')}, {table}")
    if len(runs) < planned:
        raise SystemExit(f"{planned - len(runs)} run(s) did not finish: see the messages above")
    return rows
