"""Turn ``results.json`` files into a markdown table (mean ± std over seeds) and plots: :func:`compare` writes
``comparison.md`` with the tables of this module (methods, BSCE's paired gains, first experiences) and the figures
of :mod:`.figures`, from the runs :mod:`.results` loads and pools."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ConfigError
from .figures import plot_comparison
from .fileio import write_text_atomic
from .identity import LABEL_KEYS, differing_settings
from .labels import POSTHOC_LABEL, is_variant, loss_kind, method_panel, run_label
from .results import check_one_setting, group_runs, load_results, with_posthoc
from .stats import format_gain, format_mean_std, paired_difference

__all__ = ["comparison_table", "gains_table", "same_protocol", "first_experience_table", "compare"]


#: The metric columns of :func:`comparison_table`: header, a run's value (a fraction, shown in %).
_COLUMNS = (
    ("avg. incremental acc. (%)", lambda r: r["average_incremental_accuracy"]),
    ("last acc. (%)", lambda r: r["last_accuracy"]),
    ("forgetting (%)", lambda r: r.get("forgetting")),
    ("old acc. last step (%)", lambda r: r["old_new_accuracy"][-1]["old"]),
    ("new acc. last step (%)", lambda r: r["old_new_accuracy"][-1]["new"]),
    ("new-class prediction share, last step (%)", lambda r: r["new_class_prediction_share"][-1]),
)


def comparison_table(runs: Sequence[dict]) -> str:
    """Markdown table: one row per method, mean ± sample std over seeds (pass finished runs); ``recipe``: the
    config's ``recipes`` entries the runs trained with (their values are in each run's results.json)."""
    header = ["method", "recipe", "seeds", *(name for name, _ in _COLUMNS), "train time (s)"]
    rows = [
        [label, group[0]["config"].get("recipe") or "–", str(len(group)),
         *(format_mean_std([value(r) for r in group]) for _, value in _COLUMNS),
         format_mean_std([r["train_time_s"] for r in group], scale=1.0, digits=0)]
        for label, group in group_runs(runs).items()
    ]
    lines = [f"| {' | '.join(header)} |", "|---" * len(header) + "|"] + [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines) + "\n"


def gains_table(runs: Sequence[dict]) -> str:
    """Markdown table: each BSCE method (tau 1, prior auto) minus each baseline of its family and protocol
    (CE, BSCE at tau 0, CE + post-hoc LA; :func:`same_protocol`), paired per seed, mean and 95% t-interval in
    points; the strongest baseline (by mean average incremental accuracy) first; a baseline with no seed in
    common left out. "" when no BSCE method has a baseline."""
    groups = group_runs(runs)
    lines = []
    for label, group in groups.items():
        config = group[0]["config"]
        if loss_kind(config) != "bsce" or is_variant(config) or group[0].get("_evaluation"):
            continue
        panel = method_panel(config, split_variants=False)[0]
        baselines = [(other, g) for other, g in groups.items()
                     if other != label and method_panel(g[0]["config"], split_variants=False)[0] == panel
                     and (loss_kind(g[0]["config"]) != "bsce" or g[0].get("_evaluation"))
                     and same_protocol(group[0], g[0])]
        baselines.sort(key=lambda item: -np.mean([r["average_incremental_accuracy"] for r in item[1]]))
        for rank, (other, baseline) in enumerate(baselines):
            diffs = [paired_difference(group, baseline, lambda r, k=key: r[k], _seed)
                     for key in ("average_incremental_accuracy", "last_accuracy")]
            if diffs[1] is None:  # no seed in common: nothing to pair
                continue
            lines.append(f"| {label} | {other}{' (strongest)' if rank == 0 and len(baselines) > 1 else ''} | "
                         f"{diffs[1].n} | {format_gain(diffs[0])} | {format_gain(diffs[1])} |")
    if not lines:
        return ""
    return ("| BSCE | minus | paired seeds | avg. incremental acc. (points, 95% CI) | last acc. (points, 95% CI) |\n"
            "|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def same_protocol(a: dict, b: dict) -> bool:
    """Whether two runs may be paired as method and baseline: they differ only in what names a method (the keys
    a method label shows) and in what a run's own recipe sets (a baseline at its published recipe), and trained
    on the same data where both recorded it. Runs of another length, schedule or model are another protocol: a
    gain across them would measure the protocol, not the method."""
    recipe_keys = {k for r in (a, b) for k in (r["config"].get("recipes") or {}).get(r["config"].get("recipe"), {})}
    differ = set(differing_settings([a["config"], b["config"]])) - recipe_keys - LABEL_KEYS
    data = {a.get("data_digest"), b.get("data_digest")} - {None}
    return not differ and len(data) <= 1


def _seed(run: dict) -> int:
    return run["config"]["seed"]


def first_experience_table(runs: Sequence[dict]) -> str:
    """Markdown table of the step-0 accuracy, once per first-experience model: runs of a seed
    whose first experience trains alike start from the same network (``first_experience`` in
    ``results.json``); "" when no run records one."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        first, cfg = run.get("first_experience"), run["config"]
        if first:
            evaluation = f" ({cfg['icarl_eval']})" if cfg["strategy"] == "icarl" else ""
            groups[(cfg["seed"], first["training"] + evaluation, first["key"])].append(run)
    if not groups:
        return ""
    lines = ["| seed | first experience trained with | step-0 acc. (%) | runs starting from it |", "|---|---|---|---|"]
    for (seed, training, _), group in sorted(groups.items()):
        accuracy = sorted({100 * r["steps"][0]["accuracy_seen"] for r in group})
        lines.append(f"| {seed} | {training} | {' / '.join(f'{a:.1f}' for a in accuracy)} | "
                     f"{', '.join(sorted(run_label(r) for r in group))} |")
    return "\n".join(lines) + "\n"


def compare(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Write ``comparison.md`` and the plots to ``out_dir``; return the table's path."""
    runs = load_results(paths)
    finished = [r for r in runs if r.get("finished")]
    if not finished:
        raise ConfigError("None of the runs has finished yet: nothing to compare.")
    check_one_setting(finished)
    out_dir = Path(out_dir)
    plots = plot_comparison(finished, out_dir)  # creates out_dir
    table = comparison_table(with_posthoc(finished))
    gains = gains_table(with_posthoc(finished))
    if gains:
        gains = ("\n## BSCE against its baselines\n\nPaired per seed (same first-experience model and data order); "
                 "95% Student-t interval over the seeds' differences; where it contains 0: level within noise. "
                 f"'{POSTHOC_LABEL.strip(' +')}': the CE run's own evaluation with logits - log prior (no second "
                 "training).\n\n" + gains)
    unfinished = [Path(r["_path"]).parent.name for r in runs if not r.get("finished")]
    note = f"\nLeft out, not finished: {', '.join(unfinished)}.\n" if unfinished else ""
    first = first_experience_table(finished)
    if first:
        first = ("\n## First experience\n\nStep-0 accuracy once per first-experience model: the runs of a row "
                 "start from the same network (trained once, see first_experience_cache).\n\n" + first)
    text = ("# Comparison\n\n" + table + note + gains + first + "\n"
            + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    write_text_atomic(out_dir / "comparison.md", text)
    return out_dir / "comparison.md"
