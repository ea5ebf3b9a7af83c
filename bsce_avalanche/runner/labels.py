"""How methods are named and drawn, read from a run's config: its label (:func:`run_label`), its family
(:func:`method_family`), loss kind and panel, its name for a reader (:func:`readable_method`) and its colour and
line style (:func:`method_style`), the same in every table, figure and notebook."""

from __future__ import annotations

from typing import Mapping

from .catalog import STRATEGIES, uses_replay_option
from .identity import method_label
from .schema import DEFAULTS

__all__ = ["POSTHOC_LABEL", "run_label", "FAMILIES", "FAMILY_COLORS", "LOSS_LINESTYLES", "method_family", "loss_kind",
           "method_style", "is_variant", "method_panel", "readable_method"]

#: Appended to a CE run's label for its post-hoc logit-adjusted evaluation (:func:`~.results.posthoc_view`).
POSTHOC_LABEL = " + post-hoc LA"


def run_label(run: dict) -> str:
    """The method a run belongs to, e.g. ``replay-bsce`` or ``lwf+mem-ce`` (seed left out); a post-hoc view
    of a CE run: ``replay-ce-concat + post-hoc LA``."""
    return method_label(run["config"]) + (POSTHOC_LABEL if run.get("_evaluation") == "posthoc" else "")


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


def method_family(config: Mapping) -> str:
    """The family of a run's method: its strategy, ``lwf+mem`` for LwF with a memory."""
    c = {**DEFAULTS, **config}
    return "lwf+mem" if c["strategy"] == "lwf" and c["lwf_memory"] else c["strategy"]


def loss_kind(config: Mapping) -> str:
    """``"ce"``, ``"bsce"`` or ``"bsce tau 0"`` (the keys of :data:`LOSS_LINESTYLES`)."""
    c = {**DEFAULTS, **config}
    if c["loss"] != "bsce":
        return "ce"
    return "bsce tau 0" if c["tau"] == 0 else "bsce"


def method_style(config: Mapping) -> dict:
    """``color`` and ``linestyle`` of a run's method in every plot (``ax.plot(..., **method_style(cfg))``)."""
    return {"color": FAMILY_COLORS.get(method_family(config), "black"), "linestyle": LOSS_LINESTYLES[loss_kind(config)]}


def is_variant(config: Mapping) -> bool:
    """A BSCE run at another tau than 0 and 1, or with another prior than ``auto``."""
    c = {**DEFAULTS, **config}
    return c["loss"] == "bsce" and (c["tau"] not in (0, 1) or c["prior"] != "auto")


def method_panel(config: Mapping, split_variants: bool = True) -> tuple[tuple, str]:
    """The panel a method is drawn in: its family, with the memory protocol (Replay, LwF + memory)
    or the classifier (iCaRL), which change the question; with ``split_variants``, BSCE at another
    tau or prior in a panel of its own (with the main CE and BSCE for reference). The sort key and
    the panel's title."""
    c = {**DEFAULTS, **config}
    family = method_family(c)
    detail = c["replay"] if uses_replay_option(c) else c["icarl_eval"] if c["strategy"] == "icarl" else ""
    order = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
    title = _FAMILY_NAMES.get(family, family) + (f" ({detail.replace('_', ' ')})" if detail else "")
    variant = split_variants and is_variant(c)
    return (order, family, detail, variant), title + (", BSCE at other tau / prior" if variant else "")


def readable_method(config: Mapping) -> str:
    """A method's name for a reader, e.g. ``Replay + BSCE``, ``LwF + memory + CE + WA``, ``iCaRL, its own loss
    (sigmoid BCE)``, ``Replay + BSCE, tau 0.5``; the panel title gives the protocol or classifier."""
    c = {**DEFAULTS, **config}
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
