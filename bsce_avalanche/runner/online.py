"""The runner's online protocol (``online: true``): a task's experience as the stream of mini-batch experiences of
Avalanche's ``split_online_stream``, each trained by one ``train()`` call, so that the memory is updated after every
mini-batch, and the head grows with the classes seen in the stream, with no task boundary reaching training."""

from __future__ import annotations

import hashlib
from typing import Iterator

from avalanche.benchmarks.scenarios.online import split_online_stream

__all__ = ["online_experiences", "split_seed"]


def split_seed(seed: int, task: int) -> int:
    """The seed of task ``task``'s shuffle into mini-batches: fixed by the run's seed, so that a run resumed
    between tasks splits the next task as the uninterrupted run does (the global RNG is left alone)."""
    return int.from_bytes(hashlib.sha256(f"online/{seed}/{task}".encode()).digest()[:4], "little")


def online_experiences(experience, batch_size: int, seed: int) -> Iterator:
    """``experience`` (one task) as Avalanche's online experiences of ``batch_size`` samples (the last one may be
    smaller), shuffled with ``seed``; each stream sample is in exactly one of them.

    ``split_online_stream`` strips the experience's class attributes (``access_task_boundaries=False``); each
    mini-batch experience gets ``classes_in_this_experience`` back as the classes of its own samples, which the
    learner sees anyway: Avalanche's ``IncrementalClassifier`` then activates the unit of a class when the stream
    first shows it, not at the task's start.
    """
    for mini in split_online_stream([experience], experience_size=batch_size, shuffle=True, seed=seed):
        mini.classes_in_this_experience = sorted(int(c) for c in mini.dataset.targets.uniques)
        yield mini
