"""Device-resident data path: tensor datasets gathered on the training device.

With images in memory (:class:`~.common.TensorImageDataset`: CIFAR, digits), Avalanche's per-sample
fetch (``AvalancheDataset`` -> transform groups -> leaf, then ``collate``), not the network, limits
a GPU. :class:`DeviceDataPlugin` replaces only that fetch: the strategy's loader keeps its samplers
and random draws (so on a CPU both paths train the same model bit for bit), minus Avalanche's FFCV
probe that walks every sample at every epoch, and a mini-batch becomes three gathers from tensors
kept on the device (:func:`device_images`). Only tensor leaves without image transforms qualify
(Avalanche's relabelling is fine): anything else is refused with a message, and the first and last
item of every dataset are checked against the per-sample fetch.
"""

from __future__ import annotations

import functools
import weakref

import torch
from avalanche.benchmarks.utils.classification_dataset import lookup
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader, MultiDatasetSampler
from avalanche.benchmarks.utils.flat_data import FlatData
from avalanche.benchmarks.utils.transforms import TupleTransform
from avalanche.core import SupervisedPlugin
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.dataloader import default_collate

from ..priors import _index_tensor, dataset_labels
from .common import TensorImageDataset

__all__ = ["DeviceDataPlugin", "DeviceBatches", "device_images", "use_device_batches"]

#: One copy of each leaf dataset's images per device, released with the dataset.
_DEVICE_COPIES: "weakref.WeakKeyDictionary[Dataset, dict[str, Tensor]]" = weakref.WeakKeyDictionary()


def _leaf_images(leaf) -> Tensor:
    if isinstance(leaf, TensorImageDataset):
        return leaf.images
    if isinstance(leaf, TensorDataset):
        return leaf.tensors[0]
    raise TypeError(
        f"The device data path needs tensor datasets (TensorImageDataset, TensorDataset), not "
        f"{type(leaf).__name__}: use the per-sample loader (data_path: loader) for this benchmark."
    )


def device_images(leaf, device: torch.device | str) -> Tensor:
    """The images of a tensor dataset on ``device`` (copied once, then cached)."""
    copies = _DEVICE_COPIES.setdefault(leaf, {})
    key = str(torch.device(device))
    if key not in copies:
        copies[key] = _leaf_images(leaf).to(device).contiguous()
    return copies[key]


def _only_relabels(transform) -> bool:
    """True for no transform, or one that only maps labels the way ``targets`` records."""
    if transform is None:
        return True
    if not isinstance(transform, TupleTransform):
        return False
    x_transform, *label_transforms = transform.transforms
    return x_transform is None and all(
        t is None or (isinstance(t, functools.partial) and t.func is lookup) for t in label_transforms
    )


def _leaf_rows(node, group: str) -> tuple[list, Tensor, Tensor]:
    """``(leaves, leaf_index, row)`` of every position of a dataset tree: position ``i``
    holds row ``row[i]`` of ``leaves[leaf_index[i]]``. Raises on image transforms."""
    if isinstance(node, AvalancheDataset):
        node = node._flat_data
    if not isinstance(node, FlatData):
        _leaf_images(node)  # raises for datasets that are not tensors
        return [node], torch.zeros(len(node), dtype=torch.long), torch.arange(len(node))
    for groups in (getattr(node, "_frozen_transform_groups", None), getattr(node, "_transform_groups", None)):
        transform = None if groups is None else groups.transform_groups.get(group)
        if not _only_relabels(transform):
            raise ValueError(
                f"The device data path applies no per-sample transforms, but a dataset has "
                f"{transform!r} in its {group!r} group: build the benchmark without transforms "
                "(augment batches with BatchAugmentPlugin) or use data_path: loader."
            )
    leaves, which, rows = _concat_rows([_leaf_rows(child, group) for child in node._datasets])
    if node._indices is not None:
        index = _index_tensor(node._indices)
        which, rows = which[index], rows[index]
    return leaves, which, rows


def _concat_rows(parts: list) -> tuple[list, Tensor, Tensor]:
    """The ``(leaves, leaf_index, row)`` of concatenated datasets from those of each."""
    leaves, which, rows = [], [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for part_leaves, part_which, part_rows in parts:
        which.append(part_which + len(leaves))
        rows.append(part_rows)
        leaves += part_leaves
    return leaves, torch.cat(which), torch.cat(rows)


def _current_group(data) -> str:
    return data._flat_data._transform_groups.current_group if isinstance(data, AvalancheDataset) else "train"


def _task_labels(dataset) -> Tensor:
    tasks = getattr(dataset, "targets_task_labels", None)
    if tasks is None:
        return torch.zeros(len(dataset), dtype=torch.long)
    uniques = getattr(tasks, "uniques", None)
    if uniques is not None and len(uniques) == 1:  # class-incremental: a single task
        return torch.full((len(dataset),), int(next(iter(uniques))), dtype=torch.long)
    return torch.as_tensor([int(t) for t in tasks], dtype=torch.long)


class DeviceBatches(Dataset):
    """The concatenation of a loader's datasets, fetched a whole mini-batch at a time.

    ``batches.__getitems__(positions)`` returns ``[images, labels, task_labels]`` on the
    device, what the per-sample path's ``collate`` returns for the same positions.
    """

    def __init__(self, images: Tensor, rows: Tensor, labels: Tensor, tasks: Tensor):
        if not len(rows) == len(labels) == len(tasks):
            raise ValueError(f"rows, labels and tasks differ in length: {len(rows)}, {len(labels)}, {len(tasks)}")
        device = images.device
        self.images, self.rows = images, rows.to(device)
        self.labels, self.tasks = labels.to(device), tasks.to(device)

    @classmethod
    def from_datasets(cls, datasets, device: torch.device | str) -> "DeviceBatches":
        """Map every position of ``ConcatDataset(datasets)`` to a row on ``device``."""
        leaves, which, rows = _concat_rows([_leaf_rows(data, _current_group(data)) for data in datasets])
        labels = torch.cat([dataset_labels(data) for data in datasets])
        tasks = torch.cat([_task_labels(data) for data in datasets])
        unique = list({id(leaf): leaf for leaf in leaves}.values())
        position = {id(leaf): i for i, leaf in enumerate(unique)}
        images = [device_images(leaf, device) for leaf in unique]
        if len({(t.shape[1:], t.dtype) for t in images}) > 1:
            raise ValueError(
                "The datasets of one loader hold images of different shapes or dtypes: "
                f"{sorted({(tuple(t.shape[1:]), str(t.dtype)) for t in images})}."
            )
        offsets = torch.tensor([0] + [len(t) for t in images]).cumsum(0)
        leaf_offset = offsets[torch.tensor([position[id(leaf)] for leaf in leaves], dtype=torch.long)]
        images = images[0] if len(images) == 1 else torch.cat(images)  # iCaRL: data + exemplars
        batches = cls(images, rows + leaf_offset[which] if len(which) else rows, labels, tasks)
        batches._check_against(datasets)
        return batches

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, positions) -> list:
        index = torch.as_tensor(positions, dtype=torch.long).to(self.rows.device, non_blocking=True)
        return [self.images.index_select(0, self.rows[index]), self.labels[index], self.tasks[index]]

    def _check_against(self, datasets) -> None:
        """Compare the first and last item of every dataset with the per-sample fetch."""
        offset = 0
        for data in datasets:
            collate = getattr(data, "collate_fn", None) or default_collate
            for i in {0, len(data) - 1} if len(data) else ():
                expected = list(collate([data[i]]))
                got = self.__getitems__([offset + i])
                same = len(expected) == len(got) and all(
                    isinstance(e, Tensor) and e.dtype == g.dtype and torch.equal(e.to(g.device), g)
                    for e, g in zip(expected, got)
                )
                if not same:
                    raise ValueError(
                        f"The device data path would change item {i} of a {type(data).__name__} "
                        "(its items are not (image, label, task) rows of tensor datasets): "
                        "use data_path: loader."
                    )
            offset += len(data)


def _batch_as_is(batch):
    return batch


def use_device_batches(loader, device: torch.device | str) -> None:
    """Make an Avalanche multi-dataset ``loader`` fetch its batches on ``device``
    (in place, idempotent); its batch sampler is untouched."""
    if not isinstance(loader, MultiDatasetDataLoader):
        raise TypeError(
            f"The device data path works with Avalanche's multi-dataset loaders (task-balanced, "
            f"replay, evaluation), not {type(loader).__name__}: use data_path: loader."
        )
    if "_get_loader" in vars(loader):
        return
    if loader.loader_kwargs.get("num_workers", 0) > 0:
        raise ValueError(
            "The device data path fetches batches on the device in the main process: "
            "train and evaluate with num_workers=0."
        )
    batches = DeviceBatches.from_datasets(loader.datasets, device)
    generator = loader.loader_kwargs.get("generator")

    def get_loader():
        # MultiDatasetDataLoader._get_loader with the loader's own samplers, minus its
        # FFCV probe (which walks every sample of every dataset, every epoch)
        samplers = loader._create_samplers(
            loader.datasets, loader.batch_sizes, loader.distributed_sampling, loader.loader_kwargs
        )
        batch_sampler = MultiDatasetSampler(
            loader.datasets, samplers, termination_dataset_idx=loader.termination_dataset,
            oversample_small_datasets=loader.oversample_small_datasets, never_ending=loader.never_ending,
        )
        # a real DataLoader: its iterator draws the same base seed as the per-sample one
        return DataLoader(batches, batch_sampler=batch_sampler, collate_fn=_batch_as_is, generator=generator)

    loader._get_loader = get_loader


class DeviceDataPlugin(SupervisedPlugin, supports_distributed=True):
    """Gather training and evaluation mini-batches on the strategy's device.

    ``Naive(model, ..., device="cuda", plugins=[DeviceDataPlugin(), BatchAugmentPlugin(), ...])``
    with a benchmark of tensor datasets (``split_cifar100(fast_augment=True)``,
    ``split_digits``).  See the module docstring for what it changes (the fetch) and
    what it keeps (the sampling, the data).  Holds no state.
    """

    def before_training_epoch(self, strategy, **kwargs):
        use_device_batches(strategy.dataloader, strategy.device)

    def before_eval_exp(self, strategy, **kwargs):
        use_device_batches(strategy.dataloader, strategy.device)
