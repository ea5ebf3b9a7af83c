"""What the benchmark builders share: the data directory, the ``B<k>`` protocols (:mod:`.protocols`), the one label
check, the image datasets (``uint8`` tensors for the fast path; PIL images or files for the
classic per-sample path) and the one call of Avalanche's ``nc_benchmark``, so that every builder
yields the same kind of ``NCScenario`` (iCaRL reads its ``classes_order`` and ``n_classes_per_exp``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.scenarios.deprecated.new_classes.nc_scenario import NCScenario
from PIL import Image
from torch.utils.data import Dataset

from .._numbers import plain_number
from .class_orders import ClassOrderSpec, get_class_order
from .protocols import _check_split, resolve_protocol

#: Environment variable naming the data directory when ``data_dir`` is not given.
DATA_DIR_ENV = "BSCE_DATA_DIR"
#: Data directory used when neither ``data_dir`` nor ``$BSCE_DATA_DIR`` is set.
DEFAULT_DATA_DIR = Path("~/.cache/bsce_avalanche")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where datasets are read (and downloaded): ``data_dir``, else ``$BSCE_DATA_DIR``, else
    ``~/.cache/bsce_avalanche``. Not created here; only a download creates it."""
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(
                f"data_dir must be a path (str or os.PathLike), got {type(data_dir).__name__} {data_dir!r}"
            )
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def resolve_split(
    n_classes: int, default_n_experiences: int, n_experiences: int | None = None, *,
    first_exp_classes: int | None = None, protocol: str | None = None, n_steps: int | None = None,
    class_order: ClassOrderSpec = "icarl", seed: int | None = None, remap_class_ids: bool = False,
) -> dict:
    """The split keywords every builder takes (see :func:`~.cifar.split_cifar100`), checked before any data
    is read, as the keyword arguments of :func:`make_class_incremental_benchmark` but the data."""
    n_experiences, first_exp_classes = resolve_protocol(
        n_classes, n_experiences=n_experiences, first_exp_classes=first_exp_classes, protocol=protocol,
        n_steps=n_steps, default_n_experiences=default_n_experiences)
    check_flags(remap_class_ids=remap_class_ids)
    return dict(n_classes=n_classes, n_experiences=n_experiences, first_exp_classes=first_exp_classes,
                class_order=class_order, seed=seed, remap_class_ids=remap_class_ids)


def raise_not_found(message: str, download_error: Exception | None, failed: str = "The download failed") -> NoReturn:
    """``FileNotFoundError(message)``, plus why the download, if one was tried, failed."""
    if download_error is not None:
        message += f" {failed}: {download_error}"
    raise FileNotFoundError(message) from download_error


def check_flags(**flags) -> None:
    """Each flag is a bool (a string such as ``"no"`` would count as true)."""
    for name, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def check_labels(labels, what: str = "targets", n_classes: int | None = None) -> np.ndarray:
    """``labels`` as a 1-D int64 array of class ids ``>= 0``; with ``n_classes``, every one
    below it and every class present. Shape ``(N, 1)`` (Keras's CIFAR files) is flattened.

    :raises ValueError: naming ``what`` and the problem; fractional labels are an error, not truncated.
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{what} must be one class id per sample (shape (N,)), got shape {y.shape}")
    if y.dtype.kind not in "iu" and y.size:
        fractional = " with fractional values" if y.dtype.kind == "f" and (y != np.round(y)).any() else ""
        raise ValueError(f"{what} must be integer class ids, got dtype {y.dtype}{fractional}; "
                         "store the labels as integers")
    y = y.astype(np.int64)
    outside = np.unique(y[(y < 0) | (y >= n_classes)] if n_classes else y[y < 0])
    if outside.size:
        where = f"outside 0..{n_classes - 1}" if n_classes else "below 0"
        raise ValueError(f"{what} has labels {where}: {outside[:5].tolist()}")
    absent = np.flatnonzero(np.bincount(y, minlength=n_classes)[:n_classes] == 0) if n_classes else []
    if len(absent):
        raise ValueError(f"{what} has no sample of {len(absent)} of the {n_classes} classes, "
                         f"e.g. {absent[:5].tolist()}")
    return y


class _LabelledDataset(Dataset):
    """One item per target; ``targets`` (what Avalanche reads) checked once and kept as a list."""

    def __init__(self, n_items: int, targets: Sequence[int], items: str = "images"):
        if n_items != len(targets):
            raise ValueError(f"{n_items} {items} but {len(targets)} targets")
        self.targets = check_labels(targets).tolist()

    def __len__(self) -> int:
        return len(self.targets)


class TensorImageDataset(_LabelledDataset):
    """Images kept as one tensor ``(N, C, H, W)``; items are ``(image, label)``.

    With ``uint8`` images (the fast path, see :mod:`.augment`) an item is a view into the tensor
    and a mini-batch stays ``uint8`` (4x smaller than float) until it reaches the training device.
    Also used with ready-made float images (scikit-learn digits).
    """

    def __init__(self, images: torch.Tensor, targets: Sequence[int]):
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(
                f"images must be a tensor (N, C, H, W), got {type(images).__name__} "
                f"{tuple(getattr(images, 'shape', ()))}"
            )
        self.images = images
        super().__init__(len(images), targets)

    @classmethod
    def from_hwc_uint8(cls, images: np.ndarray, targets: Sequence[int]) -> "TensorImageDataset":
        """Build from a ``(N, H, W, C)`` uint8 array, as stored in ``cifar100.npz``."""
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 array (N, H, W, C), got {images.dtype} {images.shape}")
        chw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return cls(chw, targets)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]


class PILImageDataset(_LabelledDataset):
    """Images kept as a ``(N, H, W, C)`` uint8 array; items are ``(PIL.Image, label)``, as in
    torchvision's ``CIFAR100``, for the classic per-sample transforms (``fast_augment=False``)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int]):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 array (N, H, W, C), got {images.dtype} {images.shape}")
        self.images = images
        super().__init__(len(images), targets)

    def __getitem__(self, index: int):
        return Image.fromarray(self.images[index]), self.targets[index]


class ImageFileDataset(_LabelledDataset):
    """Image files on disk; items are ``(PIL.Image (RGB), label)``: torchvision's ``ImageFolder``
    for an explicit list of files (ImageNet subsets, Tiny-ImageNet's annotated validation split)."""

    def __init__(self, paths: Sequence[str | os.PathLike], targets: Sequence[int]):
        self.paths = [str(p) for p in paths]
        super().__init__(len(paths), targets, "paths")

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as img:
                return img.convert("RGB"), self.targets[index]
        except OSError as err:  # PIL's message may lack the file: name it
            raise OSError(f"cannot read image {self.paths[index]}: {err}") from err


def make_class_incremental_benchmark(
    train_dataset: Dataset, test_dataset: Dataset, *, n_classes: int, n_experiences: int,
    first_exp_classes: int | None, class_order: ClassOrderSpec, seed: int | None, remap_class_ids: bool = False,
    train_transform=None, eval_transform=None,
) -> NCScenario:
    """A single-task class-incremental ``NCScenario`` with a fixed class order (Avalanche's ``nc_benchmark``).

    Labels keep their dataset ids unless ``remap_class_ids``: then they are renumbered in order of
    arrival, as LUCIR/PODNet do; Avalanche's iCaRL works with both (it reads ``classes_order``).
    """
    _check_split(n_classes, n_experiences, first_exp_classes)
    check_flags(remap_class_ids=remap_class_ids)
    return nc_benchmark(
        train_dataset, test_dataset, n_experiences=n_experiences, task_labels=False, shuffle=False, seed=seed,
        fixed_class_order=get_class_order(class_order, n_classes=n_classes, seed=seed),
        per_exp_classes=None if first_exp_classes is None else {0: first_exp_classes},
        class_ids_from_zero_from_first_exp=remap_class_ids, class_ids_from_zero_in_each_exp=False,
        train_transform=train_transform, eval_transform=eval_transform,
    )
