"""Size of ``checkpoint.pt`` after the first step: the memory saved as references into the benchmark
(what the runner writes) against the memory pickled with the datasets it points into.

    python experiments/checkpoint_size.py --data-dir ../shared/data/cifar100   # ~4 minutes on 2 CPU cores
    python experiments/checkpoint_size.py --quick                            # digits, seconds (tests)

The paper's setting (``configs/cifar100_b0_10steps.yaml``: CIFAR-100 B0-10, ResNet-32, memory 2000)
with one epoch for the first step, for Replay (``half_batch`` and ``concat``) and iCaRL. Without
references, a replay buffer's samples are subsets of the experience's dataset, so pickling them
pickles the whole training tensor; iCaRL's exemplars are copies either way. Writes
``experiments/results/checkpoint_size.json`` (``--quick``: nothing).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from avalanche.training.plugins import EvaluationPlugin

from bsce_avalanche.benchmarks import BatchAugmentPlugin
from bsce_avalanche.runner.checkpoint import save_checkpoint
from bsce_avalanche.runner.config_files import load_config
from bsce_avalanche.runner.experiment import build_benchmark, build_model
from bsce_avalanche.runner.fileio import write_json_atomic
from bsce_avalanche.runner.strategies import build_strategy

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"replay (half_batch)": {"strategy": "replay", "replay": "half_batch"},
        "replay (concat)": {"strategy": "replay", "replay": "concat"},
        "icarl": {"strategy": "icarl"}}


def measure(overrides: dict, workdir: Path) -> dict:
    cfg = load_config(ROOT / "experiments" / "configs" / overrides.pop("config"), overrides)
    torch.manual_seed(cfg.seed)
    benchmark = build_benchmark(cfg)
    n_classes = len(benchmark.classes_order)
    plugins = [BatchAugmentPlugin()] if cfg.use_fast_augment else []
    strategy = build_strategy(cfg, build_model(cfg, n_classes), n_classes, torch.device("cpu"), plugins,
                              EvaluationPlugin(loggers=[]))
    strategy.train(benchmark.train_stream[0])
    sizes = {}
    for name, kwargs in (("references_mb", {"benchmark": benchmark}), ("pickled_datasets_mb", {})):
        path = workdir / f"{cfg.strategy}-{name}.pt"
        save_checkpoint(path, strategy, **kwargs)
        sizes[name] = round(path.stat().st_size / 1e6, 2)
    sizes["model_parameters"] = sum(p.numel() for p in strategy.model.parameters())
    return sizes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "cifar100"),
                        help="folder with cifar100.npz (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="digits and a small model: checks the script")
    args = parser.parse_args(argv)
    if args.quick:
        common = {"config": "default.yaml", "epochs": 1, "memory_size": 40, "wandb": False}
    else:
        common = {"config": "cifar100_b0_10steps.yaml", "data_dir": args.data_dir, "epochs": 1,
                  "lr_milestones": [], "wandb": False}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, run in RUNS.items():
            results[label] = measure({**common, **run}, Path(tmp))
            print(f"{label}: {results[label]['references_mb']} MB with references, "
                  f"{results[label]['pickled_datasets_mb']} MB with the datasets pickled", flush=True)
    if not args.quick:
        write_json_atomic(ROOT / "experiments" / "results" / "checkpoint_size.json", results)
    return results


if __name__ == "__main__":
    main()
