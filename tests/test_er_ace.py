"""ERACE (bsce_avalanche/er_ace.py): Avalanche's ER-ACE with Replay's memory, updated after each experience;
the runner's er_ace on it, sharing Replay's first experience; the compute accounting of every run."""

from __future__ import annotations

import math

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer
from torch.optim import SGD

from bsce_avalanche import ConcatReplayPlugin, ERACE
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.experiment import build_benchmark, run_experiment

from conftest import MLP, make_blobs_benchmark
from test_plugin import quiet_evaluator

MEM, BATCH = 24, 16


class _Tracer(SupervisedPlugin):
    """Per experience: every training mini-batch (new and memory), the memory's contents after training, and
    the labels the memory held while each experience trained."""

    def __init__(self):
        super().__init__()
        self.batches, self.memory_batches, self.memory_after, self.memory_during = {}, {}, [], {}

    def before_forward(self, strategy, **kwargs):
        exp = strategy.clock.train_exp_counter
        self.batches.setdefault(exp, []).append((strategy.mb_x.clone(), strategy.mb_y.clone()))
        if getattr(strategy, "replay_loader", None) is not None:
            self.memory_batches.setdefault(exp, []).append(strategy.mb_buffer_y.clone())
            self.memory_during.setdefault(exp, set()).update(_labels(_memory(strategy)))

    def after_training(self, strategy, **kwargs):  # ERACE updates its memory after the plugins' after_training_exp
        self.memory_after.append(_samples(_memory(strategy)))


def _memory(strategy):
    policy = getattr(strategy, "storage_policy", None)
    if policy is None:
        policy = next(p.storage_policy for p in strategy.plugins if isinstance(p, ConcatReplayPlugin))
    return policy.buffer


def _labels(dataset) -> set:
    return {int(y) for y in dataset.targets}


def _samples(dataset):
    if len(dataset) == 0:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    xs, ys, _ = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(xs), torch.tensor(ys)


def _train(make):
    """Train ``make(model, optimizer, plugins)`` on 3 experiences of blobs from one seed; the tracer and the
    weights after each experience."""
    torch.manual_seed(0)
    model = MLP()
    tracer = _Tracer()
    strategy = make(model, SGD(model.parameters(), lr=0.05, momentum=0.9), [tracer])
    weights = []
    for experience in make_blobs_benchmark(n_experiences=3).train_stream:
        strategy.train(experience, num_workers=0)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    return tracer, weights


def _er_ace(model, optimizer, plugins):
    return ERACE(model=model, optimizer=optimizer, mem_size=MEM, batch_size_mem=BATCH, train_mb_size=BATCH,
                 train_epochs=2, evaluator=quiet_evaluator, plugins=plugins,
                 storage_policy=ClassBalancedBuffer(MEM, adaptive_size=True))


def _replay(model, optimizer, plugins):
    return Naive(model=model, optimizer=optimizer, train_mb_size=BATCH, train_epochs=2, evaluator=quiet_evaluator,
                 plugins=[*plugins, ConcatReplayPlugin(MEM, ClassBalancedBuffer(MEM, adaptive_size=True))])


@pytest.fixture(scope="module")
def traces():
    return _train(_er_ace), _train(_replay)


def test_an_empty_memory_trains_as_naive_batch_for_batch(traces):
    (er_ace, er_weights), (replay, replay_weights) = traces
    assert len(er_ace.batches[0]) == len(replay.batches[0]) == 2 * math.ceil(120 / BATCH)  # 2 classes of 60, 2 epochs
    for (x, y), (x_replay, y_replay) in zip(er_ace.batches[0], replay.batches[0]):
        assert torch.equal(x, x_replay) and torch.equal(y, y_replay)
    assert 0 not in er_ace.memory_batches  # no memory batch, plain CE
    assert all(torch.equal(v, replay_weights[0][k]) for k, v in er_weights[0].items())


def test_the_memory_holds_replays_samples_after_every_experience(traces):
    (er_ace, _), (replay, _) = traces
    assert len(er_ace.memory_after) == len(replay.memory_after) == 3
    for t, ((x, y), (x_replay, y_replay)) in enumerate(zip(er_ace.memory_after, replay.memory_after)):
        assert len(y) == MEM and torch.equal(x, x_replay) and torch.equal(y, y_replay), t
        assert _labels_of(y) == set(range(2 * (t + 1))), t  # every class seen so far, none to come


def _labels_of(y) -> set:
    return set(y.tolist())


def test_the_memory_never_holds_the_experience_being_trained(traces):
    (er_ace, _), _ = traces
    for t in (1, 2):
        current = {2 * t, 2 * t + 1}
        assert er_ace.memory_during[t] == set(range(2 * t)), t  # the earlier experiences' classes, all of them
        drawn = torch.cat(er_ace.memory_batches[t])
        assert len(er_ace.memory_batches[t]) == len(er_ace.batches[t]) and drawn.numel() == BATCH * len(
            er_ace.batches[t])  # one full memory batch beside each new one
        assert not current & _labels_of(drawn)
        assert all(_labels_of(y) <= current for _, y in er_ace.batches[t])


def test_a_storage_policy_of_another_size_is_refused():
    model = MLP()
    with pytest.raises(ValueError, match=r"storage_policy.max_size \(10\) differs from mem_size \(24\)"):
        ERACE(model=model, optimizer=SGD(model.parameters(), lr=0.1), mem_size=MEM,
              storage_policy=ClassBalancedBuffer(10), evaluator=quiet_evaluator)


# ---------------------------------------------------------------- the runner
# digits in 2 steps of 5 classes, one epoch: step sizes read off the benchmark
DIGITS = dict(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn", epochs=1,
              batch_size=32, memory_size=100, loss="ce", progress=False, wandb=False)


def test_runner_er_ace_matches_concat_replay_where_it_should_and_counts_its_compute(tmp_path):
    replay_cfg = ExperimentConfig(**DIGITS, strategy="replay", replay="concat", first_experience_cache=str(tmp_path / "r"))
    er_cfg = ExperimentConfig(**DIGITS, strategy="er_ace", batch_size_mem=16, first_experience_cache=str(tmp_path / "e"))
    replay = run_experiment(replay_cfg, tmp_path / "replay")
    er_ace = run_experiment(er_cfg, tmp_path / "er_ace")
    # the first experience: one key, trained apart to the same network
    assert er_ace["first_experience"]["key"] == replay["first_experience"]["key"]
    assert er_ace["accuracy_matrix"][0] == replay["accuracy_matrix"][0]
    saved = [torch.load(r["first_experience"]["file"], weights_only=True)["model"] for r in (replay, er_ace)]
    assert all(torch.equal(v, saved[1][k]) for k, v in saved[0].items())

    sizes = [len(e.dataset) for e in build_benchmark(replay_cfg).train_stream]
    mem = 100
    assert replay["samples_stored"] == er_ace["samples_stored"] == [mem, mem]
    steps0 = math.ceil(sizes[0] / 32)
    assert replay["gradient_steps"] == [steps0, math.ceil((sizes[1] + mem) / 32)]
    assert replay["images_seen"] == [sizes[0], sizes[1] + mem]
    steps1 = math.ceil(sizes[1] / 32)  # the new data's batches, each with a memory batch of 16
    assert er_ace["gradient_steps"] == [steps0, steps1]
    assert er_ace["images_seen"] == [sizes[0], sizes[1] + 16 * steps1]
    for run in (replay, er_ace):  # one epoch: the per-epoch figures are the step's
        assert run["images_per_epoch"] == run["images_seen"]
        assert run["gradient_steps_per_epoch"] == run["gradient_steps"]


def test_a_cached_first_experience_reports_the_compute_it_stands_for(tmp_path):
    cfg = ExperimentConfig(**{**DIGITS, "n_steps": 1, "protocol": "B5", "epochs": 2}, strategy="replay",
                           first_experience_cache=str(tmp_path / "cache"))
    trained = run_experiment(cfg, tmp_path / "trained")
    loaded = run_experiment(cfg.replace(loss="bsce", tau=0.0), tmp_path / "loaded")
    assert loaded["first_experience"]["cached"] and not trained["first_experience"]["cached"]
    for key in ("images_seen", "gradient_steps", "images_per_epoch", "gradient_steps_per_epoch", "samples_stored"):
        assert loaded[key][0] == trained[key][0], key
    assert trained["images_per_epoch"][0] * 2 == trained["images_seen"][0]
