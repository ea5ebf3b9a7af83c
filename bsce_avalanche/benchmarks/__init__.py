"""Class-incremental benchmarks (Avalanche ``NCScenario``) and their preprocessing.

* :func:`split_cifar100` - Split CIFAR-100, B0/B50 protocols, named class orders;
* :func:`split_digits` - scikit-learn digits, offline, seconds on a CPU;
* :func:`split_imagenet`, :func:`split_imagenet_subset`,
  :func:`split_tiny_imagenet` - from local folders;
* :class:`BatchAugmentPlugin` + :class:`InputNormalize` - the fast batch
  augmentation path (see :mod:`bsce_avalanche.benchmarks.augment`).
"""

from .augment import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugmentPlugin,
    InputNormalize,
    RandomCropFlip,
    classic_eval_transform,
    classic_train_transform,
    crop_flip,
    random_crop_flip,
)
from .cifar import ICARL_MEMORY_SIZE, MEMORY_PER_CLASS, load_cifar100_arrays, split_cifar100
from .class_orders import (
    CLASS_ORDER_NAMES,
    ICARL_ORIGINAL_CIFAR100_ORDER,
    get_class_order,
    icarl_order,
)
from .common import (
    DATA_DIR_ENV,
    ImageFileDataset,
    PILImageDataset,
    TensorImageDataset,
    make_class_incremental_benchmark,
    resolve_data_dir,
    resolve_protocol,
)
from .digits import load_digits_tensors, split_digits
from .imagenet import (
    IMAGENET_SUBSET_NAMES,
    imagenet_subset_wnids,
    imagenet_wnids,
    load_tiny_imagenet_files,
    split_imagenet,
    split_imagenet_subset,
    split_tiny_imagenet,
)

__all__ = [
    "BatchAugmentPlugin",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CLASS_ORDER_NAMES",
    "DATA_DIR_ENV",
    "ICARL_MEMORY_SIZE",
    "ICARL_ORIGINAL_CIFAR100_ORDER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET_SUBSET_NAMES",
    "ImageFileDataset",
    "InputNormalize",
    "MEMORY_PER_CLASS",
    "PILImageDataset",
    "RandomCropFlip",
    "TensorImageDataset",
    "classic_eval_transform",
    "classic_train_transform",
    "crop_flip",
    "get_class_order",
    "icarl_order",
    "imagenet_subset_wnids",
    "imagenet_wnids",
    "load_cifar100_arrays",
    "load_digits_tensors",
    "load_tiny_imagenet_files",
    "make_class_incremental_benchmark",
    "random_crop_flip",
    "resolve_data_dir",
    "resolve_protocol",
    "split_cifar100",
    "split_digits",
    "split_imagenet",
    "split_imagenet_subset",
    "split_tiny_imagenet",
]
