"""The format of a run's ``results.json``, in one place: its fields and what they mean (:data:`FIELDS`), its
version (:data:`FORMAT_VERSION`, written as ``results["format"]``), the record a run starts
(:func:`new_results`, written by :mod:`.experiment`) and the check every reader makes (:func:`read_results`,
:func:`results_problem`: ``compare``, ``run --resume``, the evidence scripts, the notebooks through
``results.load_results``). ``experiments/GUIDE.md`` lists the fields for readers outside Python.

Files written before the version field existed (the committed evidence) are format 1, and load as they are:
format 2 only added the field. A reader meets one message per bad file: unreadable JSON, a format newer than
this version reads, or a finished run missing what it must hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .errors import ConfigError

__all__ = ["COMPUTE_KEYS", "FORMAT_VERSION", "FORMAT_KEY", "FIELDS", "FINISHED_FIELDS", "new_results", "format_version",
           "results_problem", "finished_results_problem", "problem_cause", "read_results", "ResultsFormatError"]

#: The version this code writes. 1: files without ``format`` (before it was recorded); 2: ``format`` added.
#: Raise it when a field changes meaning or a field a reader needs is added, and say here what changed.
FORMAT_VERSION = 2
FORMAT_KEY = "format"

#: Every top-level field of ``results.json``, and its meaning. Per-step lists have one entry per step trained
#: so far (they are written after every step; ``finished`` says whether all steps ran). Accuracies are fractions.
FIELDS: dict[str, str] = {
    "format": "the results format's version (FORMAT_VERSION; missing: 1, written before it was recorded)",
    "config": "the run's full config (ExperimentConfig.to_dict(): recipes applied, the values trained with); "
              "identity.run_name(config) is the run's folder name",
    "finished": "whether every step ran (false: interrupted, --resume continues it; see failed)",
    "failed": "only when training diverged: {reason, step, ...}; the steps before it stay valid",
    "n_classes": "number of classes of the benchmark",
    "class_order": "the class ids in the order they arrive",
    "classes_per_step": "per step, the class ids of that experience",
    "data_digest": "digest of the data loaded, as built with seed 0 (the same for every seed of a run; compare "
                   "keeps runs on other data apart; --resume refuses it)",
    "environment": "device, GPU, CPU, threads, the CPU kernels torch used (cpu_capability: AVX2, AVX512, ...; the "
                   "same seed trains other numbers with other kernels), Python, torch and Avalanche versions of the "
                   "run; compile: how the model was compiled (null: eager)",
    "steps": "per step, its evaluation: accuracy_per_experience, accuracy_seen, old_accuracy, new_accuracy, "
             "new_class_prediction_share, per_class_accuracy (the last step's confusion_matrix: top level)",
    "priors": "per step, BSCE's class prior at the end of its training (null for loss: ce)",
    "step_times_s": "per step, training seconds (first step: the cached first experience's own training time)",
    "train_time_s": "the sum of step_times_s",
    "images_seen": "per step, training images passed forward (memory samples included), all processes",
    "gradient_steps": "per step, optimizer steps",
    "images_per_epoch": "per step, training images of one epoch",
    "gradient_steps_per_epoch": "per step, optimizer steps of one epoch",
    "samples_stored": "per step, samples in the replay memory after the step (0 without a memory)",
    "accuracy_matrix": "[t][j]: accuracy on experience j's test data after step t",
    "average_incremental_accuracy": "mean over steps of the accuracy on the classes seen so far",
    "last_accuracy": "accuracy on all classes after the last step",
    "forgetting": "mean over the earlier experiences of the drop from their best to their last accuracy "
                  "(null after one step)",
    "old_new_accuracy": "per step, {old, new}: accuracy on the previous steps' classes and on this step's",
    "new_class_prediction_share": "per step, fraction of seen-class test predictions that go to this step's classes",
    "per_class_accuracy": "after the last step, per class (null: not seen)",
    "confusion_matrix": "after the last step, over the seen classes' test data ([true][predicted])",
    "first_experience": "the first-experience cache: {key, training, cached, file, train_time_s}",
    "weight_aligning_gamma": "with weight_aligning: per step, Weight Aligning's factor",
    "icarl_head": "iCaRL evaluated with icarl_eval: nme: the same weights evaluated with the trained head "
                  "(summarised as the run's own: accuracy_matrix, average_incremental_accuracy, ...)",
    "icarl_nme": "iCaRL evaluated with icarl_eval: head: the same weights evaluated with NME",
    "posthoc": "CE runs (catalog.posthoc_applies): the same evaluations with post-hoc logit adjustment: "
               "{method, tau, prior, prior_window, steps, and the summary fields}",
    "ncm": "with ncm_diagnostic: the evaluations of a nearest-class-mean classifier on the features, class means "
           "from the memory: {method, steps, and the summary fields}",
    "distributed": "under torchrun: world size, per-rank batch, consistent_per_step, last_digests",
    "wandb": "with W&B: {run_id, run_dir, sync_command}",
}

#: The per-step lists of the compute counters (runner/compute.py; one entry per step; null: a step run by a
#: version that did not count).
COMPUTE_KEYS = ("images_seen", "gradient_steps", "images_per_epoch", "gradient_steps_per_epoch", "samples_stored")

#: What a finished run's ``results.json`` must hold for ``compare`` and ``run --resume``: field -> type.
FINISHED_FIELDS = {"config": dict, "steps": list, "classes_per_step": list, "class_order": list,
                   "average_incremental_accuracy": float, "last_accuracy": float, "train_time_s": float,
                   "old_new_accuracy": list, "new_class_prediction_share": list, "per_class_accuracy": list}


class ResultsFormatError(ConfigError):
    """A ``results.json`` that cannot be read as a run's results (a one-line message naming the file)."""


def new_results(config: dict, n_classes: int, class_order: list, classes_per_step: list, data_digest: str,
                environment: dict) -> dict:
    """The record a run starts with, before its first step (the per-step lists empty)."""
    return {
        FORMAT_KEY: FORMAT_VERSION, "config": config, "finished": False, "n_classes": n_classes,
        "class_order": class_order, "classes_per_step": classes_per_step, "data_digest": data_digest,
        "environment": environment, "steps": [], "priors": [], "step_times_s": [], **{key: [] for key in COMPUTE_KEYS},
    }


def format_version(results: dict) -> int:
    """The format ``results`` was written in (1: before the field existed)."""
    return results.get(FORMAT_KEY, 1)


def finished_results_problem(results) -> Optional[str]:
    """What keeps a finished run's results from being reported (a missing key, a wrong type, step lists of
    different lengths), or None."""
    if not isinstance(results, dict):
        return f"holds a JSON {type(results).__name__}, not an object"
    for key, kind in FINISHED_FIELDS.items():
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


def results_problem(results) -> Optional[str]:
    """What keeps ``results`` (a parsed ``results.json``, finished or not) from being read by this version, or
    None: not an object, a format this version does not know, or (finished) :func:`finished_results_problem`."""
    if not isinstance(results, dict):
        return f"holds a JSON {type(results).__name__}, not an object"
    version = format_version(results)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"has {version!r} as its results format (an integer from 1 on)"
    if version > FORMAT_VERSION:
        return (f"is of results format {version}, newer than this version of bsce-avalanche reads (up to "
                f"{FORMAT_VERSION}): update bsce-avalanche to read it")
    return finished_results_problem(results) if results.get("finished") else None


def read_results(path: str | Path, fix: str) -> dict:
    """The parsed ``results.json`` at ``path``; unreadable JSON or a :func:`results_problem` is a
    :class:`ResultsFormatError` in one line naming the file, with ``fix`` (what the reader can do) at its end."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultsFormatError(f"{path} is unreadable (truncated or corrupt: {err}): {fix}.") from None
    if problem := results_problem(results):
        raise ResultsFormatError(f"{path} {problem}{problem_cause(problem)}: {fix}.")
    return results


def problem_cause(problem: str) -> str:
    """The likely cause of a :func:`results_problem` (none for a format problem, which says it)."""
    return "" if "results format" in problem else " (edited by hand, or written by another version)"
