"""ConcatReplayPlugin: the memory concatenated into the training set, drawn once per epoch."""

from __future__ import annotations

import math
import types

import pytest
import torch
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make_dataset
from avalanche.training import ER_ACE, LwF, Naive
from avalanche.training.plugins import ReplayPlugin, SupervisedPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer, HerdingSelectionStrategy, ReservoirSamplingBuffer

from bsce_avalanche import BalancedSoftmaxPlugin, ConcatReplayPlugin, herding_buffer
from bsce_avalanche.replay import ModelHerdingSelectionStrategy
from bsce_avalanche.runner.checkpoint import load_checkpoint, restore_strategy, save_checkpoint

from conftest import MLP, blobs_data, make_blobs, tensor_benchmark
from test_plugin import quiet_evaluator

MEM = 30
POLICIES = {"class_balanced": lambda: None, "herding": lambda: herding_buffer(MEM)}


class DrawRecorder(SupervisedPlugin):
    """Records the sample ids (last input column) of every training mini-batch, per
    experience and epoch, and the memory's ids when each experience starts."""

    def __init__(self, replay: ConcatReplayPlugin):
        super().__init__()
        self.replay = replay
        self.drawn = {}  # (experience, epoch) -> list of id tensors
        self.labels = {}  # (experience, epoch) -> list of label tensors
        self.memory = {}  # experience -> ids in memory when it starts
        self.losses = []

    def before_training_exp(self, strategy, **kwargs):
        self.memory[strategy.clock.train_exp_counter] = memory_ids(self.replay)

    def before_forward(self, strategy, **kwargs):
        key = (strategy.clock.train_exp_counter, strategy.clock.train_exp_epochs)
        self.drawn.setdefault(key, []).append(strategy.mb_x[:, -1].long().cpu())
        self.labels.setdefault(key, []).append(strategy.mb_y.cpu())

    def after_backward(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss))


def memory_ids(replay) -> list[int]:
    return sorted(int(x[-1]) for x, *_ in replay.storage_policy.buffer)


def memory_labels(replay) -> torch.Tensor:
    return torch.as_tensor([int(y) for _, y, *_ in replay.storage_policy.buffer])


@pytest.fixture
def id_benchmark():
    """6 classes in 3 experiences (60 train samples per class); the last input column is
    the sample's id, so recorded mini-batches say which samples were drawn."""
    x, y, xt, yt = blobs_data()
    x = torch.cat([x, torch.arange(len(x), dtype=torch.float32)[:, None]], 1)
    xt = torch.cat([xt, torch.zeros(len(xt), 1)], 1)
    return tensor_benchmark(x, y, xt, yt, n_experiences=3)


def make(strategy_cls=Naive, plugins=(), epochs=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = MLP(dim=9)
    return strategy_cls(
        model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
        train_mb_size=16, train_epochs=epochs, evaluator=quiet_evaluator, plugins=list(plugins), **kwargs,
    )


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_each_new_and_memory_sample_is_drawn_once_per_epoch(id_benchmark, policy):
    replay = ConcatReplayPlugin(MEM, POLICIES[policy]())
    recorder = DrawRecorder(replay)
    strategy = make(plugins=[replay, recorder])
    for t, exp in enumerate(id_benchmark.train_stream):
        strategy.train(exp)
        new = sorted(int(x[-1]) for x, *_ in exp.dataset)
        expected = sorted(new + recorder.memory[t])
        assert len(recorder.memory[t]) == (0 if t == 0 else MEM)
        for epoch in range(2):
            drawn = torch.cat(recorder.drawn[t, epoch])
            assert sorted(drawn.tolist()) == expected, (t, epoch)  # each exactly once
            assert [len(b) for b in recorder.drawn[t, epoch]][:-1] == [16] * (math.ceil(len(expected) / 16) - 1)
        assert not torch.equal(torch.cat(recorder.drawn[t, 0]), torch.cat(recorder.drawn[t, 1])), "shuffled"


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_memory_has_the_policy_size_and_class_balance(id_benchmark, policy):
    replay = ConcatReplayPlugin(MEM, POLICIES[policy]())
    strategy = make(plugins=[replay], epochs=1)
    seen = set()
    for exp in id_benchmark.train_stream:
        strategy.train(exp)
        seen |= set(exp.classes_in_this_experience)
        counts = torch.bincount(memory_labels(replay), minlength=6)[sorted(seen)]
        assert int(counts.sum()) == MEM
        assert int(counts.max() - counts.min()) <= 1  # MEM split equally over the classes seen
    ids = memory_ids(replay)
    assert len(set(ids)) == MEM


@pytest.mark.parametrize("mode", ["auto", "sampling", "dataset"])
@pytest.mark.parametrize("order", ["replay_first", "bsce_first"])
def test_bsce_prior_is_the_drawn_label_frequency(id_benchmark, mode, order):
    replay, bsce = ConcatReplayPlugin(MEM), BalancedSoftmaxPlugin(prior=mode)
    recorder = DrawRecorder(replay)
    plugins = [replay, bsce] if order == "replay_first" else [bsce, replay]
    strategy = make(plugins=plugins + [recorder])
    for t, exp in enumerate(id_benchmark.train_stream):
        strategy.train(exp)
        drawn = torch.bincount(torch.cat(recorder.labels[t, 0])).double()
        assert torch.equal(torch.tensor(bsce.prior_history[t], dtype=torch.float64), drawn / drawn.sum()), t
    assert bsce.prior_history[-1][4:] == pytest.approx([60 / 150] * 2)  # a new class: 60 of 120 new + 30 memory


def test_memory_is_drawn_with_the_training_transforms():
    train_eval = {"train": (lambda v: v + 1, None), "eval": (lambda v: v - 1, None)}
    data = make_dataset(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]), transform_groups=train_eval)
    policy = ReservoirSamplingBuffer(2)
    policy.buffer = data.subset([2, 3]).eval()
    strategy = types.SimpleNamespace(adapted_dataset=data.subset([0, 1]).train())
    ConcatReplayPlugin(2, policy).after_train_dataset_adaptation(strategy)
    assert [strategy.adapted_dataset[i][0].tolist() for i in range(4)] == [[1.0, 1.0]] * 4


def test_lwf_with_concat_replay_and_bsce_trains_without_nan(id_benchmark):
    replay, bsce = ConcatReplayPlugin(MEM, herding_buffer(MEM)), BalancedSoftmaxPlugin()
    recorder = DrawRecorder(replay)
    strategy = make(LwF, plugins=[bsce, replay, recorder], alpha=1.0, temperature=2.0)
    for exp in id_benchmark.train_stream:
        strategy.train(exp)
    results = strategy.eval(id_benchmark.test_stream)
    assert len(recorder.losses) > 0 and all(math.isfinite(v) for v in recorder.losses)
    assert all(math.isfinite(float(v)) for v in results.values())
    assert len(replay.storage_policy.buffer) == MEM and len(bsce.prior_history) == 3


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_checkpoint_round_trip_continues_training_identically(id_benchmark, tmp_path, policy):
    def build():
        replay = ConcatReplayPlugin(MEM, POLICIES[policy]())
        recorder = DrawRecorder(replay)
        return make(LwF, plugins=[replay, BalancedSoftmaxPlugin()], alpha=1.0, temperature=2.0), replay, recorder

    def continue_training(strategy, recorder):
        strategy.plugins.append(recorder)  # after the checkpoint: not part of its plugins
        for exp in id_benchmark.train_stream[1:]:
            strategy.train(exp)
        return recorder

    reference, replay, recorder = build()
    reference.train(id_benchmark.train_stream[0])
    save_checkpoint(tmp_path / "ckpt.pt", reference)
    saved_memory = memory_ids(replay)
    continue_training(reference, recorder)

    resumed, replay2, recorder2 = build()
    restore_strategy(resumed, load_checkpoint(tmp_path / "ckpt.pt"))
    assert memory_ids(replay2) == saved_memory and len(saved_memory) == MEM
    continue_training(resumed, recorder2)
    assert recorder2.memory == recorder.memory
    assert {k: torch.cat(v).tolist() for k, v in recorder2.drawn.items()} == {
        k: torch.cat(v).tolist() for k, v in recorder.drawn.items()
    }
    assert recorder2.losses == recorder.losses
    assert memory_ids(replay2) == memory_ids(replay)
    for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)


def test_herding_selects_avalanche_herding_order_of_normalised_features_and_restores_the_model():
    torch.manual_seed(0)
    model = MLP(dim=8)
    model.classifier.eval()  # a mixed train/eval state must come back as it was
    x, y = make_blobs(2, 20, seed=3)
    data = make_dataset(x, y)
    strategy = types.SimpleNamespace(model=model, device=torch.device("cpu"), eval_mb_size=7)
    order = ModelHerdingSelectionStrategy("feature_extractor").make_sorted_indices(strategy, data)
    features = torch.nn.functional.normalize(model.feature_extractor(x).detach(), dim=1)
    assert order == HerdingSelectionStrategy.make_sorted_indices_from_features(None, features)
    assert sorted(order) == list(range(40))
    assert model.training and model.feature_extractor.training and not model.classifier.training
    assert not any(m._forward_hooks for m in model.modules())


def test_arguments_are_validated_at_construction():
    for bad in (0, -5, 2.5, True, "2000"):
        with pytest.raises(ValueError, match="mem_size must be a positive integer"):
            ConcatReplayPlugin(bad)
    with pytest.raises(TypeError, match="storage_policy must be an Avalanche ExemplarsBuffer"):
        ConcatReplayPlugin(100, storage_policy="herding")
    with pytest.raises(ValueError, match=r"storage_policy.max_size \(50\) differs from mem_size \(100\)"):
        ConcatReplayPlugin(100, ClassBalancedBuffer(max_size=50))
    with pytest.raises(ValueError, match="layer_name must be"):
        herding_buffer(100, layer_name="")
    assert isinstance(ConcatReplayPlugin().storage_policy, ClassBalancedBuffer)
    assert ConcatReplayPlugin().mem_size == 2000


def test_unknown_herding_layer_is_refused_before_training(id_benchmark):
    strategy = make(plugins=[ConcatReplayPlugin(MEM, herding_buffer(MEM, layer_name="backbone"))])
    with pytest.raises(ValueError, match="Herding layer 'backbone' is not a module of MLP"):
        strategy.train(id_benchmark.train_stream[0])


@pytest.mark.parametrize(
    "build, culprit",
    [
        (lambda: make(plugins=[ConcatReplayPlugin(MEM), ReplayPlugin(mem_size=MEM)]), "ReplayPlugin"),
        (lambda: make(plugins=[ConcatReplayPlugin(MEM), ConcatReplayPlugin(MEM)]), "ConcatReplayPlugin"),
        (lambda: make(ER_ACE, plugins=[ConcatReplayPlugin(MEM)], mem_size=MEM), "ER_ACE"),
    ],
)
def test_a_second_replay_memory_is_refused(id_benchmark, build, culprit):
    with pytest.raises(ValueError, match=f"cannot be combined with {culprit}, which keeps a replay memory"):
        build().train(id_benchmark.train_stream[0])


def test_one_instance_listed_twice_is_refused(id_benchmark):
    plugin = ConcatReplayPlugin(MEM)
    with pytest.raises(ValueError, match="This ConcatReplayPlugin is listed 2 times in the strategy's plugins "
                                         r"\(its memory would be concatenated 2 times\); list it once"):
        make(plugins=[plugin, plugin]).train(id_benchmark.train_stream[0])


def test_loader_that_does_not_draw_each_sample_once_is_refused():
    """Several task labels: the strategy's task-balanced loader would cycle the memory."""
    x, y, xt, yt = blobs_data(4)
    x = torch.cat([x, torch.zeros(len(x), 1)], 1)
    xt = torch.cat([xt, torch.zeros(len(xt), 1)], 1)
    benchmark = nc_benchmark(make_dataset(x, y), make_dataset(xt, yt), n_experiences=2, task_labels=True,
                             fixed_class_order=[0, 1, 2, 3])
    strategy = make(plugins=[ConcatReplayPlugin(MEM)], epochs=1)
    strategy.train(benchmark.train_stream[0])
    with pytest.raises(ValueError, match="draws each sample of the experience \\+ memory once per epoch"):
        strategy.train(benchmark.train_stream[1])
