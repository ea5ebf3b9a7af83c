"""Named class orders. The order in which classes arrive changes the numbers, so papers fix it;
the two common CIFAR-100 orders differ, hence both names:

* ``"icarl"``: ``numpy.random.seed(1993); numpy.random.permutation(n_classes)``, the iCaRL order
  of PyCIL and FACIL; LUCIR and PODNet shuffle ``arange(100)`` with that seed, the same
  permutation (also for ImageNet-Subset). CIFAR-100: ``68, 56, 78, 8, ...``.
* ``"icarl-original"``: hard-coded in the original iCaRL (Theano) code, reused by PODNet and by
  Avalanche's ``continual-learning-baselines``; CIFAR-100 only: ``87, 0, 52, 58, ...``.
* ``"natural"``: ``0, 1, ..., n_classes - 1``; ``"random"``: ``numpy.random.RandomState(seed)``'s
  permutation (an integer instead of a name means the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._choices import check_choice

#: Seed used by iCaRL, LUCIR, PODNet, PyCIL and FACIL for their class orders.
ICARL_SEED = 1993

#: Class order of the original iCaRL code (CIFAR-100), as used by PODNet and by
#: Avalanche's continual-learning-baselines ``split_cifar100/icarl.py``.
ICARL_ORIGINAL_CIFAR100_ORDER: tuple[int, ...] = (
    87, 0, 52, 58, 44, 91, 68, 97, 51, 15, 94, 92, 10, 72, 49, 78, 61, 14, 8, 86,
    84, 96, 18, 24, 32, 45, 88, 11, 4, 67, 69, 66, 77, 47, 79, 93, 29, 50, 57, 83,
    17, 81, 41, 12, 37, 59, 25, 20, 80, 73, 1, 28, 6, 46, 62, 82, 53, 9, 31, 75,
    38, 63, 33, 74, 27, 22, 36, 3, 16, 21, 60, 19, 70, 90, 89, 43, 5, 42, 65, 76,
    40, 30, 23, 85, 2, 95, 56, 48, 71, 64, 98, 13, 99, 7, 34, 55, 54, 26, 35, 39,
)  # fmt: skip

#: Valid names for :func:`get_class_order`.
CLASS_ORDER_NAMES: tuple[str, ...] = ("icarl", "icarl-original", "natural", "random")

ClassOrderSpec = str | int | Sequence[int]


def icarl_order(n_classes: int = 100) -> list[int]:
    """``numpy.random.seed(1993); numpy.random.permutation(n_classes)``, leaving numpy's global RNG alone."""
    return random_order(n_classes, ICARL_SEED)


def random_order(n_classes: int, seed: int) -> list[int]:
    """A random permutation of ``range(n_classes)`` drawn from ``RandomState(seed)``."""
    return np.random.RandomState(seed).permutation(n_classes).tolist()


def get_class_order(order: ClassOrderSpec, n_classes: int = 100, seed: int | None = None) -> list[int]:
    """Resolve a class-order specification to a list of class ids.

    :param order: one of :data:`CLASS_ORDER_NAMES`, an integer seed (a random order drawn with that
        seed), or an explicit sequence that must be a permutation of ``range(n_classes)``.
    :param n_classes: number of classes in the dataset.
    :param seed: seed for ``order="random"``; required there so that runs are reproducible, ignored
        by the other names.
    :raises ValueError: unknown name (with the closest valid name suggested), ``"random"`` without a
        seed, ``"icarl-original"`` for a dataset that is not 100 classes, or a sequence that is not
        a permutation.
    """
    if isinstance(order, bool):  # bool is an int subclass; True is no seed
        raise TypeError(f"class_order must be a name, an int seed or a list, got {order!r}")
    if isinstance(order, (int, np.integer)):
        return random_order(n_classes, int(order))
    if isinstance(order, str):
        return _named_order(order, n_classes, seed)
    return _validated_permutation(order, n_classes)


def _named_order(name: str, n_classes: int, seed: int | None) -> list[int]:
    key = name.strip().lower().replace("_", "-")
    check_choice("class order", key, CLASS_ORDER_NAMES, "an integer seed or an explicit list of class ids")
    if key == "icarl":
        return icarl_order(n_classes)
    if key == "icarl-original":
        if n_classes != len(ICARL_ORIGINAL_CIFAR100_ORDER):
            raise ValueError(
                f"class order 'icarl-original' exists only for CIFAR-100 (100 classes), "
                f"not for {n_classes} classes; use 'icarl' (seed-1993 permutation) instead"
            )
        return list(ICARL_ORIGINAL_CIFAR100_ORDER)
    if key == "natural":
        return list(range(n_classes))
    if seed is None:  # "random"
        raise ValueError(
            "class_order='random' needs a seed for reproducibility: pass seed=<int> "
            "(or pass the integer seed itself as class_order)"
        )
    return random_order(n_classes, seed)


def _validated_permutation(order: Sequence[int], n_classes: int) -> list[int]:
    array = np.asarray(order)
    if array.ndim != 1 or (array.dtype.kind not in "iu" and array.size):  # 1.5 is no class id (int() truncates)
        raise TypeError(f"an explicit class order must be a list of integer class ids, got {list(order)[:5]}...")
    ids = array.astype(int).tolist()
    if sorted(ids) != list(range(n_classes)):
        missing = sorted(set(range(n_classes)) - set(ids))[:5]
        extra = sorted(set(ids) - set(range(n_classes)))[:5]
        raise ValueError(
            f"an explicit class order must be a permutation of 0..{n_classes - 1} "
            f"(got {len(ids)} ids; missing e.g. {missing}, unexpected e.g. {extra}, "
            f"or duplicates)"
        )
    return ids
