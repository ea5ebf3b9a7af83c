"""Does BSCE's gain survive longer training? Replay + CE (with its post-hoc logit adjustment, from the same
evaluation), Replay + BSCE and ER-ACE at 1, 3, 10 and 30 epochs per step on the section 4 protocol.

    python experiments/cifar100_cpu_epochs.py --data-dir ../shared/data/cifar100   # the plan (resumable; days of CPU)
    python experiments/cifar100_cpu_epochs.py --data-dir DIR --only NAME ...        # some runs
    python experiments/cifar100_cpu_epochs.py --tiny --output-dir /tmp/x             # seconds (tests)

``experiments/configs/cifar100_cpu_concat.yaml`` (real CIFAR-100, B0-10, memory 2000 concatenated, ResNet-8
width 16, SGD lr 0.1, batch 128) with ``epochs`` E and the schedule scaled the same way at every length: lr / 10
for the last tenth of the epochs (milestone floor(0.9 E): [2] at 3 epochs, as section 4; [9] at 10, [27] at 30;
none at 1). The Replay runs also report the nearest-class-mean accuracy of their features, class means from the
memory (``ncm_diagnostic``): does BSCE change the representation, or only the classifier's bias? Seeds 0, 1, 2 at
1, 3 and 10 epochs, seed 0 at 30, compiled (``COMPILED``), in that order: the plan's cheap runs first. Writes
``OUTPUT_DIR.json``, ``OUTPUT_DIR/comparison.md`` with the table of gains against epochs (BSCE minus CE, minus
CE + post-hoc LA and minus ER-ACE, paired per seed with 95% t-intervals) and ``gain_vs_epochs.png`` (the H100
run of ``results/gpu_h100_cifar100_paper``, ResNet-32 at 30 epochs, one seed, drawn apart).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bsce_avalanche.runner.fileio import write_text_atomic
from bsce_avalanche.runner.labels import POSTHOC_LABEL
from bsce_avalanche.runner.plans import Plan, run_plan
from bsce_avalanche.runner.stats import format_gain, format_mean_std, paired_difference

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "cifar100_cpu_concat.yaml"
EPOCHS = (1, 3, 10, 30)
#: The rows: (name, method label) of the summary rows; the first is BSCE.
METHODS = (("Replay + BSCE", "replay-bsce-concat"), ("Replay + CE", "replay-ce-concat"),
           ("Replay + CE + post-hoc LA", "replay-ce-concat" + POSTHOC_LABEL), ("ER-ACE", "er_ace-ce"))
H100 = ROOT / "experiments" / "results" / "gpu_h100_cifar100_paper"


def schedule(epochs: int) -> list[int]:
    """lr / 10 for the last tenth of the epochs: the milestone floor(0.9 E) (none at 1 epoch)."""
    return [int(0.9 * epochs)] if epochs > 1 else []


#: Lengths trained with ``compile: true``: at 30 epochs per step the compiled run of Replay + CE, seed 0, took
#: 2724 s against 3420 s eager, trained at once (RESULTS.md 4c, results/compile_end_to_end_30epochs); below 10
#: epochs compiling did not pay, and the 10-epoch runs predate the measurement.
COMPILED = (30,)


def planned_runs(seeds=(0, 1, 2)) -> list[dict]:
    """Per length (shortest first) and seed: Replay CE and BSCE (with the NCM diagnostic), ER-ACE."""
    runs = []
    for epochs in EPOCHS:
        for seed in seeds if epochs < 30 else seeds[:1]:  # 30 epochs: the first seed (hours per run on one core)
            common = {"epochs": epochs, "lr_milestones": schedule(epochs), "seed": seed,
                      **({"compile": True} if epochs in COMPILED else {})}
            runs += [{**common, "strategy": "replay", "loss": loss, "ncm_diagnostic": True} for loss in ("ce", "bsce")]
            runs.append({**common, "strategy": "er_ace", "loss": "ce"})
    return runs


def _length(results: dict) -> tuple[int, bool]:
    """A run's training length and whether it trained compiled: the runs of one table row (a compiled run is
    paired with the compiled runs of its length only, as its first step is theirs)."""
    return results["config"]["epochs"], bool(results["config"].get("compile"))


def _length_name(length: tuple[int, bool]) -> str:
    return f"{length[0]}, compiled" if length[1] else str(length[0])


def gains_table(rows: list[dict], base: Path) -> tuple[str, dict]:
    """Per length: seeds, step-0, each method's average incremental / last accuracy, NCM (Replay), and BSCE minus
    each baseline paired per seed with its 95% t-interval; also the gains by length, for the figure."""
    by, ncm = defaultdict(list), {}
    for r in rows:
        results = json.loads((base / r["path"]).read_text())
        by[(_length(results), r["method"])].append(r)
        if "ncm" in results and not r["method"].endswith(POSTHOC_LABEL):
            ncm[(_length(results), r["method"], r["seed"])] = results["ncm"]
    lines = ["| epochs / step | seeds | step-0 acc. (%) | " + " | ".join(f"{n}: avg. inc. / last (%)" for n, _ in METHODS)
             + " | NCM on CE's / BSCE's features, last (%) | BSCE − CE | BSCE − CE + post-hoc LA | BSCE − ER-ACE |",
             "|---|---|---|" + "---|" * len(METHODS) + "---|---|---|---|"]
    gains = {}
    for length in sorted({length for length, _ in by}):
        bsce = by.get((length, METHODS[0][1]), [])
        if not bsce:
            continue
        cells = []
        for _, label in METHODS:
            group = by.get((length, label), [])
            cells.append(f"{format_mean_std([r['average_incremental_accuracy'] for r in group])} / "
                         f"{format_mean_std([r['last_accuracy'] for r in group])}" if group else "–")
        ncm_cells = [format_mean_std([v["last_accuracy"] for (e, m, _), v in ncm.items() if e == length and m == label])
                     for label in ("replay-ce-concat", "replay-bsce-concat")]
        diffs = []
        for _, label in METHODS[1:]:
            pair = [paired_difference(bsce, by.get((length, label), []), lambda r, k=k: r[k])
                    for k in ("average_incremental_accuracy", "last_accuracy")]
            gains[(length, label)] = pair
            diffs.append(" / ".join(format_gain(d) for d in pair))
        lines.append(f"| {_length_name(length)} | {len(bsce)} | {format_mean_std([r['step0_accuracy'] for r in bsce])} | "
                     + " | ".join(cells) + f" | {ncm_cells[0]} / {ncm_cells[1]} | " + " | ".join(diffs) + " |")
    return "\n".join(lines) + "\n", gains


def _h100_gain() -> dict:
    """The H100 run (ResNet-32, 30 epochs, seed 0): BSCE - CE and step-0 accuracy, if its results are there."""
    try:
        runs = {d.name.split("-seed")[0]: json.loads((d / "results.json").read_text()) for d in H100.iterdir()
                if (d / "results.json").exists()}
        ce, bsce = runs["replay-ce-concat"], runs["replay-bsce-concat"]
    except (OSError, KeyError, ValueError):
        return {}
    return {k: 100 * (bsce[k] - ce[k]) for k in ("average_incremental_accuracy", "last_accuracy")} | {
        "step0": 100 * bsce["steps"][0]["accuracy_seen"]}


def plot_gains(gains: dict, rows: list[dict], base: Path, path: Path) -> None:
    """Gain (95% interval where 3 or more seeds) and step-0 accuracy against epochs per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, label), color in zip(METHODS[1:], ("tab:blue", "tab:orange", "tab:brown")):
        points = sorted((e, d) for ((e, _), lab), (d, _) in gains.items() if lab == label and d is not None)
        if not points:
            continue
        x = [e for e, _ in points]
        mean = [100 * d.mean for _, d in points]
        low = [100 * (d.mean - d.low) if d.n >= 3 else 0 for _, d in points]
        high = [100 * (d.high - d.mean) if d.n >= 3 else 0 for _, d in points]
        left.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, color=color, label=f"BSCE − {name}")
    h100 = _h100_gain()
    if h100:
        left.scatter([30], [h100["average_incremental_accuracy"]], marker="*", s=140, color="black", zorder=5,
                     label="BSCE − CE, H100: ResNet-32, one seed")
        right.scatter([30], [h100["step0"]], marker="*", s=140, color="black", zorder=5,
                      label="H100: ResNet-32, one seed")
    left.axhline(0, color="gray", lw=0.8)
    left.set(xscale="log", xticks=EPOCHS, xticklabels=[str(e) for e in EPOCHS], xlabel="epochs per step",
             ylabel="gain in average incremental accuracy (points)",
             title="BSCE's gain (bars: 95% t-interval, 3 seeds)")
    step0 = defaultdict(list)
    for r in rows:
        if r["method"] == METHODS[0][1]:
            step0[_length(json.loads((base / r["path"]).read_text()))[0]].append(100 * r["step0_accuracy"])
    xs = sorted(step0)
    right.plot(xs, [np.mean(step0[e]) for e in xs], marker="o", label="ResNet-8, this CPU protocol")
    right.set(xscale="log", xticks=EPOCHS, xticklabels=[str(e) for e in EPOCHS], xlabel="epochs per step",
              ylabel="step-0 accuracy (%)", title="How trained the first step is")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict], out: Path) -> None:
    table, gains = gains_table(rows, out.parent)
    plot_gains(gains, rows, out.parent, out / "gain_vs_epochs.png")
    text = (out / "comparison.md").read_text()
    text += ("\n## BSCE's gain against training length\n\nPaired per seed (the runs of a seed and length share "
             "their first-step model where they train it alike); mean and 95% t-interval in points, average "
             "incremental / last accuracy; 'level within noise' where the interval contains 0.\n\n" + table
             + "\n![gain_vs_epochs](gain_vs_epochs.png)\n")
    write_text_atomic(out / "comparison.md", text)


PLAN = Plan(planned_runs, ROOT / "experiments" / "results" / "cifar100_cpu_epochs", CONFIG, report=report)


def main(argv=None) -> list[dict]:
    return run_plan(argv, PLAN, __doc__)


if __name__ == "__main__":
    main()
