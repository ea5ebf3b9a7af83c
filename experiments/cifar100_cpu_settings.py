"""Does BSCE's gain hold beyond B0-10? Replay + CE (with its post-hoc logit adjustment) and Replay + BSCE on the
CIFAR-100 settings of the literature, at the section 4 protocol (3 epochs per step, memory 2000 concatenated).

    python experiments/cifar100_cpu_settings.py --data-dir ../shared/data/cifar100           # every setting
    python experiments/cifar100_cpu_settings.py --data-dir DIR --settings B0-5 B50-10         # some
    python experiments/cifar100_cpu_settings.py --table                                        # the summary only
    python experiments/cifar100_cpu_settings.py --tiny --output-dir /tmp/x                     # seconds (tests)

The settings of iCaRL and BiC (B0 with 5, 20, 50 steps) and of LUCIR and PODNet (B50, then 5, 10, 25 steps);
B0-10 is section 4's (``results/cifar100_cpu_concat``). One folder per setting,
``OUTPUT_DIR/<setting>/`` (``compare`` tables one setting at a time), each resumable, the first experience
shared per seed as in section 4, seeds 0, 1, 2. ``OUTPUT_DIR/summary.md``: per setting the imbalance ratio at
the last step (new samples per class : memory samples per old class), CE, CE + post-hoc LA and BSCE, and BSCE's
gain over each, paired per seed with its 95% t-interval; ``gain_vs_steps.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from bsce_avalanche.runner.fileio import write_text_atomic
from bsce_avalanche.runner.labels import POSTHOC_LABEL
from bsce_avalanche.runner.plans import Plan, run_plan, summary_rows
from bsce_avalanche.runner.results import load_results
from bsce_avalanche.runner.stats import format_gain, format_mean_std, paired_difference

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "cifar100_cpu_concat.yaml"
#: name -> (protocol, steps)
SETTINGS = {"B0-5": ("B0", 5), "B0-10": ("B0", 10), "B0-20": ("B0", 20), "B0-50": ("B0", 50),
            "B50-5": ("B50", 5), "B50-10": ("B50", 10), "B50-25": ("B50", 25)}
#: B0-10 is section 4's grid: its runs are read from there.
EXISTING = {"B0-10": ROOT / "experiments" / "results" / "cifar100_cpu_concat"}
TRAIN_PER_CLASS, MEMORY = 500, 2000
METHODS = (("Replay + CE", "replay-ce-concat"), ("Replay + CE + post-hoc LA", "replay-ce-concat" + POSTHOC_LABEL),
           ("Replay + BSCE", "replay-bsce-concat"))


def imbalance_ratio(protocol: str, steps: int, n_classes: int = 100) -> float:
    """New samples per class : memory samples per old class, at the last step (the memory shared by the classes
    of the earlier steps)."""
    first = int(protocol[1:])
    old = n_classes - (n_classes - first) // steps  # all but the last step's classes
    return TRAIN_PER_CLASS / (MEMORY / old)


def plan_for(setting: str) -> Plan:
    protocol, steps = SETTINGS[setting]

    def runs(seeds=(0, 1, 2)) -> list[dict]:
        return [{"protocol": protocol, "n_steps": steps, "strategy": "replay", "loss": loss, "seed": seed}
                for seed in seeds for loss in ("ce", "bsce")]

    return Plan(runs, ROOT / "experiments" / "results" / "cifar100_cpu_settings" / setting, CONFIG)


def summary(out: Path, tiny: bool = False, write: bool = True) -> str:
    """The table across settings (those with finished runs) and, with ``write``, the figure and ``out/summary.md``."""
    lines = ["| setting | steps | imbalance at the last step (new : old per class) | seeds | "
             + " | ".join(f"{n}: avg. inc. / last (%)" for n, _ in METHODS)
             + " | BSCE − CE | BSCE − CE + post-hoc LA |", "|---|---|---|---|" + "---|" * len(METHODS) + "---|---|"]
    points = []
    for setting, (protocol, steps) in SETTINGS.items():
        folder = EXISTING.get(setting) if not tiny else None
        folder = folder or out / setting
        if not any(folder.glob("*/results.json")):  # not started, or its first run still before its first step
            continue
        runs = [r for r in load_results([folder]) if r.get("finished") and r["config"]["strategy"] == "replay"
                and r["config"].get("replay") == "concat" and not r["config"].get("weight_aligning")
                and r["config"]["prior"] == "auto" and r["config"]["tau"] in (0.0, 1.0)]
        by = defaultdict(list)
        for row in summary_rows(runs, folder.parent):
            by[row["method"]].append(row)
        bsce = by.get(METHODS[-1][1], [])
        if not bsce:
            continue
        cells = [f"{format_mean_std([r['average_incremental_accuracy'] for r in by[label]])} / "
                 f"{format_mean_std([r['last_accuracy'] for r in by[label]])}" for _, label in METHODS]
        gains = [[paired_difference(bsce, by[label], lambda r, k=k: r[k])
                  for k in ("average_incremental_accuracy", "last_accuracy")] for _, label in METHODS[:2]]
        points.append((steps, protocol, gains))
        lines.append(f"| {setting} | {steps} | {imbalance_ratio(protocol, steps):.1f} : 1 | {len(bsce)} | "
                     + " | ".join(cells) + " | " + " | ".join(" / ".join(map(format_gain, g)) for g in gains) + " |")
    text = ("# BSCE across the CIFAR-100 settings (3 epochs per step, memory 2000 concatenated)\n\nPaired per seed; "
            "mean and 95% t-interval in points (average incremental / last accuracy).\n\n" + "\n".join(lines) + "\n")
    if not write:
        return text
    out.mkdir(parents=True, exist_ok=True)
    if points:
        _plot(points, out / "gain_vs_steps.png")
        text += "\n![gain_vs_steps](gain_vs_steps.png)\n"
    write_text_atomic(out / "summary.md", text)
    return text


def _plot(points, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for index, (name, color) in enumerate((("CE", "tab:blue"), ("CE + post-hoc LA", "tab:orange"))):
        for protocol, marker in (("B0", "o"), ("B50", "s")):
            chosen = sorted((s, g[index][0]) for s, p, g in points if p == protocol and g[index][0] is not None)
            if not chosen:
                continue
            x = [s for s, _ in chosen]
            y = [100 * d.mean for _, d in chosen]
            err = [[100 * (d.mean - d.low) if d.n >= 3 else 0 for _, d in chosen],
                   [100 * (d.high - d.mean) if d.n >= 3 else 0 for _, d in chosen]]
            ax.errorbar(x, y, yerr=err, marker=marker, color=color, capsize=3, label=f"BSCE − {name}, {protocol}")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(xscale="log", xlabel="incremental steps", ylabel="gain in average incremental accuracy (points)",
           title="BSCE's gain across settings (bars: 95% t-interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--settings", nargs="+", choices=[s for s in SETTINGS if s not in EXISTING],
                        default=[s for s in SETTINGS if s not in EXISTING])
    parser.add_argument("--output-dir", default=str(ROOT / "experiments" / "results" / "cifar100_cpu_settings"))
    parser.add_argument("--table", action="store_true", help="rebuild summary.md from the finished runs only")
    parser.add_argument("--help", "-h", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        print(__doc__)
        print("Options: --settings NAME ... (default: all but B0-10), --output-dir DIR, --table, and those of "
              "every evidence script: --data-dir, --seeds, --workers, --only, --set, --tiny.")
        return ""
    out = Path(args.output_dir)
    tiny = "--tiny" in rest
    if not args.table:
        for setting in args.settings:
            plan = plan_for(setting)
            print(f"== {setting}", flush=True)
            run_plan([*rest, "--output-dir", str(out / setting)], plan, __doc__)
    text = summary(out, tiny=tiny)
    print(text)
    return text


if __name__ == "__main__":
    main()
