"""Class-incremental metrics from test-set predictions after each step, and a run's per-class accuracy averaged
per experience (:func:`per_experience_accuracy`). Accuracies are fractions in [0, 1]; the test samples of
experience ``j`` are those whose label is in ``classes_per_step[j]``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["StepEvaluation", "evaluate_step", "summarise", "mean_per_experience", "per_experience_accuracy"]


#: Metrics of one step: a plain dict, which JSON and checkpoints (``weights_only``) take as is.
StepEvaluation = dict


def _accuracy(mask: np.ndarray, correct: np.ndarray) -> float:
    return float(correct[mask].mean()) if mask.any() else float("nan")


def evaluate_step(y_true: np.ndarray, y_pred: np.ndarray, classes_per_step: Sequence[Sequence[int]], step: int,
                  n_classes: int) -> StepEvaluation:
    """Metrics after training step ``step`` from predictions on the whole test set.

    :return: ``accuracy_per_experience`` (one entry per experience, future ones included),
        ``accuracy_seen`` (all classes seen so far), ``old_accuracy`` / ``new_accuracy`` (classes of
        previous steps / of this step), ``new_class_prediction_share`` (fraction of predictions on
        seen-class test data that go to this step's classes), ``per_class_accuracy`` and
        ``confusion_matrix`` (over seen-class test data).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}.")
    correct = y_true == y_pred
    exp_of_class = np.full(n_classes, -1)
    for t, classes in enumerate(classes_per_step):
        exp_of_class[list(classes)] = t
    exp_of_sample = exp_of_class[y_true]
    seen = (exp_of_sample >= 0) & (exp_of_sample <= step)
    new = exp_of_sample == step
    old = seen & ~new
    new_classes = exp_of_class == step

    seen_pred = np.clip(y_pred[seen], 0, n_classes - 1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true[seen], seen_pred), 1)
    support = confusion.sum(1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)

    return StepEvaluation(
        accuracy_per_experience=[_accuracy(exp_of_sample == j, correct) for j in range(len(classes_per_step))],
        accuracy_seen=_accuracy(seen, correct),
        old_accuracy=_accuracy(old, correct) if step > 0 else None,
        new_accuracy=_accuracy(new, correct),
        new_class_prediction_share=float(new_classes[seen_pred].mean()) if seen.any() else float("nan"),
        per_class_accuracy=[None if np.isnan(a) else float(a) for a in per_class],
        confusion_matrix=confusion.tolist(),
    )


def summarise(steps: Sequence[StepEvaluation]) -> dict:
    """Run-level metrics from the per-step evaluations.

    * ``accuracy_matrix[t][j]``: accuracy on experience ``j``'s test data after step ``t``;
    * ``average_incremental_accuracy``: mean over steps of the accuracy on all seen classes;
    * ``last_accuracy``: accuracy on all classes after the last step;
    * ``forgetting``: mean over experiences ``j < T`` of the drop from their best
      accuracy at an earlier step to their accuracy at the last step ``T``;
    * ``old_new_accuracy``: per step, accuracy on old and on new classes;
    * ``new_class_prediction_share``: per step.
    """
    if not steps:
        raise ValueError("summarise needs at least one step.")
    matrix = [s["accuracy_per_experience"] for s in steps]
    last = len(steps) - 1
    drops = [max(matrix[t][j] for t in range(j, last)) - matrix[last][j] for j in range(last)]
    return {
        "accuracy_matrix": matrix,
        "average_incremental_accuracy": float(np.mean([s["accuracy_seen"] for s in steps])),
        "last_accuracy": steps[-1]["accuracy_seen"],
        "forgetting": float(np.mean(drops)) if drops else None,
        "old_new_accuracy": [{"old": s["old_accuracy"], "new": s["new_accuracy"]} for s in steps],
        "new_class_prediction_share": [s["new_class_prediction_share"] for s in steps],
    }


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
