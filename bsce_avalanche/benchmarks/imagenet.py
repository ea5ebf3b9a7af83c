"""ImageNet-1k, ImageNet-Subset (100 classes) and Tiny-ImageNet from local folders.

ImageNet is never downloaded (it needs a licence); Tiny-ImageNet can be, by Avalanche's
``TinyImagenet``. Layouts (a label is the index of its wnid among the sorted wnids, as in
torchvision's ``ImageFolder``)::

    imagenet/train/<wnid>/*.JPEG, imagenet/val/<wnid>/*.JPEG    # val sorted into class folders
    tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG,
    tiny-imagenet-200/val/val_annotations.txt    # "<file>\\t<wnid>\\t<x>\\t<y>\\t<w>\\t<h>"

LUCIR's ImageNet-Subset (``gen_imagenet_subset.py``: ``np.random.seed(1993);
np.random.choice(sorted_wnids, 100, replace=False)``) is the first 100 of the seed-1993
permutation of the 1000 sorted wnids: ``subset="seed1993"``, computed, not stored. Beware: the
widely shared ``imagenet100_s1993.txt`` shares only 12 of its wnids with it, and PODNet's split
files use the first 100 sorted wnids (``subset="first100"``); to match a paper exactly, pass its
wnid list. The class order over the subset defaults to ``"icarl"``, as in LUCIR and PODNet.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import avalanche.benchmarks.datasets as avalanche_datasets
import numpy as np
import torch
from avalanche.benchmarks.datasets.imagenet_data import IMAGENET_TORCHVISION_WNIDS
from avalanche.benchmarks.scenarios.deprecated.new_classes.nc_scenario import NCScenario
from PIL import Image
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

from .augment import IMAGENET_MEAN, IMAGENET_STD, classic_transforms, normalized_transform
from .class_orders import ClassOrderSpec, icarl_order
from .common import (DATA_DIR_ENV, ImageFileDataset, TensorImageDataset, check_flags, check_labels,
                     make_class_incremental_benchmark, raise_not_found, resolve_data_dir, resolve_split)

#: Names accepted by :func:`imagenet_subset_wnids`.
IMAGENET_SUBSET_NAMES: tuple[str, ...] = ("seed1993", "first100")
TINY_IMAGENET_DIRNAME = "tiny-imagenet-200"


def imagenet_wnids() -> list[str]:
    """The 1000 ILSVRC-2012 wnids, sorted (= torchvision/ImageFolder label order)."""
    return sorted(IMAGENET_TORCHVISION_WNIDS)


def imagenet_subset_wnids(subset: str | os.PathLike | Sequence[str]) -> list[str]:
    """Sorted wnids of an ImageNet subset.

    :param subset: ``"seed1993"`` (LUCIR's generator script, see module doc),
        ``"first100"`` (PODNet's split files), a sequence of wnids, or the
        path of a text file whose lines start with a wnid.
    """
    if isinstance(subset, str) and subset in IMAGENET_SUBSET_NAMES:
        all_wnids = imagenet_wnids()
        if subset == "first100":
            return all_wnids[:100]
        return sorted(all_wnids[i] for i in icarl_order(len(all_wnids))[:100])
    if isinstance(subset, (str, os.PathLike)):
        path = Path(subset).expanduser()
        if not path.is_file():
            raise ValueError(
                f"subset {str(subset)!r} is neither one of {IMAGENET_SUBSET_NAMES} nor an "
                "existing text file of wnids"
            )
        with open(path) as fh:
            wnids = [line.split()[0] for line in fh if line.strip()]
    else:
        wnids = [str(w) for w in subset]
    if not wnids:
        raise ValueError("an ImageNet subset needs at least one wnid")
    duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
    if duplicates:
        raise ValueError(f"duplicate wnids in the subset: {duplicates[:5]}")
    return sorted(wnids)


def _list_images(folder: Path) -> list[Path]:
    return sorted(Path(f.path) for f in os.scandir(folder) if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS))


def _scan_class_folders(split_dir: Path, wnids: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Files of ``split_dir/<wnid>/`` for every wnid; label = position in ``wnids``."""
    missing = [w for w in wnids if not (split_dir / w).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(wnids)} class folders missing in {split_dir} "
            f"(e.g. {missing[:5]}); expected the layout {split_dir}/<wnid>/*.JPEG"
        )
    paths: list[Path] = []
    targets: list[int] = []
    for label, wnid in enumerate(wnids):
        files = _list_images(split_dir / wnid)
        if not files:
            raise FileNotFoundError(f"no images in class folder {split_dir / wnid}")
        paths += files
        targets += [label] * len(files)
    return paths, targets


def _decode_uint8(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Decode image files into one ``(N, 3, size, size)`` uint8 tensor (fast path)."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"))
        except OSError as err:  # not an image, truncated
            raise ValueError(f"{path} cannot be decoded ({err}): replace or remove it") from None
        if arr.shape[:2] != (size, size):
            raise ValueError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}")
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def imagenet_train_transform() -> transforms.Compose:
    """``RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize`` (LUCIR, PODNet)."""
    return normalized_transform(
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), mean=IMAGENET_MEAN, std=IMAGENET_STD
    )


def imagenet_eval_transform() -> transforms.Compose:
    """``Resize(256) + CenterCrop(224) + ToTensor + Normalize``."""
    return normalized_transform(
        transforms.Resize(256), transforms.CenterCrop(224), mean=IMAGENET_MEAN, std=IMAGENET_STD
    )


def _resolve_imagenet_root(root, data_dir) -> Path:
    base = Path(root).expanduser() if root is not None else resolve_data_dir(data_dir) / "imagenet"
    missing = [d for d in ("train", "val") if not (base / d).is_dir()]
    if missing:
        how = "" if root is not None else (
            f" (root defaults to <data dir>/imagenet, the data dir being data_dir=, ${DATA_DIR_ENV} or "
            "~/.cache/bsce_avalanche)")
        raise FileNotFoundError(
            f"ImageNet not found: {base} lacks {' and '.join(d + '/' for d in missing)}{how}. "
            "ImageNet is never downloaded; pass root= pointing at a folder with "
            "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (validation images sorted into "
            "class folders, e.g. with the usual valprep.sh)."
        )
    return base


def split_imagenet(
    root: str | os.PathLike | None = None, *, subset: str | os.PathLike | Sequence[str] | None = None,
    n_experiences: int | None = None, first_exp_classes: int | None = None, protocol: str | None = None,
    n_steps: int | None = None, class_order: ClassOrderSpec = "icarl", seed: int | None = None,
    remap_class_ids: bool = False, data_dir: str | os.PathLike | None = None, train_transform=None,
    eval_transform=None,
) -> NCScenario:
    """Class-incremental ImageNet-1k (``subset=None``) or a subset, from a local folder.

    :param root: folder with ``train/<wnid>/`` and ``val/<wnid>/`` (only the subset's are needed);
        default ``<data dir>/imagenet``.
    :param subset: ``None`` (all 1000 classes), ``"seed1993"``, ``"first100"``, a list of wnids or a
        wnid file; see the module docstring.
    :param n_experiences, first_exp_classes, protocol, n_steps, class_order, seed, remap_class_ids: as
        for :func:`~.cifar.split_cifar100` (default 10 even experiences, ``"icarl"`` order).
    :param train_transform, eval_transform: override the per-sample transforms
        (default :func:`imagenet_train_transform` / :func:`imagenet_eval_transform`).
    """
    wnids = imagenet_wnids() if subset is None else imagenet_subset_wnids(subset)
    split = resolve_split(
        len(wnids), 10, n_experiences=n_experiences, first_exp_classes=first_exp_classes, protocol=protocol,
        n_steps=n_steps, class_order=class_order, seed=seed, remap_class_ids=remap_class_ids)
    base = _resolve_imagenet_root(root, data_dir)
    return make_class_incremental_benchmark(
        ImageFileDataset(*_scan_class_folders(base / "train", wnids)),
        ImageFileDataset(*_scan_class_folders(base / "val", wnids)),
        **split,
        train_transform=imagenet_train_transform() if train_transform is None else train_transform,
        eval_transform=imagenet_eval_transform() if eval_transform is None else eval_transform,
    )


def split_imagenet_subset(
    root: str | os.PathLike | None = None,
    *,
    subset: str | os.PathLike | Sequence[str] = "seed1993",
    **kwargs,
) -> NCScenario:
    """ImageNet-Subset (100 classes): :func:`split_imagenet` with ``subset="seed1993"``; usually
    ``protocol="B50", n_steps=5|10|25`` (LUCIR, PODNet) or ``protocol="B0", n_steps=10``."""
    return split_imagenet(root, subset=subset, **kwargs)


def _find_tiny_root(root, data_dir, download: bool) -> Path:
    if root is not None:
        base = Path(root).expanduser()
        candidates = [base / TINY_IMAGENET_DIRNAME, base]
    else:
        base = resolve_data_dir(data_dir)
        # second entry: where Avalanche's TinyImagenet(root=<dir>/tinyimagenet) unzips
        candidates = [base / TINY_IMAGENET_DIRNAME, base / "tinyimagenet" / TINY_IMAGENET_DIRNAME]
    for cand in candidates:
        if (cand / "train").is_dir() and (cand / "val").is_dir():
            return cand

    error: Exception | None = None
    if download:
        download_root = base if root is not None else base / "tinyimagenet"
        try:
            avalanche_datasets.TinyImagenet(root=download_root, train=True, download=True)
            found = download_root / TINY_IMAGENET_DIRNAME
            if (found / "train").is_dir():
                return found
        except Exception as err:  # network or archive errors of any kind
            error = err
    looked = ", ".join(str(c) for c in candidates)
    raise_not_found(
        f"Tiny-ImageNet not found: looked in {looked}. Unzip tiny-imagenet-200.zip there "
        f"(it must contain train/<wnid>/images/ and val/val_annotations.txt), pass "
        f"root= or data_dir= (or set ${DATA_DIR_ENV}), or pass download=True.",
        error,
    )


def load_tiny_imagenet_files(
    root: str | os.PathLike,
) -> tuple[list[str], tuple[list[Path], list[int]], tuple[list[Path], list[int]]]:
    """``(wnids, (train_paths, train_labels), (val_paths, val_labels))`` of a ``tiny-imagenet-200`` folder.

    Classes come from ``wnids.txt`` (or the ``train/`` folders), sorted; the
    validation labels from ``val/val_annotations.txt``.
    """
    root = Path(root)
    wnids_file = root / "wnids.txt"
    if wnids_file.is_file():
        wnids = sorted({line.strip() for line in wnids_file.read_text().splitlines() if line.strip()})
    else:
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    label_of = {w: i for i, w in enumerate(wnids)}

    train_paths: list[Path] = []
    train_labels: list[int] = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"missing Tiny-ImageNet training folder {folder}")
        files = _list_images(folder)
        train_paths += files
        train_labels += [label_of[wnid]] * len(files)

    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise FileNotFoundError(f"missing {annotations} (tab-separated '<file> <wnid> <x> <y> <w> <h>' lines)")
    val_paths: list[Path] = []
    val_labels: list[int] = []
    with open(annotations, newline="") as fh:
        for row in csv.reader(fh, dialect="excel-tab"):
            if not row:
                continue
            filename, wnid = row[0], row[1]
            if wnid not in label_of:
                raise ValueError(f"{annotations}: {filename} has unknown wnid {wnid!r}")
            path = root / "val" / "images" / filename
            if not path.is_file():
                raise FileNotFoundError(f"{annotations} lists {filename}, but {path} is missing")
            val_paths.append(path)
            val_labels.append(label_of[wnid])
    check_labels(train_labels, f"{root / 'train'} (class folders with images)", len(wnids))
    check_labels(val_labels, str(annotations), len(wnids))
    return wnids, (train_paths, train_labels), (val_paths, val_labels)


def split_tiny_imagenet(
    root: str | os.PathLike | None = None, *, n_experiences: int | None = None,
    first_exp_classes: int | None = None, protocol: str | None = None, n_steps: int | None = None,
    class_order: ClassOrderSpec = "icarl", seed: int | None = None, remap_class_ids: bool = False,
    data_dir: str | os.PathLike | None = None, download: bool = False, fast_augment: bool = False,
) -> NCScenario:
    """Class-incremental Tiny-ImageNet (200 classes, 64x64) from a local folder.

    :param root: the ``tiny-imagenet-200`` folder or its parent; default ``<data dir>/tiny-imagenet-200``
        (or Avalanche's download location ``<data dir>/tinyimagenet/tiny-imagenet-200``).
    :param download: fetch the archive with Avalanche's ``TinyImagenet`` if absent.
    :param fast_augment: decode all images once into ``uint8`` tensors (about 1.2 GB, tens of
        seconds) for the batch path (:class:`~.augment.BatchAugmentPlugin` + a model with ImageNet
        :class:`~.augment.InputNormalize`, e.g. ``make_model("resnet18", ...)``). Default ``False``:
        per-sample transforms on the files (random crop 64 with padding 4, flip, ImageNet ``Normalize``).
    :param n_experiences, first_exp_classes, protocol, n_steps, class_order, seed, remap_class_ids: as
        for :func:`~.cifar.split_cifar100` (default 10 even experiences, ``"icarl"`` order).
    """
    check_flags(download=download, fast_augment=fast_augment)
    tiny_root = _find_tiny_root(root, data_dir, download)
    wnids, train_files, val_files = load_tiny_imagenet_files(tiny_root)
    split = resolve_split(
        len(wnids), 10, n_experiences=n_experiences, first_exp_classes=first_exp_classes, protocol=protocol,
        n_steps=n_steps, class_order=class_order, seed=seed, remap_class_ids=remap_class_ids)
    if fast_augment:
        train, test = (TensorImageDataset(_decode_uint8(paths, 64), y) for paths, y in (train_files, val_files))
        return make_class_incremental_benchmark(train, test, **split)
    train, test = ImageFileDataset(*train_files), ImageFileDataset(*val_files)
    return make_class_incremental_benchmark(train, test, **split, **classic_transforms(64, IMAGENET_MEAN, IMAGENET_STD))
