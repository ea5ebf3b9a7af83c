"""Class-incremental benchmarks (Avalanche ``NCScenario``) and their preprocessing.

:data:`BENCHMARKS` (:mod:`.catalog`) holds each benchmark's facts in one place: its builder
(:func:`split_digits`, :func:`split_cifar100`, :func:`split_tiny_imagenet`,
:func:`split_imagenet_subset`, :func:`split_imagenet`; any ``B<k>`` protocol that
splits its classes evenly), its classes, default model and input normalisation, and
whether the fast batch augmentation (:class:`BatchAugmentPlugin` +
:class:`InputNormalize`, see :mod:`bsce_avalanche.benchmarks.augment`) and the
device-resident data path (:class:`DeviceDataPlugin`, see
:mod:`bsce_avalanche.benchmarks.device_data`) apply.

Importing this package imports neither torch nor Avalanche: the names below that need them are
imported from their modules when first used (:pep:`562`).
"""

from __future__ import annotations

from .._lazy import lazy_exports


from .catalog import BENCHMARKS, BenchmarkInfo
from .class_orders import CLASS_ORDER_NAMES, ICARL_ORIGINAL_CIFAR100_ORDER, get_class_order, icarl_order
from .protocols import resolve_protocol

#: The names imported on first use, by module (these modules import torch and Avalanche).
_LAZY: dict[str, tuple[str, ...]] = {
    "augment": ("CIFAR100_MEAN", "CIFAR100_STD", "IMAGENET_MEAN", "IMAGENET_STD", "BatchAugmentPlugin",
                "InputNormalize", "RandomCropFlip", "classic_eval_transform", "classic_train_transform", "crop_flip",
                "random_crop_flip"),
    "cifar": ("ICARL_MEMORY_SIZE", "MEMORY_PER_CLASS", "load_cifar100_arrays", "split_cifar100"),
    "common": ("DATA_DIR_ENV", "ImageFileDataset", "PILImageDataset", "TensorImageDataset",
               "make_class_incremental_benchmark", "resolve_data_dir"),
    "device_data": ("DeviceDataPlugin",),
    "digits": ("load_digits_tensors", "split_digits"),
    "imagenet": ("IMAGENET_SUBSET_NAMES", "imagenet_subset_wnids", "imagenet_wnids", "load_tiny_imagenet_files",
                 "split_imagenet", "split_imagenet_subset", "split_tiny_imagenet"),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = ["BENCHMARKS", "BenchmarkInfo", "BatchAugmentPlugin", "CIFAR100_MEAN", "CIFAR100_STD", "CLASS_ORDER_NAMES",
           "DATA_DIR_ENV", "DeviceDataPlugin", "ICARL_MEMORY_SIZE", "ICARL_ORIGINAL_CIFAR100_ORDER", "IMAGENET_MEAN",
           "IMAGENET_STD", "IMAGENET_SUBSET_NAMES", "ImageFileDataset", "InputNormalize", "MEMORY_PER_CLASS",
           "PILImageDataset", "RandomCropFlip", "TensorImageDataset", "classic_eval_transform",
           "classic_train_transform", "crop_flip", "get_class_order", "icarl_order", "imagenet_subset_wnids",
           "imagenet_wnids", "load_cifar100_arrays", "load_digits_tensors", "load_tiny_imagenet_files",
           "make_class_incremental_benchmark", "random_crop_flip", "resolve_data_dir", "resolve_protocol",
           "split_cifar100", "split_digits", "split_imagenet", "split_imagenet_subset", "split_tiny_imagenet"]
