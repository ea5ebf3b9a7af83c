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
