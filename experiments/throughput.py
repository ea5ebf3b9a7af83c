"""Training throughput of the runner's data paths, in images per second, and Avalanche's overhead.

    python experiments/throughput.py                         # GPU: about a minute
    python experiments/throughput.py --threads 1 --batch-size 32 --iterations 30 --warmup 3 --chunk 5
                                                             # a short CPU run (a few minutes)
    python experiments/throughput.py --quick                 # seconds (the test suite)

Every cell trains Avalanche's ``Naive`` strategy exactly as ``bsce-experiment`` builds it
(same model builder, plugins and evaluator; ``loss: bsce`` adds ``BalancedSoftmaxPlugin``)
on one experience of CIFAR-shaped data, for ``--warmup`` untimed and then
``--iterations`` timed mini-batches; the timed window covers fetching, augmentation,
forward, loss, backward and update. Paths (config ``data_path`` / ``amp``):

* ``loader``: Avalanche's per-sample DataLoader of ``uint8`` images, batch to the device,
  ``BatchAugmentPlugin`` crop + flip there (``data_path: loader``, the default);
* ``device``: images kept on the device, batches gathered there by ``DeviceDataPlugin``
  from the same sampler (``data_path: device``; on CUDA also channels_last + cuDNN autotune);
* ``device+bf16``: the same with ``amp: bf16`` (the feature extractor under bf16 autocast).

Avalanche's own overhead: the same model and optimiser then run a bare PyTorch loop
(crop + flip, forward, CE or BSCE with the same prior vector, backward, step) over the very
batches the strategy drew, already on the device; ``avalanche_overhead_ms_per_iteration``
is the strategy's time per iteration minus the bare loop's (callbacks, loader, metrics; for
``loader`` the per-sample fetch too), in total and as the median over rounds of
``--chunk`` iterations (the bare loop runs after each round, so both see the same machine
load). Once per path: the training loader alone (one epoch: fetch, batch on the device,
crop + flip) and evaluation (``strategy.eval`` over the test set; ``loader`` with the
runner's default eval batch of 256, the device paths with ``--eval-batch-size``).

Data: synthetic by default (random ``uint8`` images of CIFAR-100's shape, 500 per class:
throughput does not depend on pixel values); ``--data-dir`` reads the real CIFAR-100.
Writes ``experiments/results/throughput_<device>.json`` (``cpu``, or the GPU's name),
atomically, with the device named and the exact command.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from bsce_avalanche import BalancedSoftmaxPlugin, log_prior_adjustment
from bsce_avalanche.benchmarks import (
    BatchAugmentPlugin,
    DeviceDataPlugin,
    TensorImageDataset,
    make_class_incremental_benchmark,
    split_cifar100,
)
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.experiment import _environment, build_model, build_strategy, resolve_device
from bsce_avalanche.runner.fileio import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "experiments" / "results"
PATHS = {"loader": ("loader", "none"), "device": ("device", "none"), "device+bf16": ("device", "bf16")}
LOADER_EVAL_BATCH = 256  # the runner's default eval_batch_size


def synthetic_cifar(n_classes: int = 100, per_class: int = 500, per_class_test: int = 100, seed: int = 0):
    """A one-experience benchmark of random uint8 images shaped like CIFAR-100."""
    g = torch.Generator().manual_seed(seed)

    def split(per):
        labels = torch.arange(n_classes).repeat_interleave(per)
        images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8, generator=g)
        return TensorImageDataset(images, labels.tolist())

    return make_class_incremental_benchmark(
        split(per_class), split(per_class_test), n_classes=n_classes, n_experiences=1,
        first_exp_classes=None, class_order="natural", seed=seed,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timer(SupervisedPlugin):
    """Times the strategy loop in rounds of ``chunk`` iterations after ``warmup`` ones; after
    each round, the bare loop runs the round's batches (timed apart), so that both see the
    same machine load. Rounds end with a device synchronisation only."""

    def __init__(self, warmup: int, iterations: int, chunk: int, bare):
        super().__init__()
        self.warmup, self.iterations, self.chunk, self.bare = warmup, iterations, chunk, bare
        self.done, self.batches, self.loop_s, self.bare_s, self.loader = 0, [], [], [], None

    def before_training_iteration(self, strategy, **kwargs):
        self.loader = strategy.dataloader
        if self.done >= self.warmup:
            self.batches.append((strategy.mbatch[0], strategy.mb_y))  # before augmentation

    def after_training_iteration(self, strategy, **kwargs):
        self.done += 1
        timed = self.done - self.warmup
        if timed > 0 and (timed % self.chunk == 0 or timed == self.iterations):
            _sync(strategy.device)
            self.loop_s.append(time.perf_counter() - self._start)
            self.bare_s.append(self.bare(strategy, self.batches))
            self.batches = []
        if timed == self.iterations:
            strategy.stop_training()
        elif timed >= 0 and not self.batches:
            _sync(strategy.device)
            self._start = time.perf_counter()


def bare_loop(strategy, batches, bsce) -> float:
    """Seconds for crop + flip, forward, loss (CE, or CE + the plugin's prior vector),
    backward and step over ``batches``, with the strategy's model and optimiser."""
    model, optimizer, device = strategy.model, strategy.optimizer, strategy.device
    augment = BatchAugmentPlugin().augment
    adjustment = 0.0
    _sync(device)
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad()
        logits = model(augment(x))
        if bsce is not None and not torch.is_tensor(adjustment):  # once, like the plugin's cache
            adjustment = log_prior_adjustment(bsce.prior, bsce.tau, logits.shape[1], device=device)
        loss = F.cross_entropy(logits + adjustment, y)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def fetch_rate(loader, device) -> float:
    """Images/s of one epoch of the training loader alone: fetch, batch on the device, crop + flip."""
    augment = BatchAugmentPlugin().augment
    images = 0
    _sync(device)
    start = time.perf_counter()
    for x, *_ in loader:
        images += len(augment(x.to(device, non_blocking=True)))
    _sync(device)
    return images / (time.perf_counter() - start)


def measure(bench, model_name: str, path: str, loss: str, args, device) -> tuple[dict, object, object]:
    data_path, amp = PATHS[path]
    n_classes = int(bench.n_classes)
    iters_per_epoch = -(-len(bench.train_stream[0].dataset) // args.batch_size)
    cfg = ExperimentConfig(
        benchmark="cifar100", model=model_name, strategy="naive", loss=loss, data_path=data_path, amp=amp,
        batch_size=args.batch_size, epochs=-(-(args.warmup + args.iterations) // iters_per_epoch),
        eval_batch_size=args.eval_batch_size if data_path == "device" else LOADER_EVAL_BATCH,
        lr=0.1, weight_decay=5e-4, device=str(device), wandb=False, progress=False, checkpoint=False,
    )
    torch.manual_seed(0)
    model = build_model(cfg, n_classes, device)
    bsce = BalancedSoftmaxPlugin() if loss == "bsce" else None
    timer = _Timer(args.warmup, args.iterations, args.chunk, lambda strategy, batches: bare_loop(strategy, batches, bsce))
    plugins = [DeviceDataPlugin()] if data_path == "device" else []
    plugins += [BatchAugmentPlugin()] + ([bsce] if bsce else []) + [timer]
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                 loss_metrics(experience=True, stream=True), loggers=[])
    strategy = build_strategy(cfg, model, n_classes, device, plugins, evaluator)
    strategy.train(bench.train_stream[0], num_workers=0)
    if timer.done < args.warmup + args.iterations:
        raise RuntimeError(f"{path}: the experience ended before {args.warmup + args.iterations} iterations.")
    loop, bare = sum(timer.loop_s), sum(timer.bare_s)
    per_round = sorted((lo - ba) / n for lo, ba, n in zip(timer.loop_s, timer.bare_s, _round_sizes(args)))
    images = args.iterations * args.batch_size
    row = {
        "model": model_name, "path": path, "data_path": data_path, "amp": amp, "loss": loss,
        "images_per_s": round(images / loop, 1),
        "ms_per_iteration": round(1000 * loop / args.iterations, 3),
        "bare_images_per_s": round(images / bare, 1),
        "bare_ms_per_iteration": round(1000 * bare / args.iterations, 3),
        "avalanche_overhead_ms_per_iteration": round(1000 * (loop - bare) / args.iterations, 3),
        "avalanche_overhead_ms_per_iteration_median_round": round(1000 * per_round[len(per_round) // 2], 3),
        "avalanche_overhead_fraction": round((loop - bare) / loop, 4),
        "rounds": len(timer.loop_s),
    }
    return row, strategy, timer.loader


def _round_sizes(args) -> list[int]:
    full, rest = divmod(args.iterations, args.chunk)
    return [args.chunk] * full + ([rest] if rest else [])


def measure_eval(strategy, bench, device) -> float:
    if device.type == "cuda":
        strategy.eval(bench.test_stream, num_workers=0)  # warm-up: test set copied, cuDNN autotuned
    _sync(device)
    start = time.perf_counter()
    strategy.eval(bench.test_stream, num_workers=0)
    _sync(device)
    return len(bench.test_stream[0].dataset) / (time.perf_counter() - start)


def device_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "_", torch.cuda.get_device_name(device).lower()).strip("_")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    p.add_argument("--models", nargs="+", default=["resnet32"], help="model names of make_model (default: resnet32)")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS), help="default: all three")
    p.add_argument("--losses", nargs="+", default=["ce", "bsce"], choices=("ce", "bsce"))
    p.add_argument("--batch-size", type=int, default=128, help="training mini-batch (default 128, the paper's)")
    p.add_argument("--eval-batch-size", type=int, default=2048, help="device paths' eval batch (default 2048)")
    p.add_argument("--iterations", type=int, default=200, help="timed iterations per cell (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed iterations first (default 20)")
    p.add_argument("--chunk", type=int, default=20,
                   help="iterations per round; the bare loop runs after each round (default 20)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-dir", help="real CIFAR-100 (cifar100.npz) instead of synthetic images")
    p.add_argument("--quick", action="store_true", help="tiny setting for tests: ResNet-8, 10 classes, a few iterations")
    p.add_argument("--output", help="JSON file (default: experiments/results/throughput_<device>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batch_size, args.eval_batch_size, args.iterations, args.warmup = ["resnet8"], 16, 256, 3, 1
        args.chunk = 2
    if min(args.batch_size, args.eval_batch_size, args.iterations, args.warmup, args.chunk) < 1:
        p.error("--batch-size, --eval-batch-size, --iterations, --warmup and --chunk must be >= 1")
    return args


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.data_dir:
        bench, data = split_cifar100(n_experiences=1, data_dir=args.data_dir), f"CIFAR-100 from {args.data_dir}"
    elif args.quick:
        bench, data = synthetic_cifar(n_classes=10, per_class=20, per_class_test=10), "synthetic, 10 classes x 20"
    else:
        bench, data = synthetic_cifar(), "synthetic uint8 images, CIFAR-100 shape (100 classes x 500 train, x 100 test)"
    rows, loaders, evals = [], [], []
    for model_name in args.models:
        for path in args.paths:
            for loss in args.losses:
                row, strategy, loader = measure(bench, model_name, path, loss, args, device)
                rows.append(row)
                print(f"{model_name:>10} {path:>12} {loss:>5}: {row['images_per_s']:>9.1f} images/s (bare loop "
                      f"{row['bare_images_per_s']:.1f}), Avalanche overhead "
                      f"{row['avalanche_overhead_ms_per_iteration_median_round']:.2f} ms/iteration", flush=True)
            eval_batch = args.eval_batch_size if PATHS[path][0] == "device" else LOADER_EVAL_BATCH
            evals.append({"model": model_name, "path": path, "eval_batch_size": eval_batch,
                          "images_per_s": round(measure_eval(strategy, bench, device), 1)})
            if model_name == args.models[0]:  # the data path alone does not depend on the model
                loaders.append({"path": path, "images_per_s": round(fetch_rate(loader, device), 1)})
                print(f"{'':>10} {path:>12} loader alone (one epoch): {loaders[-1]['images_per_s']:.0f} images/s")
    result = {
        "description": "Training throughput (images/s) of Avalanche's Naive strategy as bsce-experiment builds "
                       "it, per data path, model and loss; Avalanche's overhead = strategy time per iteration minus "
                       "a bare PyTorch loop (crop+flip, forward, loss, backward, step) on the same batches. "
                       "See experiments/throughput.py.",
        "command": shlex.join(["python", "experiments/throughput.py", *argv]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _environment(device)["cpu"],
        "environment": _environment(device),
        "data": data,
        "batch_size": args.batch_size,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "results": rows,
        "loader_alone": loaders,
        "eval": evals,
        "speedup_device_vs_loader": {
            f"{r['model']}/{r['path']}/{r['loss']}": round(r["images_per_s"] / base["images_per_s"], 2)
            for r in rows if r["path"] != "loader"
            for base in rows if base["path"] == "loader" and base["model"] == r["model"] and base["loss"] == r["loss"]
        },
    }
    out = Path(args.output) if args.output else RESULTS_DIR / f"throughput_{device_slug(device)}.json"
    write_json_atomic(out, result)
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
