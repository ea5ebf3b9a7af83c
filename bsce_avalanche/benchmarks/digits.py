"""Split Digits: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), offline and seconds
on a CPU: for smoke tests, examples and CI, far too small to compare methods (use CIFAR-100)."""

from __future__ import annotations

import numpy as np
import torch
from avalanche.benchmarks.scenarios.deprecated.new_classes.nc_scenario import NCScenario

from .class_orders import ClassOrderSpec
from .common import TensorImageDataset, make_class_incremental_benchmark, resolve_split

DIGITS_N_CLASSES = 10


def load_digits_tensors(
    test_fraction: float = 0.3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_train, y_train, x_test, y_test``, images float32 ``(N, 1, 8, 8)`` in [0, 1], split stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, digits.target, test_size=test_fraction, stratify=digits.target, random_state=seed
    )
    return tuple(torch.from_numpy(a) for a in (x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64)))


def split_digits(
    n_experiences: int | None = None, *, first_exp_classes: int | None = None, protocol: str | None = None,
    n_steps: int | None = None, class_order: ClassOrderSpec = "natural", seed: int = 0,
    test_fraction: float = 0.3, remap_class_ids: bool = False,
) -> NCScenario:
    """Class-incremental split of scikit-learn's digits (an Avalanche ``NCScenario``). Images are
    float tensors ``(1, 8, 8)`` in [0, 1]: no augmentation or normalisation layer needed.

    :param n_experiences: default 5 (two classes each) when no ``protocol``.
    :param first_exp_classes, protocol, n_steps, remap_class_ids: as for
        :func:`~.cifar.split_cifar100` (e.g. ``protocol="B4", n_steps=3``).
    :param class_order: default ``"natural"`` (0..9); any spec of :func:`~.class_orders.get_class_order`.
    :param seed: seed of the stratified train/test split and of ``class_order="random"``.
    :param test_fraction: fraction of each class held out for testing.
    """
    split = resolve_split(
        DIGITS_N_CLASSES, 5, n_experiences=n_experiences, first_exp_classes=first_exp_classes, protocol=protocol,
        n_steps=n_steps, class_order=class_order, seed=seed, remap_class_ids=remap_class_ids)
    x_tr, y_tr, x_te, y_te = load_digits_tensors(test_fraction, seed)
    return make_class_incremental_benchmark(
        TensorImageDataset(x_tr, y_tr.tolist()), TensorImageDataset(x_te, y_te.tolist()), **split
    )
