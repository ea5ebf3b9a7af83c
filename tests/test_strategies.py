"""The plugin with iCaRL and the other Avalanche strategies (composition and smoke tests)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from avalanche.training import DER, ER_ACE, GEM, BiC, GDumb, ICaRL, Naive
from avalanche.training.losses import ICaRLLossPlugin
from avalanche.training.plugins import ReplayPlugin, SupervisedPlugin

from bsce_avalanche import BalancedSoftmaxPlugin
from bsce_avalanche.compat import (BiCPluginWithoutVerbose, FastHerdingICaRLPlugin, FixedBiCPlugin, apply_avalanche_fixes,
                                   fix_strategy)
from bsce_avalanche.icarl import set_icarl_eval
from bsce_avalanche.plugin import _ICaRLCriterion

from conftest import (AVALANCHE_AS_SHIPPED, MLP, BatchRecorder, avalanche_changes, icarl_head_scores,
                      icarl_nme_scores, stream_accuracy)
from test_plugin import quiet_evaluator, train_all

ACC = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


def make_icarl(plugins, epochs=3):
    net = MLP()
    return ICaRL(
        feature_extractor=net.feature_extractor, classifier=net.classifier,
        optimizer=SGD(net.parameters(), lr=0.05, momentum=0.9), memory_size=30,
        buffer_transform=None, fixed_memory=True, train_mb_size=16, train_epochs=epochs,
        evaluator=quiet_evaluator, plugins=plugins,
    )


def test_icarl_criterion_is_bsce_plus_icarl_distillation():
    icarl_loss = ICaRLLossPlugin()
    icarl_loss.old_classes = [0, 1]
    old_logits = torch.randn(4, 4)
    icarl_loss.old_logits = old_logits
    logits = torch.randn(4, 4, requires_grad=True)
    targets = torch.tensor([2, 3, 2, 0])
    plugin = BalancedSoftmaxPlugin(prior=[10, 10, 40, 40])
    plugin.before_training_epoch(types.SimpleNamespace(dataloader=object()))
    strategy = types.SimpleNamespace(is_training=True, mb_output=logits)
    loss = _ICaRLCriterion(icarl_loss, strategy, plugin)(logits, targets)
    prior = torch.tensor([0.1, 0.1, 0.4, 0.4])
    expected = F.cross_entropy(logits + prior.log(), targets) + F.binary_cross_entropy(
        torch.sigmoid(logits[:, :2]), torch.sigmoid(old_logits[:, :2])
    )
    torch.testing.assert_close(loss, expected)
    assert icarl_loss.old_logits is None, "old logits must be consumed, as iCaRL's loss does"
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_icarl_with_bsce_trains_and_evaluates_with_nme_and_head(blobs_benchmark):
    bsce = BalancedSoftmaxPlugin()
    recorder = BatchRecorder()
    strategy = make_icarl([bsce, recorder])
    train_all(strategy, blobs_benchmark)
    assert all(np.isfinite(recorder.train_losses))
    # iCaRL concatenates its exemplars into the training set: old classes are in the prior
    assert all(p > 0 for p in bsce.prior_history[-1][:6])
    drawn = torch.cat(recorder.train_labels[2])
    freq = torch.bincount(drawn, minlength=6).double() / drawn.numel()
    torch.testing.assert_close(torch.tensor(bsce.prior_history[2], dtype=torch.float64), freq)
    nme = strategy.eval(blobs_benchmark.test_stream)[ACC]  # iCaRL's default
    set_icarl_eval(strategy, "head")
    head = strategy.eval(blobs_benchmark.test_stream)[ACC]
    set_icarl_eval(strategy, "nme")
    assert strategy.eval(blobs_benchmark.test_stream)[ACC] == pytest.approx(nme)
    # each mode reports the accuracy of its own rule, counted here
    test = blobs_benchmark.test_stream
    assert nme == pytest.approx(stream_accuracy(icarl_nme_scores(strategy), test), abs=1e-12)
    assert head == pytest.approx(stream_accuracy(icarl_head_scores(strategy), test), abs=1e-12)
    assert strategy._criterion.__class__ is ICaRLLossPlugin
    with pytest.raises(ValueError, match="eval mode must be one of"):
        set_icarl_eval(strategy, "ncm")


def test_plain_icarl_still_works_with_eval_switch(blobs_benchmark):
    strategy = make_icarl([], epochs=1)
    set_icarl_eval(strategy, "head")
    train_all(strategy, blobs_benchmark)
    head, nme = (stream_accuracy(scores(strategy), blobs_benchmark.test_stream)
                 for scores in (icarl_head_scores, icarl_nme_scores))
    assert strategy.eval(blobs_benchmark.test_stream)[ACC] == pytest.approx(head, abs=1e-12)
    assert head != pytest.approx(nme, abs=1e-12)  # the head's accuracy, not NME's (0.73 and 0.98 here)


@pytest.mark.parametrize(
    "strategy_cls, kwargs, reason",
    [
        (ER_ACE, dict(mem_size=20), "ACECriterion"),
        (DER, dict(mem_size=20), "F.cross_entropy directly"),
    ],
)
def test_strategies_with_their_own_loss_are_refused_clearly(blobs_benchmark, strategy_cls, kwargs, reason):
    model = MLP()
    strategy = strategy_cls(model=model, optimizer=SGD(model.parameters(), lr=0.05),
                            criterion=CrossEntropyLoss(), evaluator=quiet_evaluator,
                            plugins=[BalancedSoftmaxPlugin()], **kwargs)
    with pytest.raises(TypeError, match=f"cannot balance {strategy_cls.__name__}.*{reason}"):
        strategy.train(blobs_benchmark.train_stream[0])


def test_gdumb_trains_on_its_balanced_buffer(blobs_benchmark):
    bsce = BalancedSoftmaxPlugin()
    model = MLP()
    strategy = GDumb(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                     mem_size=30, train_mb_size=10, train_epochs=2, evaluator=quiet_evaluator, plugins=[bsce])
    metrics = train_all(strategy, blobs_benchmark, eval_after=True)
    # GDumb's class-balanced buffer: 5 samples of each of the 6 classes at the end
    np.testing.assert_allclose(bsce.prior_history[-1], [1 / 6] * 6)
    assert metrics[ACC] == pytest.approx(stream_accuracy(strategy.model, blobs_benchmark.test_stream), abs=1e-12)
    per_experience = [metrics[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"] for j in range(3)]
    assert metrics[ACC] == pytest.approx(np.mean(per_experience), abs=1e-12)  # 40 test samples each


def test_gem_uses_plain_loss_for_its_reference_gradients(blobs_benchmark):
    bsce = BalancedSoftmaxPlugin()
    model = MLP()
    strategy = GEM(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                   patterns_per_exp=10, train_mb_size=16, train_epochs=1, evaluator=quiet_evaluator,
                   plugins=[bsce])
    # which logits reach the plain criterion: the model's own outputs (not adjusted) or new tensors (adjusted)
    outputs, calls, iterations = [], [], [0]
    model.register_forward_hook(lambda module, args, out: outputs.append(out))
    plain = strategy._criterion

    class Spy(type(plain)):
        def forward(self, logits, targets):
            if strategy.is_training:  # not the evaluation's loss
                calls.append(("plain" if any(logits is o for o in outputs) else "adjusted",
                              strategy.clock.train_exp_counter))
            return super().forward(logits, targets)

    plain.__class__ = Spy

    class CountIterations(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            iterations[0] += 1

    strategy.plugins.append(CountIterations())
    metrics = train_all(strategy, blobs_benchmark, eval_after=True)
    assert np.isfinite(metrics["Loss_Stream/eval_phase/test_stream/Task000"])
    # GEM does not replay: old classes have no training samples in later experiences
    assert bsce.prior_history[-1][:4] == [0, 0, 0, 0]
    # every training loss adjusted once; GEM's reference gradients (from the second experience on, one per past
    # experience's memory per iteration) with the plain loss of the model's own outputs
    training = [c for c in calls if c[0] == "adjusted"]
    assert len(training) == iterations[0] > 0
    reference = [exp for kind, exp in calls if kind == "plain"]
    assert all(exp > 0 for exp in reference)
    assert len(reference) == sum(exp for _, exp in training) > 0


def test_bic_with_its_fix_trains_its_bias_correction(blobs_benchmark):
    bsce = BalancedSoftmaxPlugin()
    model = MLP()
    strategy = BiC(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                   mem_size=30, val_percentage=0.2, stage_2_epochs=2, train_mb_size=16, train_epochs=1,
                   evaluator=quiet_evaluator, plugins=[bsce])
    # the original's distillation; torch >= 2.2 has no verbose=
    assert fix_strategy(strategy) == ["BiC distillation over the classes", "BiC MultiStepLR(verbose=)"]
    train_all(strategy, blobs_benchmark, eval_after=True)
    bic_plugin = next(p for p in strategy.plugins if isinstance(p, BiCPluginWithoutVerbose))
    # the bias-correction stage ran (on the old classes, from alpha = 1, beta = 0) and Avalanche is as shipped
    assert bic_plugin.bias_layer.alpha.item() != 1.0 or bic_plugin.bias_layer.beta.item() != 0.0
    assert len(bsce.prior_history) == 3 and avalanche_changes() == []


def test_the_fixes_change_the_strategy_they_fix_only(blobs_benchmark):
    """Every strategy of the runner built and trained: Avalanche's modules and classes stay as shipped."""
    from bsce_avalanche.runner.config import ExperimentConfig
    from bsce_avalanche.runner.strategies import STRATEGIES, build_strategy

    for name in STRATEGIES:
        cfg = ExperimentConfig(benchmark="digits", strategy=name, loss="ce", epochs=1, batch_size=16, memory_size=30,
                               bic_stage2_epochs=1, lr_milestones=[], wandb=False, progress=False)
        strategy = build_strategy(cfg, MLP(), 6, torch.device("cpu"), [], quiet_evaluator)
        kinds = {type(p) for p in strategy.plugins}
        assert (FastHerdingICaRLPlugin in kinds) == (name == "icarl")
        assert (FixedBiCPlugin in kinds) == (name == "bic")
        for experience in blobs_benchmark.train_stream[:2]:
            strategy.train(experience)
        assert avalanche_changes() == [], name


def test_the_deprecated_process_wide_fixes_warn(monkeypatch):
    from avalanche.training.plugins import bic
    from avalanche.training.supervised import icarl

    for owner, name in ((bic, "MultiStepLR"), (icarl._ICaRLPlugin, "construct_exemplar_set")):
        monkeypatch.setattr(owner, name, getattr(owner, name))  # restored after the test
    with pytest.warns(DeprecationWarning, match=r"call bsce_avalanche.compat.fix_strategy\(strategy\)"):
        assert apply_avalanche_fixes() == ["bic.MultiStepLR(verbose=)", "icarl herding (one sync per pick)"]
    assert icarl._ICaRLPlugin.construct_exemplar_set is FastHerdingICaRLPlugin.construct_exemplar_set


def test_online_class_incremental_stream(blobs_benchmark):
    from avalanche.benchmarks.scenarios.online import split_online_stream

    bsce = BalancedSoftmaxPlugin()
    recorder = BatchRecorder()
    model = MLP()
    # Avalanche 0.6 runs online streams with Naive (OnlineNaive is deprecated)
    strategy = Naive(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                     train_mb_size=10, evaluator=quiet_evaluator,
                     plugins=[bsce, recorder, ReplayPlugin(mem_size=20)])
    online = split_online_stream(blobs_benchmark.train_stream, experience_size=10, seed=0)
    n = 0
    for exp in online:
        strategy.train(exp)
        n += 1
    assert n == 36 and len(bsce.prior_history) == n
    assert all(np.isfinite(recorder.train_losses))
    metrics = strategy.eval(blobs_benchmark.test_stream)
    assert metrics[ACC] == pytest.approx(stream_accuracy(strategy.model, blobs_benchmark.test_stream), abs=1e-12)


def test_icarl_herding_fix_picks_the_same_exemplars_with_one_sync_per_pick(blobs_benchmark, monkeypatch):
    """The fixed herding against Avalanche's own, as shipped (captured before bsce_avalanche was imported)."""
    from avalanche.training.supervised import icarl

    from bsce_avalanche import compat

    shipped = AVALANCHE_AS_SHIPPED["_ICaRLPlugin.construct_exemplar_set"]
    assert shipped is not compat._construct_exemplar_set

    def exemplars(fix):
        torch.manual_seed(0)
        strategy = make_icarl([], epochs=1)
        if fix:
            assert fix_strategy(strategy) == ["iCaRL herding (one sync per pick)"]
        plugin = next(p for p in strategy.plugins if isinstance(p, icarl._ICaRLPlugin))
        assert type(plugin).construct_exemplar_set is (compat._construct_exemplar_set if fix else shipped)
        train_all(strategy, blobs_benchmark)
        return plugin.x_memory, plugin.order

    avalanche_memory, avalanche_order = exemplars(fix=False)
    syncs = []
    real_int = int
    monkeypatch.setattr(compat, "int", lambda v: syncs.append(1) or real_int(v), raising=False)
    fixed_memory, fixed_order = exemplars(fix=True)
    assert len(fixed_memory) == len(avalanche_memory) == 6
    for a, b, oa, ob in zip(avalanche_memory, fixed_memory, avalanche_order, fixed_order):
        assert torch.equal(a, b) and torch.equal(oa, ob)
    picks = sum(len(m) for m in fixed_memory)
    assert picks <= len(syncs) <= picks + 60  # one per herding step (a few revisit a pick)
