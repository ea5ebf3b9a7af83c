"""BalancedSoftmaxPlugin with real Avalanche strategies on tiny data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from avalanche.training import LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import (
    ClassBalancedBuffer,
    ExperienceBalancedBuffer,
    ParametricBuffer,
    ReservoirSamplingBuffer,
)
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics

from bsce_avalanche import BalancedSoftmaxPlugin
from bsce_avalanche.plugin import _BalancedCriterion

from conftest import MLP, BatchRecorder, make_blobs, tensor_benchmark


def quiet_evaluator():
    return EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(minibatch=False, experience=True, stream=True),
        loggers=[],
    )


def empirical_frequencies(label_batches, n_classes):
    labels = torch.cat(label_batches)
    counts = torch.bincount(labels, minlength=n_classes).double()
    return counts / counts.sum()


def train_all(strategy, benchmark, eval_after=False):
    for exp in benchmark.train_stream:
        strategy.train(exp, num_workers=0)
    if eval_after:
        return strategy.eval(benchmark.test_stream)


STORAGE_POLICIES = {
    "experience_balanced": lambda m: ExperienceBalancedBuffer(max_size=m, adaptive_size=True),
    "class_balanced": lambda m: ClassBalancedBuffer(max_size=m, adaptive_size=True),
    "reservoir": lambda m: ReservoirSamplingBuffer(max_size=m),
    "parametric": lambda m: ParametricBuffer(max_size=m),
}


@pytest.mark.parametrize("policy", sorted(STORAGE_POLICIES))
def test_prior_matches_the_batches_naive_plus_replay_plugin_draws(blobs_benchmark, policy):
    """The prior equals the label frequency of the mini-batches really drawn."""
    mem = 30
    recorder = BatchRecorder()
    bsce = BalancedSoftmaxPlugin()
    strategy = Naive(
        MLP(), SGD(MLP().parameters(), lr=0.0), CrossEntropyLoss(),
        train_mb_size=10, train_epochs=20, evaluator=quiet_evaluator,
        plugins=[bsce, ReplayPlugin(mem_size=mem, storage_policy=STORAGE_POLICIES[policy](mem)), recorder],
    )
    strategy.optimizer = SGD(strategy.model.parameters(), lr=0.01)
    train_all(strategy, blobs_benchmark)
    assert len(bsce.prior_history) == 3
    for exp, prior in enumerate(bsce.prior_history):
        drawn = empirical_frequencies(recorder.train_labels[exp], 6)
        prior = torch.tensor(prior + [0.0] * (6 - len(prior)), dtype=torch.float64)
        # First experience: exact; later: the buffer is cycled, so 20 epochs of random
        # draws approach the expectation the plugin computes.
        assert torch.allclose(prior, drawn, atol=0.02), (exp, prior, drawn)
    # With a 50/50 replay loader the 30 memory samples get half of each batch: far
    # more than their share of "experience + buffer" (30 / 150 = 20%).
    last = torch.tensor(bsce.prior_history[-1])
    assert 0.45 < float(last[:4].sum()) < 0.55


def test_prior_matches_the_batches_replay_wrapper(blobs_benchmark):
    recorder = BatchRecorder()
    bsce = BalancedSoftmaxPlugin()
    model = MLP()
    strategy = Replay(
        model, SGD(model.parameters(), lr=0.01), CrossEntropyLoss(), mem_size=40,
        train_mb_size=16, train_epochs=15, evaluator=quiet_evaluator, plugins=[recorder, bsce],
    )
    train_all(strategy, blobs_benchmark)
    for exp, prior in enumerate(bsce.prior_history):
        drawn = empirical_frequencies(recorder.train_labels[exp], 6)
        prior = torch.tensor(prior + [0.0] * (6 - len(prior)), dtype=torch.float64)
        assert torch.allclose(prior, drawn, atol=0.02), (exp, prior, drawn)


def test_dataset_mode_counts_experience_plus_buffer(blobs_benchmark):
    bsce = BalancedSoftmaxPlugin(prior="dataset")
    model = MLP()
    strategy = Replay(
        model, SGD(model.parameters(), lr=0.01), CrossEntropyLoss(), mem_size=30,
        train_mb_size=16, train_epochs=1, evaluator=quiet_evaluator, plugins=[bsce],
    )
    train_all(strategy, blobs_benchmark)
    # Last experience: 120 new samples of classes 4, 5 and a 30-sample buffer split
    # between the two previous experiences (15 each).
    last = np.array(bsce.prior_history[-1]) * 150
    np.testing.assert_allclose(last.sum(), 150)
    np.testing.assert_allclose(last[4:], [60, 60], atol=1e-9)
    np.testing.assert_allclose(last[:4].sum(), 30, atol=1e-9)


def test_criterion_restored_and_mb_output_untouched(blobs_benchmark):
    model = MLP()
    criterion = CrossEntropyLoss()
    bsce = BalancedSoftmaxPlugin()
    seen = {}

    from avalanche.training.plugins import SupervisedPlugin

    class Spy(SupervisedPlugin):
        def after_forward(self, strategy, **kw):
            seen["output"] = strategy.mb_output

        def before_backward(self, strategy, **kw):
            assert strategy.mb_output is seen["output"]
            assert isinstance(strategy._criterion, _BalancedCriterion)
            # mb_output holds the plain logits: the BSCE loss differs from CE on them.
            plain = criterion(strategy.mb_output, strategy.mb_y)
            seen.setdefault("diffs", []).append(float((strategy.loss - plain).abs().detach()))

    strategy = Replay(
        model, SGD(model.parameters(), lr=0.01), criterion, mem_size=20,
        train_mb_size=16, train_epochs=1, evaluator=quiet_evaluator, plugins=[bsce, Spy()],
    )
    train_all(strategy, blobs_benchmark)
    assert strategy._criterion is criterion
    assert max(seen["diffs"]) > 1e-3


def test_eval_outputs_and_eval_loss_identical_with_and_without_plugin(blobs_benchmark):
    torch.manual_seed(0)
    model = MLP()
    bsce = BalancedSoftmaxPlugin()
    trained = Replay(
        model, SGD(model.parameters(), lr=0.05), CrossEntropyLoss(), mem_size=20,
        train_mb_size=16, train_epochs=2, evaluator=quiet_evaluator, plugins=[bsce],
    )
    train_all(trained, blobs_benchmark)

    results = []
    for plugins in ([BalancedSoftmaxPlugin()], []):
        recorder = BatchRecorder()
        same_weights = copy.deepcopy(model)
        strategy = Replay(
            same_weights, SGD(same_weights.parameters(), lr=0.05), CrossEntropyLoss(),
            mem_size=20, evaluator=quiet_evaluator, plugins=plugins + [recorder],
        )
        metrics = strategy.eval(blobs_benchmark.test_stream)
        results.append((torch.cat(recorder.eval_outputs), metrics))
    (out_bsce, m_bsce), (out_ce, m_ce) = results
    assert torch.equal(out_bsce, out_ce)
    loss_key = "Loss_Stream/eval_phase/test_stream/Task000"
    assert m_bsce[loss_key] == m_ce[loss_key]
    # and the trained strategy's own eval (plugin attached) matches too
    metrics = trained.eval(blobs_benchmark.test_stream)
    assert metrics[loss_key] == pytest.approx(m_ce[loss_key])


def test_periodic_eval_during_training_uses_plain_loss(blobs_benchmark):
    """eval_every=1 runs eval inside train(): its loss must be plain CE."""
    model = MLP()
    strategy = Replay(
        model, SGD(model.parameters(), lr=0.05), CrossEntropyLoss(), mem_size=20,
        train_mb_size=16, train_epochs=2, eval_every=1, evaluator=quiet_evaluator,
        plugins=[BalancedSoftmaxPlugin()],
    )
    for exp in blobs_benchmark.train_stream:
        strategy.train(exp, eval_streams=[blobs_benchmark.test_stream[:1]])
    in_training = strategy.evaluator.get_last_metrics()["Loss_Exp/eval_phase/test_stream/Task000/Exp000"]
    after = strategy.eval(blobs_benchmark.test_stream[:1])["Loss_Exp/eval_phase/test_stream/Task000/Exp000"]
    assert in_training == pytest.approx(after)


@pytest.mark.parametrize("with_memory", [False, True])
def test_lwf_with_and_without_memory(blobs_benchmark, with_memory):
    model = MLP()
    bsce = BalancedSoftmaxPlugin()
    recorder = BatchRecorder()
    plugins = [bsce, recorder] + ([ReplayPlugin(mem_size=30)] if with_memory else [])
    strategy = LwF(
        model, SGD(model.parameters(), lr=0.05), CrossEntropyLoss(), alpha=1.0, temperature=2.0,
        train_mb_size=16, train_epochs=2, evaluator=quiet_evaluator, plugins=plugins,
    )
    metrics = train_all(strategy, blobs_benchmark, eval_after=True)
    assert all(np.isfinite(recorder.train_losses))
    assert np.isfinite(metrics["Loss_Stream/eval_phase/test_stream/Task000"])
    last = np.array(bsce.prior_history[-1] + [0.0] * 6)[:6]
    if with_memory:
        assert (last[:4] > 0).all()
    else:
        # Without memory the old classes have no samples: zero prior, i.e. they are left
        # out of the softmax of the classification term (LwF's distillation keeps them).
        np.testing.assert_allclose(last, [0, 0, 0, 0, 0.5, 0.5])
    assert strategy._criterion.__class__ is CrossEntropyLoss


def test_fallback_counts_minibatch_labels_for_unknown_loader(blobs_benchmark):
    """A loader we cannot analyse -> running counts of the drawn mini-batch labels."""
    from avalanche.training.plugins import SupervisedPlugin
    from torch.utils.data import DataLoader, WeightedRandomSampler

    class WeightedLoader(SupervisedPlugin):
        def before_training_exp(self, strategy, **kw):
            n = len(strategy.adapted_dataset)
            weights = torch.linspace(1, 3, n)
            strategy.dataloader = DataLoader(
                strategy.adapted_dataset, batch_size=16,
                sampler=WeightedRandomSampler(weights, n, generator=torch.Generator().manual_seed(0)),
            )

    bsce = BalancedSoftmaxPlugin()  # auto
    recorder = BatchRecorder()
    model = MLP()
    strategy = Naive(
        model, SGD(model.parameters(), lr=0.05), CrossEntropyLoss(), train_mb_size=16,
        train_epochs=2, evaluator=quiet_evaluator, plugins=[WeightedLoader(), bsce, recorder],
    )
    train_all(strategy, blobs_benchmark)
    for exp, prior in enumerate(bsce.prior_history):
        drawn = empirical_frequencies(recorder.train_labels[exp], 6)
        prior = torch.tensor(prior + [0.0] * (6 - len(prior)), dtype=torch.float64)[:6]
        torch.testing.assert_close(prior, drawn)
    with pytest.raises(ValueError, match="cannot be derived for the training loader DataLoader"):
        Naive(
            MLP(), SGD(MLP().parameters(), lr=0.05), CrossEntropyLoss(), evaluator=quiet_evaluator,
            plugins=[WeightedLoader(), BalancedSoftmaxPlugin(prior="sampling")],
        ).train(blobs_benchmark.train_stream[0])


def test_fixed_prior_is_used_and_checked(blobs_benchmark):
    bsce = BalancedSoftmaxPlugin(prior=[1, 1, 2, 2, 4, 4])
    model = MLP()
    strategy = Naive(model, SGD(model.parameters(), lr=0.05), CrossEntropyLoss(),
                     train_mb_size=16, evaluator=quiet_evaluator, plugins=[bsce])
    strategy.train(blobs_benchmark.train_stream[0])
    np.testing.assert_allclose(bsce.prior_history[0], np.array([1, 1, 2, 2, 4, 4]) / 14)
    missing = BalancedSoftmaxPlugin(prior=[0, 1, 1, 1, 1, 1])
    strategy = Naive(MLP(), SGD(model.parameters(), lr=0.05), CrossEntropyLoss(),
                     evaluator=quiet_evaluator, plugins=[missing])
    with pytest.raises(ValueError, match=r"classes \[0\] have a zero count in the prior"):
        strategy.train(blobs_benchmark.train_stream[0])


def test_bsce_removes_the_bias_toward_majority_classes():
    """Imbalanced problem: plain CE over-predicts the majority group, BSCE does not."""
    n_classes = 6
    per_class = [300, 300, 300, 12, 12, 12]  # majority = classes 0-2
    x, y = make_blobs(n_classes, per_class, seed=5, spread=2.2)
    xt, yt = make_blobs(n_classes, 200, seed=5, spread=2.2)
    bench = tensor_benchmark(x, y, xt, yt, n_experiences=1)
    shares = {}
    for name, plugins in (("ce", []), ("bsce", [BalancedSoftmaxPlugin()])):
        torch.manual_seed(0)
        model = MLP(n_classes=n_classes)
        recorder = BatchRecorder()
        strategy = Naive(model, SGD(model.parameters(), lr=0.05, momentum=0.9), CrossEntropyLoss(),
                         train_mb_size=32, train_epochs=15, evaluator=quiet_evaluator,
                         plugins=plugins + [recorder])
        strategy.train(bench.train_stream[0])
        recorder.eval_outputs.clear()
        strategy.eval(bench.test_stream)
        preds = torch.cat(recorder.eval_outputs).argmax(1)
        shares[name] = float((preds < 3).float().mean())
    # the test set is balanced: an unbiased classifier gives the majority group ~50%
    assert shares["ce"] > 0.62, shares
    assert abs(shares["bsce"] - 0.5) < 0.08, shares
    assert abs(shares["bsce"] - 0.5) < abs(shares["ce"] - 0.5) - 0.1, shares


def test_rejects_double_attachment_and_unbalanceable_criteria(blobs_benchmark):
    model = MLP()
    twice = Naive(model, SGD(model.parameters(), lr=0.1), CrossEntropyLoss(), evaluator=quiet_evaluator,
                  plugins=[BalancedSoftmaxPlugin(), BalancedSoftmaxPlugin()])
    with pytest.raises(ValueError, match="attached 2 times"):
        twice.train(blobs_benchmark.train_stream[0])
    mse = Naive(model, SGD(model.parameters(), lr=0.1), torch.nn.MSELoss(), evaluator=quiet_evaluator,
                plugins=[BalancedSoftmaxPlugin()])
    with pytest.raises(TypeError, match="cannot balance the criterion MSELoss"):
        mse.train(blobs_benchmark.train_stream[0])
    smooth = Naive(model, SGD(model.parameters(), lr=0.1), CrossEntropyLoss(label_smoothing=0.1),
                   evaluator=quiet_evaluator, plugins=[BalancedSoftmaxPlugin()])
    with pytest.raises(ValueError, match="label_smoothing"):
        smooth.train(blobs_benchmark.train_stream[0])
    from bsce_avalanche import BalancedSoftmaxCrossEntropyLoss

    already = Naive(model, SGD(model.parameters(), lr=0.1), BalancedSoftmaxCrossEntropyLoss([1] * 6),
                    evaluator=quiet_evaluator, plugins=[BalancedSoftmaxPlugin()])
    with pytest.raises(ValueError, match="applied twice"):
        already.train(blobs_benchmark.train_stream[0])


@pytest.mark.parametrize(
    "prior, tau, message",
    [
        ("autp", 1.0, "did you mean 'auto'"),
        ("uniform", 1.0, "Unknown prior mode"),
        ([1, -1], 1.0, "negative"),
        ([0, 0], 1.0, "all zeros"),
        ([1, float("nan")], 1.0, "NaN"),
        ("auto", -1.0, "tau must be finite"),
        ("auto", float("inf"), "tau must be finite"),
        ("auto", "1", "tau must be a real number"),
    ],
)
def test_constructor_validates(prior, tau, message):
    with pytest.raises((ValueError, TypeError), match=message):
        BalancedSoftmaxPlugin(prior=prior, tau=tau)


def test_mir_style_reduction_toggle_goes_through(blobs_benchmark):
    """Strategies such as MIR set criterion.reduction; the wrapper forwards it."""
    criterion = CrossEntropyLoss()
    bsce = BalancedSoftmaxPlugin()
    strategy = Naive(MLP(), SGD(MLP().parameters(), lr=0.1), criterion, evaluator=quiet_evaluator,
                     plugins=[bsce])
    bsce.before_training(strategy)
    strategy._criterion.reduction = "none"
    assert criterion.reduction == "none"
    assert strategy._criterion.reduction == "none"
    bsce.after_training(strategy)
    assert strategy._criterion is criterion


def test_incremental_classifier_and_prior_agree_on_units(blobs_benchmark):
    """IncrementalClassifier grows with the classes seen; the log-prior follows its width."""
    from avalanche.models import IncrementalClassifier

    class IncrementalMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_extractor = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU())
            self.classifier = IncrementalClassifier(32, initial_out_features=2)

        def forward(self, x):
            return self.classifier(self.feature_extractor(x))

    model = IncrementalMLP()
    bsce = BalancedSoftmaxPlugin()
    recorder = BatchRecorder()
    strategy = Replay(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                      mem_size=20, train_mb_size=16, train_epochs=2, evaluator=quiet_evaluator,
                      plugins=[bsce, recorder])
    widths = []
    for exp in blobs_benchmark.train_stream:
        strategy.train(exp)
        widths.append(bsce.class_prior._adjustment.numel())
    assert widths == [2, 4, 6]
    assert all(np.isfinite(recorder.train_losses))
    assert len(bsce.prior_history[-1]) == 6


def test_class_prior_is_the_maths_behind_the_plugin():
    """The plugin's prior policy as a reusable object: counts once per experience, a
    cached adjustment per mini-batch, the experience's frequencies recorded at its end."""
    from torch.utils.data import DataLoader, TensorDataset

    from bsce_avalanche import ClassPrior, log_prior_adjustment

    dataset = TensorDataset(torch.zeros(10, 2))
    dataset.targets = torch.tensor([0] * 6 + [1] * 3 + [2])
    loader = DataLoader(dataset, batch_size=4, shuffle=True)
    logits, targets = torch.zeros(4, 5), torch.tensor([0, 1, 2, 0])
    prior = ClassPrior("auto", tau=0.5)
    assert prior.prior is None and prior.end_experience() is None
    with pytest.raises(RuntimeError, match="call start_experience"):
        prior.adjustment(logits, targets)
    prior.start_experience(loader)
    adjustment = prior.adjustment(logits, targets)
    torch.testing.assert_close(adjustment, log_prior_adjustment([6, 3, 1], 0.5, num_classes=5))
    assert prior.adjustment(logits, targets) is adjustment  # cached
    assert prior.end_experience() == pytest.approx([0.6, 0.3, 0.1])
    # "batch": the running label counts of the mini-batches, current one included
    batch = ClassPrior("batch")
    batch.start_experience(loader)
    batch.adjustment(logits, targets)
    second = batch.adjustment(logits, torch.tensor([1, 1, 1, 1]))
    torch.testing.assert_close(second, log_prior_adjustment([2, 5, 1], num_classes=5))
    assert batch.end_experience() == pytest.approx([0.25, 0.625, 0.125]) and len(batch.history) == 1
    for mode, tau, error in (("autp", 1.0, "Unknown prior mode"), ([1, -1], 1.0, "negative"),
                             ("auto", -1.0, "tau must be finite")):
        with pytest.raises(ValueError, match=error):
            ClassPrior(mode, tau)


def test_prior_computed_once_per_experience_and_pickled_state_is_small(blobs_benchmark, monkeypatch):
    """Checkpoints pickle the plugin's __dict__: a few hundred bytes, no loader, no data."""
    import pickle

    from bsce_avalanche import priors

    calls = []
    real = priors.loader_class_counts
    monkeypatch.setattr(priors, "loader_class_counts", lambda *a, **k: calls.append(1) or real(*a, **k))
    bsce = BalancedSoftmaxPlugin()
    model = MLP()
    strategy = Replay(model, SGD(model.parameters(), lr=0.01), CrossEntropyLoss(), mem_size=30,
                      train_mb_size=16, train_epochs=3, evaluator=quiet_evaluator, plugins=[bsce])
    for exp in blobs_benchmark.train_stream:
        strategy.train(exp)
        state = pickle.dumps(bsce.__dict__)
        assert b"DataLoader" not in state and len(state) < 4000, len(state)
    assert len(calls) == 3  # 3 experiences x 3 epochs
    restored = BalancedSoftmaxPlugin()
    restored.__dict__.update(pickle.loads(state))
    assert restored.prior_history == bsce.prior_history and restored.tau == 1.0


def test_dataset_labels_gathers_concatenated_and_subset_datasets_vectorised(blobs_benchmark):
    """Replay memories and buffers are subsets and concatenations of the experiences: their
    labels are gathered with tensors (``LazyIndices`` / ``LazyRange`` index lists included),
    equal to reading ``targets`` one by one."""
    from avalanche.benchmarks.utils.flat_data import LazyIndices

    from bsce_avalanche.priors import _flat_data_labels, dataset_labels

    first, second = (exp.dataset for exp in blobs_benchmark.train_stream[:2])
    datasets = [first, first.subset([5, 0, 3]), first.concat(second),
                first.subset([0, 2]).concat(second.subset([5, 1])),
                first.concat(second).subset(list(range(0, len(first) + len(second), 7)))]
    assert any(isinstance(d.targets.data._indices, LazyIndices) for d in datasets)
    for dataset in datasets:
        expected = [int(t) for t in dataset.targets]
        fast = _flat_data_labels(dataset.targets.data)
        assert fast is not None and fast.tolist() == expected
        assert dataset_labels(dataset).tolist() == expected


# ---------------------------------------------------------------- the loss trained is exactly BSCE's


class _LossSpy:
    """Plugin recording, at every training iteration, the loss the strategy backpropagates and the
    plain logits, labels and BSCE counts it came from."""

    def __new__(cls, bsce):
        from avalanche.training.plugins import SupervisedPlugin

        class _Spy(SupervisedPlugin):
            def __init__(self):
                super().__init__()
                self.records = []

            def before_backward(self, strategy, **kwargs):
                self.records.append((strategy.loss.detach().clone(), strategy.mb_output.detach().clone(),
                                     strategy.mb_y.clone(), bsce.class_prior.counts.clone()))

        return _Spy()


@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("rehearsal", ["half_batch", "concat"])
def test_loss_trained_inside_a_real_strategy_is_balanced_softmax_cross_entropy(blobs_benchmark, tau, rehearsal):
    """Not just "differs from CE": the loss Avalanche backpropagates equals the library function on the
    strategy's own logits, labels and the plugin's prior, at every iteration of every experience."""
    from bsce_avalanche import ConcatReplayPlugin, balanced_softmax_cross_entropy

    bsce = BalancedSoftmaxPlugin(tau=tau)
    spy = _LossSpy(bsce)
    model = MLP()
    replay = ReplayPlugin(40) if rehearsal == "half_batch" else ConcatReplayPlugin(40)
    strategy = Naive(model, SGD(model.parameters(), lr=0.01), CrossEntropyLoss(), train_mb_size=16,
                     train_epochs=2, evaluator=quiet_evaluator, plugins=[replay, bsce, spy])
    train_all(strategy, blobs_benchmark)
    assert len(spy.records) > 30
    for loss, logits, targets, counts in spy.records:
        counts = torch.cat([counts, counts.new_zeros(logits.shape[1] - counts.numel())])
        expected = balanced_softmax_cross_entropy(logits, targets, counts, tau=tau)
        assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7), (loss, expected)


@pytest.mark.parametrize("tau, weight", [(1.0, 1.0), (0.0, 0.5)])
def test_icarl_loss_is_softmax_term_plus_weighted_distillation(blobs_benchmark, tau, weight):
    """iCaRL + BSCE (and its tau-0 ablation) trains CE(z + tau log prior, y) + w * mean over the
    N x |old| old-class units of BCE(sigmoid z, sigmoid z_old), as documented."""
    import torch.nn.functional as F
    from avalanche.training import ICaRL
    from avalanche.training.plugins import SupervisedPlugin

    from bsce_avalanche.losses import log_prior_adjustment

    bsce = BalancedSoftmaxPlugin(tau=tau, distillation_weight=weight)
    records = []

    class Spy(SupervisedPlugin):
        def before_forward(self, strategy, **kwargs):
            # iCaRL's loss plugin computes the old model's logits here; compute them independently
            self.old = None
            for p in strategy.plugins:
                if getattr(p, "old_model", None) is not None:
                    with torch.no_grad():
                        self.old = (p.old_model(strategy.mb_x), list(p.old_classes))

        def before_backward(self, strategy, **kwargs):
            records.append((strategy.loss.detach(), strategy.mb_output.detach(), strategy.mb_y,
                            bsce.class_prior.counts.clone(), self.old))

    spy = Spy()
    model = MLP()
    strategy = ICaRL(model.feature_extractor, model.classifier, SGD(model.parameters(), lr=0.01), memory_size=30,
                     buffer_transform=None, fixed_memory=True, train_mb_size=16, train_epochs=1,
                     evaluator=quiet_evaluator, plugins=[bsce, spy])
    train_all(strategy, blobs_benchmark)
    with_distillation = 0
    for loss, logits, targets, counts, old in records:
        expected = F.cross_entropy(logits + log_prior_adjustment(counts, tau, logits.shape[1]), targets)
        if old is not None and old[1]:
            old_logits, old_classes = old
            with_distillation += 1
            expected = expected + weight * F.binary_cross_entropy_with_logits(
                logits[:, old_classes], torch.sigmoid(old_logits[:, old_classes]))
        assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6), (loss, expected)
    assert with_distillation > 5


def test_plugin_raises_when_a_strategy_trains_on_a_copy_of_the_logits(blobs_benchmark):
    """A strategy whose criterion gets a copy (or slice) of mb_output would silently train plain CE:
    the plugin refuses it after the first iteration."""

    class CopyingNaive(Naive):
        def criterion(self):
            return self._criterion(self.mb_output.clone(), self.mb_y)

    model = MLP()
    strategy = CopyingNaive(model, SGD(model.parameters(), lr=0.01), CrossEntropyLoss(), train_mb_size=16,
                            train_epochs=1, evaluator=quiet_evaluator, plugins=[BalancedSoftmaxPlugin()])
    with pytest.raises(RuntimeError, match="without its loss going through the BSCE adjustment"):
        strategy.train(blobs_benchmark.train_stream[0], num_workers=0)


def test_distillation_weight_is_validated():
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match="distillation_weight must be a finite number >= 0"):
            BalancedSoftmaxPlugin(distillation_weight=bad)
