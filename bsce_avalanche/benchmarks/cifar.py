"""Split CIFAR-100, from a local ``cifar100.npz`` or torchvision's download.

Typical use (iCaRL class order, LUCIR/PODNet B50 protocol, 10 steps)::

    bench = split_cifar100(protocol="B50", n_steps=10)   # 11 experiences
    model = make_model("resnet32", num_classes=100)      # has InputNormalize
    strategy = Naive(model, ..., plugins=[BatchAugmentPlugin(), ...])
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
from avalanche.benchmarks.scenarios.deprecated.new_classes.nc_scenario import NCScenario
from torchvision.datasets import CIFAR100

from .augment import CIFAR100_MEAN, CIFAR100_STD, classic_transforms
from .class_orders import ClassOrderSpec
from .common import (DATA_DIR_ENV, PILImageDataset, TensorImageDataset, check_flags, check_labels,
                     make_class_incremental_benchmark, raise_not_found, resolve_data_dir, resolve_split)

CIFAR100_NPZ = "cifar100.npz"
CIFAR100_N_CLASSES = 100
#: Memory of the iCaRL protocol (B0): 2000 exemplars in total, shared by all seen classes.
ICARL_MEMORY_SIZE = 2000
#: Memory of the LUCIR/PODNet protocol (B50): 20 exemplars per seen class.
MEMORY_PER_CLASS = 20

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_cifar100_arrays(
    data_dir: str | os.PathLike | None = None, download: bool = False
) -> dict[str, np.ndarray]:
    """CIFAR-100 as numpy arrays ``x_train, y_train, x_test, y_test`` (images HWC uint8).

    Looks in the data directory (:func:`~.common.resolve_data_dir`) for, in order,
    ``cifar100.npz`` or ``cifar100/cifar100.npz``, then torchvision's ``cifar-100-python/``
    folder; with ``download=True`` torchvision fetches that folder.

    :raises FileNotFoundError: nothing found and no (successful) download; the message says where to
        put the file.
    :raises ValueError: a file that is not a readable ``.npz`` of these arrays, or whose images or
        labels are malformed (labels: integers in 0..99, every class present).
    """
    root = resolve_data_dir(data_dir)
    candidates = [root / CIFAR100_NPZ, root / "cifar100" / CIFAR100_NPZ]
    for path in candidates:
        if path.is_file():
            return _load_npz(path)

    download_error: Exception | None = None
    if download or (root / "cifar-100-python").is_dir():
        try:
            return _load_torchvision(root, download)
        except (OSError, RuntimeError) as err:  # offline, corrupted, md5 mismatch
            download_error = err

    looked = ", ".join(str(p) for p in candidates)
    raise_not_found(
        f"CIFAR-100 not found: looked for {looked} and for torchvision's "
        f"'cifar-100-python' folder in {root}. Put a cifar100.npz there (arrays "
        f"x_train (N,32,32,3) uint8, y_train, x_test, y_test), point data_dir= or "
        f"${DATA_DIR_ENV} to the folder holding it, or pass download=True to fetch "
        f"CIFAR-100 with torchvision.",
        download_error, "The torchvision load/download failed",
    )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    fix = (f"replace it with a good copy (arrays {', '.join(_NPZ_KEYS)}), or move it away and pass "
           "download=True to fetch CIFAR-100 with torchvision")
    arrays, key = {}, None
    try:  # never unpickle: numpy's error would advise allow_pickle=True, an unsafe load
        with np.load(path, allow_pickle=False) as data:
            for key in (k for k in _NPZ_KEYS if k in data.files):
                arrays[key] = data[key]
    except (zipfile.BadZipFile, EOFError, zlib.error, ValueError, TypeError) as err:  # TypeError: a .npy
        if isinstance(err, ValueError) and "Object arrays" in str(err):  # readable, but pickled objects
            raise ValueError(f"{path}: {key} holds Python objects (dtype object), which are not loaded (that would run "
                             f"code stored in the file): save it as a numeric array, e.g. np.asarray({key}, dtype="
                             f"{'np.uint8' if key.startswith('x') else 'np.int64'})") from None
        raise ValueError(f"{path} is not a readable .npz archive (corrupt, truncated or another format: "
                         f"{type(err).__name__}): {fix}") from None
    missing = [k for k in _NPZ_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks arrays {missing}: {fix}")
    return _check_arrays(arrays, str(path))


def _check_arrays(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The images' shape and dtype, and labels: integers in 0..99, one per image, every class."""
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise ValueError(f"{where}: x_{split} must be uint8 of shape (N, 32, 32, 3) (HWC), got {x.dtype} {x.shape}")
        y = arrays[f"y_{split}"] = check_labels(arrays[f"y_{split}"], f"{where}: y_{split}", CIFAR100_N_CLASSES)
        if len(x) != len(y):
            raise ValueError(f"{where}: {len(x)} x_{split} images but {len(y)} labels")
    return arrays


def _load_torchvision(root: Path, download: bool) -> dict[str, np.ndarray]:
    train = CIFAR100(str(root), train=True, download=download)
    test = CIFAR100(str(root), train=False, download=download)
    arrays = {"x_train": np.asarray(train.data), "y_train": np.asarray(train.targets),
              "x_test": np.asarray(test.data), "y_test": np.asarray(test.targets)}
    return _check_arrays(arrays, str(root / "cifar-100-python"))


def split_cifar100(
    n_experiences: int | None = None, *, first_exp_classes: int | None = None, protocol: str | None = None,
    n_steps: int | None = None, class_order: ClassOrderSpec = "icarl", seed: int | None = None,
    remap_class_ids: bool = False, data_dir: str | os.PathLike | None = None, download: bool = False,
    fast_augment: bool = True,
) -> NCScenario:
    """Class-incremental Split CIFAR-100 (an Avalanche ``NCScenario``).

    :param n_experiences: number of experiences, all of them counted; default 10 when no ``protocol``.
    :param first_exp_classes: classes in the first experience (the rest split evenly); ``None`` = even.
    :param protocol: ``"B0"`` (iCaRL: 5/10/20/50 steps) or ``"B50"`` (LUCIR, PODNet: 50 base classes,
        then 5/10/25 steps), with ``n_steps``; instead of ``n_experiences``/``first_exp_classes``.
        ``"B50"`` with ``n_steps=10`` gives 11 experiences.
    :param class_order: ``"icarl"`` (default), ``"icarl-original"``, ``"natural"``, ``"random"`` (with
        ``seed``), an int seed, or a list.
    :param seed: seed for ``class_order="random"``.
    :param data_dir: where to find/put the data (see :func:`load_cifar100_arrays`).
    :param download: allow torchvision to download CIFAR-100.
    :param fast_augment: ``True``: experiences yield raw ``uint8`` ``(3, 32, 32)`` tensors; add
        :class:`~.augment.BatchAugmentPlugin` to the strategy and use a model starting with
        :class:`~.augment.InputNormalize`. ``False``: PIL images with the classic per-sample
        transforms (random crop 32/pad 4, flip, ``ToTensor``, ``Normalize``).
    :param remap_class_ids: renumber labels in arrival order (class ``classes_order[i]`` becomes
        ``i``); default keeps CIFAR-100's labels.
    """
    split = resolve_split(
        CIFAR100_N_CLASSES, 10, n_experiences=n_experiences, first_exp_classes=first_exp_classes, protocol=protocol,
        n_steps=n_steps, class_order=class_order, seed=seed, remap_class_ids=remap_class_ids)
    check_flags(download=download, fast_augment=fast_augment)
    arrays = load_cifar100_arrays(data_dir, download=download)
    images = TensorImageDataset.from_hwc_uint8 if fast_augment else PILImageDataset
    train, test = (images(arrays[f"x_{part}"], arrays[f"y_{part}"]) for part in ("train", "test"))
    transforms = {} if fast_augment else classic_transforms(32, CIFAR100_MEAN, CIFAR100_STD)
    return make_class_incremental_benchmark(train, test, **split, **transforms)
