"""W&B sweeps: the shipped sweep files are valid, and the agent's program runs offline.

There is no network here, so ``wandb sweep`` / ``wandb agent`` cannot be called; the
agent's side is simulated exactly: its command line (macro expansion of the sweep's
``command``, ``--key=value`` formatted by wandb's own code) and its environment
(``WANDB_SWEEP_ID``, ``WANDB_RUN_ID``, ``WANDB_SWEEP_PARAM_PATH``, ``WANDB_PROJECT``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bsce_avalanche.runner import sweep
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig, combination_error

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


def test_sweep_files_are_shipped():
    names = {p.name for p in SWEEPS}
    assert {"cifar100_b0_10steps.yaml", "digits_smoke.yaml"} <= names
    assert any("b50" in n for n in names)  # protocol variants


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_is_valid(path):
    """Parses; grid method, metric, parameters and command well-formed; every combination,
    as the agent passes it, is a valid config (or a combination sweep-run skips)."""
    raw = yaml.safe_load(path.read_text())
    assert raw["method"] == "grid"
    assert raw["metric"] == {"name": "average_incremental_accuracy", "goal": "maximize"}
    assert all(k in ExperimentConfig.__dataclass_fields__ for k in raw["parameters"])
    assert (REPO / raw["program"]).is_file()
    report = sweep.validate_sweep_file(path)
    assert report["runs"] + len(report["skipped"]) == report["combinations"]
    for params, reason in report["skipped"]:
        assert (params["strategy"], params["loss"]) == ("er_ace", "bsce"), (params, reason)
    for cfg in report["configs"]:
        assert combination_error(cfg) is None and not cfg.grid
        for key, values in raw["parameters"].items():  # the sweep's value reached the config
            assert getattr(cfg, key) in values.get("values", [values.get("value")])


def test_cifar100_b0_10steps_covers_the_grid():
    report = sweep.validate_sweep_file(REPO / "experiments/sweeps/cifar100_b0_10steps.yaml")
    combos = {(c.strategy, c.loss, c.seed) for c in report["configs"]}
    assert {s for s, _, _ in combos} == {"replay", "lwf", "icarl", "bic", "er_ace"}
    assert len(combos) == 27 and report["combinations"] == 30  # er_ace + bsce skipped (3 seeds)
    assert {(c.benchmark, c.protocol, c.n_steps, c.memory_size) for c in report["configs"]} == {
        ("cifar100", "B0", 10, 2000)}


def test_agent_arguments_match_wandb_formatting():
    """Our expansion of ``${args}`` is wandb's, and sweep-run parses it back to the values."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    params = {"strategy": "replay", "loss": "bsce", "seed": 2, "lr": 1e-05, "lr_milestones": [80, 120],
              "memory_per_class": None, "lwf_memory": True, "class_order": "icarl-original", "tau": 0.5}
    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]
    ours = sweep.agent_command({"command": ["${args}"]}, params)
    assert ours == theirs
    assert sweep.parse_sweep_args(theirs) == params


@pytest.mark.parametrize("text,value", [
    ("replay", "replay"), ("0", 0), ("0.1", 0.1), ("1e-05", 1e-05), ("True", True), ("None", None),
    ("[80, 120]", [80, 120]), ("B50", "B50"),
])
def test_parse_sweep_value(text, value):
    assert sweep.parse_sweep_value(text) == value


def test_parse_sweep_args_forms():
    assert sweep.parse_sweep_args(["--seed=1", "--n-steps", "5"]) == {"seed": 1, "n_steps": 5}
    with pytest.raises(ConfigError, match="--key=value"):
        sweep.parse_sweep_args(["seed=1"])
    with pytest.raises(ConfigError, match="no value"):
        sweep.parse_sweep_args(["--seed"])


def _write_sweep(tmp_path, **changes):
    data = yaml.safe_load((REPO / "experiments/sweeps/digits_smoke.yaml").read_text())
    for key, value in changes.items():
        if key == "parameters":  # merged; None removes a parameter
            for name, spec in value.items():
                if spec is None:
                    data["parameters"].pop(name)
                else:
                    data["parameters"][name] = spec
        else:
            data[key] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes,message", [
    ({"method": "hyperband"}, "method must be one of"),
    ({"metric": {"name": "average_incremental_accuracy", "goal": "up"}}, "metric.goal"),
    ({"parameters": {"strategie": {"values": ["replay"]}}}, "did you mean 'strategy'"),
    ({"parameters": {"strategy": {"values": ["replay", "ewc"]}}}, "Unknown strategy 'ewc'"),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0.01, "max": 0.1}}}, "grid sweeps cannot sample"),
    ({"parameters": {"epochs": {"values": []}}}, "non-empty list"),
    ({"parameters": {"n_steps": {"value": 3}}}, "digits"),  # 10 classes do not split into 3 steps
    ({"parameters": {"loss": None}}, "grid over \\['loss'\\]"),  # the base config's grid is not covered
    ({"command": ["${env}", "${interpreter}", "-m", "bsce_avalanche", "sweep-run"]}, "\\$\\{args\\}"),
    ({"command": ["${env}", "${interpreter}", "train.py", "${args}"]}, "entry point"),
    ({"command": ["${env}", "${interpreter}", "-m", "bsce_avalanche", "sweep-run", "--config=nope.yaml",
                  "${args}"]}, "does not exist"),
    ({"program": "nope.py"}, "program"),
])
def test_validation_catches_mistakes(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        sweep.validate_sweep_file(_write_sweep(tmp_path, **changes))


def test_sweep_validate_cli(tmp_path, capsys):
    from bsce_avalanche.runner.cli import main

    assert main(["sweep-validate", str(REPO / "experiments/sweeps/digits_smoke.yaml")]) == 0
    assert "4 combination(s), 3 run(s), 1 skipped" in capsys.readouterr().out
    assert main(["sweep-validate", str(_write_sweep(tmp_path, method="hyperband"))]) == 2


def test_build_sweep_config_drops_the_covered_base_grid():
    cfg = sweep.build_sweep_config("experiments/configs/default.yaml", {"loss": "ce", "seed": 3})
    assert (cfg.loss, cfg.seed, cfg.grid, cfg.benchmark) == ("ce", 3, {}, "digits")
    with pytest.raises(ConfigError, match="not a config key"):
        sweep.build_sweep_config(None, {"los": "ce"})


def _agent_env(tmp_path, params, run_id):
    """The environment ``wandb agent`` gives its program (offline here)."""
    param_file = tmp_path / "wandb" / "sweep-smoke01" / f"config-{run_id}.yaml"
    param_file.parent.mkdir(parents=True, exist_ok=True)
    param_file.write_text(yaml.safe_dump({"wandb_version": 1, **{k: {"value": v} for k, v in params.items()}}))
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_SWEEP_ID="smoke01", WANDB_RUN_ID=run_id,
               WANDB_SWEEP_PARAM_PATH=str(param_file), WANDB_PROJECT="bsce-avalanche",
               WANDB_DIR=str(tmp_path / "wandb"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
               OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    env.pop("WANDB_SERVICE", None)  # this process's wandb-core: the program starts its own
    return env


def test_agent_program_runs_one_combination_offline(tmp_path):
    """The digits smoke sweep's command, run as the agent runs it: results.json and an
    offline W&B run that is the agent's run (its id, the sweep's parameters, the sweep id)."""
    from fake_wandb import read_recorded_runs, recording_env

    smoke = yaml.safe_load((REPO / "experiments/sweeps/digits_smoke.yaml").read_text())
    params = next(p for p in sweep.sweep_combinations(smoke) if p["strategy"] == "replay" and p["loss"] == "bsce")
    command = sweep.agent_command(smoke, params, interpreter=sys.executable)
    command.insert(command.index("sweep-run") + 1, f"--output-dir={tmp_path / 'out'}")
    record = tmp_path / "wandb-runs.jsonl"  # each real W&B run's public state, at finish
    env = {**_agent_env(tmp_path, params, "smokerun1"), **recording_env(record)}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    run_dir = tmp_path / "out" / "sweep-smoke01" / "replay-bsce-seed0-smokerun1"
    import json

    results = json.loads((run_dir / "results.json").read_text())
    assert results["finished"] and results["config"]["epochs"] == 1 and results["config"]["wandb"]
    assert results["wandb"]["run_id"] == "smokerun1"
    wandb_dir = next((run_dir / "wandb").glob("offline-run-*-smokerun1"))
    assert (wandb_dir / "run-smokerun1.wandb").stat().st_size > 0
    [logged] = read_recorded_runs(record)
    assert logged["id"] == "smokerun1" and logged["mode"] == "offline" and logged["exit_code"] == 0
    assert {k: logged["config"][k] for k in params} == params
    assert logged["summary"]["average_incremental_accuracy"] == pytest.approx(results["average_incremental_accuracy"])
    assert logged["sweep_id"] == "smoke01"


def test_invalid_combination_is_skipped_cleanly(tmp_path, monkeypatch, capsys, fake_wandb):
    """er_ace + bsce: exit code 0, a message, no results, a W&B run that says why."""
    params = {"strategy": "er_ace", "loss": "bsce", "seed": 0, "epochs": 1, "device": "cpu"}
    for key, value in _agent_env(tmp_path, params, "skiprun1").items():
        monkeypatch.setenv(key, value)
    code = sweep.sweep_run(["--config=experiments/configs/default.yaml", f"--output-dir={tmp_path / 'out'}",
                            *sweep.agent_command({"command": ["${args}"]}, params)])
    assert code == 0
    assert "skipping er_ace-bsce-seed0" in capsys.readouterr().out
    run_dir = tmp_path / "out" / "sweep-smoke01" / "er_ace-bsce-seed0-skiprun1"
    assert not (run_dir / "results.json").exists()
    [logged] = fake_wandb.runs  # what sweep-run handed to wandb (tests/fake_wandb.py)
    assert logged.init_kwargs["dir"] == str(run_dir) and logged.mode == "offline" and logged.exit_code == 0
    assert logged.id == "skiprun1" and "skipped" in logged.tags
    assert logged.summary["skipped"] is True and "er_ace" in logged.summary["skip_reason"]


def test_sweep_run_config_error_exits_2(capsys):
    assert sweep.sweep_run(["--strategie=replay"]) == 2
    assert "did you mean 'strategy'" in capsys.readouterr().err
