"""Cost of the sliding-window prior per training mini-batch, against plain CE, in the online setting.

    nice -n 15 python experiments/window_prior_cost.py          # ~3 minutes on one (shared) CPU core
    python experiments/window_prior_cost.py --quick             # seconds (tests)

The same Avalanche ``Naive`` strategy, model (the online protocol's ResNet-8, width 8) and mini-batches
of 20 CIFAR-shaped images over 100 classes (the online protocol's 10 stream + 10 memory samples),
trained with CE and with ``BalancedSoftmaxPlugin(prior="window")`` for ``window`` 1 and 500 (a whole
CIFAR-100 task of mini-batches of 10) in alternation (CE, window 1, window 500, CE, ...), so that
machine noise hits them alike. Each round times every training iteration with a plugin
(``before_training_iteration`` -> ``after_training_iteration``); the ratio of the rounds' median
iteration times is one sample of window / CE. The windows run on across rounds (no reset), full.
Also times the prior's own work per mini-batch alone (``ClassPrior.adjustment``: bincount, ring
buffer, log; median of 2,000 calls), which machine load disturbs less than whole iterations.
Writes ``experiments/results/window_prior_cost.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from avalanche.benchmarks import nc_benchmark  # noqa: E402
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_dataset  # noqa: E402
from avalanche.training import Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin  # noqa: E402

from bsce_avalanche import BalancedSoftmaxPlugin, ClassPrior  # noqa: E402
from bsce_avalanche.models import make_model  # noqa: E402
from bsce_avalanche.runner.experiment import _environment  # noqa: E402
from bsce_avalanche.runner.fileio import write_json_atomic  # noqa: E402


class IterationTimer(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def before_training_iteration(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds (after one warm-up round)")
    parser.add_argument("--iterations", type=int, default=50, help="training iterations per round and method")
    parser.add_argument("--batch-size", type=int, default=20, help="mini-batch (online: 10 stream + 10 memory)")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 500], help="window lengths timed")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 iterations, for tests")
    parser.add_argument("--output", default=str(ROOT / "experiments" / "results" / "window_prior_cost.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.iterations = 2, 3
    torch.set_num_threads(1)
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    n = args.iterations * args.batch_size
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    experience = nc_benchmark(tensor_dataset(x, y), tensor_dataset(x, y), n_experiences=1, task_labels=False,
                              fixed_class_order=sorted(set(y.tolist()))).train_stream[0]
    torch.manual_seed(0)
    model = make_model("resnet8", 100, widths=(8, 16, 32))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    methods = ["ce"] + [f"window{w}" for w in args.windows]
    plugins = {f"window{w}": BalancedSoftmaxPlugin(prior="window", window=w) for w in args.windows}
    medians: dict[str, list[float]] = {m: [] for m in methods}
    ratios: dict[str, list[float]] = {m: [] for m in methods[1:]}
    for r in range(args.rounds + 1):  # round 0 warms up caches and allocators, not counted
        for method in methods:
            model.load_state_dict(init)
            timer = IterationTimer()
            strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                             criterion=torch.nn.CrossEntropyLoss(), train_mb_size=args.batch_size, train_epochs=1,
                             device=device, plugins=[timer] + ([plugins[method]] if method in plugins else []),
                             evaluator=EvaluationPlugin(loggers=[]))
            torch.manual_seed(r)  # the same mini-batches for every method in a round
            strategy.train(experience, shuffle=True)
            if r > 0:
                medians[method].append(statistics.median(timer.times[1:]))
        if r > 0:
            for method in methods[1:]:
                ratios[method].append(medians[method][-1] / medians["ce"][-1])
    adjustment_us = {}
    for w in args.windows:
        prior, logits = ClassPrior("window", window=w), torch.zeros(args.batch_size, 100)
        times = []
        for i in range(200 if args.quick else 2000):
            targets = y[(i * args.batch_size) % n:][: args.batch_size]
            start = time.perf_counter()
            prior.adjustment(logits, targets)
            times.append(time.perf_counter() - start)
        adjustment_us[f"window{w}"] = 1e6 * statistics.median(times)
    result = {
        "command": "python experiments/window_prior_cost.py" + ("".join(f" {a}" for a in (argv or sys.argv[1:]))),
        "ratio_median": {m: statistics.median(v) for m, v in ratios.items()},
        "ratio_min": {m: min(v) for m, v in ratios.items()},
        "ratio_max": {m: max(v) for m, v in ratios.items()},
        "ratios": ratios,
        "iteration_ms_median": {m: 1000 * statistics.median(v) for m, v in medians.items()},
        "adjustment_us_median": adjustment_us,
        "rounds": args.rounds, "iterations_per_round": args.iterations, "batch_size": args.batch_size,
        "model": "resnet8 width 8", "environment": _environment(device),
    }
    write_json_atomic(args.output, result)
    print({k: result[k] for k in ("ratio_median", "ratio_min", "ratio_max", "iteration_ms_median",
                                  "adjustment_us_median")})
    return result


if __name__ == "__main__":
    main()
