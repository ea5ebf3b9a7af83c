"""CIFAR-100 evidence under the paper's rehearsal protocol (memory concatenated into the training set).

    python experiments/cifar100_cpu_concat.py --data-dir ../shared/data/cifar100    # the grid (see RESULTS.md)
    python experiments/cifar100_cpu_concat.py --tiny --output-dir /tmp/x             # seconds (tests)

The longer CPU protocol, ``experiments/configs/cifar100_cpu_concat.yaml`` (full-width ResNet-8, 3 epochs per
step, lr 0.1 then 0.01 for the last epoch; real CIFAR-100, B0 with 10 steps, memory 2000 concatenated, class
order "icarl"), every baseline at its own recipe (the config's ``recipes``). Runs, seeds 0, 1, 2 unless said:

* Replay + CE vs Replay + BSCE; Replay + BSCE with ``prior=dataset`` (seed 0: under concatenation the loader
  draws each sample once per epoch, so it is the same prior as ``auto``); a tau sweep of Replay + BSCE
  (seed 0: 0, 0.5, 1.5, 2; tau 0 adds a zero vector: it is Replay + CE);
* iCaRL, three rows: its own loss and recipe (sigmoid BCE, ``loss: ce``), softmax CE with the same
  distillation as iCaRL + BSCE (``loss: bsce, tau: 0``: the ablation), iCaRL + BSCE; each evaluated with
  NME and with the trained head;
* LwF + memory + CE vs + BSCE; BiC at its recipe (PyCIL's, Avalanche's second stage) on the same concatenated
  rehearsal, its validation split inside the 2000 (``bic-ce-concat``: compat.ConcatRehearsalBiCPlugin); ER-ACE;
* Replay + CE vs Replay + BSCE under Avalanche's ``half_batch`` protocol, for the side-by-side table.

The runs of a seed start from one first-experience model per way of training it
(``OUTPUT_DIR/first_experience/``). Two worker processes, one torch thread each; a re-run skips finished
runs and resumes interrupted ones. Writes ``OUTPUT_DIR.json`` (the fields of ``cifar100_cpu.json`` plus
``replay``, ``tau`` and ``recipe``), ``OUTPUT_DIR/comparison.md`` (with the fair comparison per family,
the protocols side by side, BSCE - CE per seed and the tau sweep) and the plots, ``tau_sweep.png`` included.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bsce_avalanche.runner.compare import format_mean_std
from bsce_avalanche.runner.fileio import write_text_atomic
from bsce_avalanche.runner.plans import Plan, run_plan

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "cifar100_cpu_concat.yaml"
TAUS = (0.0, 0.5, 1.0, 1.5, 2.0)
#: The method families of the fair comparison: (family, [(row name, method label)], CE baselines, BSCE row).
FAMILIES = (
    ("iCaRL (NME)", [("iCaRL, its own loss and recipe", "icarl-ce-nme"),
                     ("iCaRL, softmax CE (BSCE with tau 0)", "icarl-bsce-nme-tau0"),
                     ("iCaRL + BSCE", "icarl-bsce-nme")]),
    ("iCaRL (trained head)", [("iCaRL, its own loss and recipe", "icarl-ce-head"),
                              ("iCaRL, softmax CE (BSCE with tau 0)", "icarl-bsce-head-tau0"),
                              ("iCaRL + BSCE", "icarl-bsce-head")]),
    ("LwF + memory", [("LwF + memory + CE", "lwf+mem-ce-concat"), ("LwF + memory + BSCE", "lwf+mem-bsce-concat")]),
    ("Replay", [("Replay + CE", "replay-ce-concat"), ("Replay + BSCE", "replay-bsce-concat")]),
    ("peers", [("BiC (its recipe)", "bic-ce-concat"), ("ER-ACE", "er_ace-ce")]),
)


def planned_runs(seeds=(0, 1, 2)) -> list[dict]:
    """Config overrides of every run, in the order they start: BiC (the longest) and iCaRL first, the iCaRL
    rows staggered so that the two workers do not both train the same first experience, then LwF."""
    first = seeds[0]
    icarl = [[{"strategy": "icarl", "loss": "ce", "seed": seed}, {"strategy": "icarl", "loss": "bsce", "tau": 0.0,
                                                                  "seed": seed},
              {"strategy": "icarl", "loss": "bsce", "seed": seed}] for seed in seeds]
    runs = [{"strategy": "bic", "loss": "ce", "seed": first}, icarl[0][0]]
    staggered = [icarl[i][k] for d in range(1, 3 + len(seeds)) for k in range(3) for i in range(len(seeds))
                 if i + k == d]  # the rows of seed i, k-th, start at d = i + k
    staggered = [r for r in staggered if r is not icarl[0][0]]
    for position, seed in zip((1, 5), seeds[1:]):  # BiC's other seeds early: the longest runs
        staggered.insert(position, {"strategy": "bic", "loss": "ce", "seed": seed})
    runs += staggered
    runs += [{"strategy": "lwf", "lwf_memory": True, "loss": loss, "seed": seed} for seed in seeds
             for loss in ("ce", "bsce")]
    for loss in ("ce", "bsce"):
        runs += [{"strategy": "replay", "loss": loss, "seed": seed} for seed in seeds]
    runs.append({"strategy": "replay", "loss": "bsce", "prior": "dataset", "seed": first})
    runs += [{"strategy": "replay", "loss": "bsce", "tau": tau, "seed": first} for tau in TAUS if tau != 1]
    for loss in ("ce", "bsce"):
        runs += [{"strategy": "replay", "loss": loss, "seed": seed, "replay": "half_batch"} for seed in seeds]
    runs += [{"strategy": "er_ace", "loss": "ce", "seed": seed} for seed in seeds]  # the closest peer
    return runs


def fair_table(rows: list[dict]) -> str:
    """One row per method of each family: seeds, recipe, step-0, average incremental and last accuracy,
    newest-class share; then BSCE minus the stronger CE baseline of its family (paired per seed)."""
    by_method = defaultdict(list)
    for r in rows:
        if r["strategy"] != "replay" or (r["prior"] in (None, "auto") and r["tau"] in (None, 0.0, 1.0)):
            by_method[r["method"]].append(r)
    metrics = (("step0_accuracy", "step-0 acc. (%)"), ("average_incremental_accuracy", "avg. incremental acc. (%)"),
               ("last_accuracy", "last acc. (%)"),
               ("new_class_prediction_share_last_step", "predictions to newest classes, last step (%)"))
    lines = ["| family | method | recipe | seeds | " + " | ".join(h for _, h in metrics) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    gains = ["| family | BSCE vs the stronger baseline | avg. incremental acc. (points) | last acc. (points) |",
             "|---|---|---|---|"]
    for family, methods in FAMILIES:
        present = [(name, label) for name, label in methods if by_method.get(label)]
        for name, label in present:
            group = by_method[label]
            recipe = group[0].get("recipe") or "shared"
            lines.append(f"| {family} | {name} | {recipe} | {len(group)} | "
                         + " | ".join(format_mean_std([r[key] for r in group]) for key, _ in metrics) + " |")
        bsce = [label for _, label in present if "-bsce" in label and "tau0" not in label]
        baselines = [label for _, label in present if label not in bsce]
        if not bsce or not baselines:
            continue
        cells = []
        for key in ("average_incremental_accuracy", "last_accuracy"):
            strongest = max(baselines, key=lambda b: np.mean([r[key] for r in by_method[b]]))
            base = {r["seed"]: r[key] for r in by_method[strongest]}
            diffs = [r[key] - base[r["seed"]] for r in by_method[bsce[0]] if r["seed"] in base]
            cells.append(f"{format_mean_std(diffs)} vs {strongest} ({len(diffs)} seeds: "
                         + ", ".join(f"{100 * d:+.1f}" for d in diffs) + ")")
        gains.append(f"| {family} | {bsce[0]} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n\n" + "\n".join(gains) + "\n"


def _replay_rows(rows: list[dict]) -> list[dict]:
    """Replay with the default prior, by protocol, loss and seed (tau 1 for BSCE)."""
    return [r for r in rows if r["strategy"] == "replay" and r["prior"] in (None, "auto") and r["tau"] in (None, 1.0)]


def protocols_table(rows: list[dict]) -> str:
    """Replay + CE / + BSCE under concat and half_batch, side by side, and BSCE - CE per seed."""
    cell = {}
    by_seed = defaultdict(dict)
    for r in _replay_rows(rows):
        cell.setdefault((r["replay"], r["loss"]), []).append(r)
        by_seed[(r["replay"], r["seed"])][r["loss"]] = r
    lines = ["| protocol | loss | seeds | avg. incremental acc. (%) | last acc. (%) | "
             "predictions to newest classes, last step (%) | BSCE − CE, avg. inc. acc. (points) | "
             "BSCE − CE, last acc. (points) |", "|---|---|---|---|---|---|---|---|"]
    for protocol in ("concat", "half_batch"):
        deltas = [(pair["bsce"]["average_incremental_accuracy"] - pair["ce"]["average_incremental_accuracy"],
                   pair["bsce"]["last_accuracy"] - pair["ce"]["last_accuracy"])
                  for (p, _), pair in by_seed.items() if p == protocol and len(pair) == 2]
        for loss in ("ce", "bsce"):
            group = cell.get((protocol, loss), [])
            if not group:
                continue
            delta = ["–", "–"] if loss == "ce" or not deltas else \
                [format_mean_std([d[i] for d in deltas]) for i in (0, 1)]
            lines.append(f"| {protocol} | {loss} | {len(group)} | "
                         f"{format_mean_std([r['average_incremental_accuracy'] for r in group])} | "
                         f"{format_mean_std([r['last_accuracy'] for r in group])} | "
                         f"{format_mean_std([r['new_class_prediction_share_last_step'] for r in group])} | "
                         f"{delta[0]} | {delta[1]} |")
    return "\n".join(lines) + "\n"


def tau_sweep(rows: list[dict]) -> dict[float, list[dict]]:
    """Replay + BSCE (concat, prior auto) by tau; tau 0 also from Replay + CE (the same run)."""
    sweep = defaultdict(list)
    for r in rows:
        if r["strategy"] == "replay" and r["replay"] == "concat" and r["prior"] in (None, "auto"):
            sweep[r["tau"] if r["loss"] == "bsce" else "ce"].append(r)
    return dict(sweep)


def tau_table(sweep: dict) -> str:
    lines = ["| tau | seeds | avg. incremental acc. (%) | last acc. (%) | predictions to newest classes, last step (%) |",
             "|---|---|---|---|---|"]
    for tau in sorted((t for t in sweep if t != "ce"), key=float):
        group = sweep[tau]
        lines.append(f"| {tau:g} | {len(group)} | {format_mean_std([r['average_incremental_accuracy'] for r in group])} "
                     f"| {format_mean_std([r['last_accuracy'] for r in group])} "
                     f"| {format_mean_std([r['new_class_prediction_share_last_step'] for r in group])} |")
    return "\n".join(lines) + "\n"


def plot_tau_sweep(sweep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = sorted((t for t in sweep if t != "ce"), key=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, marker in (("average_incremental_accuracy", "avg. incremental acc.", "o"),
                               ("last_accuracy", "last acc.", "s")):
        mean = [100 * np.mean([r[key] for r in sweep[t]]) for t in taus]
        ax.plot(taus, mean, marker=marker, label=f"Replay + BSCE, {label}")
        if "ce" in sweep:
            ax.axhline(100 * np.mean([r[key] for r in sweep["ce"]]), ls="--", color=ax.lines[-1].get_color(),
                       alpha=0.6, label=f"Replay + CE, {label}")
    ax.set(xlabel="tau (logits + tau * log prior)", ylabel="accuracy (%)",
           title="tau sweep, memory concatenated (seed 0 where one seed)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict], out: Path) -> None:
    """Append the protocols, BSCE - CE and tau tables to comparison.md; plot the tau sweep."""
    sweep = tau_sweep(rows)
    plot_tau_sweep(sweep, out / "tau_sweep.png")
    text = (out / "comparison.md").read_text()
    text += ("\n## Fair comparison: every baseline at its own recipe\n\n" + fair_table(rows)
             + "\n## Rehearsal protocols side by side (Replay)\n\nconcat: the memory concatenated into the "
             "training set (the paper's); half_batch: half of every mini-batch from the memory (Avalanche's "
             "ReplayPlugin). BSCE − CE: mean ± std over the seeds' paired differences.\n\n" + protocols_table(rows)
             + "\n## tau sweep (Replay + BSCE, concat)\n\n" + tau_table(sweep) + "\n![tau_sweep](tau_sweep.png)\n")
    write_text_atomic(out / "comparison.md", text)


PLAN = Plan(planned_runs, ROOT / "experiments" / "results" / "cifar100_cpu_concat", CONFIG, report=report)


def main(argv=None) -> list[dict]:
    return run_plan(argv, PLAN, __doc__)


if __name__ == "__main__":
    main()
