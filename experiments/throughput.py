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

``--compile-comparison``: eager vs ``compile: true`` instead (the same config but for the
compiled feature extractor, see ``bsce_avalanche.models.compile_model``), per model, path and
loss, in one process: after one untimed warm-up call each (whose extra wall time compiled vs
eager is ``compile_s_first_call``: the compilation of the training step), the two strategies
train in alternating rounds (``--chunk`` timed iterations after one untimed one per call; which
goes first alternates), so that both see the same machine load; ``ratio`` = eager time /
compiled time over all rounds. Also timed: the compilation of a new batch shape (an epoch's
last partial batch) and of evaluation (``compile_s_new_batch_shape``, ``compile_s_eval``), each
the first call's extra time over eager. The script starts with an empty inductor cache, so the
first cell compiles cold; later cells of the same model reuse its compiled graphs in the process
(dynamo guards on the module's structure, not its identity): their compile times are about 0.
Writes ``experiments/results/throughput_<device>_compile.json``; e.g. the CPU evidence protocol:

    nice -n 15 python experiments/throughput.py --compile-comparison --models resnet8 --width 16 \
        --paths loader device --losses bsce --threads 1 --batch-size 128 --chunk 5 --rounds 6

Data: synthetic by default (random ``uint8`` images of CIFAR-100's shape, 500 per class:
throughput does not depend on pixel values); ``--data-dir`` reads the real CIFAR-100.
Writes ``experiments/results/throughput_<device>.json`` (``cpu``, or the GPU's name),
atomically, with the device named and the exact command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import statistics
import sys
import tempfile
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
from bsce_avalanche.runner.experiment import _environment, build_model, build_strategy, cudnn_benchmark, resolve_device
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


def cell_config(model_name: str, path: str, loss: str, args, device, epochs: int, **changes) -> ExperimentConfig:
    """The runner's config of one cell (Naive, the paper's SGD)."""
    data_path, amp = PATHS[path]
    return ExperimentConfig(
        benchmark="cifar100", model=model_name, width=args.width, strategy="naive", loss=loss, data_path=data_path,
        amp=amp, batch_size=args.batch_size, epochs=epochs,
        eval_batch_size=args.eval_batch_size if data_path == "device" else LOADER_EVAL_BATCH,
        lr=0.1, weight_decay=5e-4, device=str(device), wandb=False, progress=False, checkpoint=False, **changes,
    )


def measure(bench, model_name: str, path: str, loss: str, args, device) -> tuple[dict, object, object]:
    data_path, amp = PATHS[path]
    n_classes = int(bench.n_classes)
    iters_per_epoch = -(-len(bench.train_stream[0].dataset) // args.batch_size)
    cfg = cell_config(model_name, path, loss, args, device, -(-(args.warmup + args.iterations) // iters_per_epoch))
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


class _CallTimer(SupervisedPlugin):
    """Stops each ``strategy.train`` call after ``skip + chunk`` iterations and times the last ``chunk``
    (from the end of iteration ``skip``: fetching included), ending with a device synchronisation."""

    def __init__(self, skip: int, chunk: int):
        super().__init__()
        self.skip, self.chunk, self.done, self.seconds = skip, chunk, 0, None

    def before_training_exp(self, strategy, **kwargs):
        self.done, self.seconds = 0, None

    def after_training_iteration(self, strategy, **kwargs):
        self.done += 1
        if self.done == self.skip:
            _sync(strategy.device)
            self._start = time.perf_counter()
        elif self.done == self.skip + self.chunk:
            _sync(strategy.device)
            self.seconds = time.perf_counter() - self._start
            strategy.stop_training()


@contextlib.contextmanager
def _empty_inductor_cache():
    """Inductor's on-disk caches in a new temporary folder (no cache of an earlier process)."""
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="inductor-") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _new_shape_step(strategy, batch_size: int) -> None:
    """Forward and backward of one training batch of another size (an epoch's last partial batch)."""
    model = strategy.model
    x = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8, device=strategy.device)
    model(BatchAugmentPlugin().augment(x)).float().sum().backward()
    strategy.optimizer.zero_grad()


def measure_compile(bench, model_name: str, path: str, loss: str, args, device) -> dict:
    """Eager vs compiled: compilation times, then alternating timed rounds (see the module docstring)."""
    n_classes = int(bench.n_classes)
    strategies, timers = {}, {}
    for variant in ("eager", "compiled"):
        cfg = cell_config(model_name, path, loss, args, device, epochs=1, compile=variant == "compiled")
        torch.manual_seed(0)
        model = build_model(cfg, n_classes, device)
        timers[variant] = _CallTimer(1, args.chunk)
        plugins = [DeviceDataPlugin()] if cfg.data_path == "device" else []
        plugins += [BatchAugmentPlugin()] + ([BalancedSoftmaxPlugin()] if loss == "bsce" else []) + [timers[variant]]
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                     loss_metrics(experience=True, stream=True), loggers=[])
        strategies[variant] = build_strategy(cfg, model, n_classes, device, plugins, evaluator)
    experience, partial = bench.train_stream[0], args.batch_size // 2 + 1
    first_call, new_shape, first_eval = {}, {}, {}
    for variant, strategy in strategies.items():  # first calls: compilations (and one-off set-up)
        first_call[variant] = _timed(lambda: strategy.train(experience, num_workers=0), device)
        new_shape[variant] = _timed(lambda: _new_shape_step(strategy, partial), device)
        first_eval[variant] = _timed(lambda: strategy.eval(bench.test_stream, num_workers=0), device)
    seconds = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        for variant in ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager"):
            strategies[variant].train(experience, num_workers=0)
            seconds[variant].append(timers[variant].seconds)
    evals = {v: len(bench.test_stream[0].dataset) / _timed(lambda: s.eval(bench.test_stream, num_workers=0), device)
             for v, s in strategies.items()}
    images = args.rounds * args.chunk * args.batch_size
    eager, compiled = sum(seconds["eager"]), sum(seconds["compiled"])
    return {
        "model": model_name, "width": args.width, "path": path, "loss": loss,
        "eager_images_per_s": round(images / eager, 1),
        "compiled_images_per_s": round(images / compiled, 1),
        "ratio": round(eager / compiled, 3),
        "ratio_median_round": round(statistics.median(e / c for e, c in zip(seconds["eager"], seconds["compiled"])), 3),
        "rounds": args.rounds, "iterations_per_round": args.chunk,
        "compile_s_first_call": round(first_call["compiled"] - first_call["eager"], 1),
        "first_call_iterations": 1 + args.chunk,
        "compile_s_new_batch_shape": round(new_shape["compiled"] - new_shape["eager"], 1),
        "new_batch_shape": partial,
        "compile_s_eval": round(first_eval["compiled"] - first_eval["eager"], 1),
        "eval_eager_images_per_s": round(evals["eager"], 1),
        "eval_compiled_images_per_s": round(evals["compiled"], 1),
        "seconds_per_round": {v: [round(t, 3) for t in ts] for v, ts in seconds.items()},
    }


def compile_comparison(bench, data: str, args, argv, device) -> dict:
    iterations = len(bench.train_stream[0].dataset) // args.batch_size  # full batches of one epoch
    if 1 + args.chunk > iterations:
        raise SystemExit(f"--chunk {args.chunk}: a training call runs 1 + chunk full batches of one epoch "
                         f"({iterations} here); lower --chunk or --batch-size")
    rows, load_start = [], os.getloadavg()
    with _empty_inductor_cache():
        cells = [(m, path, loss) for m in args.models for path in args.paths for loss in args.losses]
        for model_name, path, loss in cells:
            with cudnn_benchmark(PATHS[path][0] == "device" and device.type == "cuda"):  # as a run would
                rows.append(measure_compile(bench, model_name, path, loss, args, device))
            r = rows[-1]
            print(f"{model_name:>10} {path:>12} {loss:>5}: eager {r['eager_images_per_s']:.1f}, compiled "
                  f"{r['compiled_images_per_s']:.1f} images/s (x{r['ratio']:.2f}); compilation "
                  f"{r['compile_s_first_call']:.0f} s + {r['compile_s_new_batch_shape']:.0f} s (new batch shape)"
                  f" + {r['compile_s_eval']:.0f} s (eval)", flush=True)
    return {
        "description": "Training throughput (images/s) of Avalanche's Naive strategy as bsce-experiment builds it, "
                       "eager vs compile: true (torch.compile of the feature extractor, inductor), in alternating "
                       "rounds of one process; compile_s_*: extra wall time of the first call compiled vs eager "
                       "(cold for the first cell; later cells of the same model reuse its graphs in the process). "
                       "See experiments/throughput.py --compile-comparison.",
        "command": shlex.join(["python", "experiments/throughput.py", *argv]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _environment(device)["cpu"],
        "environment": _environment(device),
        "data": data,
        "batch_size": args.batch_size,
        # a shared machine: its load (runnable processes, 1-minute average) when the measurement started and ended
        "load_average_1min": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
        "results": rows,
    }


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
    p.add_argument("--width", type=int, default=16, help="base width of the CIFAR ResNets (default 16)")
    p.add_argument("--compile-comparison", action="store_true",
                   help="eager vs compile: true in alternating rounds instead (default: off)")
    p.add_argument("--rounds", type=int, default=6, help="--compile-comparison: timed rounds per variant (default 6)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-dir", help="real CIFAR-100 (cifar100.npz) instead of synthetic images")
    p.add_argument("--quick", action="store_true", help="tiny setting for tests: ResNet-8, 10 classes, a few iterations")
    p.add_argument("--output", help="JSON file (default: experiments/results/throughput_<device>.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.batch_size, args.eval_batch_size, args.iterations, args.warmup = ["resnet8"], 16, 256, 3, 1
        args.chunk, args.rounds = 2, 2
    if min(args.batch_size, args.eval_batch_size, args.iterations, args.warmup, args.chunk, args.rounds, args.width) < 1:
        p.error("--batch-size, --eval-batch-size, --iterations, --warmup, --chunk, --rounds and --width must be >= 1")
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
    if args.compile_comparison:
        result = compile_comparison(bench, data, args, argv, device)
        out = Path(args.output) if args.output else RESULTS_DIR / f"throughput_{device_slug(device)}_compile.json"
        write_json_atomic(out, result)
        print(f"-> {out}")
        return result
    rows, loaders, evals = [], [], []
    for model_name in args.models:
        for path in args.paths:
            for loss in args.losses:
                with cudnn_benchmark(PATHS[path][0] == "device" and device.type == "cuda"):  # as a run would
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
