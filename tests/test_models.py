"""Tests of the model builders: parameter counts, shapes, heads, input normalisation."""

from __future__ import annotations

import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.models.utils import avalanche_model_adaptation
from torch import nn

from bsce_avalanche.benchmarks import CIFAR100_MEAN, CIFAR100_STD, InputNormalize, split_digits
from bsce_avalanche.models import (
    FeatureClassifier,
    count_parameters,
    make_icarl_parts,
    make_model,
)


def test_resnet32_parameter_count():
    model = make_model("resnet32", 100)
    # 3 stages x 5 basic blocks (16/32/64 channels), option-A shortcuts:
    # 463,504 in the feature extractor (the "0.46M" of He et al. / iCaRL) + 64*100+100 head
    assert count_parameters(model.feature_extractor) == 463_504
    assert count_parameters(model) == 463_504 + 6_500
    assert 0.45e6 < count_parameters(make_model("resnet32", 10)) < 0.47e6
    # option B adds the two 1x1 projection convs + BN: 16*32+64 and 32*64+128
    option_b = make_model("resnet32", 100, shortcut="B")
    assert count_parameters(option_b.feature_extractor) == 463_504 + 576 + 2_176
    n_blocks = sum(1 for m in model.modules() if type(m).__name__ == "BasicBlock")
    n_convs = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d))
    assert n_blocks == 15 and n_convs == 31  # 31 convs + 1 fc = 32 weight layers


def test_resnet32_forward_uint8_and_float():
    torch.manual_seed(0)
    model = make_model("resnet32", 100).eval()
    assert model.feature_dim == 64
    raw = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        logits = model(raw)
        features = model.feature_extractor(raw)
        # uint8 input is normalised by the first layer; pre-normalised float input is not re-normalised
        prenormalised = InputNormalize(CIFAR100_MEAN, CIFAR100_STD)(raw)
        torch.testing.assert_close(model(prenormalised), logits)
    assert logits.shape == (4, 100) and features.shape == (4, 64)
    assert isinstance(model.feature_extractor[0], InputNormalize)


@pytest.mark.parametrize(
    "name, shape, feature_dim",
    [
        ("resnet18", (2, 3, 64, 64), 512),
        ("resnet18-cifar", (2, 3, 32, 32), 512),
        ("small_cnn", (5, 1, 8, 8), 128),
    ],
)
def test_other_models_forward(name, shape, feature_dim):
    model = make_model(name, 10).eval()
    with torch.no_grad():
        out = model(torch.rand(shape))
        features = model.feature_extractor(torch.rand(shape))
    assert out.shape == (shape[0], 10)
    assert features.shape == (shape[0], feature_dim) == (shape[0], model.feature_dim)


def test_resnet18_is_torchvision_resnet18():
    model = make_model("resnet18", 1000)
    # torchvision resnet18 has 11,689,512 parameters with its 1000-class fc
    assert count_parameters(model) == 11_689_512
    assert isinstance(model.feature_extractor.normalize, InputNormalize)  # ImageNet statistics
    torch.testing.assert_close(
        model.feature_extractor.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406])
    )


def test_small_cnn_has_no_normalisation_and_is_small():
    model = make_model("small_cnn", 10)
    assert not any(isinstance(m, InputNormalize) for m in model.modules())
    assert count_parameters(model) < 150_000


def test_incremental_head_grows_with_experiences():
    model = make_model("small_cnn", 2, incremental=True)
    assert isinstance(model.classifier, IncrementalClassifier)
    bench = split_digits(protocol="B4", n_steps=3, class_order="icarl")
    seen: set[int] = set()
    for exp in bench.train_stream:
        avalanche_model_adaptation(model, exp)
        seen |= set(exp.classes_in_this_experience)
        assert model.classifier.classifier.out_features == max(seen) + 1
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_fixed_head_and_icarl_parts():
    model = make_model("resnet32", 100)
    assert isinstance(model, FeatureClassifier)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 100
    feature_extractor, classifier = make_icarl_parts("resnet32", 100)
    assert isinstance(feature_extractor[0], InputNormalize)  # iCaRL's direct calls see normalised input
    assert isinstance(classifier, nn.Linear) and classifier.in_features == 64
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert classifier(feature_extractor(x)).shape == (2, 100)


def test_input_norm_options():
    plain = make_model("resnet32", 10, input_norm=None)
    assert not any(isinstance(m, InputNormalize) for m in plain.modules())
    custom = make_model("small_cnn", 10, input_norm=((0.5,), (0.25,)))
    torch.testing.assert_close(custom.feature_extractor.normalize.std.flatten(), torch.tensor([0.25]))
    imagenet = make_model("resnet32", 10, input_norm="imagenet")
    torch.testing.assert_close(
        imagenet.feature_extractor.normalize.std.flatten(), torch.tensor([0.229, 0.224, 0.225])
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "resnet34", "num_classes": 10}, ValueError, "did you mean 'resnet32'"),
        ({"name": "resnet32", "num_classes": 0}, ValueError, "positive int"),
        ({"name": "resnet32", "num_classes": 10, "input_norm": "cifar10"}, ValueError,
         r"Unknown normalisation 'cifar10' \(did you mean 'cifar100'\?\)"),
        ({"name": "resnet32", "num_classes": 10, "input_norm": 3}, ValueError, "input_norm must be"),
        ({"name": "resnet32", "num_classes": 10, "shortcut": "C"}, ValueError, "shortcut must be"),
        ({"name": "resnet18", "num_classes": 10, "shortcut": "A"}, TypeError, "no extra arguments"),
    ],
)
def test_make_model_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_model(**kwargs)
