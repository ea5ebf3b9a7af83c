"""Throughput of the two CIFAR-100 preprocessing paths, in images per second.

* ``fast``:    uint8 tensor dataset -> DataLoader -> batch to device ->
               random crop (pad 4) + flip on the whole batch -> InputNormalize
               (what split_cifar100(fast_augment=True) + BatchAugmentPlugin +
               the model's first layer do);
* ``classic``: PIL images -> per-sample RandomCrop(32, 4), RandomHorizontalFlip,
               ToTensor, Normalize -> DataLoader -> batch to device
               (split_cifar100(fast_augment=False)).

Both end with the same thing: a normalised float batch on the device.  Each
measurement is one shuffled pass over the full CIFAR-100 training set (50,000
images; the median of ``--repeats`` passes is reported) through the Avalanche
experience dataset, batch size 128, one torch thread by default.  No model is
run: this isolates data loading + augmentation.  (When training a ResNet-32 on
a CPU the network dominates anyway; the gain matters on a GPU, where the
per-sample PIL work would otherwise starve it.)

Usage (from the repository root)::

    python experiments/augmentation_throughput.py --data-dir ../shared/data/cifar100

Results go to ``experiments/results/augmentation_throughput.json`` (written
atomically), with the machine description and the exact command.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from bsce_avalanche.benchmarks import InputNormalize, random_crop_flip, split_cifar100

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "experiments" / "results" / "augmentation_throughput.json"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def one_pass(dataset, *, fast: bool, batch_size: int, num_workers: int, device: torch.device) -> dict:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        collate_fn=dataset.collate_fn,
        generator=torch.Generator().manual_seed(0),
    )
    normalize = InputNormalize.named("cifar100").to(device)
    n_images = 0
    augment_seconds = 0.0
    start = time.perf_counter()
    for x, _y, _t in loader:
        x = x.to(device, non_blocking=True)
        if fast:
            t0 = time.perf_counter()
            x = normalize(random_crop_flip(x, padding=4))
            if device.type == "cuda":
                torch.cuda.synchronize()
            augment_seconds += time.perf_counter() - t0
        n_images += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
    result = {
        "images": n_images,
        "seconds": round(seconds, 3),
        "images_per_s": round(n_images / seconds, 1),
    }
    if fast:
        result["batch_augment_seconds"] = round(augment_seconds, 3)
    return result


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with cifar100.npz (default: $BSCE_DATA_DIR or ~/.cache/bsce_avalanche)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared CPU, more threads than "
        "free cores makes small tensor ops orders of magnitude slower)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes per setting; the median is reported")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    results = []
    for fast in (True, False):
        bench = split_cifar100(
            n_experiences=1, class_order="natural", data_dir=args.data_dir, fast_augment=fast
        )
        dataset = bench.train_stream[0].dataset.train()
        for workers in args.num_workers:
            passes = [
                one_pass(dataset, fast=fast, batch_size=args.batch_size, num_workers=workers, device=device)
                for _ in range(args.repeats)
            ]
            median = sorted(passes, key=lambda p: p["images_per_s"])[len(passes) // 2]
            r = {
                "path": "fast" if fast else "classic",
                "num_workers": workers,
                **median,
                "images_per_s_all_passes": [p["images_per_s"] for p in passes],
            }
            print(json.dumps(r), flush=True)
            results.append(r)

    by_key = {(r["path"], r["num_workers"]): r["images_per_s"] for r in results}
    speedups = {
        f"num_workers={w}": round(by_key[("fast", w)] / by_key[("classic", w)], 2)
        for w in args.num_workers
    }
    payload = {
        "description": "CIFAR-100 train set (50,000 images), shuffled passes, data loading + "
        "augmentation to a normalised float batch on the device; no model. Each row is the "
        "median pass of `repeats`.",
        "repeats": args.repeats,
        "paths": {
            "fast": "uint8 TensorImageDataset -> DataLoader -> random_crop_flip(pad 4) on the "
            "batch -> InputNormalize (split_cifar100(fast_augment=True) + BatchAugmentPlugin)",
            "classic": "PIL images -> RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, "
            "Normalize per sample -> DataLoader (split_cifar100(fast_augment=False))",
        },
        "command": "python " + shlex.join([os.path.relpath(sys.argv[0], REPO_ROOT)] + sys.argv[1:])
        if argv is None
        else "main(" + repr(argv) + ")",
        "batch_size": args.batch_size,
        "results": results,
        "speedup_fast_over_classic": speedups,
        "machine": {
            "cpu_model": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            # the CPU may be shared with other jobs; the load shows how busy it was
            "load_average_1_5_15min_at_start": load_before,
        },
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
