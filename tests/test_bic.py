"""BiC fixed (bsce_avalanche.compat): the original's distillation, the paper's concatenated rehearsal."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from avalanche.training import BiC, Naive
from avalanche.training.plugins import SupervisedPlugin, bic
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from bsce_avalanche import compat
from bsce_avalanche.compat import ConcatRehearsalBiCPlugin, FixedBiCPlugin, bic_distillation, fix_strategy

from conftest import MLP, assert_accuracies_consistent, avalanche_changes
from test_plugin import quiet_evaluator

#: A batch of 3 samples over 4 old classes, the batch and class axes of unequal length (the bug shows).
NEW = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.1, 0.3, -2.0, 1.5], [-0.5, 2.5, 1.0, -1.0]])
OLD = torch.tensor([[1.0, 0.0, -1.0, 3.0], [2.0, -2.0, 0.0, 1.0], [0.0, 1.0, 4.0, -0.5]])


def original_distillation(new, old, T=2.0):
    """wuyuebupt/LargeScaleIncrementalLearning resnet.py L606-609, in NumPy: ``tf.nn.softmax`` over the last axis
    (the classes) of old / T, then ``tf.losses.softmax_cross_entropy(logits=new / T, onehot_labels=that)``: the
    batch mean of -sum_j p_j log q_j."""
    new, old = np.asarray(new, np.float64) / T, np.asarray(old, np.float64) / T
    p = np.exp(old - old.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    log_q = new - new.max(1, keepdims=True) - np.log(np.exp(new - new.max(1, keepdims=True)).sum(1, keepdims=True))
    return float(np.mean(-(p * log_q).sum(1)))


def make_bic(mem_size=30, val=0.2, epochs=1, plugins=()):
    model = MLP()
    return BiC(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
               mem_size=mem_size, val_percentage=val, stage_2_epochs=2, train_mb_size=16, train_epochs=epochs,
               evaluator=quiet_evaluator, plugins=list(plugins))


def bic_plugin(strategy):
    return next(p for p in strategy.plugins if isinstance(p, bic.BiCPlugin))


def rows(dataset) -> list[tuple]:
    return [tuple(dataset[i][0].tolist()) for i in range(len(dataset))]


def test_distillation_is_the_originals_over_the_classes():
    expected = original_distillation(NEW, OLD)
    assert bic_distillation(NEW, OLD).item() == pytest.approx(expected, rel=1e-6)
    plugin = bic_plugin(make_bic())
    assert type(plugin) is bic.BiCPlugin
    buggy = plugin.cross_entropy(NEW, OLD).item()  # Avalanche 0.6.0: softmax over the batch axis
    assert buggy != pytest.approx(expected, rel=1e-3)
    plugin.__class__ = FixedBiCPlugin
    assert plugin.cross_entropy(NEW, OLD).item() == pytest.approx(expected, rel=1e-6)
    plugin.T = 4  # its temperature, no longer hard-coded
    assert plugin.cross_entropy(NEW, OLD).item() == pytest.approx(original_distillation(NEW, OLD, 4), rel=1e-6)


class _Draws(SupervisedPlugin):
    """Per step and epoch, the training samples drawn; per step, what the BiC plugin trains on and holds out."""

    def __init__(self):
        super().__init__()
        self.drawn, self.expected, self.validation, self.stored = [], [], [], []

    def before_training_exp(self, strategy, **kwargs):
        self.drawn.append([])

    def before_training_epoch(self, strategy, **kwargs):
        self.drawn[-1].append(Counter())
        if strategy.clock.train_exp_epochs == 0:
            plugin = bic_plugin(strategy)
            self.expected.append(Counter(rows(strategy.experience.dataset) + rows(plugin.storage_policy.buffer)))
            self.validation.append({r for buf in plugin.val_buffer.values() for r in rows(buf.buffer)})

    def before_forward(self, strategy, **kwargs):
        if strategy.is_training:
            self.drawn[-1][-1].update(tuple(x.tolist()) for x in strategy.mb_x)

    def after_training_exp(self, strategy, **kwargs):  # listed after BiC's plugin: what it stores
        plugin = bic_plugin(strategy)
        self.stored.append((len(plugin.storage_policy.buffer), sum(len(b.buffer) for b in plugin.val_buffer.values())))


def test_concat_draws_new_data_and_memory_once_per_epoch_and_stores_mem_size(blobs_benchmark):
    draws = _Draws()
    strategy = make_bic(mem_size=30, val=0.2, epochs=2)
    strategy.plugins.append(draws)
    assert fix_strategy(strategy, bic_rehearsal="concat")[:2] == ["BiC distillation over the classes",
                                                                   "BiC concatenated rehearsal"]
    plugin = bic_plugin(strategy)
    assert type(plugin) is ConcatRehearsalBiCPlugin and plugin.storage_policy.max_size == 30 - 6
    for experience in blobs_benchmark.train_stream:
        strategy.train(experience, num_workers=0)
    # 6 classes in 3 steps of 60 samples each; validation 6 (int(0.2 * 30)), exemplars 24
    assert [sum(c.values()) for c in draws.expected] == [2 * 57, 2 * 57 + 24, 2 * 59 + 24]
    for step, epochs in enumerate(draws.drawn):
        assert len(epochs) == 2
        for drawn in epochs:  # every sample of new data - validation + memory, once per epoch
            assert drawn == draws.expected[step], step
            assert not draws.validation[step] & set(drawn), step  # never a validation sample
    # the stored exemplars and the validation split: mem_size, after every step
    assert draws.stored == [(24, 6), (24, 6), (24, 6)]
    assert [len(draws.validation[t]) for t in range(3)] == [6, 6 + 2 * 3, 6 + 2 * 1]  # old + new classes' share
    assert plugin.bias_layer.clss.tolist() == [4, 5]  # the bias layer of the new classes only
    assert avalanche_changes() == []


def test_half_batch_keeps_avalanches_rehearsal_with_the_fixed_distillation(blobs_benchmark):
    strategy = make_bic()
    assert fix_strategy(strategy)[0] == "BiC distillation over the classes"
    plugin = bic_plugin(strategy)
    assert type(plugin) is FixedBiCPlugin and plugin.storage_policy.max_size == 30  # + its validation split
    loaders = []
    strategy.plugins.append(type("Loaders", (SupervisedPlugin,), {"before_training_epoch": lambda self, strategy, **kw:
                                                                    loaders.append(type(strategy.dataloader).__name__)})())
    for experience in blobs_benchmark.train_stream[:2]:
        strategy.train(experience, num_workers=0)
    assert loaders == ["TaskBalancedDataLoader", "ReplayDataLoader"]  # 16 new + 16 memory samples per mini-batch


def test_the_fix_is_for_verified_avalanche_and_that_plugin_only(monkeypatch):
    fixed, other = make_bic(), make_bic()
    fix_strategy(fixed, bic_rehearsal="concat")
    assert type(bic_plugin(fixed)) is ConcatRehearsalBiCPlugin and type(bic_plugin(other)) is bic.BiCPlugin
    assert avalanche_changes() == []
    assert fix_strategy(fixed, bic_rehearsal="concat") == []  # idempotent
    with pytest.raises(ValueError, match=r"bic_rehearsal='concat' needs a BiC strategy"):
        fix_strategy(Naive(MLP(), SGD(MLP().parameters(), lr=0.1), evaluator=quiet_evaluator), bic_rehearsal="concat")
    with pytest.raises(ValueError, match="bic_rehearsal must be one of half_batch, concat"):
        fix_strategy(other, bic_rehearsal="cat")
    monkeypatch.setattr(compat, "avalanche_version", "0.6.1")
    with pytest.warns(RuntimeWarning, match="verified on Avalanche 0.6.0 only, not 0.6.1"):
        assert fix_strategy(other) == []
    assert type(bic_plugin(other)) is bic.BiCPlugin
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="here: Avalanche 0.6.1"):
        fix_strategy(make_bic(), bic_rehearsal="concat")


def test_runner_bic_concat_label_and_config():
    from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
    from bsce_avalanche.runner.identity import method_label
    from bsce_avalanche.runner.strategies import build_strategy

    base = dict(benchmark="digits", strategy="bic", loss="ce", memory_size=40, wandb=False, progress=False)
    assert method_label(vars(ExperimentConfig(**base))) == "bic-ce"
    concat = ExperimentConfig(**base, replay="concat")
    assert concat.run_name.startswith("bic-ce-concat-seed0-")
    strategy = build_strategy(concat, MLP(), 6, torch.device("cpu"), [], quiet_evaluator)
    assert type(bic_plugin(strategy)) is ConcatRehearsalBiCPlugin and bic_plugin(strategy).storage_policy.max_size == 36
    assert not any(type(p).__name__ in ("ReplayPlugin", "ConcatReplayPlugin") for p in strategy.plugins)
    with pytest.raises(ConfigError, match="memory_selection applies to bic with replay: concat only"):
        ExperimentConfig(**base, memory_selection="herding")
    with pytest.raises(ConfigError, match="batch_size_mem applies to er_ace and to replay"):
        ExperimentConfig(**base, batch_size_mem=8)


def test_bic_concat_end_to_end(tmp_path):
    """Digits, 2 steps: the concat run trains its first step as the half_batch run does (one first-experience
    model), then differs."""
    from bsce_avalanche.runner.config import ExperimentConfig
    from bsce_avalanche.runner.experiment import run_experiment

    base = dict(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn", epochs=1,
                batch_size=32, memory_size=100, strategy="bic", loss="ce", bic_stage2_epochs=2, wandb=False,
                progress=False, first_experience_cache=False)
    runs = {replay: run_experiment(ExperimentConfig(**base, replay=replay, output_dir=str(tmp_path / replay)))
            for replay in ("half_batch", "concat")}
    for results in runs.values():
        assert_accuracies_consistent(results)
    half, concat = runs["half_batch"], runs["concat"]
    assert concat["first_experience"]["key"] == half["first_experience"]["key"]
    assert concat["accuracy_matrix"][0] == half["accuracy_matrix"][0]  # the same first step
    assert concat["accuracy_matrix"][1] != half["accuracy_matrix"][1]
