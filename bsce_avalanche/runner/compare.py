"""Turn ``results.json`` files into a markdown table (mean ± std over seeds) and plots."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .config import ConfigError, method_label
from .fileio import write_text_atomic

__all__ = ["format_mean_std", "run_label", "find_results", "load_results", "finished_results_problem",
           "check_one_setting", "group_runs", "comparison_table",
           "first_experience_table", "plot_comparison", "compare"]


def find_results(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """``results.json`` files given directly or found below the given directories."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("results.json")))
        else:
            raise FileNotFoundError(f"{p} is neither a results file nor a directory.")
    if not found:
        raise FileNotFoundError(f"No results.json under {', '.join(map(str, paths))}: run `bsce-experiment run` first.")
    return found


#: What a finished run's ``results.json`` holds for ``compare`` and ``run --resume``: key -> type.
_FINISHED_KEYS = {"config": dict, "steps": list, "classes_per_step": list, "class_order": list,
                  "average_incremental_accuracy": float, "last_accuracy": float, "train_time_s": float,
                  "old_new_accuracy": list, "new_class_prediction_share": list, "per_class_accuracy": list}


def finished_results_problem(results) -> Optional[str]:
    """What keeps a finished run's results from being reported (a missing key, a wrong type, step lists of
    different lengths), or None."""
    if not isinstance(results, dict):
        return f"holds a JSON {type(results).__name__}, not an object"
    for key, kind in _FINISHED_KEYS.items():
        value = results.get(key)
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float \
            else isinstance(value, kind)
        if not fits:
            return f"has no {key}" if key not in results else f"has a {type(value).__name__} as {key}"
    lengths = {key: len(results[key]) for key in ("steps", "classes_per_step", "old_new_accuracy",
                                                  "new_class_prediction_share")}
    if len(set(lengths.values())) > 1:
        return f"has lists of different lengths ({', '.join(f'{k}: {n}' for k, n in lengths.items())})"
    return None


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """The runs of the ``results.json`` files of ``paths``; an unreadable file, or a finished run whose
    results are incomplete, is a :class:`ConfigError` naming the file."""
    runs = []
    for path in find_results(paths):
        leave_out = "leave its folder out of the paths, or run it again (bsce-experiment run --overwrite)"
        try:
            run = json.loads(path.read_text())
        except ValueError as err:
            raise ConfigError(f"{path} is unreadable (truncated or corrupt: {err}): {leave_out}.") from None
        problem = finished_results_problem(run) if not isinstance(run, dict) or run.get("finished") else None
        if problem:
            raise ConfigError(f"{path} {problem} (edited by hand, or written by another version): {leave_out}.")
        runs.append({**run, "_path": str(path)})
    return runs


def _setting(run: dict) -> str:
    """The benchmark and class split of a run, e.g. ``cifar100, 50 + 5 x 10 classes``."""
    sizes = [len(classes) for classes in run["classes_per_step"]]
    split = f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1 else \
        f"{sizes[0]} + {len(sizes) - 1} x {sizes[1]}" if len(set(sizes[1:])) == 1 else " + ".join(map(str, sizes))
    return f"{run['config'].get('benchmark')}, {split} classes"


def check_one_setting(runs: Sequence[dict]) -> None:
    """One table averages runs over one benchmark and class split: runs of several are a :class:`ConfigError`."""
    settings: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        settings[_setting(run)].append(run)
    if len(settings) > 1:
        found = "; ".join(f"{setting}: {len(group)} run(s), e.g. {Path(group[0]['_path']).parent}"
                          for setting, group in sorted(settings.items()))
        raise ConfigError(f"these runs are of different benchmarks or class splits ({found}): compare each on its "
                          "own, e.g. bsce-experiment compare DIR_OF_ONE_SETTING.")


def run_label(run: dict) -> str:
    """The method a run belongs to, e.g. ``replay-bsce`` or ``lwf+mem-ce`` (seed left out)."""
    return method_label(run["config"])


def group_runs(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Runs that differ only in their seed share a label (e.g. ``replay-bsce``)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        groups[run_label(run)].append(run)
    return dict(sorted(groups.items()))


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sample std`` of the non-null values, scaled (fractions -> percent by default)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    arr = np.asarray(values, dtype=float) * scale
    if len(arr) == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


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
    """Markdown table: one row per method, mean ± sample std over seeds (pass finished runs)."""
    header = ["method", "seeds", *(name for name, _ in _COLUMNS), "train time (s)"]
    rows = [
        [label, str(len(group)), *(format_mean_std([value(r) for r in group]) for _, value in _COLUMNS),
         format_mean_std([r["train_time_s"] for r in group], scale=1.0, digits=0)]
        for label, group in group_runs(runs).items()
    ]
    lines = [f"| {' | '.join(header)} |", "|---" * len(header) + "|"] + [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines) + "\n"


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


def _mean_curve(group: Sequence[dict], getter) -> np.ndarray:
    curves = [np.asarray([np.nan if v is None else v for v in getter(r)], dtype=float) for r in group]
    n = min(len(c) for c in curves)
    stacked = np.stack([c[:n] for c in curves])
    # a step where no seed has the metric (old accuracy at step 1) stays NaN: not plotted
    counts = np.sum(~np.isnan(stacked), axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def plot_comparison(runs: Sequence[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write PNG plots; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    written = []
    # enough distinct colours for a full grid (the default cycle repeats after 10)
    plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.get_cmap("tab20").colors)

    def per_step(ax, getter):  # one curve per method: the mean over its runs, in percent
        for label, group in groups.items():
            curve = _mean_curve(group, getter)
            ax.plot(range(1, len(curve) + 1), 100 * curve, marker="o", label=label)

    def save(fig, axes, name):
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)

    fig, ax = plt.subplots(figsize=(6, 4))
    per_step(ax, lambda r: [s["accuracy_seen"] for s in r["steps"]])
    ax.set(xlabel="step", ylabel="accuracy on seen classes (%)", title="Accuracy after each step")
    save(fig, [ax], "accuracy_per_step.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, part in zip(axes, ("old", "new")):
        per_step(ax, lambda r: [s[part] for s in r["old_new_accuracy"]])
        ax.set(xlabel="step", title=f"Accuracy on {part} classes (%)")
    save(fig, axes, "old_new_accuracy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    per_step(ax, lambda r: r["new_class_prediction_share"])
    sizes = np.asarray([len(c) for c in next(iter(runs))["classes_per_step"]])
    fair = 100 * sizes / np.cumsum(sizes)
    ax.plot(range(1, len(fair) + 1), fair, "k--", label="unbiased (class share)")
    ax.set(xlabel="step", ylabel="% of test predictions", title="Predictions given to the newest classes")
    save(fig, [ax], "new_class_prediction_share.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    for label, group in groups.items():
        per_class = _mean_curve(group, lambda r: [r["per_class_accuracy"][c] for c in r["class_order"]])
        ax.plot(range(len(group[0]["class_order"])), 100 * per_class, label=label, alpha=0.8)
    ax.set(xlabel="class, in order of arrival", ylabel="accuracy (%)", title="Per-class accuracy after the last step")
    save(fig, [ax], "per_class_accuracy.png")
    return written


def compare(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Write ``comparison.md`` and the plots to ``out_dir``; return the table's path."""
    runs = load_results(paths)
    finished = [r for r in runs if r.get("finished")]
    if not finished:
        raise ConfigError("None of the runs has finished yet: nothing to compare.")
    check_one_setting(finished)
    out_dir = Path(out_dir)
    plots = plot_comparison(finished, out_dir)  # creates out_dir
    table = comparison_table(finished)
    unfinished = [Path(r["_path"]).parent.name for r in runs if not r.get("finished")]
    note = f"\nLeft out, not finished: {', '.join(unfinished)}.\n" if unfinished else ""
    first = first_experience_table(finished)
    if first:
        first = ("\n## First experience\n\nStep-0 accuracy once per first-experience model: the runs of a row "
                 "start from the same network (trained once, see first_experience_cache).\n\n" + first)
    text = ("# Comparison\n\n" + table + note + first + "\n"
            + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    write_text_atomic(out_dir / "comparison.md", text)
    return out_dir / "comparison.md"
