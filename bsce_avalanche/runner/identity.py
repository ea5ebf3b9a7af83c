"""What a run is, read off the declared keys (:mod:`.schema`): the settings that change its results
(:func:`result_settings`), its name (:func:`run_name`: :func:`method_label` and :func:`settings_digest`), what its
first experience depends on (:func:`first_experience_settings`), and the settings that tell runs apart."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Optional

from .catalog import uses_replay_option
from .schema import DEFAULTS, EFFECT, ConfigKeys

__all__ = ["RESULT_KEYS", "LABEL_KEYS", "result_settings", "settings_digest", "method_label", "run_name",
           "differing_settings", "first_experience_settings", "resolved_first_experience_keys"]

#: Keys :func:`method_label` shows, where they matter (the run name's readable part).
_LABEL: dict[str, bool] = {f.name: f.metadata["label"] for f in fields(ConfigKeys)}
_ONLY: dict[str, tuple] = {f.name: f.metadata["only"] for f in fields(ConfigKeys)}
_APPLIES: dict[str, Optional[Callable[[Mapping], bool]]] = {f.name: f.metadata["applies"] for f in fields(ConfigKeys)}
_FIRST_EXPERIENCE: dict[str, tuple] = {f.name: f.metadata["first_experience"] for f in fields(ConfigKeys)}

#: The keys a method label shows where they matter: what names a method rather than its protocol.
LABEL_KEYS: frozenset[str] = frozenset(k for k, shown in _LABEL.items() if shown)

#: Keys that change what a run computes: a resumed run must agree on them, ``compare`` pools only runs that
#: agree on all of them but the seed, and the run name holds them (readably or in its digest).
RESULT_KEYS: tuple[str, ...] = tuple(k for k, effect in EFFECT.items() if effect != "run")


def _applies(key: str, c: Mapping) -> bool:
    """Whether ``key`` acts on the run ``c`` (a full config dict): its field's ``only`` and ``applies``."""
    return (not _ONLY[key] or c["strategy"] in _ONLY[key]) and (_APPLIES[key] is None or _APPLIES[key](c))


def result_settings(config: Mapping) -> dict:
    """The settings of ``config`` (a config dict, from this version or another) that change its results,
    defaults filled in; keys this version does not know are dropped, keys that do not act on this run (their
    field's ``only`` or ``applies``: another strategy's key, tau with ``loss: ce``) left at their default."""
    c = {**DEFAULTS, **config}
    return {k: c[k] if _applies(k, c) else DEFAULTS[k] for k in RESULT_KEYS}


def _shown_exactly(key: str, value) -> bool:
    """Whether :func:`method_label` shows a label key's ``value`` exactly (it shows every label key that
    applies, at a value other than its default): floats are printed with ``:g`` (6 significant digits),
    so ``tau: 0.1234567`` is not."""
    return not isinstance(value, float) or float(f"{value:g}") == value


def settings_digest(config: Mapping) -> str:
    """Six hex digits naming every result setting but the seed, by exact value: the settings at a value
    other than their default, less those :func:`method_label` shows exactly (so the runs of one protocol share
    it). Stable across versions: keys at their default are left out, so a key added later changes no name,
    and a label key enters only when the label loses part of its value (``tau: 0.1234567``), so the names of
    runs whose label shows everything did not change when this rule was added."""
    settings = {k: v for k, v in result_settings(config).items()
                if k != "seed" and v != DEFAULTS[k] and not (_LABEL[k] and _shown_exactly(k, v))}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]


def first_experience_settings(config: Mapping) -> dict:
    """The single source of what a run's first experience depends on among its settings, read off each field's
    declaration (:func:`.schema._key`'s ``effect`` and ``first_experience``): the ``result`` keys as they are, the
    ``later`` keys whose field lists this run's strategy (``memory_size`` for BiC and GDumb), each at its
    default where it does not act on this run. The ``resolved`` keys are not here: they enter the
    first-experience key as what they resolve to (:data:`~.schema.RESOLVED_ENTRIES`, computed by
    ``first_experience.first_experience_key``; :func:`resolved_first_experience_keys` lists them)."""
    c = {**DEFAULTS, **config}
    settings = result_settings(c)
    return {k: v for k, v in settings.items()
            if EFFECT[k] == "result" or (EFFECT[k] == "later" and c["strategy"] in _FIRST_EXPERIENCE[k])}


def resolved_first_experience_keys() -> dict[str, tuple[str, ...]]:
    """Each ``resolved`` key and the first-experience key entries it enters as (``tau``: ``("loss",)``)."""
    return {k: _FIRST_EXPERIENCE[k] for k, effect in EFFECT.items() if effect == "resolved"}


def run_name(config: Mapping) -> str:
    """``<method label>-seed<seed>-<settings digest>``, e.g. ``replay-bsce-seed0-3fa9c1``: the usual
    settings readable, every other result setting in the digest (two distinct runs never share a name)."""
    c = {**DEFAULTS, **config}
    return f"{method_label(c)}-seed{c['seed']}-{settings_digest(c)}"


def differing_settings(configs: Sequence[Mapping]) -> list[str]:
    """The result settings (seed excluded) that are not equal across ``configs``."""
    settings = [result_settings(c) for c in configs]
    return [k for k in RESULT_KEYS if k != "seed" and any(s[k] != settings[0][k] for s in settings[1:])]


def method_label(config: Mapping) -> str:
    """What distinguishes a method from others in a comparison (not the seed; settings at their
    default left out), e.g. ``replay-bsce``, ``lwf+mem-ce-concat``, ``icarl-bsce-head``,
    ``replay-ce-concat-wa``. Takes a config dict, so that results written by other versions get labels too."""
    c = {**DEFAULTS, **config}
    parts = [c["strategy"] + ("+mem" if c["strategy"] == "lwf" and c["lwf_memory"] else ""), c["loss"]]
    if c["strategy"] == "icarl":
        parts.append(c["icarl_eval"])
    if uses_replay_option(c):
        parts += [c[k] for k in ("replay", "memory_selection") if c[k] != DEFAULTS[k]]
    elif c["strategy"] == "er_ace" and c["memory_selection"] != DEFAULTS["memory_selection"]:
        parts.append(c["memory_selection"])
    if c["loss"] == "bsce" and c["prior"] != "auto":
        parts.append(f"prior_{c['prior']}" + (f"{c['prior_window']}" if c["prior"] == "window" else ""))
    if c["loss"] == "bsce" and c["tau"] != 1.0:
        parts.append(f"tau{c['tau']:g}")
    if c["weight_aligning"] and c["strategy"] in _ONLY["weight_aligning"]:
        parts.append("wa")
    if c["online"]:
        parts.append("online")
    return "-".join(parts)
