"""Cost of BSCE: time per training iteration (BSCE / CE) and time to compute a prior.

    python experiments/overhead.py                    # ~5 minutes on one CPU core
    python experiments/overhead.py --quick            # seconds (used by the test suite)

1. Per-iteration overhead: the same Avalanche ``Naive`` strategy, model (ResNet-32),
   batch size and mini-batches, trained with CE and with ``BalancedSoftmaxPlugin``
   in alternation (CE, BSCE, CE, BSCE, ...) so that machine noise hits both alike.
   Each round times every training iteration with a plugin (``before_training_iteration``
   -> ``after_training_iteration``); the ratio of the two rounds' median iteration
   times is one sample of BSCE / CE.
2. Prior computation: ``loader_class_counts`` on an Avalanche ``ReplayDataLoader``
   (new data + buffer) at CIFAR-100 scale (50,000 labels + 2,000 exemplars) and at
   ImageNet scale (1,281,167 synthetic labels + 20,000 exemplars), as the plugin does
   once per experience.

Writes ``experiments/results/overhead.json`` (atomically).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_dataset
from avalanche.benchmarks.utils.data_loader import ReplayDataLoader
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

from bsce_avalanche import BalancedSoftmaxPlugin, loader_class_counts
from bsce_avalanche.runner.experiment import _environment
from bsce_avalanche.runner.fileio import write_json_atomic
from bsce_avalanche.models import make_model


class IterationTimer(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def before_training_iteration(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def iteration_overhead(rounds: int, iterations: int, batch_size: int, model_name: str, device) -> dict:
    from avalanche.benchmarks import nc_benchmark

    g = torch.Generator().manual_seed(0)
    n = iterations * batch_size
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    bench = nc_benchmark(tensor_dataset(x, y), tensor_dataset(x, y), n_experiences=1,
                         task_labels=False, fixed_class_order=sorted(set(y.tolist())))
    experience = bench.train_stream[0]
    torch.manual_seed(0)
    model = make_model(model_name, 100).to(device)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    ratios, medians = [], {"ce": [], "bsce": []}
    for r in range(rounds + 1):  # round 0 warms up caches and allocators, not counted
        for loss in ("ce", "bsce"):
            model.load_state_dict(init)
            timer = IterationTimer()
            plugins = [timer] + ([BalancedSoftmaxPlugin()] if loss == "bsce" else [])
            strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                             criterion=torch.nn.CrossEntropyLoss(), train_mb_size=batch_size, train_epochs=1,
                             device=device, plugins=plugins, evaluator=EvaluationPlugin(loggers=[]))
            torch.manual_seed(r)  # same mini-batches for CE and BSCE in a round
            strategy.train(experience, shuffle=True)
            if r > 0:
                medians[loss].append(statistics.median(timer.times[1:]))
        if r > 0:
            ratios.append(medians["bsce"][-1] / medians["ce"][-1])
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
        "iteration_s_median": {k: statistics.median(v) for k, v in medians.items()},
        "rounds": rounds,
        "iterations_per_round": iterations,
        "batch_size": batch_size,
        "model": model_name,
    }


def prior_time(n_labels: int, n_classes: int, memory: int, repeats: int, batch_size: int = 128) -> dict:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, n_classes, (n_labels,), generator=g)
    data = tensor_dataset(torch.zeros(n_labels, 1), labels)
    # an experience is a subset (one class group) of the dataset, as nc_benchmark builds it
    new_classes = torch.arange(n_classes // 10)
    experience = data.subset(torch.nonzero(torch.isin(labels, new_classes)).flatten().tolist())
    old = torch.nonzero(~torch.isin(labels, new_classes)).flatten()[:memory].tolist()
    buffer = data.subset(old)
    loader = ReplayDataLoader(experience, buffer, oversample_small_tasks=True, batch_size=batch_size,
                              batch_size_mem=batch_size, shuffle=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        counts = loader_class_counts(loader)
        times.append(time.perf_counter() - start)
    assert counts.sum() > 0
    return {"labels_in_experience": len(experience), "memory": len(buffer), "dataset_labels": n_labels,
            "n_classes": n_classes, "ms_median": 1000 * statistics.median(times),
            "ms_min": 1000 * min(times), "ms_max": 1000 * max(times), "repeats": repeats}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: least sensitive to other load on the machine)")
    parser.add_argument("--quick", action="store_true", help="tiny setting, for tests")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "overhead.json"))
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.iterations, args.batch_size = 2, 3, 16
    started = time.time()
    result = {"command": "python experiments/overhead.py" + (" " + " ".join(argv) if argv else
                                                            " " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")}
    result.update(iteration_overhead(args.rounds, args.iterations, args.batch_size, args.model, device))
    scale = 0.01 if args.quick else 1.0
    result["prior_time"] = {
        "cifar100": prior_time(int(50_000 * scale) or 1000, 100, int(2000 * scale) or 20, repeats=5),
        "imagenet": prior_time(int(1_281_167 * scale), 1000, int(20_000 * scale), repeats=3),
    }
    result["environment"] = _environment(device)
    result["wall_time_s"] = time.time() - started
    write_json_atomic(args.output, result)
    print(f"BSCE/CE time per iteration: median {result['ratio_median']:.4f} "
          f"(min {result['ratio_min']:.4f}, max {result['ratio_max']:.4f}) over {args.rounds} rounds")
    for name, p in result["prior_time"].items():
        print(f"prior at {name} scale ({p['labels_in_experience']} + {p['memory']} labels): {p['ms_median']:.1f} ms")
    print(f"written to {args.output}")
    return result


if __name__ == "__main__":
    main()
