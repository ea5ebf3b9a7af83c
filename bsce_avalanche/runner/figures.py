"""The comparison figures (``bsce-experiment compare`` writes them, the analysis notebook shows them). Small
multiples: one panel per method family (and memory protocol / iCaRL classifier), one colour per family, the loss as
the line style, the spread over seeds as a band, one legend beside the panels. The figures are built without pyplot
(no global state, any backend) and saved with Agg; matplotlib is imported when a figure is made."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .labels import LOSS_LINESTYLES, is_variant, loss_kind, method_panel, method_style, readable_method
from .metrics import per_experience_accuracy
from .results import group_runs
from .schema import DEFAULTS

__all__ = ["figure_accuracy_per_step", "figure_old_new_accuracy", "figure_new_class_prediction_share",
           "figure_per_experience_accuracy", "PLOTS", "plot_comparison"]

#: Variants of one family and loss (another tau, prior, ...) differ by marker.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
#: More methods than this in a family's panel: its BSCE variants (tau, prior) go to a panel beside it.
_MAX_LINES_PER_PANEL = 4


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


def _methods(runs: Sequence[dict]) -> list[_Method]:
    """The methods of :func:`~.results.group_runs`, ordered by panel, then CE, tau 0, BSCE, the main variant
    (tau 1, prior auto) first; each with its style (the marker tells apart the variants of a loss)."""
    groups = group_runs(runs)
    if not groups:
        raise ValueError("No runs to plot.")
    configs = {label: {**DEFAULTS, **group[0]["config"]} for label, group in groups.items()}
    # BSCE at other tau / priors get a panel of their own where the family's panel would be crowded
    per_panel = Counter(method_panel(c, split_variants=False)[0] for c in configs.values())
    methods = []
    for label, group in groups.items():
        config = configs[label]
        crowded = per_panel[method_panel(config, split_variants=False)[0]] > _MAX_LINES_PER_PANEL
        panel, title = method_panel(config, split_variants=crowded)
        methods.append(_Method(label, list(group), config, panel, title, method_style(config)))
    kinds = list(LOSS_LINESTYLES)
    methods.sort(key=lambda m: (m.panel, kinds.index(loss_kind(m.config)), is_variant(m.config),
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
