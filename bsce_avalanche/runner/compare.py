"""Turn ``results.json`` files into a markdown table (mean ± std over seeds) and plots."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from .config import (ConfigError, ExperimentConfig, differing_settings, method_label, result_settings, run_name,
                     settings_digest)
from .fileio import write_text_atomic
from .results_format import finished_results_problem, read_results  # finished_results_problem: kept importable here
from .catalog import STRATEGIES, uses_replay_option
from .stats import format_gain, paired_difference

__all__ = ["format_mean_std", "run_label", "find_results", "load_results", "finished_results_problem",
           "check_one_setting", "group_runs", "comparison_table", "readable_method", "with_posthoc", "posthoc_view", "gains_table",
           "POSTHOC_LABEL", "first_experience_table", "plot_comparison", "compare",
           "FAMILIES", "FAMILY_COLORS", "LOSS_LINESTYLES", "method_family", "loss_kind", "method_style",
           "mean_per_experience", "per_experience_accuracy", "figure_accuracy_per_step", "figure_old_new_accuracy",
           "figure_new_class_prediction_share", "figure_per_experience_accuracy", "PLOTS"]


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


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """The runs of the ``results.json`` files of ``paths``; an unreadable file, one of a newer format, or a
    finished run whose results are incomplete, is a :class:`ConfigError` naming the file
    (:func:`.results_format.read_results`)."""
    leave_out = "leave its folder out of the paths, or run it again (bsce-experiment run --overwrite)"
    return [{**read_results(path, leave_out), "_path": str(path)} for path in find_results(paths)]


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


#: Appended to a CE run's label for its post-hoc logit-adjusted evaluation (:func:`posthoc_view`).
POSTHOC_LABEL = " + post-hoc LA"
#: The run-level metrics of :func:`~.metrics.summarise`, which a post-hoc record holds too.
_SUMMARY_KEYS = ("accuracy_matrix", "average_incremental_accuracy", "last_accuracy", "forgetting", "old_new_accuracy",
                 "new_class_prediction_share")


def run_label(run: dict) -> str:
    """The method a run belongs to, e.g. ``replay-bsce`` or ``lwf+mem-ce`` (seed left out); a post-hoc view
    of a CE run: ``replay-ce-concat + post-hoc LA``."""
    return method_label(run["config"]) + (POSTHOC_LABEL if run.get("_evaluation") == "posthoc" else "")


def posthoc_view(run: dict) -> dict:
    """A run whose results carry post-hoc figures (``results["posthoc"]``), seen as the run of its own method
    "CE + post-hoc LA": the same config, seed and training; the metrics of the adjusted predictions."""
    record = run["posthoc"]
    return {**run, **{k: record[k] for k in _SUMMARY_KEYS}, "steps": record["steps"],
            "per_class_accuracy": record["steps"][-1]["per_class_accuracy"], "_evaluation": "posthoc"}


def with_posthoc(runs: Sequence[dict]) -> list[dict]:
    """``runs`` and, after them, the post-hoc view of every finished run that has one."""
    return list(runs) + [posthoc_view(r) for r in runs if r.get("finished") and r.get("posthoc")]


def group_runs(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Runs pooled only when they differ in nothing but the seed (same :func:`settings_digest` and label) and
    trained on the same data (``data_digest``). Each group is named by its method label; where several groups
    share one, the label names the settings that tell them apart, e.g. ``replay-bsce (lr=0.1)`` and
    ``replay-bsce (lr=0.2)``, or ``replay-bsce (data=<digest>)``. One seed twice in a group (the same run in two
    folders) is a :class:`ConfigError` naming both."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:  # the data trained on is part of what a run is (results.json's data_digest)
        groups[(run_label(run), settings_digest(run["config"]), run.get("data_digest"))].append(run)
    for group in groups.values():  # one run twice (copied folders) is not two seeds
        seen: dict = {}
        for run in group:
            if (other := seen.setdefault(run_name(run["config"]), run)) is not run:
                where = [str(Path(r["_path"]).parent) if r.get("_path") else "a run" for r in (other, run)]
                raise ConfigError(f"{where[0]} and {where[1]} are the same run "
                                  f"({run_label(run)}, seed {run['config'].get('seed')}, same data): their mean would "
                                  "count one seed twice; leave one of the folders out of the paths.")
    by_label: dict[str, list[tuple]] = defaultdict(list)
    for key in groups:
        by_label[key[0]].append(key)
    named = {}
    for label, keys in by_label.items():
        differ = differing_settings([groups[k][0]["config"] for k in keys]) if len(keys) > 1 else []
        other_data = len({k[2] for k in keys}) > 1
        for key in keys:
            config = result_settings(groups[key][0]["config"])
            shown = [f"{k}={_short(config[k])}" for k in differ]
            shown += [f"data={key[2] or 'unrecorded'}"] if other_data else []
            named[f"{label} ({', '.join(shown)})" if shown else label] = groups[key]
    return dict(sorted(named.items()))


def _short(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value).replace(" ", "")


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
    (CE, BSCE at tau 0, CE + post-hoc LA), paired per seed, mean and 95% t-interval in points; the strongest
    baseline (by mean average incremental accuracy) first. "" when no BSCE method has a baseline."""
    groups = group_runs(runs)
    lines = []
    for label, group in groups.items():
        config = group[0]["config"]
        if loss_kind(config) != "bsce" or _is_variant(config) or group[0].get("_evaluation"):
            continue
        panel = _panel(config, split_variants=False)[0]
        baselines = [(other, g) for other, g in groups.items()
                     if other != label and _panel(g[0]["config"], split_variants=False)[0] == panel
                     and (loss_kind(g[0]["config"]) != "bsce" or g[0].get("_evaluation"))]
        baselines.sort(key=lambda item: -np.mean([r["average_incremental_accuracy"] for r in item[1]]))
        for rank, (other, baseline) in enumerate(baselines):
            cells = [format_gain(paired_difference(group, baseline, lambda r, k=key: r[k], _seed))
                     for key in ("average_incremental_accuracy", "last_accuracy")]
            seeds = paired_difference(group, baseline, lambda r: r["last_accuracy"], _seed)
            lines.append(f"| {label} | {other}{' (strongest)' if rank == 0 and len(baselines) > 1 else ''} | "
                         f"{seeds.n if seeds else 0} | {cells[0]} | {cells[1]} |")
    if not lines:
        return ""
    return ("| BSCE | minus | paired seeds | avg. incremental acc. (points, 95% CI) | last acc. (points, 95% CI) |\n"
            "|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


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


# --------------------------------------------------------------------------- plots
# Small multiples: one panel per method family (and memory protocol / iCaRL classifier), one
# colour per family, the loss as the line style, the spread over seeds as a band, one legend
# beside the panels. The figures are built without pyplot (no global state, any backend) and
# saved with Agg.

#: Method families, in the order of their panels: the strategies, LwF with a memory on its own.
FAMILIES: tuple[str, ...] = tuple(f for s in STRATEGIES for f in ((s, "lwf+mem") if s == "lwf" else (s,)))
_FAMILY_NAMES = {"naive": "Naive", "replay": "Replay", "lwf": "LwF", "lwf+mem": "LwF + memory", "icarl": "iCaRL",
                 "er_ace": "ER-ACE", "bic": "BiC", "gdumb": "GDumb"}
_PALETTE = {"replay": "tab:blue", "lwf+mem": "tab:red", "icarl": "tab:purple", "bic": "tab:green",
            "er_ace": "tab:brown", "lwf": "tab:orange", "naive": "tab:gray", "gdumb": "tab:olive"}
_SPARE = ("tab:cyan", "tab:pink", "black")
#: One colour per family (Replay blue, LwF + memory red, iCaRL purple, ...), the same in every figure.
FAMILY_COLORS: dict[str, str] = {
    f: _PALETTE.get(f) or _SPARE[[g for g in FAMILIES if g not in _PALETTE].index(f) % len(_SPARE)] for f in FAMILIES}
#: The loss as a line style: CE dashed, BSCE solid, BSCE with tau 0 (CE on BSCE's code path) dotted.
LOSS_LINESTYLES = {"ce": "--", "bsce tau 0": ":", "bsce": "-"}
#: Variants of one family and loss (another tau, prior, ...) differ by marker.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
#: More methods than this in a family's panel: its BSCE variants (tau, prior) go to a panel beside it.
_MAX_LINES_PER_PANEL = 4
_CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)
                    if f.default is not dataclasses.MISSING}


def method_family(config: Mapping) -> str:
    """The family of a run's method: its strategy, ``lwf+mem`` for LwF with a memory."""
    c = {**_CONFIG_DEFAULTS, **config}
    return "lwf+mem" if c["strategy"] == "lwf" and c["lwf_memory"] else c["strategy"]


def loss_kind(config: Mapping) -> str:
    """``"ce"``, ``"bsce"`` or ``"bsce tau 0"`` (the keys of :data:`LOSS_LINESTYLES`)."""
    c = {**_CONFIG_DEFAULTS, **config}
    if c["loss"] != "bsce":
        return "ce"
    return "bsce tau 0" if c["tau"] == 0 else "bsce"


def method_style(config: Mapping) -> dict:
    """``color`` and ``linestyle`` of a run's method in every plot (``ax.plot(..., **method_style(cfg))``)."""
    return {"color": FAMILY_COLORS.get(method_family(config), "black"), "linestyle": LOSS_LINESTYLES[loss_kind(config)]}


def _is_variant(config: Mapping) -> bool:
    """A BSCE run at another tau than 0 and 1, or with another prior than ``auto``."""
    c = {**_CONFIG_DEFAULTS, **config}
    return c["loss"] == "bsce" and (c["tau"] not in (0, 1) or c["prior"] != "auto")


def _panel(config: Mapping, split_variants: bool = True) -> tuple[tuple, str]:
    """The panel a method is drawn in: its family, with the memory protocol (Replay, LwF + memory)
    or the classifier (iCaRL), which change the question; with ``split_variants``, BSCE at another
    tau or prior in a panel of its own (with the main CE and BSCE for reference). The sort key and
    the panel's title."""
    c = {**_CONFIG_DEFAULTS, **config}
    family = method_family(c)
    detail = c["replay"] if uses_replay_option(c) else c["icarl_eval"] if c["strategy"] == "icarl" else ""
    order = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
    title = _FAMILY_NAMES.get(family, family) + (f" ({detail.replace('_', ' ')})" if detail else "")
    variant = split_variants and _is_variant(c)
    return (order, family, detail, variant), title + (", BSCE at other tau / prior" if variant else "")


@dataclasses.dataclass
class _Method:
    label: str
    runs: list
    config: dict
    panel: tuple
    title: str
    style: dict  # color, linestyle, marker

    @property
    def legend(self) -> str:
        """The line's label: the method label, which names the runs (``results.json``'s config)."""
        return f"{self.label} ({len(self.runs)} seed{'s' if len(self.runs) > 1 else ''})"

    @property
    def display(self) -> str:
        """The figure legend's entry: the method's name for a reader."""
        return f"{readable_method(self.config)} ({len(self.runs)} seed{'s' if len(self.runs) > 1 else ''})"


def readable_method(config: Mapping) -> str:
    """A method's name for a reader, e.g. ``Replay + BSCE``, ``LwF + memory + CE + WA``, ``iCaRL, its own loss
    (sigmoid BCE)``, ``Replay + BSCE, tau 0.5``; the panel title gives the protocol or classifier."""
    c = {**_CONFIG_DEFAULTS, **config}
    name = _FAMILY_NAMES.get(method_family(c), method_family(c))
    kind = loss_kind(c)
    if c["strategy"] == "icarl":
        loss = {"ce": ", its own loss (sigmoid BCE)", "bsce tau 0": ", softmax CE (BSCE tau 0)"}.get(kind, " + BSCE")
    elif c["strategy"] in ("er_ace", "bic", "gdumb") and kind == "ce":
        loss = ""  # their own loss
    else:
        loss = {"ce": " + CE", "bsce tau 0": " + BSCE, tau 0"}.get(kind, " + BSCE")
    name += loss + (" + WA" if c.get("weight_aligning") and c["strategy"] in ("replay", "lwf") else "")
    if kind == "bsce" and c["tau"] != 1:
        name += f", tau {c['tau']:g}"
    if c["loss"] == "bsce" and c["prior"] != "auto":
        name += f", prior {c['prior']}" + (f" {c['prior_window']}" if c["prior"] == "window" else "")
    return name


def _methods(runs: Sequence[dict]) -> list[_Method]:
    """The methods of :func:`group_runs`, ordered by panel, then CE, tau 0, BSCE, the main variant
    (tau 1, prior auto) first; each with its style (the marker tells apart the variants of a loss)."""
    groups = group_runs(runs)
    if not groups:
        raise ValueError("No runs to plot.")
    configs = {label: {**_CONFIG_DEFAULTS, **group[0]["config"]} for label, group in groups.items()}
    # BSCE at other tau / priors get a panel of their own where the family's panel would be crowded
    per_panel = Counter(_panel(c, split_variants=False)[0] for c in configs.values())
    methods = []
    for label, group in groups.items():
        config = configs[label]
        crowded = per_panel[_panel(config, split_variants=False)[0]] > _MAX_LINES_PER_PANEL
        panel, title = _panel(config, split_variants=crowded)
        methods.append(_Method(label, list(group), config, panel, title, method_style(config)))
    kinds = list(LOSS_LINESTYLES)
    methods.sort(key=lambda m: (m.panel, kinds.index(loss_kind(m.config)), _is_variant(m.config),
                                float(m.config["tau"]), m.label))
    used: dict = defaultdict(int)
    for m in methods:  # a variant's marker differs from its family's main BSCE too (drawn beside it)
        key = (m.panel[:-1], m.style["linestyle"])
        m.style["marker"] = _MARKERS[used[key] % len(_MARKERS)]
        used[key] += 1
    return methods


def _mean_std(group: Sequence[dict], getter) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std over the runs, entry by entry (None: missing, skipped); std NaN where
    fewer than two runs have the entry. Truncated to the shortest run."""
    curves = [np.asarray([np.nan if v is None else v for v in getter(r)], dtype=float) for r in group]
    n = min(len(c) for c in curves)
    stacked = np.stack([c[:n] for c in curves])
    counts = np.sum(~np.isnan(stacked), axis=0)
    # a step where no seed has the metric (old accuracy at step 1) stays NaN: not plotted
    mean = np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)
    sq = np.nansum((stacked - np.where(np.isnan(mean), 0.0, mean)) ** 2, axis=0)
    std = np.where(counts > 1, np.sqrt(sq / np.maximum(counts - 1, 1)), np.nan)
    return mean, std


def mean_per_experience(per_class: Sequence[Optional[float]],
                        classes_per_step: Sequence[Sequence[int]]) -> list[Optional[float]]:
    """``per_class[c]`` (indexed by class id) averaged over the classes of each experience; None
    for an experience none of whose classes has a value."""
    means = []
    for classes in classes_per_step:
        values = [per_class[c] for c in classes if per_class[c] is not None and not np.isnan(per_class[c])]
        means.append(float(np.mean(values)) if values else None)
    return means


def per_experience_accuracy(run: dict) -> list[Optional[float]]:
    """A run's per-class accuracy after the last step, averaged over the classes of each experience."""
    accuracy = run.get("per_class_accuracy") or run["steps"][-1]["per_class_accuracy"]
    return mean_per_experience(accuracy, run["classes_per_step"])


def _classes_seen(run: dict) -> np.ndarray:
    return np.cumsum([len(c) for c in run["classes_per_step"]])


def _placements(methods: Sequence[_Method], where: Mapping) -> list[tuple[_Method, list]]:
    """Each method with the axes it is drawn in: its panel's, and for the main CE and BSCE of a
    family, the panel of its BSCE variants too."""
    placed = []
    for m in methods:
        axes = list(where[m.panel]) if m.panel in where else []
        variants = (*m.panel[:-1], True)
        if not m.panel[-1] and variants in where and loss_kind(m.config) in ("ce", "bsce"):
            axes += where[variants]
        placed.append((m, axes))
    return placed


def _draw(ax, method: _Method, x, getter) -> None:
    """Mean over the method's runs (in %), and mean ± std as a band when it has several."""
    mean, std = _mean_std(method.runs, getter)
    x = np.asarray(x)[: len(mean)]
    ax.plot(x, 100 * mean, label=method.legend, ms=5, lw=1.6, **method.style)
    if len(method.runs) > 1:
        ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), color=method.style["color"], alpha=0.18,
                        lw=0, label=f"_band {method.label}")


def _small_multiples(methods: Sequence[_Method], columns: Sequence[str] = ("",), max_cols: int = 4):
    """A figure with one panel per method panel (times ``columns``: sub-panels side by side),
    shared axes; returns the figure and ``{panel: [axes per column]}``."""
    from matplotlib.figure import Figure

    panels = list(dict.fromkeys((m.panel, m.title) for m in methods))
    per_row = max(1, min(len(panels), max(1, max_cols // len(columns))))
    nrows, ncols = -(-len(panels) // per_row), per_row * len(columns)
    fig = Figure(figsize=(0.8 + 2.9 * ncols + 2.6, 0.9 + 2.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    where = {}
    for i, (panel, title) in enumerate(panels):
        row, col = divmod(i, per_row)
        where[panel] = list(axes[row, col * len(columns):(col + 1) * len(columns)])
        for ax, column in zip(where[panel], columns):
            ax.set_title(f"{title}\n{column}" if column else title, fontsize=9)
            ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) * len(columns):]:
        ax.set_visible(False)
    for col in range(ncols):  # tick labels under the lowest panel drawn in each column
        shown = [axes[r, col] for r in range(nrows) if axes[r, col].get_visible()]
        shown[-1].xaxis.set_tick_params(labelbottom=True)
    return fig, where


def _finish(fig, methods: Sequence[_Method], title: str, xlabel: str, ylabel: str, extra=()) -> None:
    """Title, axis labels and one legend for all panels, right of them (outside every axes)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ms=5, lw=1.6, **m.style) for m in methods]
    labels = [m.display for m in methods]
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False,
               title="method (solid: BSCE, dashed: CE,\ndotted: BSCE at tau 0; line: mean,\nband: ± std over seeds)",
               title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(xlabel, fontsize=10)
    fig.supylabel(ylabel, fontsize=10)


def _step_ticks(fig, run: dict) -> None:
    seen = _classes_seen(run)
    ticks = seen if len(seen) <= 6 else seen[::-2][::-1]  # every other step, the last one included
    for ax in fig.axes:
        ax.set_xticks(ticks)


def figure_accuracy_per_step(runs: Sequence[dict]):
    """Accuracy on the classes seen so far after each step, one panel per family."""
    methods = _methods(runs)
    fig, where = _small_multiples(methods)
    for m, axes in _placements(methods, where):
        for ax in axes:
            _draw(ax, m, _classes_seen(m.runs[0]), lambda r: [s["accuracy_seen"] for s in r["steps"]])
    _step_ticks(fig, methods[0].runs[0])
    _finish(fig, methods, "Accuracy on the classes seen so far, after each step", "classes seen",
            "accuracy on the seen classes (%)")
    return fig


def figure_old_new_accuracy(runs: Sequence[dict]):
    """Accuracy on the old and on the newest classes after each step, side by side per family."""
    methods = _methods(runs)
    fig, where = _small_multiples(methods, columns=("old classes", "new classes"))
    for m, axes in _placements(methods, where):
        for ax, part in zip(axes, ("old", "new") * len(axes)):
            _draw(ax, m, _classes_seen(m.runs[0]), lambda r: [s[part] for s in r["old_new_accuracy"]])
    _step_ticks(fig, methods[0].runs[0])
    _finish(fig, methods, "Accuracy on the classes of earlier steps (old) and of the current step (new)",
            "classes seen", "accuracy (%)")
    return fig


def figure_new_class_prediction_share(runs: Sequence[dict]):
    """Share of the test predictions given to the newest classes, with the unbiased share."""
    from matplotlib.lines import Line2D

    methods = _methods(runs)
    fig, where = _small_multiples(methods)
    fair_style = dict(color="0.35", linestyle="-.", lw=1.2)
    for m, axes in _placements(methods, where):
        for ax in axes:
            _draw(ax, m, _classes_seen(m.runs[0]), lambda r: r["new_class_prediction_share"])
    for panel, axes in where.items():  # the newest classes' share of the test images
        run = next(m.runs[0] for m in methods if m.panel == panel)
        sizes = np.asarray([len(c) for c in run["classes_per_step"]])
        axes[0].plot(_classes_seen(run), 100 * sizes / _classes_seen(run), label="_unbiased", **fair_style)
    _step_ticks(fig, methods[0].runs[0])
    _finish(fig, methods, "Test predictions given to the classes of the current step", "classes seen",
            "share of the test predictions (%)",
            extra=[(Line2D([], [], **fair_style), "unbiased (their share of the classes)")])
    return fig


def figure_per_experience_accuracy(runs: Sequence[dict]):
    """Per-class accuracy after the last step, averaged over the classes of each experience."""
    methods = _methods(runs)
    fig, where = _small_multiples(methods)
    for m, axes in _placements(methods, where):
        for ax in axes:
            _draw(ax, m, np.arange(1, len(m.runs[0]["classes_per_step"]) + 1), per_experience_accuracy)
    n = len(methods[0].runs[0]["classes_per_step"])
    for ax in fig.axes:
        ax.set_xticks(range(1, n + 1) if n <= 10 else range(1, n + 1, 2))
    _finish(fig, methods, "Accuracy of the final model on the classes of each step (mean over them)",
            "step in which the classes were learned", "accuracy after the last step (%)")
    return fig


#: The files :func:`plot_comparison` writes, and the figure each holds.
PLOTS = {
    "accuracy_per_step.png": figure_accuracy_per_step,
    "old_new_accuracy.png": figure_old_new_accuracy,
    "new_class_prediction_share.png": figure_new_class_prediction_share,
    "per_class_accuracy.png": figure_per_experience_accuracy,
}


def plot_comparison(runs: Sequence[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Write the PNG plots of :data:`PLOTS` (rendered with Agg); return their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not runs:
        raise ValueError("plot_comparison needs at least one run.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in PLOTS.items():
        fig = make(runs)
        FigureCanvasAgg(fig)
        fig.savefig(out_dir / name, dpi=110)
        written.append(out_dir / name)
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
