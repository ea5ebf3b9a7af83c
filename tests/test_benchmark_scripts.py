"""The benchmark scripts run end to end on a tiny setting (CI does not run the real ones)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cifar100_cpu_benchmark_tiny(tmp_path):
    bench = load_script("cifar100_cpu")
    out = tmp_path / "cifar100_cpu"
    rows = bench.main(["--tiny", "--workers", "1", "--output-dir", str(out)])
    planned = bench.planned_runs(seeds=(0,))
    assert len(rows) == len(planned) + 2  # each iCaRL run reports NME and head: two rows
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == json.loads(json.dumps(rows))
    required = {"method", "strategy", "loss", "seed", "average_incremental_accuracy", "last_accuracy", "train_time_s"}
    assert all(required <= set(r) for r in on_disk)
    assert {r["loss"] for r in on_disk} == {"ce", "bsce"}
    # the runner's method labels; each iCaRL run under both of its classifiers
    assert {r["method"] for r in on_disk} == {
        "replay-ce", "replay-bsce", "replay-bsce-prior_dataset", "lwf-ce", "lwf-bsce", "lwf+mem-ce", "lwf+mem-bsce",
        "icarl-ce-nme", "icarl-ce-head", "icarl-bsce-nme", "icarl-bsce-head", "bic-ce", "er_ace-ce"}
    assert all(0 <= r["average_incremental_accuracy"] <= 1 for r in on_disk)
    assert (out / "comparison.md").is_file()


def test_overhead_benchmark_quick(tmp_path):
    overhead = load_script("overhead")
    result = overhead.main(["--quick", "--output", str(tmp_path / "overhead.json")])
    on_disk = json.loads((tmp_path / "overhead.json").read_text())
    for key in ("ratio_median", "ratio_min", "ratio_max"):
        assert on_disk[key] > 0
    assert on_disk["ratio_min"] <= on_disk["ratio_median"] <= on_disk["ratio_max"]
    assert on_disk["prior_time"]["imagenet"]["ms_median"] > 0
    assert result["rounds"] == 2
