"""Online class-incremental CIFAR-100 on a CPU, the standard online protocol: ER, ER + BSCE (sliding-window
prior, windows 1 and 5), ER-ACE, with a reservoir memory updated after every mini-batch.

    nice -n 15 python experiments/cifar100_online.py --data-dir /work/shared/data/cifar100 --shard 1/2 &
    nice -n 15 python experiments/cifar100_online.py --data-dir /work/shared/data/cifar100 --shard 2/2   # two cores
    python experiments/cifar100_online.py --tiny --output-dir /tmp/x                         # seconds (tests)
    python experiments/cifar100_online.py --table        # the tables and comparison-mem*/ from the finished runs

Protocol (:data:`PROTOCOL`; the runner's ``online: true`` and ``memory_selection: reservoir``): the real
CIFAR-100, B0 in 10 tasks of 10 classes (class order "icarl"); each task split by Avalanche's
``split_online_stream`` into experiences of 10 samples, each trained once by its own ``train()`` call, with a
memory mini-batch of 10 (ER: Avalanche's ``ReplayPlugin(batch_size_mem=10)``; ER-ACE: ``bsce_avalanche.ERACE``)
from a reservoir memory (Avalanche's ``ReservoirSamplingBuffer``) updated after every mini-batch with the samples
just trained on, so that the memory only holds samples already trained on and no task boundary reaches training
(BSCE: ``prior: window``); SGD lr 0.1 without momentum, evaluation on the test classes seen so far at the end of
every task; a half-width ResNet-8 (``resnet8``, width 8), one torch thread. ER's post-hoc logit adjustment
(``results["posthoc"]``) uses the window prior of a whole task (``posthoc_window`` = the task's mini-batches).
Runs in priority order (:func:`planned_runs`): seed 0 of the four methods at memory 2000, then at 1000, then
seeds 1 and 2 at 2000, then at 1000. ``--budget-min``: no run starts that would, at the median time of the runs
so far, end after the budget. A re-run skips finished runs and resumes interrupted ones (between tasks).
Writes ``OUTPUT_DIR.json`` (one entry per finished run), ``OUTPUT_DIR/summary.md`` (the tables, BSCE minus the
strongest baseline paired per seed with a 95% t-interval) and ``OUTPUT_DIR/comparison-mem<M>/`` (``compare``'s
comparison.md and figures). The earlier protocol (class-balanced memory updated at task ends, ER-ACE of
Avalanche) is recorded in ``results/cifar100_online/`` and ``results/cifar100_online.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bsce_avalanche.runner.results_format import problem_cause, results_problem  # noqa: E402
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig  # noqa: E402
from bsce_avalanche.runner.fileio import write_json_atomic  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
#: The online protocol on CIFAR-100.
PROTOCOL = dict(name="cifar100-online-reservoir", benchmark="cifar100", protocol="B0", n_steps=10,
                class_order="icarl", model="resnet8", width=8, strategy="replay", replay="half_batch", memory_size=2000,
                online=True, memory_selection="reservoir", epochs=1,
                batch_size=10, batch_size_mem=10, eval_batch_size=500, lr=0.1, momentum=0.0, weight_decay=0.0,
                lr_milestones=[], threads=1, wandb=False, progress=False)
#: ``--tiny``: split digits in 2 tasks, small_cnn, memory 100 and 200 (replaces the protocol's settings).
TINY = dict(benchmark="digits", n_steps=2, class_order="natural", model="small_cnn", width=16, memory_size=100)
TINY_MEMORIES = (100, 200)
#: the main memory, then the smaller one
MEMORIES = (2000, 1000)

#: The methods: (strategy, loss, prior, window); window 5: the best window of the earlier protocol's sweep.
ER, ER_LAS, ER_BSCE5, ER_ACE = ("replay", "ce", None, None), ("replay", "bsce", "window", 1), \
    ("replay", "bsce", "window", 5), ("er_ace", "ce", None, None)
METHODS = (ER, ER_LAS, ER_BSCE5, ER_ACE)


#: the protocol's settings each summary entry repeats
SUMMARY_CONFIG_KEYS = ("batch_size", "batch_size_mem", "model", "width", "lr", "benchmark", "n_steps")


def planned_runs(memories=MEMORIES, seeds=(0, 1, 2)) -> list[dict]:
    """The runs, most important first (each: strategy, loss, prior, window, memory_size, seed); a plan's order
    is its runs' shard: extend it only at the end."""
    runs = [(*m, memory, seeds[0]) for memory in memories for m in METHODS]
    runs += [(*m, memory, seed) for memory in memories for seed in seeds[1:] for m in METHODS]
    keys = ("strategy", "loss", "prior", "window", "memory_size", "seed")
    return [dict(zip(keys, run)) for run in runs]


def run_id(run: dict) -> str:
    prior = "" if run["loss"] == "ce" else f"-prior_{run['prior']}" + (f"{run['window']}" if run["window"] else "")
    return f"{run['strategy']}-{run['loss']}{prior}-mem{run['memory_size']}-seed{run['seed']}"


def config_of(run: dict, base: dict, task_batches: int) -> ExperimentConfig:
    window = task_batches if run["window"] == "task" else run["window"]
    extra = {"prior": run["prior"], "prior_window": window} if run["loss"] == "bsce" else {}
    if run["loss"] == "ce" and run["strategy"] == "replay":  # post-hoc: the window prior of a whole task
        extra["posthoc_window"] = task_batches or None
    return ExperimentConfig(**{**base, "strategy": run["strategy"], "loss": run["loss"],
                               "memory_size": run["memory_size"], "seed": run["seed"], **extra})


def row(run: dict, result: dict) -> dict:
    """The summary's entry for a run of the plan, from its results (and the config they record)."""
    cfg, shares = result["config"], result["new_class_prediction_share"]
    return {"run": run_id(run), "strategy": run["strategy"], "loss": run["loss"], "prior": run["prior"],
            "window": cfg["prior_window"], "window_label": run["window"], "memory_size": run["memory_size"],
            "seed": run["seed"], "average_accuracy": result["average_incremental_accuracy"],
            "final_accuracy": result["last_accuracy"], "newest_task_prediction_share": shares[-1],
            "newest_task_prediction_share_mean": sum(shares) / len(shares), "forgetting": result["forgetting"],
            "train_time_s": result["train_time_s"], "posthoc": _posthoc(result),
            **{k: cfg[k] for k in SUMMARY_CONFIG_KEYS}}


def _posthoc(result: dict):
    """The run's post-hoc logit adjustment (accuracies, its prior), or None."""
    p = result.get("posthoc")
    return p and {"average_accuracy": p["average_incremental_accuracy"], "final_accuracy": p["last_accuracy"],
                  "newest_task_prediction_share": p["new_class_prediction_share"][-1], "prior": p["prior"],
                  "prior_window": p.get("prior_window")}


def with_posthoc(rows: list[dict]) -> list[dict]:
    """``rows`` plus one row per run with a post-hoc evaluation (method "ER + post-hoc ..."), same seed."""
    extra = [{**r, **r["posthoc"], "posthoc": None, "method": f"{method_name(r)} + post-hoc (window "
              f"{r['posthoc']['prior_window'] or 'auto'})"} for r in rows if r.get("posthoc")]
    return rows + extra


def method_name(r: dict) -> str:
    """A summary row's method, as the tables name it."""
    if "method" in r:
        return r["method"]
    method = {"replay": "ER", "er_ace": "ER-ACE"}[r["strategy"]] + (
        "" if r["loss"] == "ce" else " + BSCE " + (f"window {r['window']}" if r["prior"] == "window"
                                                   else "per-experience prior"))
    return method + (" (a whole task)" if r["window_label"] == "task" else "")


def _stat(values, scale=100.0, sign="") -> str:
    """One value, or mean ± std (``sign="+"``: differences, signed)."""
    values = [scale * v for v in values]
    return f"{values[0]:{sign}.1f}" if len(values) == 1 else \
        f"{statistics.mean(values):{sign}.1f} ± {statistics.stdev(values):.1f}"


def markdown_table(rows: list[dict]) -> str:
    """The runs as a Markdown table (mean ± std over seeds where there are several)."""
    groups: dict[tuple, list[dict]] = {}
    for r in with_posthoc(rows):
        groups.setdefault((r["memory_size"], method_name(r)), []).append(r)
    lines = ["| memory | method | seeds | average accuracy (%) | final accuracy (%) | newest-task share, last "
             "task (%) | train time (s) |", "|---|---|---|---|---|---|---|"]
    for (memory, method), group in groups.items():
        lines.append(f"| {memory} | {method} | {', '.join(str(r['seed']) for r in group)} | "
                     f"{_stat([r['average_accuracy'] for r in group])} | {_stat([r['final_accuracy'] for r in group])} | "
                     f"{_stat([r['newest_task_prediction_share'] for r in group])} | "
                     f"{_stat([r['train_time_s'] for r in group], 1.0)} |")
    return "\n".join(lines)


BASELINES = ("ER", "ER-ACE")


def gains_table(rows: list[dict]) -> str:
    """Each ER + BSCE method minus the strongest baseline at the same memory (by mean average accuracy over its
    seeds: ER, ER-ACE, ER + post-hoc), paired per seed (the seeds both ran), mean and 95% Student-t interval
    (``bsce_avalanche.runner.stats``)."""
    from bsce_avalanche.runner.stats import format_gain, paired_difference

    rows = with_posthoc(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["memory_size"], method_name(r)), []).append(r)
    lines = ["| memory | method | minus (strongest baseline) | seeds | average accuracy (points) | "
             "final accuracy (points) |", "|---|---|---|---|---|---|"]
    for (memory, method), group in groups.items():
        if "BSCE" not in method:
            continue
        baselines = [(statistics.mean(r["average_accuracy"] for r in g), name) for (m, name), g in groups.items()
                     if m == memory and (name in BASELINES or "post-hoc" in name)]
        if not baselines:
            continue
        baseline = max(baselines)[1]
        diffs = [paired_difference(group, groups[memory, baseline], lambda r, k=k: r[k])
                 for k in ("average_accuracy", "final_accuracy")]
        if diffs[0] is None:
            continue
        lines.append(f"| {memory} | {method} | {baseline} | {', '.join(map(str, diffs[0].seeds))} | "
                     + " | ".join(format_gain(d) for d in diffs) + " |")
    return "\n".join(lines)


def write_outputs(plan: list[dict], out: Path) -> list[dict]:
    """``OUTPUT_DIR.json``, ``OUTPUT_DIR/summary.md`` and ``OUTPUT_DIR/comparison-mem<M>/`` (``compare``'s table
    and figures, one per memory) from the finished runs; returns the summary's rows."""
    from bsce_avalanche.runner.compare import compare

    rows = _summary_rows(plan, out)
    if not rows:  # keep the summary there is: it is not this plan's to replace
        raise SystemExit(f"no finished run of this plan in {out} (made with another plan, e.g. with or without "
                         f"--tiny, or not run yet): {out.with_suffix('.json')} left as it is")
    write_json_atomic(out.with_suffix(".json"), rows)
    text = markdown_table(rows) + "\n\nBSCE minus the strongest baseline, paired per seed, 95% t-interval:\n\n" \
        + gains_table(rows) + "\n"
    (out / "summary.md").write_text(text)
    for memory in dict.fromkeys(r["memory_size"] for r in rows):
        paths = [out / r["run"] / "results.json" for r in rows if r["memory_size"] == memory]
        compare(paths, out / f"comparison-mem{memory}")
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding cifar100.npz (null: the runner's default)")
    parser.add_argument("--output-dir", default=str(ROOT / "experiments" / "results" / "cifar100_online_reservoir"),
                        help="run folders go here; the summary to OUTPUT_DIR.json")
    parser.add_argument("--tiny", action="store_true", help="split digits, for tests (seconds)")
    parser.add_argument("--budget-min", type=float, default=float("inf"),
                        help="start no run expected (median run time so far) to end after this many minutes")
    parser.add_argument("--max-runs", type=int, default=None, help="at most this many runs of the plan")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="run only every N-th run of the plan from the K-th (1-based): N processes, one per core, "
                             "share the plan; each rebuilds OUTPUT_DIR.json from all finished runs")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--compile-comparison", action="store_true",
                        help="train the plan's first run (ER) eager and with compile: true at once, one process each, "
                             "into OUTPUT_DIR-compile/; write results/compile_end_to_end_cpu.json (or --tiny: in "
                             "OUTPUT_DIR-compile/); run nothing else")
    only.add_argument("--table", action="store_true",
                        help="rebuild OUTPUT_DIR.json from the finished runs' folders and print it as a Markdown "
                             "table; run nothing")
    return parser


def _shard(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[int, int]:
    """``--shard K/N`` as (K, N); a malformed one (or ``--max-runs`` below 1) is a usage error."""
    try:
        shard, shards = (int(part) for part in args.shard.split("/"))
        if not 1 <= shard <= shards:
            raise ValueError
    except ValueError:
        parser.error(f"--shard {args.shard!r}: expected K/N with 1 <= K <= N, e.g. --shard 2/2")
    if args.max_runs is not None and args.max_runs < 1:
        parser.error(f"--max-runs must be >= 1 (runs from the start of the plan), got {args.max_runs}")
    return shard, shards


def main(argv=None) -> list[dict]:
    parser = _parser()
    args = parser.parse_args(argv)
    shard, shards = _shard(parser, args)
    out = Path(args.output_dir)
    plan = planned_runs(TINY_MEMORIES if args.tiny else MEMORIES)[: args.max_runs]
    base = {**PROTOCOL, **(TINY if args.tiny else {}), "data_dir": None if args.tiny else args.data_dir}
    if args.compile_comparison:
        return compile_comparison(config_of(plan[0], base, task_batches=0), Path(f"{out}-compile"),
                                  (out.parent if args.tiny else RESULTS) / "compile_end_to_end_cpu.json", argv)
    if args.table:
        rows = write_outputs(plan, out)
        print(markdown_table(rows) + "\n\n" + gains_table(rows))
        return rows
    warnings.simplefilter("ignore")
    return train(plan[shard - 1::shards], plan, base, out, args.budget_min)


def _task_batches(base: dict) -> int:
    """Mini-batches in a task ("a whole task", B0: equal tasks): the first task's; no data is a one-line exit."""
    from bsce_avalanche.runner.experiment import build_benchmark

    base_cfg = ExperimentConfig(**base)
    try:
        first = build_benchmark(base_cfg).train_stream[0]
    except (ConfigError, OSError) as err:  # e.g. no CIFAR-100 in --data-dir: the loader's one line
        raise SystemExit(f"cifar100_online.py: {err}") from None
    return math.ceil(len(first.dataset) / base_cfg.batch_size)


def train(runs: list[dict], plan: list[dict], base: dict, out: Path, budget_min: float) -> list[dict]:
    """Train (or resume) ``runs`` of ``plan`` one at a time through the runner's path (``run_resumably``:
    :func:`bsce_avalanche.runner.runs.run_each`, its interrupt handling), a line each; ``OUTPUT_DIR.json`` after
    every run, and the outputs of :func:`write_outputs` at the end. A run that would end after ``budget_min``
    minutes (at the median time of the runs trained so far) does not start."""
    from bsce_avalanche.runner.plans import run_resumably

    task_batches = _task_batches(base)
    times, start = [], time.time()
    for run in runs:
        i, name = plan.index(run), run_id(run)
        finished = _finished(out / name) is not None
        elapsed = (time.time() - start) / 60
        if not finished and times and elapsed + statistics.median(times) / 60 > budget_min:
            print(f"[{i + 1}/{len(plan)}] {name}: not started (budget {budget_min:g} min, {elapsed:.1f} min used)",
                  flush=True)
            continue
        t0 = time.time()
        run_resumably([config_of(run, base, task_batches)], out, 1, keep_going=False, say=_silent,
                      folder=lambda _, name=name: name)
        if not finished:
            times.append(time.time() - t0)
        r = row(run, _finished(out / name))
        print(f"[{i + 1}/{len(plan)}] {r['run']}: average {100 * r['average_accuracy']:.2f}%, final "
              f"{100 * r['final_accuracy']:.2f}%, newest-task share {100 * r['newest_task_prediction_share']:.1f}%, "
              f"train {r['train_time_s']:.0f} s{' (done before)' if finished else ''}", flush=True)
        write_json_atomic(out.with_suffix(".json"), _summary_rows(plan, out))
    return write_outputs(plan, out)


def _silent(*args, **kwargs) -> None:
    """The runner's line per run: this script prints its own (accuracies, newest-task share)."""


def compile_comparison(cfg: ExperimentConfig, out: Path, summary: Path, argv) -> dict:
    """Eager vs ``compile: true`` end to end: ``cfg`` trained both ways at once (two processes of the runner's
    pool, one core each: the same machine load); step times (compilation included), train times and accuracies."""
    from bsce_avalanche.runner.runs import _run_in_processes, exit_on_sigterm

    variants, start, wall = ("eager", "compiled"), time.time(), {}
    configs = [cfg.replace(compile=v == "compiled", first_experience_cache=False) for v in variants]
    exit_on_sigterm()
    for run_cfg, _ in _run_in_processes(configs, out, resume=False, jobs=2, overwrite=True,
                                        folder=lambda c: variants[c.compile]):
        wall[variants[run_cfg.compile]] = time.time() - start  # a run's error is raised here
    runs = {v: json.loads((out / v / "results.json").read_text()) for v in variants}
    result = {"description": "One run of the online protocol trained eager and with compile: true at once (two "
                             "processes): whether the CPU evidence scripts gain from compiling, compilation included.",
              "command": "python experiments/cifar100_online.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "config": runs["eager"]["config"], "environment": runs["eager"]["environment"],
              "load_average_1min_end": os.getloadavg()[0]}
    for v in variants:
        result[v] = {"step_times_s": [round(t, 1) for t in runs[v]["step_times_s"]],
                     "train_time_s": round(runs[v]["train_time_s"], 1), "wall_s": round(wall[v], 1),
                     "average_incremental_accuracy": runs[v]["average_incremental_accuracy"],
                     "last_accuracy": runs[v]["last_accuracy"]}
        print(f"{v:>8}: train {result[v]['train_time_s']:.0f} s, steps {result[v]['step_times_s']}, "
              f"average accuracy {100 * result[v]['average_incremental_accuracy']:.2f}%", flush=True)
    result["train_time_ratio_eager_over_compiled"] = round(result["eager"]["train_time_s"]
                                                           / result["compiled"]["train_time_s"], 3)
    write_json_atomic(summary, result)
    print(f"-> {summary}")
    return result


def _finished(run_dir: Path) -> dict | None:
    """The run's results if it finished, else None."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        raise SystemExit(f"{path} is not valid JSON (truncated or edited): delete its run folder to train the run "
                         "again") from None
    if problem := results_problem(result):
        raise SystemExit(f"{path} {problem}{problem_cause(problem)}: delete its run folder to train the run again")
    return result if result.get("finished") else None


def _summary_rows(plan: list[dict], out: Path) -> list[dict]:
    """One row per finished run of the plan, in the plan's order, read from the run folders (so that
    processes running other shards of the plan are counted too)."""
    return [row(run, result) for run in plan if (result := _finished(out / run_id(run))) is not None]


if __name__ == "__main__":
    main()
