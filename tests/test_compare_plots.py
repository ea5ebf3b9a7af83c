"""The comparison plots: a panel per method family, the loss as the line style, seeds as a band,
the legend outside the panels, per-class accuracy averaged per experience. Synthetic results.json
content (no training): fast and exact."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection

from bsce_avalanche.runner import results
from bsce_avalanche.runner.figures import (figure_accuracy_per_step, figure_new_class_prediction_share,
                                           figure_old_new_accuracy, figure_per_experience_accuracy, plot_comparison)
from bsce_avalanche.runner.labels import FAMILY_COLORS
from bsce_avalanche.runner.metrics import per_experience_accuracy

CLASSES = [[4, 0], [1, 5, 2], [3]]  # uneven experiences, ids out of order


def make_run(strategy="replay", loss="ce", seed=0, shift=0.0, **config):
    """A finished run of 3 steps whose numbers depend on (loss, seed, shift) only."""
    base = 0.5 + (0.1 if loss == "bsce" else 0.0) + 0.02 * seed + shift
    per_class = [round(base - 0.05 * c, 4) for c in range(6)]
    seen = [base, base - 0.1, base - 0.2]
    return {
        "config": {"strategy": strategy, "loss": loss, "seed": seed, "tau": 1.0, "prior": "auto",
                   "lwf_memory": False, "icarl_eval": "nme", "replay": "half_batch", **config},
        "finished": True, "n_classes": 6, "class_order": [c for step in CLASSES for c in step],
        "classes_per_step": CLASSES,
        "steps": [{"accuracy_seen": a} for a in seen],
        "old_new_accuracy": [{"old": old, "new": base} for old in (None, base - 0.2, base - 0.3)],
        "new_class_prediction_share": [1.0, 0.6 - 0.1 * seed, 0.4],
        "per_class_accuracy": per_class,
        "average_incremental_accuracy": float(np.mean(seen)), "last_accuracy": seen[-1],
    }


def grid_runs():
    """Replay CE/BSCE over 3 seeds, LwF + memory CE/BSCE and iCaRL CE/BSCE/tau 0 with one seed."""
    runs = [make_run("replay", loss, seed) for loss in ("ce", "bsce") for seed in (0, 1, 2)]
    runs += [make_run("lwf", loss, lwf_memory=True, shift=-0.1) for loss in ("ce", "bsce")]
    runs += [make_run("icarl", loss, shift=-0.2) for loss in ("ce", "bsce")]
    runs.append(make_run("icarl", "bsce", tau=0.0, shift=-0.25))
    return runs


def _axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _lines(fig, label_start):
    """The method lines whose legend label starts with ``label_start``, in every panel."""
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_label().startswith(label_start + " (")]


def _bands(ax):
    return {c.get_label().removeprefix("_band "): c for c in ax.collections
            if isinstance(c, PolyCollection) and c.get_label().startswith("_band ")}


def test_one_panel_per_family_with_a_shared_y_axis():
    fig = figure_accuracy_per_step(grid_runs())
    axes = _axes(fig)
    assert [ax.get_title() for ax in axes] == ["Replay (half batch)", "LwF + memory (half batch)", "iCaRL (nme)"]
    assert all(axes[0].get_shared_y_axes().joined(axes[0], ax) for ax in axes[1:])
    panel_of = {line.get_label().split(" (")[0]: ax.get_title() for ax in axes for line in ax.get_lines()}
    assert panel_of == {"replay-ce": "Replay (half batch)", "replay-bsce": "Replay (half batch)",
                        "lwf+mem-ce": "LwF + memory (half batch)", "lwf+mem-bsce": "LwF + memory (half batch)",
                        "icarl-ce-nme": "iCaRL (nme)", "icarl-bsce-nme": "iCaRL (nme)",
                        "icarl-bsce-nme-tau0": "iCaRL (nme)"}
    # old / new: two panels per family, side by side
    fig = figure_old_new_accuracy(grid_runs())
    assert [ax.get_title() for ax in _axes(fig)][:2] == ["Replay (half batch)\nold classes",
                                                         "Replay (half batch)\nnew classes"]
    assert len(_axes(fig)) == 6


def test_colour_per_family_and_line_style_per_loss():
    fig = figure_accuracy_per_step(grid_runs())
    style = {label: (line.get_color(), line.get_linestyle(), line.get_marker())
             for label in ("replay-ce", "replay-bsce", "lwf+mem-ce", "lwf+mem-bsce", "icarl-ce-nme",
                           "icarl-bsce-nme", "icarl-bsce-nme-tau0")
             for line in _lines(fig, label)}
    assert {label: s[1] for label, s in style.items()} == {
        "replay-ce": "--", "replay-bsce": "-", "lwf+mem-ce": "--", "lwf+mem-bsce": "-",
        "icarl-ce-nme": "--", "icarl-bsce-nme": "-", "icarl-bsce-nme-tau0": ":"}
    assert style["replay-ce"][0] == style["replay-bsce"][0] == FAMILY_COLORS["replay"]
    assert style["icarl-ce-nme"][0] == style["icarl-bsce-nme-tau0"][0] == FAMILY_COLORS["icarl"]
    assert len({FAMILY_COLORS["replay"], FAMILY_COLORS["lwf+mem"], FAMILY_COLORS["icarl"], FAMILY_COLORS["lwf"],
                FAMILY_COLORS["bic"], FAMILY_COLORS["er_ace"]}) == 6


def test_variants_of_a_loss_differ_by_marker_and_crowded_families_get_a_variant_panel():
    runs = [make_run("replay", "ce"), make_run("replay", "bsce"), make_run("replay", "bsce", prior="dataset")]
    fig = figure_accuracy_per_step(runs + [make_run("replay", "bsce", tau=0.5)])
    [ax] = _axes(fig)  # four methods: one panel
    markers = {line.get_label().split(" (")[0]: line.get_marker() for line in ax.get_lines()}
    assert markers["replay-ce"] == markers["replay-bsce"] == "o"  # the main CE and BSCE: circles
    assert len({markers["replay-bsce"], markers["replay-bsce-prior_dataset"], markers["replay-bsce-tau0.5"]}) == 3

    runs += [make_run("replay", "bsce", tau=tau) for tau in (0.0, 0.5, 2.0)]
    fig = figure_accuracy_per_step(runs)
    main, variants = _axes(fig)
    assert variants.get_title() == "Replay (half batch), BSCE at other tau / prior"
    in_main = {line.get_label().split(" (")[0] for line in main.get_lines()}
    in_variants = {line.get_label().split(" (")[0]: line.get_marker() for line in variants.get_lines()}
    assert in_main == {"replay-ce", "replay-bsce", "replay-bsce-tau0"}
    # the variants, and the main CE and BSCE for reference; every BSCE line with its own marker
    assert set(in_variants) == {"replay-ce", "replay-bsce", "replay-bsce-prior_dataset", "replay-bsce-tau0.5",
                                "replay-bsce-tau2"}
    solid = [m for label, m in in_variants.items() if label != "replay-ce"]
    assert len(set(solid)) == len(solid)


def test_mean_line_and_a_band_of_one_std_where_there_are_several_seeds():
    runs = grid_runs()
    fig = figure_accuracy_per_step(runs)
    replay, lwf, icarl = _axes(fig)
    assert set(_bands(replay)) == {"replay-ce", "replay-bsce"}
    assert _bands(lwf) == {} and _bands(icarl) == {}  # one seed: no band

    seeds = np.array([[s["accuracy_seen"] for s in r["steps"]] for r in runs
                      if r["config"]["strategy"] == "replay" and r["config"]["loss"] == "bsce"])
    mean, std = 100 * seeds.mean(axis=0), 100 * seeds.std(axis=0, ddof=1)
    [line] = _lines(fig, "replay-bsce")
    assert line.get_xdata().tolist() == [2, 5, 6]  # classes seen
    assert line.get_ydata() == pytest.approx(mean)
    band = _bands(replay)["replay-bsce"].get_paths()[0].vertices
    for x, low, high in zip([2, 5, 6], mean - std, mean + std):
        ys = band[np.isclose(band[:, 0], x), 1]
        assert ys.min() == pytest.approx(low) and ys.max() == pytest.approx(high)
    assert line.get_label() == "replay-bsce (3 seeds)"


def test_legend_is_outside_every_panel():
    for make in (figure_accuracy_per_step, figure_old_new_accuracy, figure_new_class_prediction_share,
                 figure_per_experience_accuracy):
        fig = make(grid_runs())
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        [legend] = fig.legends
        assert all(not ax.get_legend() for ax in fig.axes)
        box = legend.get_window_extent(renderer)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1 - 1, box.y1 - 1)
        for ax in _axes(fig):
            assert not box.overlaps(ax.get_window_extent(renderer)), (make.__name__, ax.get_title())
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts[:2] == ["Replay + CE (3 seeds)", "Replay + BSCE (3 seeds)"]  # readable names
        assert "solid: BSCE, dashed: CE" in legend.get_title().get_text()


def test_unbiased_share_is_drawn_in_every_panel():
    fig = figure_new_class_prediction_share(grid_runs())
    for ax in _axes(fig):
        [fair] = [line for line in ax.get_lines() if line.get_label() == "_unbiased"]
        assert fair.get_ydata() == pytest.approx([100, 60, 100 / 6])  # 2 of 2, 3 of 5, 1 of 6 classes


def test_per_class_accuracy_is_averaged_over_each_experience():
    run = make_run("replay", "bsce")
    acc = run["per_class_accuracy"]
    assert per_experience_accuracy(run) == pytest.approx([(acc[4] + acc[0]) / 2, (acc[1] + acc[5] + acc[2]) / 3,
                                                          acc[3]])
    missing = dict(run, per_class_accuracy=[None, 0.5, 0.25, None, None, 1.0])
    assert per_experience_accuracy(missing) == pytest.approx([None, (0.5 + 1.0 + 0.25) / 3, None])

    runs = grid_runs()
    fig = figure_per_experience_accuracy(runs)
    [line] = _lines(fig, "replay-ce")
    by_hand = np.mean([[np.mean([r["per_class_accuracy"][c] for c in step]) for step in CLASSES] for r in runs
                       if r["config"]["strategy"] == "replay" and r["config"]["loss"] == "ce"], axis=0)
    assert line.get_xdata().tolist() == [1, 2, 3]
    assert line.get_ydata() == pytest.approx(100 * by_hand)


def test_labels_come_from_group_runs_and_styles_from_the_config(monkeypatch):
    """Whatever the label function says, the family and loss are read from each run's config."""
    monkeypatch.setattr(results, "run_label", lambda run: f"M{run['config']['strategy'][0]}{run['config']['loss']}")
    runs = grid_runs()
    assert set(results.group_runs(runs)) == {"Mrce", "Mrbsce", "Mlce", "Mlbsce", "Mice", "Mibsce"}
    fig = figure_accuracy_per_step([r for r in runs if r["config"]["tau"] == 1.0])
    [ce] = _lines(fig, "Mrce")
    [bsce] = _lines(fig, "Mibsce")
    assert (ce.get_linestyle(), ce.get_color()) == ("--", FAMILY_COLORS["replay"])
    assert (bsce.get_linestyle(), bsce.get_color()) == ("-", FAMILY_COLORS["icarl"])


def test_plot_comparison_writes_the_same_files_deterministically(tmp_path):
    runs = grid_runs()
    first = plot_comparison(runs, tmp_path / "a")
    second = plot_comparison(runs, tmp_path / "b")
    assert [p.name for p in first] == ["accuracy_per_step.png", "old_new_accuracy.png",
                                       "new_class_prediction_share.png", "per_class_accuracy.png"]
    for a, b in zip(first, second):
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert a.read_bytes() == b.read_bytes(), a.name
    with pytest.raises(ValueError, match="at least one run"):
        plot_comparison([], tmp_path / "c")


def test_legends_use_readable_method_names():
    from bsce_avalanche.runner.labels import readable_method

    assert readable_method({"strategy": "replay", "loss": "ce"}) == "Replay + CE"
    assert readable_method({"strategy": "lwf", "lwf_memory": True, "loss": "ce", "weight_aligning": True}) == \
        "LwF + memory + CE + WA"
    assert readable_method({"strategy": "icarl", "loss": "bsce", "tau": 0.0}) == "iCaRL, softmax CE (BSCE tau 0)"
    assert readable_method({"strategy": "icarl", "loss": "ce"}) == "iCaRL, its own loss (sigmoid BCE)"
    assert readable_method({"strategy": "replay", "loss": "bsce", "tau": 0.5}) == "Replay + BSCE, tau 0.5"
    assert readable_method({"strategy": "er_ace", "loss": "ce"}) == "ER-ACE"
