"""The runs to compare: the ``results.json`` files found and loaded (:func:`load_results`), checked to be of one
benchmark and class split, pooled by method over seeds (:func:`group_runs`), and a CE run's post-hoc view as a
method of its own (:func:`with_posthoc`). The tables (:mod:`.compare`) and the figures (:mod:`.figures`) read them."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigError
from .identity import differing_settings, result_settings, run_name, settings_digest
from .labels import run_label
from .results_format import read_results

__all__ = ["find_results", "load_results", "check_one_setting", "posthoc_view", "with_posthoc", "group_runs"]


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


#: The run-level metrics of :func:`~.metrics.summarise`, which a post-hoc record holds too.
_SUMMARY_KEYS = ("accuracy_matrix", "average_incremental_accuracy", "last_accuracy", "forgetting", "old_new_accuracy",
                 "new_class_prediction_share")


def posthoc_view(run: dict) -> dict:
    """A run whose results carry post-hoc figures (``results["posthoc"]``), seen as the run of its own method
    "CE + post-hoc LA": the same config, seed and training; the metrics of the adjusted predictions."""
    record = run["posthoc"]
    config = run["config"]
    if config.get("strategy") == "icarl":  # the adjustment is of the trained head's logits, whatever icarl_eval is
        config = {**config, "icarl_eval": "head"}
    return {**run, **{k: record[k] for k in _SUMMARY_KEYS}, "steps": record["steps"], "config": config,
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
