"""Print the markdown tables of experiments/RESULTS.md from the raw result files.

    python experiments/report.py

Reads ``experiments/results/cifar100_cpu.json`` (written by ``cifar100_cpu.py``),
``experiments/results/cifar100_cpu_concat.json`` (``cifar100_cpu_concat.py``),
``experiments/results/cifar100_cpu_timing.json`` (``cifar100_cpu.py --only ... --workers 1``) and
``experiments/results/overhead.json`` (``overhead.py``).
"""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from pathlib import Path

from bsce_avalanche.runner.plans import group_rows
from bsce_avalanche.runner.stats import format_mean_std

RESULTS = Path(__file__).resolve().parent / "results"


def cifar_table(rows: list[dict], base: Path = RESULTS) -> str:
    """One line per method, mean ± std over its seeds: the rows pooled as ``compare`` pools runs (label and settings:
    runner.plans.group_rows, which reads each row's results.json from ``base``)."""
    groups = group_rows(rows, base)
    lines = [
        "| method | seeds | avg. incremental acc. (%) | last acc. (%) | old acc., last step (%) "
        "| new acc., last step (%) | predictions to newest classes, last step (%) | forgetting (%) | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(groups):
        g = groups[name]
        lines.append(
            f"| {name} | {len(g)} | {format_mean_std([r['average_incremental_accuracy'] for r in g])} "
            f"| {format_mean_std([r['last_accuracy'] for r in g])} | {format_mean_std([r['old_accuracy_last_step'] for r in g])} "
            f"| {format_mean_std([r['new_accuracy_last_step'] for r in g])} "
            f"| {format_mean_std([r['new_class_prediction_share_last_step'] for r in g])} "
            f"| {format_mean_std([r['forgetting'] for r in g])} | {format_mean_std([r['train_time_s'] for r in g], 1.0, 0)} |"
        )
    return "\n".join(lines)


def paired_differences(rows: list[dict], strategy="replay") -> str:
    """BSCE - CE per seed (same seed, same data order at the start), within a rehearsal protocol."""
    by_seed = defaultdict(list)
    for r in rows:
        if r["strategy"] == strategy:
            by_seed[(r["seed"], r.get("replay") or "")].append(r)
    lines = []
    for seed, protocol in sorted(by_seed):
        group = by_seed[(seed, protocol)]
        ce = next((r for r in group if r["loss"] == "ce"), None)
        for run in sorted(group, key=lambda r: r["method"]):
            if ce is None or run is ce:
                continue
            lines.append(
                f"| {seed} | {run['method']} | {100 * (run['average_incremental_accuracy'] - ce['average_incremental_accuracy']):+.1f} "
                f"| {100 * (run['last_accuracy'] - ce['last_accuracy']):+.1f} |"
            )
    head = "| seed | method | Δ avg. incremental acc. vs CE (points) | Δ last acc. vs CE (points) |\n|---|---|---|---|\n"
    return head + "\n".join(lines)


def timing_table(rows: list[dict]) -> str:
    """Total training time per run (BiC's includes its bias-correction stage)."""
    lines = ["| method | train time (s), all 10 steps | per step (s) | avg. incremental acc. (%) |", "|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["train_time_s"]):
        steps = ", ".join(f"{t:.0f}" for t in row["step_times_s"])
        lines.append(f"| {row['method']} | {row['train_time_s']:.0f} | {steps} | "
                     f"{100 * row['average_incremental_accuracy']:.1f} |")
    return "\n".join(lines)


def overhead_table(data: dict) -> str:
    p = data["prior_time"]
    return "\n".join([
        "| measure | value |",
        "|---|---|",
        f"| BSCE / CE time per training iteration, median over {data['rounds']} interleaved rounds "
        f"| {data['ratio_median']:.4f} (min {data['ratio_min']:.4f}, max {data['ratio_max']:.4f}) |",
        f"| median iteration time, CE / BSCE ({data['model']}, batch {data['batch_size']}) "
        f"| {1000 * data['iteration_s_median']['ce']:.1f} ms / {1000 * data['iteration_s_median']['bsce']:.1f} ms |",
        f"| prior per experience, CIFAR-100 scale ({p['cifar100']['labels_in_experience']:,} + "
        f"{p['cifar100']['memory']:,} labels) | {p['cifar100']['ms_median']:.2f} ms |",
        f"| prior per experience, ImageNet scale ({p['imagenet']['labels_in_experience']:,} + "
        f"{p['imagenet']['memory']:,} labels of a 1,281,167-label dataset) | {p['imagenet']['ms_median']:.1f} ms |",
    ])


def main() -> None:
    cifar = RESULTS / "cifar100_cpu.json"
    if cifar.exists():
        rows = json.loads(cifar.read_text())
        print("## CIFAR-100, reduced CPU protocol\n")
        print(cifar_table(rows))
        print("\n### Replay: BSCE minus CE, per seed\n")
        print(paired_differences(rows))
    concat = RESULTS / "cifar100_cpu_concat.json"
    if concat.exists():
        rows = json.loads(concat.read_text())
        spec = importlib.util.spec_from_file_location("cifar100_cpu_concat", Path(__file__).with_name("cifar100_cpu_concat.py"))
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        print("\n## CIFAR-100, memory concatenated into the training set (longer CPU protocol)\n")
        print(cifar_table(rows))
        print("\n### Replay under both rehearsal protocols\n")
        print(script.protocols_table(rows))
        print("### Replay: BSCE minus CE, per seed and protocol\n")
        print(paired_differences(rows))
        print("\n### tau sweep (Replay + BSCE, concat)\n")
        print(script.tau_table(script.tau_sweep(rows)))
    timing = RESULTS / "cifar100_cpu_timing.json"
    if timing.exists():
        print("\n## Training time on the idle machine (one run at a time)\n")
        print(timing_table(json.loads(timing.read_text())))
    overhead = RESULTS / "overhead.json"
    if overhead.exists():
        print("\n## Cost\n")
        print(overhead_table(json.loads(overhead.read_text())))


if __name__ == "__main__":
    main()
