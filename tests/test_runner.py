"""The experiment runner, its config, the comparison and the CLI (offline, on digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bsce_avalanche.runner.cli import main
from bsce_avalanche.runner.compare import comparison_table
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig, expand_grid, load_config
from bsce_avalanche.runner.experiment import run_experiment
from bsce_avalanche.runner.fileio import write_json_atomic
from bsce_avalanche.runner.metrics import evaluate_step, summarise

FAST = dict(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn",
            epochs=1, batch_size=32, memory_size=30, progress=False)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


# ---------------------------------------------------------------- config
def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("strategy: replay\nmemroy_size: 20\n")
    with pytest.raises(ConfigError, match="Unknown config key 'memroy_size'.*did you mean 'memory_size'"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"strategy": "replya"}, "Unknown strategy 'replya' \\(did you mean 'replay'\\?\\)"),
        ({"benchmark": "cifar10"}, "did you mean 'cifar100'"),
        ({"loss": "bcse"}, "did you mean 'bsce'"),
        ({"epochs": "ten"}, "epochs must be of type int"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": True}, "lr"),
        ({"grid": {"los": ["ce"]}}, "grid key 'los'.*did you mean 'loss'"),
        ({"grid": {"loss": "ce"}}, "must be a non-empty list"),
        ({"strategy": "replay", "memory_size": 0}, "needs a memory"),
    ],
)
def test_bad_config_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_grid_expands_to_every_combination():
    cfg = ExperimentConfig(grid={"loss": ["ce", "bsce"], "seed": [0, 1, 2]})
    runs = expand_grid(cfg)
    assert len(runs) == 6
    assert {(r.loss, r.seed) for r in runs} == {(l, s) for l in ("ce", "bsce") for s in (0, 1, 2)}
    assert all(r.grid == {} for r in runs)


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert expand_grid(cfg)


# ---------------------------------------------------------------- metrics
def test_metrics_from_predictions():
    classes = [[0, 1], [2, 3]]
    y_true = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    after0 = evaluate_step(y_true, np.array([0, 1, 0, 0, 0, 0, 1, 1]), classes, 0, 4)
    after1 = evaluate_step(y_true, np.array([2, 1, 2, 3, 0, 3, 2, 3]), classes, 1, 4)
    assert after0["accuracy_per_experience"] == [0.75, 0.0]
    assert after0["accuracy_seen"] == 0.75 and after0["old_accuracy"] is None
    assert after1["accuracy_per_experience"] == [0.5, 1.0]
    assert after1["old_accuracy"] == 0.5 and after1["new_accuracy"] == 1.0
    assert after1["new_class_prediction_share"] == 0.75
    summary = summarise([after0, after1])
    assert summary["average_incremental_accuracy"] == pytest.approx((0.75 + 0.75) / 2)
    assert summary["last_accuracy"] == 0.75
    assert summary["forgetting"] == pytest.approx(0.25)
    assert np.array(after1["confusion_matrix"]).sum() == 8


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ---------------------------------------------------------------- runs
def test_run_writes_results_and_an_offline_wandb_run(wandb_env, fake_wandb):
    out = wandb_env / "run"
    cfg = ExperimentConfig(**FAST, strategy="replay", loss="bsce", output_dir=str(out))
    results = run_experiment(cfg)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["finished"] is True
    for key in ("config", "accuracy_matrix", "average_incremental_accuracy", "last_accuracy", "forgetting",
                "old_new_accuracy", "new_class_prediction_share", "priors", "step_times_s"):
        assert key in on_disk, key
    matrix = on_disk["accuracy_matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert matrix[0][1] is None, "experiences not seen yet are not evaluated"
    assert all(0 <= a <= 1 for row in matrix for a in row if a is not None)
    assert 0 <= on_disk["average_incremental_accuracy"] <= 1
    assert len(on_disk["priors"]) == 2 and sum(on_disk["priors"][-1]) == pytest.approx(1)
    assert on_disk["average_incremental_accuracy"] == pytest.approx(
        np.mean([s["accuracy_seen"] for s in on_disk["steps"]]))
    assert results["last_accuracy"] == on_disk["last_accuracy"]

    [run] = fake_wandb.runs  # what the run handed to wandb (tests/fake_wandb.py)
    assert (run.mode, run.id, run.exit_code) == ("offline", on_disk["wandb"]["run_id"], 0)
    assert on_disk["wandb"]["run_dir"] == str(out / "wandb" / f"offline-run-fake-{run.id}")
    assert on_disk["wandb"]["sync_command"] == f"wandb sync {on_disk['wandb']['run_dir']}"
    assert (run.group, run.job_type) == (f"{cfg.name}/replay", "bsce")  # CE and BSCE side by side
    assert run.config["strategy"] == "replay" and run.config["loss"] == "bsce"
    logged = run.logged("step/accuracy_seen")
    assert logged == pytest.approx([s["accuracy_seen"] for s in on_disk["steps"]])
    assert run.summary["last_accuracy"] == pytest.approx(on_disk["last_accuracy"])
    assert len(run.logged("class_prior")) == 2
    prior = run.logged("class_prior")[-1].table.data
    assert [p for _, p in prior] == pytest.approx(on_disk["priors"][-1])
    cm = run.logged("confusion_matrix")[-1].table.data
    assert sum(n for _, _, n in cm) == np.sum(on_disk["confusion_matrix"])
    assert len(run.logged("Top1_Acc_Stream/eval_phase/test_stream/Task000")) == 2  # Avalanche's metrics


def test_icarl_run_reports_nme_and_head(wandb_env):
    cfg = ExperimentConfig(**FAST, strategy="icarl", loss="bsce", wandb=False,
                           output_dir=str(wandb_env / "icarl"))
    results = run_experiment(cfg)
    assert results["finished"]
    assert "icarl_head" in results
    assert 0 < results["icarl_head"]["last_accuracy"] <= 1


def test_er_ace_with_bsce_is_refused():
    with pytest.raises(ConfigError, match="er_ace cannot be combined with loss: bsce"):
        run_experiment(ExperimentConfig(**FAST, strategy="er_ace", loss="bsce", wandb=False))


def test_cli_run_grid_and_compare(wandb_env, capsys):
    out = wandb_env / "grid"
    code = main(["run", "--output-dir", str(out), "--epochs", "1", "--n-steps", "2", "--no-wandb",
                 "--no-progress", "--set", "memory_size=20"])
    assert code == 0
    assert (out / "replay-ce-seed0" / "results.json").is_file()
    assert (out / "replay-bsce-seed0" / "results.json").is_file()
    table = (out / "comparison.md").read_text()
    assert "| replay-bsce |" in table and "| replay-ce |" in table
    for png in ("accuracy_per_step", "old_new_accuracy", "new_class_prediction_share", "per_class_accuracy"):
        assert (out / f"{png}.png").stat().st_size > 1000
    code = main(["grid", "--output-dir", str(wandb_env / "g2"), "--strategies", "lwf", "--losses", "bsce",
                 "--seeds", "0", "1", "--epochs", "1", "--n-steps", "2", "--no-wandb", "--no-progress"])
    assert code == 0
    runs = [json.loads((wandb_env / "g2" / f"lwf-bsce-seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert "| lwf-bsce | 2 |" in comparison_table(runs)
    assert main(["compare", str(out)]) == 0
    assert "| replay-bsce |" in capsys.readouterr().out


def test_cli_reports_config_errors(capsys):
    assert main(["run", "--strategy", "icral", "--no-wandb"]) == 2
    assert "did you mean 'icarl'" in capsys.readouterr().err


def test_same_seed_same_results(wandb_env):
    cfg = ExperimentConfig(**FAST, strategy="replay", loss="bsce", wandb=False)
    a = run_experiment(cfg, wandb_env / "a")
    b = run_experiment(cfg, wandb_env / "b")
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert a["priors"] == b["priors"]
