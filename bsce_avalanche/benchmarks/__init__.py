"""Class-incremental benchmarks (Avalanche ``NCScenario``) and their preprocessing.

:data:`BENCHMARKS` holds each benchmark's facts in one place: its builder
(:func:`split_digits`, :func:`split_cifar100`, :func:`split_tiny_imagenet`,
:func:`split_imagenet_subset`, :func:`split_imagenet`; any ``B<k>`` protocol that
splits its classes evenly), its classes, default model and input normalisation, and
whether the fast batch augmentation (:class:`BatchAugmentPlugin` +
:class:`InputNormalize`, see :mod:`bsce_avalanche.benchmarks.augment`) and the
device-resident data path (:class:`DeviceDataPlugin`, see
:mod:`bsce_avalanche.benchmarks.device_data`) apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .augment import (CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD, BatchAugmentPlugin, InputNormalize,
                      RandomCropFlip, classic_eval_transform, classic_train_transform, crop_flip, random_crop_flip)
from .cifar import ICARL_MEMORY_SIZE, MEMORY_PER_CLASS, load_cifar100_arrays, split_cifar100
from .class_orders import CLASS_ORDER_NAMES, ICARL_ORIGINAL_CIFAR100_ORDER, get_class_order, icarl_order
from .common import (DATA_DIR_ENV, ImageFileDataset, PILImageDataset, TensorImageDataset,
                     make_class_incremental_benchmark, resolve_data_dir, resolve_protocol)
from .device_data import DeviceDataPlugin
from .digits import load_digits_tensors, split_digits
from .imagenet import (IMAGENET_SUBSET_NAMES, imagenet_subset_wnids, imagenet_wnids, load_tiny_imagenet_files,
                       split_imagenet, split_imagenet_subset, split_tiny_imagenet)


@dataclass(frozen=True)
class BenchmarkInfo:
    """One benchmark: how to build it and what a runner must know about it."""

    #: ``build(protocol=, n_steps=, class_order=, seed=, **{option: value})``
    build: Callable
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
    #: so that :class:`DeviceDataPlugin` can keep them on the training device
    in_memory: bool = False


_FILES = frozenset({"data_dir", "download", "fast_augment"})

#: Every benchmark, by the name the runner's ``benchmark:`` key takes.
BENCHMARKS: dict[str, BenchmarkInfo] = {
    "digits": BenchmarkInfo(
        split_digits, "scikit-learn's 8x8 digits: offline, seconds on a CPU", 10, "small_cnn", None,
        {"B0": (5,), "B4": (3,)}, in_memory=True),
    "cifar100": BenchmarkInfo(
        split_cifar100, "Split CIFAR-100 (local cifar100.npz or torchvision download)", 100, "resnet32",
        "cifar100", {"B0": (5, 10, 20, 50), "B50": (5, 10, 25)}, _FILES, fast_augment=True, in_memory=True),
    "tiny_imagenet": BenchmarkInfo(
        split_tiny_imagenet, "Tiny-ImageNet, 64x64 (local folder or Avalanche download)", 200, "resnet18",
        "imagenet", {"B0": (10,)}, _FILES),
    "imagenet_subset": BenchmarkInfo(
        split_imagenet_subset, "the 100-class ImageNet-Subset of LUCIR (local ImageNet folder)", 100,
        "resnet18", "imagenet", {"B0": (10,), "B50": (5, 10, 25)}, frozenset({"data_dir"})),
    "imagenet": BenchmarkInfo(
        split_imagenet, "ImageNet-1k (local folder)", 1000, "resnet18", "imagenet", {"B0": (10,)},
        frozenset({"data_dir"})),
}

__all__ = ["BENCHMARKS", "BenchmarkInfo", "BatchAugmentPlugin", "CIFAR100_MEAN", "CIFAR100_STD", "CLASS_ORDER_NAMES",
           "DATA_DIR_ENV", "DeviceDataPlugin", "ICARL_MEMORY_SIZE", "ICARL_ORIGINAL_CIFAR100_ORDER", "IMAGENET_MEAN",
           "IMAGENET_STD", "IMAGENET_SUBSET_NAMES", "ImageFileDataset", "InputNormalize", "MEMORY_PER_CLASS",
           "PILImageDataset", "RandomCropFlip", "TensorImageDataset", "classic_eval_transform",
           "classic_train_transform", "crop_flip", "get_class_order", "icarl_order", "imagenet_subset_wnids",
           "imagenet_wnids", "load_cifar100_arrays", "load_digits_tensors", "load_tiny_imagenet_files",
           "make_class_incremental_benchmark", "random_crop_flip", "resolve_data_dir", "resolve_protocol",
           "split_cifar100", "split_digits", "split_imagenet", "split_imagenet_subset", "split_tiny_imagenet"]
