"""The benchmarks by name and their facts, without torch or Avalanche (the runner checks a config
against them before importing either); each one's builder is imported when it is first asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BenchmarkInfo", "BENCHMARKS"]


@dataclass(frozen=True)
class BenchmarkInfo:
    """One benchmark: how to build it and what a runner must know about it."""

    #: its builder, ``module.function`` in this package (see :attr:`build`)
    builder: str
    description: str
    n_classes: int
    default_model: str
    #: normalisation of the model's first layer (:data:`~.augment.NORMALIZATIONS`)
    input_norm: str | None
    #: the usual protocols of the literature and their numbers of steps
    protocols: dict[str, tuple[int, ...]]
    #: keyword options ``build`` takes: some of ``data_dir``, ``download``, ``fast_augment``
    options: frozenset[str] = frozenset()
    #: default of ``fast_augment`` (when the benchmark has that option)
    fast_augment: bool = False
    #: images held as in-memory tensors (with ``fast_augment`` on, where it is an option),
    #: so that :class:`~.device_data.DeviceDataPlugin` can keep them on the training device
    in_memory: bool = False

    @property
    def build(self) -> Callable:
        """The builder, ``build(protocol=, n_steps=, class_order=, seed=, **{option: value})`` (imports torch
        and Avalanche)."""
        module, _, function = self.builder.rpartition(".")
        return getattr(importlib.import_module(f".{module}", __package__), function)


_FILES = frozenset({"data_dir", "download", "fast_augment"})

#: Every benchmark, by the name the runner's ``benchmark:`` key takes.
BENCHMARKS: dict[str, BenchmarkInfo] = {
    "digits": BenchmarkInfo(
        "digits.split_digits", "scikit-learn's 8x8 digits: offline, seconds on a CPU", 10, "small_cnn", None,
        {"B0": (5,), "B4": (3,)}, in_memory=True),
    "cifar100": BenchmarkInfo(
        "cifar.split_cifar100", "Split CIFAR-100 (local cifar100.npz or torchvision download)", 100, "resnet32",
        "cifar100", {"B0": (5, 10, 20, 50), "B50": (5, 10, 25)}, _FILES, fast_augment=True, in_memory=True),
    "tiny_imagenet": BenchmarkInfo(
        "imagenet.split_tiny_imagenet", "Tiny-ImageNet, 64x64 (local folder or Avalanche download)", 200, "resnet18",
        "imagenet", {"B0": (10,)}, _FILES),
    "imagenet_subset": BenchmarkInfo(
        "imagenet.split_imagenet_subset", "the 100-class ImageNet-Subset of LUCIR (local ImageNet folder)", 100,
        "resnet18", "imagenet", {"B0": (10,), "B50": (5, 10, 25)}, frozenset({"data_dir"})),
    "imagenet": BenchmarkInfo(
        "imagenet.split_imagenet", "ImageNet-1k (local folder)", 1000, "resnet18", "imagenet", {"B0": (10,)},
        frozenset({"data_dir"})),
}
