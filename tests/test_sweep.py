"""W&B sweeps: the shipped sweep files are valid, and the agent's program runs offline.

There is no network here, so ``wandb sweep`` / ``wandb agent`` cannot be called; the
agent's side is simulated: its command (the sweep file's, with the interpreter) and its
environment (``WANDB_SWEEP_ID``, ``WANDB_RUN_ID``, ``WANDB_SWEEP_PARAM_PATH`` holding the
combination, ``WANDB_PROJECT``), from which ``wandb.init()`` builds ``wandb.config``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bsce_avalanche.runner import sweep
from bsce_avalanche.runner.cli import main
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.config_files import load_config
import naming
from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "experiments" / "sweeps").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch):
    """Sweep commands name their base config relative to the root, where agents start."""
    monkeypatch.chdir(REPO)


def test_sweep_files_are_shipped():
    names = {p.name for p in SWEEPS}
    assert {"cifar100_b0_10steps.yaml", "digits_smoke.yaml"} <= names
    assert any("b50" in n for n in names)  # protocol variants


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_is_valid(path):
    """A grid over config keys with valid values; every combination, as sweep-run builds it,
    is a valid config, or er_ace + bsce, which sweep-run skips."""
    raw = yaml.safe_load(path.read_text())
    assert raw["method"] == "grid"
    assert raw["metric"] == {"name": "average_incremental_accuracy", "goal": "maximize"}
    assert all(k in ExperimentConfig.__dataclass_fields__ for k in raw["parameters"])
    assert (REPO / raw["program"]).is_file()  # the agent wants one; the command does not use it
    assert raw["command"][:5] == ["${env}", "${interpreter}", "-m", "bsce_avalanche", "sweep-run"]
    combinations = sweep.sweep_combinations(path)
    n_values = [len(spec.get("values", [None])) for spec in raw["parameters"].values()]
    assert len(combinations) == math.prod(n_values)
    for params, cfg, reason in combinations:
        if reason:
            assert (params["strategy"], params["loss"]) == ("er_ace", "bsce"), (params, reason)
        assert not cfg.grid
        for key, value in params.items():  # the sweep's value reached the config
            assert getattr(cfg, key) == value


def test_cifar100_b0_10steps_covers_the_grid():
    combinations = sweep.sweep_combinations(REPO / "experiments/sweeps/cifar100_b0_10steps.yaml")
    runs = [cfg for _, cfg, reason in combinations if reason is None]
    assert {c.strategy for c in runs} == {"replay", "lwf", "icarl", "bic", "er_ace"}
    assert len({(c.strategy, c.loss, c.seed) for c in runs}) == 27 and len(combinations) == 30
    assert {(c.benchmark, c.protocol, c.n_steps, c.memory_size) for c in runs} == {("cifar100", "B0", 10, 2000)}


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


SWEEP_RUN = ["${env}", "${interpreter}", "-m", "bsce_avalanche", "sweep-run"]


@pytest.mark.parametrize("changes,message", [
    ({"method": "random"}, "method must be grid"),
    ({"parameters": {"strategie": {"values": ["replay"]}}}, "did you mean 'strategy'"),
    ({"parameters": {"strategy": {"values": ["replay", "ewc"]}}}, "Unknown strategy 'ewc'"),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0.01, "max": 0.1}}}, "needs value"),
    ({"parameters": {"epochs": {"values": []}}}, "non-empty list"),
    ({"parameters": {"n_steps": {"value": 3}}}, "digits"),  # 10 classes do not split into 3 steps
    ({"parameters": {"protocol": {"value": "B4"}, "n_steps": {"value": 4}}}, "must be one of \\[1, 2, 3, 6\\]"),
    ({"parameters": {"loss": None}}, "grid over \\['loss'\\]"),  # the base config's grid is not covered
    ({"command": [*SWEEP_RUN, "--config=experiments/configs/default.yaml", "${args}"]}, "wandb.config"),
    ({"command": ["${env}", "${interpreter}", "train.py"]}, "entry point"),
    ({"command": [*SWEEP_RUN, "--config=nope.yaml"]}, "does not exist"),
])
def test_validation_catches_mistakes(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        sweep.sweep_combinations(_write_sweep(tmp_path, **changes))


def test_any_b_protocol_that_splits_the_classes(tmp_path):
    path = _write_sweep(tmp_path, parameters={"protocol": {"value": "B4"}, "n_steps": {"value": 3}})
    assert {(c.protocol, c.n_steps) for _, c, _ in sweep.sweep_combinations(path)} == {("B4", 3)}


def test_sweep_validate_cli(tmp_path, capsys):
    assert main(["sweep-validate", str(REPO / "experiments/sweeps/digits_smoke.yaml")]) == 0
    assert "4 combination(s), 3 run(s), 1 skipped" in capsys.readouterr().out
    assert main(["sweep-validate", str(_write_sweep(tmp_path, method="bayes"))]) == 2
    assert "INVALID" in capsys.readouterr().err


def test_sweep_config_takes_the_base_grid_keys_it_sets():
    base = load_config(REPO / "experiments/configs/default.yaml")
    cfg = sweep.sweep_config(base, {"loss": "ce", "seed": 3})
    assert (cfg.loss, cfg.seed, cfg.grid, cfg.benchmark) == ("ce", 3, {}, "digits")
    with pytest.raises(ConfigError, match="did you mean 'loss'"):
        sweep.sweep_config(base, {"los": "ce"})


def test_a_sweep_over_a_key_a_recipe_sets_is_refused_naming_both(tmp_path, capsys):
    """issue 25: a sweep over lr on a config whose recipe sets lr for iCaRL: sweep-validate counted every
    combination a run, sweep-run trained them all at the recipe's lr under one name."""
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "experiments/configs/default.yaml").read_text()),
                                      "grid": {}, "recipes": {"icarl-ce": {"lr": 2.0}}}))
    path = _write_sweep(tmp_path, command=[*SWEEP_RUN, f"--config={config}"],
                        parameters={"strategy": {"values": ["replay", "icarl"]}, "loss": {"value": "ce"},
                                    "lr": {"values": [0.05, 0.1]}})
    assert main(["sweep-validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "the sweep's parameter sets lr and recipes['icarl-ce'] also sets lr for the icarl-ce runs" in err
    assert len(err.strip().splitlines()) == 1
    base = load_config(config)
    with pytest.raises(ConfigError, match=r"recipes\['icarl-ce'\] also sets lr"):
        sweep.sweep_config(base, {"strategy": "icarl", "loss": "ce", "lr": 0.1})
    assert sweep.sweep_config(base, {"strategy": "replay", "loss": "ce", "lr": 0.1}).lr == 0.1


def _agent_env(tmp_path, params, run_id):
    """The environment ``wandb agent`` gives its program (offline here)."""
    param_file = tmp_path / "wandb" / "sweep-smoke01" / f"config-{run_id}.yaml"
    param_file.parent.mkdir(parents=True, exist_ok=True)
    param_file.write_text(yaml.safe_dump({"wandb_version": 1, **{k: {"value": v} for k, v in params.items()}}))
    return subprocess_env(tmp_path, WANDB_SWEEP_ID="smoke01", WANDB_RUN_ID=run_id, WANDB_SWEEP_PARAM_PATH=str(param_file),
                          WANDB_PROJECT="bsce-avalanche", WANDB_DIR=str(tmp_path / "wandb"))


@pytest.mark.slow  # the agent's program in a child process with W&B offline (42 s on the loaded 2-core machine)
def test_agent_program_runs_one_combination_offline(tmp_path):
    """The digits smoke sweep's command, run as the agent runs it: results.json and an
    offline W&B run that is the agent's run (its id, the sweep's parameters, the sweep id)."""
    from fake_wandb import read_recorded_runs, recording_env

    smoke = yaml.safe_load((REPO / "experiments/sweeps/digits_smoke.yaml").read_text())
    params = next(p for p, _, _ in sweep.sweep_combinations(REPO / "experiments/sweeps/digits_smoke.yaml")
                  if p["strategy"] == "replay" and p["loss"] == "bsce")
    command = [sys.executable if t == "${interpreter}" else t for t in smoke["command"] if t != "${env}"]
    command.append(f"--output-dir={tmp_path / 'out'}")
    record = tmp_path / "wandb-runs.jsonl"  # each real W&B run's public state, at its finish
    proc = subprocess.run(command, cwd=REPO, env={**_agent_env(tmp_path, params, "smokerun1"), **recording_env(record)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    run_dir = naming.run_dir(tmp_path / "out" / "sweep-smoke01" / "smokerun1", "replay-bsce-seed0")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["finished"] and results["config"]["epochs"] == 1 and results["config"]["wandb"]
    assert results["wandb"]["run_id"] == "smokerun1"
    wandb_dir = next((run_dir / "wandb").glob("offline-run-*-smokerun1"))
    assert (wandb_dir / "run-smokerun1.wandb").stat().st_size > 0
    runs = read_recorded_runs(record)  # sweep-run joining the agent's run, then the experiment's logger
    assert {run["id"] for run in runs} == {"smokerun1"}
    logged = runs[-1]
    assert logged["mode"] == "offline" and logged["exit_code"] == 0
    assert {k: logged["config"][k] for k in params} == params
    assert logged["summary"]["average_incremental_accuracy"] == pytest.approx(results["average_incremental_accuracy"])
    assert logged["sweep_id"] == "smoke01"


def test_invalid_combination_is_skipped_cleanly(tmp_path, monkeypatch, capsys):
    """er_ace + bsce: exit code 0, a message, no results, the agent's W&B run says why."""
    import wandb

    from fake_wandb import read_recorded_runs, recording_init

    params = {"strategy": "er_ace", "loss": "bsce", "seed": 0, "epochs": 1, "device": "cpu"}
    for key, value in _agent_env(tmp_path, params, "skiprun1").items():
        monkeypatch.setenv(key, value)
    record = tmp_path / "wandb-runs.jsonl"
    monkeypatch.setattr(wandb, "init", recording_init(wandb.init, record))
    wandb.teardown()  # wandb reads WANDB_* once per process
    try:
        code = main(["sweep-run", "--config=experiments/configs/default.yaml", f"--output-dir={tmp_path / 'out'}"])
    finally:
        wandb.teardown()
    assert code == 0
    assert "skipping er_ace-bsce-seed0-" in capsys.readouterr().out
    assert not list(tmp_path.rglob("results.json"))
    assert list(tmp_path.rglob("offline-run-*-skiprun1"))
    [logged] = read_recorded_runs(record)
    assert logged["id"] == "skiprun1" and "skipped" in logged["tags"]
    assert logged["summary"]["skipped"] is True and "er_ace" in logged["summary"]["skip_reason"]


def test_sweep_run_outside_an_agent_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    assert main(["sweep-run"]) == 2
    assert "wandb agent" in capsys.readouterr().err
