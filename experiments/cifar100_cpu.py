"""CIFAR-100 evidence on a CPU: BSCE vs the plain strategies and Avalanche's peers.

    python experiments/cifar100_cpu.py --data-dir ../shared/data/cifar100      # ~1 hour, 2 cores
    python experiments/cifar100_cpu.py --tiny --output-dir /tmp/x               # seconds (tests)

Protocol: ``experiments/configs/cifar100_cpu.yaml`` (real CIFAR-100, B0 10 steps, memory
2000, class order "icarl"; ResNet-8 and 3 epochs per step instead of ResNet-32 and 160).
Runs, all with the same seeds and settings:

* Replay vs Replay+BSCE (seeds 0, 1, 2), and Replay+BSCE with ``prior=dataset``
  (the paper's "new data + memory" counts; seeds 0, 1, 2) to choose the default prior;
* iCaRL vs iCaRL+BSCE (each evaluated with NME and with the trained head);
* LwF + memory vs LwF + memory + BSCE; LwF without memory vs LwF + BSCE;
* Avalanche's BiC and ER-ACE, the peers that also correct the imbalance.

Runs go to two worker processes (one torch thread each). Each run's ``results.json``
lands in ``OUTPUT_DIR/<run>/``; a re-run skips finished runs and resumes interrupted
ones; runs of a seed share their first experience (``OUTPUT_DIR/first_experience/``).
At the end the script writes ``OUTPUT_DIR.json`` (one entry per run and evaluation),
``OUTPUT_DIR/comparison.md`` and PNG plots (the machinery: ``bsce_avalanche.runner.plans``).
"""

from __future__ import annotations

from pathlib import Path

from bsce_avalanche.runner.plans import Plan, run_plan

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "cifar100_cpu.yaml"


def planned_runs(seeds=(0, 1, 2)) -> list[dict]:
    """Config overrides of every run, longest first (better packing on two workers)."""
    runs = []
    for strategy, extra in (("lwf", {"lwf_memory": True}), ("bic", {}), ("replay", {})):
        if strategy == "replay":
            for seed in seeds:
                runs += [{"strategy": "replay", "loss": loss, "seed": seed} for loss in ("ce", "bsce")]
                runs.append({"strategy": "replay", "loss": "bsce", "prior": "dataset", "seed": seed})
        elif strategy == "bic":
            runs.append({"strategy": "bic", "loss": "ce", "seed": seeds[0]})
        else:
            runs += [{"strategy": strategy, "loss": loss, "seed": seeds[0], **extra} for loss in ("ce", "bsce")]
    runs += [{"strategy": "icarl", "loss": loss, "seed": seeds[0]} for loss in ("ce", "bsce")]
    runs.append({"strategy": "er_ace", "loss": "ce", "seed": seeds[0]})
    runs += [{"strategy": "lwf", "loss": loss, "seed": seeds[0]} for loss in ("ce", "bsce")]
    return runs


def main(argv=None) -> list[dict]:
    return run_plan(argv, Plan(planned_runs, ROOT / "experiments" / "results" / "cifar100_cpu", CONFIG), __doc__)


if __name__ == "__main__":
    main()
