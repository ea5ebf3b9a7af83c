"""Bad input gets a clear error naming the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from torch.nn import CrossEntropyLoss
from torch.optim import SGD
from torch.utils.data import DataLoader, TensorDataset

from avalanche.training import Naive
from avalanche.training.plugins import SupervisedPlugin

from bsce_avalanche import BalancedSoftmaxPlugin, dataset_labels

from conftest import MLP, make_blobs
from test_plugin import quiet_evaluator


def naive(plugins, n_out=6):
    model = MLP(n_classes=n_out)
    return Naive(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                 train_mb_size=16, evaluator=quiet_evaluator, plugins=plugins)


def test_labels_beyond_the_model_outputs(blobs_benchmark):
    # 6 classes of data, a model with 4 outputs
    with pytest.raises(ValueError, match="samples of class 5 but the model has only 4 output units"):
        naive([BalancedSoftmaxPlugin()], n_out=4).train(blobs_benchmark.train_stream[2])


def test_labels_beyond_the_model_outputs_in_batch_mode(blobs_benchmark):
    with pytest.raises(ValueError, match="samples of class 5 but the model has only 4 output units"):
        naive([BalancedSoftmaxPlugin(prior="batch")], n_out=4).train(blobs_benchmark.train_stream[2])


def test_fixed_prior_too_long_for_the_model(blobs_benchmark):
    with pytest.raises(ValueError, match="samples of class 7 but the model has only 6 output units"):
        naive([BalancedSoftmaxPlugin(prior=[1] * 8)]).train(blobs_benchmark.train_stream[0])


def test_fixed_prior_too_short_misses_trained_classes(blobs_benchmark):
    # 2 entries: classes 2.. have zero prior; experience 1 trains on classes 2 and 3
    with pytest.raises(ValueError, match=r"classes \[2, 3\] have a zero count in the prior"):
        naive([BalancedSoftmaxPlugin(prior=[1, 1])]).train(blobs_benchmark.train_stream[1])


def test_fixed_prior_label_outside_model(blobs_benchmark):
    class ShiftLabels(SupervisedPlugin):
        def after_forward(self, strategy, **kw):
            strategy.mbatch[1] = strategy.mbatch[1] + 10

    with pytest.raises(ValueError, match="outside the model's 6 output units"):
        naive([ShiftLabels(), BalancedSoftmaxPlugin(prior=[1] * 6)]).train(blobs_benchmark.train_stream[0])


def test_dataset_without_targets():
    x, y = make_blobs(2, 5)
    with pytest.raises(ValueError, match="has no `targets` attribute.*prior='batch'"):
        dataset_labels(TensorDataset(x, y))


def test_loader_over_a_dataset_without_targets(blobs_benchmark):
    class PlainLoader(SupervisedPlugin):
        def before_training_exp(self, strategy, **kw):
            x, y = make_blobs(6, 5)
            strategy.dataloader = DataLoader(TensorDataset(x, y, torch.zeros_like(y)), batch_size=8, shuffle=True)

    with pytest.raises(ValueError, match="TensorDataset\\) has no `targets`"):
        naive([PlainLoader(), BalancedSoftmaxPlugin()]).train(blobs_benchmark.train_stream[0])
    # the documented fix works: count the mini-batch labels instead
    naive([PlainLoader(), BalancedSoftmaxPlugin(prior="batch")]).train(blobs_benchmark.train_stream[0])


def test_non_integer_targets():
    ds = TensorDataset(torch.zeros(3, 2))
    ds.targets = torch.tensor([0.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="not integer class labels"):
        dataset_labels(ds)
    ds.targets = [0, -1, 2]
    with pytest.raises(ValueError, match="negative label"):
        dataset_labels(ds)


# ---------------------------------------------------------------- what a new user passes
def test_targets_of_shape_n_by_1_name_the_fix():
    from bsce_avalanche import BalancedSoftmaxCrossEntropyLoss, balanced_softmax_cross_entropy

    logits, targets = torch.randn(4, 3), torch.tensor([[0], [1], [2], [1]])
    for loss in (lambda: balanced_softmax_cross_entropy(logits, targets, [1, 2, 3]),
                 lambda: BalancedSoftmaxCrossEntropyLoss([1, 2, 3])(logits, targets)):
        with pytest.raises(ValueError, match=r"targets must have shape \(N,\) = \(4,\).*got \(4, 1\).*targets.view\(-1\)"):
            loss()


@pytest.mark.parametrize("scalar", [lambda v: __import__("numpy").asarray(v)[()], torch.tensor],
                         ids=["numpy", "torch"])
def test_numpy_and_torch_scalars_count_as_numbers(scalar):
    import numpy as np

    from bsce_avalanche import BalancedSoftmaxCrossEntropyLoss, ConcatReplayPlugin, herding_buffer
    from bsce_avalanche.benchmarks import split_digits
    from bsce_avalanche.models import make_model
    from bsce_avalanche.runner.config import ExperimentConfig

    tau = scalar(np.float32(0.5))
    assert BalancedSoftmaxCrossEntropyLoss([1, 2], tau=tau).tau == 0.5
    assert BalancedSoftmaxPlugin(tau=tau).tau == 0.5
    assert ConcatReplayPlugin(scalar(np.int64(20))).mem_size == 20
    assert herding_buffer(scalar(np.int64(20))).max_size == 20
    assert make_model("small_cnn", scalar(np.int64(10))).classifier.out_features == 10
    assert len(split_digits(scalar(np.int64(5)), first_exp_classes=scalar(np.int64(2))).train_stream) == 5
    assert ExperimentConfig(epochs=scalar(np.int64(3)), tau=scalar(np.float64(2.0))).epochs == 3
    with pytest.raises(TypeError, match="tau must be a real number, got bool"):
        BalancedSoftmaxCrossEntropyLoss([1, 2], tau=scalar(np.bool_(True)))


def test_a_loss_state_dict_loads_into_a_fresh_loss():
    from bsce_avalanche import BalancedSoftmaxCrossEntropyLoss

    trained = BalancedSoftmaxCrossEntropyLoss([1.0, 2.0, 3.0], tau=1.0)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 1])
    for fresh in (BalancedSoftmaxCrossEntropyLoss(), BalancedSoftmaxCrossEntropyLoss([1.0, 1.0])):
        fresh.load_state_dict(trained.state_dict())
        assert torch.equal(fresh.class_counts, trained.class_counts)
        assert torch.equal(fresh(logits, targets), trained(logits, targets))
    with pytest.raises(ValueError, match="class_counts contains negative values"):
        BalancedSoftmaxCrossEntropyLoss().load_state_dict({"_counts": torch.tensor([1.0, -1.0])})


def test_compile_without_a_cxx_compiler_is_one_line(tmp_path, monkeypatch, capsys):
    """issue 25: `compile: true` on a machine without a C++ compiler ended in inductor's traceback mid-step."""
    import shutil

    from bsce_avalanche.runner.cli import main

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    assert main(["run", "--set", "grid={}", "--loss", "bsce", "--epochs", "1", "--n-steps", "2", "--compile",
                 "--no-wandb", "--no-progress", "--output-dir", str(tmp_path)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bsce-experiment: error:")]
    assert len(err) == 1 and "compile: true needs a C++ compiler" in err[0] and "set compile: false" in err[0]
