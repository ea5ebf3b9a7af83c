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

from bsce_avalanche.runner.fileio import write_text_atomic
from bsce_avalanche.runner.labels import POSTHOC_LABEL
from bsce_avalanche.runner.plans import Plan, run_plan
from bsce_avalanche.runner.stats import format_gain, format_mean_std, paired_difference

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "cifar100_cpu_concat.yaml"
TAUS = (0.0, 0.5, 1.0, 1.5, 2.0)
#: The rows of the fair comparison, by family: (row name, method label, recipe); recipe None: the protocol's
#: shared one. Every baseline's label appears once; BSCE's row is the one whose label has "-bsce" and no "tau0".
FAMILIES = (
    ("Replay", [("Replay + CE", "replay-ce-concat", None),
                ("Replay + CE + post-hoc LA", "replay-ce-concat" + POSTHOC_LABEL, None),
                ("Replay + WA (aligning alone)", "replay-ce-concat-wa", None),
                ("Replay + BSCE", "replay-bsce-concat", None)]),
    ("LwF + memory", [("LwF + memory + CE", "lwf+mem-ce-concat", None),
                      ("LwF + memory + CE + post-hoc LA", "lwf+mem-ce-concat" + POSTHOC_LABEL, None),
                      ("WA (LwF + memory + aligning, as published)", "lwf+mem-ce-concat-wa", None),
                      ("LwF + memory + BSCE", "lwf+mem-bsce-concat", None)]),
    ("iCaRL (NME)", [("iCaRL, its own loss and recipe", "icarl-ce-nme", "icarl-ce"),
                     ("iCaRL, softmax CE (BSCE with tau 0)", "icarl-bsce-nme-tau0", None),
                     ("iCaRL + BSCE", "icarl-bsce-nme", None)]),
    ("iCaRL (trained head)", [("iCaRL, its own loss and recipe", "icarl-ce-head", "icarl-ce"),
                              ("iCaRL, softmax CE (BSCE with tau 0)", "icarl-bsce-head-tau0", None),
                              ("iCaRL, softmax CE + post-hoc LA", "icarl-bsce-head-tau0" + POSTHOC_LABEL, None),
                              ("iCaRL + BSCE", "icarl-bsce-head", None)]),
    ("peers", [("BiC (fixed), shared schedule", "bic-ce-concat", None),
               ("BiC (fixed), its recipe", "bic-ce-concat", "bic"),
               ("ER-ACE (Replay's memory, updated after the step)", "er_ace-ce", None)]),
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
    # Weight Aligning: as published (LwF + memory, aligning, clipping) and aligning alone (Replay)
    runs += [{"strategy": strategy, "lwf_memory": strategy == "lwf", "loss": "ce", "weight_aligning": True,
              "seed": seed} for strategy in ("replay", "lwf") for seed in seeds]
    # BiC (fixed) at the shared schedule too: the stronger of its two rows is the baseline
    runs += [{"strategy": "bic", "loss": "ce", "recipes": {}, "seed": seed} for seed in seeds]
    return runs


#: The columns of the fair table: key of a summary row, header, scale (fractions in %).
_METRICS = (("step0_accuracy", "step-0 acc. (%)", 100.0), ("average_incremental_accuracy", "avg. incremental acc. (%)", 100.0),
            ("last_accuracy", "last acc. (%)", 100.0), ("forgetting", "forgetting (%)", 100.0),
            ("new_class_prediction_share_last_step", "predictions to newest classes, last step (%)", 100.0))


def _by_row(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Summary rows by (method label, recipe or None): Replay at other tau or prior left out."""
    groups = defaultdict(list)
    for r in rows:
        if r["strategy"] != "replay" or (r["prior"] in (None, "auto") and r["tau"] in (None, 0.0, 1.0)):
            groups[(r["method"], r.get("recipe"))].append(r)
    return groups


def _compute(group: list[dict]) -> list[str]:
    """Images seen and gradient steps per epoch (mean over the steps after the first) and samples stored at the
    last step, from the runs' counters ("–" for runs that predate them)."""
    run = group[0]
    if run.get("images_per_epoch") is None:
        return ["–"] * 3
    later = lambda values: f"{np.mean(values[1:]):,.0f}" if len(values) > 1 else f"{values[0]:,.0f}"
    stored = run.get("samples_stored") or [None]
    return [later(run["images_per_epoch"]), later(run["gradient_steps_per_epoch"]),
            "–" if stored[-1] is None else f"{stored[-1]:,}"]


def fair_table(rows: list[dict]) -> str:
    """One row per method of each family (seeds, recipe, step-0, average incremental and last accuracy,
    forgetting, newest-class share, images and gradient steps per epoch, samples stored); then BSCE minus each
    baseline of its family (the first family's BSCE minus each row of a family without BSCE: the peers), and
    minus the strongest baseline of all, paired per seed with 95% t-intervals."""
    groups = _by_row(rows)
    lines = ["| family | method | recipe | seeds | " + " | ".join(h for _, h, _ in _METRICS)
             + " | images / epoch | gradient steps / epoch | samples stored |",
             "|---|---|---|---|" + "---|" * (len(_METRICS) + 3)]
    gains = ["| family | BSCE minus | paired seeds | avg. incremental acc. (points, 95% CI) | last acc. (points, "
             "95% CI) |", "|---|---|---|---|---|"]
    baselines_all = {}
    bsce_rows = {}
    for family, methods in FAMILIES:
        # a recipe row falls back to the label's runs without a recipe when no shared row is listed (--tiny)
        shared = {label for _, label, recipe in methods if recipe is None}
        keys = [(name, (label, recipe if groups.get((label, recipe)) or label in shared else None))
                for name, label, recipe in methods]
        present = [(name, key) for name, key in keys if groups.get(key)]
        for name, key in present:
            group = groups[key]
            lines.append(f"| {family} | {name} | {key[1] or 'shared'} | {len(group)} | "
                         + " | ".join(format_mean_std([r[k] for r in group], scale) for k, _, scale in _METRICS)
                         + " | " + " | ".join(_compute(group)) + " |")
        bsce = [(n, k) for n, k in present if "-bsce" in k[0] and "tau0" not in k[0]]
        baselines = [(n, k) for n, k in present if (n, k) not in bsce]
        baselines_all.update({f"{family}: {n}": k for n, k in baselines})
        if bsce:
            bsce_rows[family] = bsce[0]
        for name, key in baselines if bsce else ():
            gains.append(_gain_row(family, name, groups[bsce[0][1]], groups[key]))
        if not bsce and bsce_rows:  # a family with no BSCE row (the peers): against the first family's BSCE
            first_family, (_, first_key) = next(iter(bsce_rows.items()))
            gains += [_gain_row(first_family, f"{family}: {name}", groups[first_key], groups[key])
                      for name, key in baselines]
    if baselines_all and bsce_rows:
        strongest = max(baselines_all, key=lambda n: np.mean([r["average_incremental_accuracy"]
                                                               for r in groups[baselines_all[n]]]))
        for family, (name, key) in bsce_rows.items():
            gains.append(_gain_row(family, f"**the strongest baseline of all**, {strongest}", groups[key],
                                   groups[baselines_all[strongest]]))
    return "\n".join(lines) + "\n\n" + "\n".join(gains) + "\n"


def _gain_row(family: str, name: str, bsce: list[dict], baseline: list[dict]) -> str:
    cells = [paired_difference(bsce, baseline, lambda r, k=key: r[k])
             for key in ("average_incremental_accuracy", "last_accuracy")]
    return f"| {family} | {name} | {cells[1].n if cells[1] else 0} | {format_gain(cells[0])} | {format_gain(cells[1])} |"


def _plain_replay(r: dict) -> bool:
    """Replay with CE or BSCE and nothing else (no post-hoc view, no weight aligning), any tau, prior auto."""
    return r["strategy"] == "replay" and r["prior"] in (None, "auto") and \
        r["method"].split("-tau")[0] in {f"replay-{loss}{suffix}" for loss in ("ce", "bsce") for suffix in ("", "-concat")}


def _replay_rows(rows: list[dict]) -> list[dict]:
    """Replay with the default prior, by protocol, loss and seed (tau 1 for BSCE)."""
    return [r for r in rows if _plain_replay(r) and r["tau"] in (None, 1.0)]


def protocols_table(rows: list[dict]) -> str:
    """Replay + CE / + BSCE under concat and half_batch, side by side, and BSCE - CE paired per seed (95% CI)."""
    cell = defaultdict(list)
    for r in _replay_rows(rows):
        cell[(r["replay"], r["loss"])].append(r)
    lines = ["| protocol | loss | seeds | avg. incremental acc. (%) | last acc. (%) | "
             "predictions to newest classes, last step (%) | BSCE − CE, avg. inc. acc. (points, 95% CI) | "
             "BSCE − CE, last acc. (points, 95% CI) |", "|---|---|---|---|---|---|---|---|"]
    for protocol in ("concat", "half_batch"):
        for loss in ("ce", "bsce"):
            group = cell.get((protocol, loss), [])
            if not group:
                continue
            delta = ["–", "–"] if loss == "ce" else \
                [format_gain(paired_difference(group, cell.get((protocol, "ce"), []), lambda r, k=key: r[k]))
                 for key in ("average_incremental_accuracy", "last_accuracy")]
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
        if _plain_replay(r) and r["replay"] == "concat":
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


#: The methods whose accuracy matrix (mean over seeds) comparison.md and RESULTS.md show.
MATRIX_ROWS = (("Replay + CE", "replay-ce-concat"), ("Replay + CE + post-hoc LA", "replay-ce-concat" + POSTHOC_LABEL),
               ("Replay + BSCE", "replay-bsce-concat"), ("ER-ACE", "er_ace-ce"),
               ("WA (LwF + memory + aligning)", "lwf+mem-ce-concat-wa"), ("BiC (fixed), shared schedule", "bic-ce-concat"))


def matrix_table(group: list[dict]) -> str:
    """Accuracy (%) on each step's classes (columns) after each step (rows), mean over the runs of ``group``."""
    matrix = np.array([[[np.nan if a is None else a for a in row] for row in r["accuracy_matrix"]] for r in group],
                      float).mean(axis=0)  # tasks not seen yet: nan in every run
    n = matrix.shape[1]
    lines = ["| after step | " + " | ".join(f"task {j}" for j in range(n)) + " |", "|---" * (n + 1) + "|"]
    for t, row in enumerate(matrix):
        lines.append(f"| {t} | " + " | ".join("" if np.isnan(a) else f"{100 * a:.1f}" for a in row) + " |")
    return "\n".join(lines) + "\n"


def matrix_tables(rows: list[dict]) -> str:
    groups = _by_row(rows)
    parts = [f"\n### {name} ({len(groups[(label, None)])} seeds)\n\n" + matrix_table(groups[(label, None)])
             for name, label in MATRIX_ROWS if groups.get((label, None))]
    return "".join(parts)


def report(rows: list[dict], out: Path) -> None:
    """Append the protocols, BSCE - CE and tau tables to comparison.md; plot the tau sweep."""
    sweep = tau_sweep(rows)
    plot_tau_sweep(sweep, out / "tau_sweep.png")
    text = (out / "comparison.md").read_text()
    text += ("\n## Fair comparison: every baseline at its own recipe\n\n" + fair_table(rows)
             + "\n## Rehearsal protocols side by side (Replay)\n\nconcat: the memory concatenated into the "
             "training set (the paper's); half_batch: half of every mini-batch from the memory (Avalanche's "
             "ReplayPlugin). BSCE − CE: mean of the seeds' paired differences and its 95% t-interval.\n\n" + protocols_table(rows)
             + "\n## tau sweep (Replay + BSCE, concat)\n\n" + tau_table(sweep) + "\n![tau_sweep](tau_sweep.png)\n"
             + "\n## Accuracy matrices (mean over seeds)\n" + matrix_tables(rows))
    write_text_atomic(out / "comparison.md", text)


PLAN = Plan(planned_runs, ROOT / "experiments" / "results" / "cifar100_cpu_concat", CONFIG, report=report)


def main(argv=None) -> list[dict]:
    return run_plan(argv, PLAN, __doc__)


if __name__ == "__main__":
    main()
