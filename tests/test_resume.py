"""Interrupted runs resume from their last finished step with the same results."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bsce_avalanche.runner.compute import COMPUTE_KEYS
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.identity import run_name
from bsce_avalanche.runner.experiment import run_experiment
from conftest import Crash, crash_during_eval_of_step
from naming import run_dir

BASE = dict(benchmark="digits", protocol="B0", n_steps=5, class_order="natural", model="small_cnn",
            epochs=1, batch_size=32, memory_size=30, progress=False, wandb=False)
COMPARED = ("accuracy_matrix", "priors", "new_class_prediction_share", "average_incremental_accuracy", *COMPUTE_KEYS)


@pytest.mark.parametrize(
    "strategy, extra",
    [("replay", {}), ("lwf", {"lwf_memory": True}), ("icarl", {}), ("bic", {"bic_stage2_epochs": 2}),
     ("er_ace", {"loss": "ce"}), ("replay", {"replay": "concat", "prior": "window", "prior_window": 2})],
)
def test_crash_then_resume_matches_uninterrupted_run(tmp_path, monkeypatch, strategy, extra):
    # two epochs and a milestone after the first: the LR scheduler's state matters too
    cfg = ExperimentConfig(**{**BASE, "epochs": 2, "loss": "bsce", "lr_milestones": [1], **extra}, strategy=strategy)
    reference = run_experiment(cfg, tmp_path / "reference")

    with monkeypatch.context() as m:
        crash_during_eval_of_step(m, step=3)
        with pytest.raises(Crash):
            run_experiment(cfg, tmp_path / "interrupted")
    partial = json.loads((tmp_path / "interrupted" / "results.json").read_text())
    assert partial["finished"] is False and len(partial["steps"]) == 3
    assert (tmp_path / "interrupted" / "checkpoint.pt").exists()

    resumed = run_experiment(cfg, tmp_path / "interrupted", resume=True)
    assert resumed["finished"]
    for key in COMPARED:
        assert resumed[key] == reference[key], key
    if strategy == "icarl":
        assert resumed["icarl_head"]["accuracy_matrix"] == reference["icarl_head"]["accuracy_matrix"]
    assert not (tmp_path / "interrupted" / "checkpoint.pt").exists()
    # resuming a finished run returns it without training again
    assert run_experiment(cfg, tmp_path / "interrupted", resume=True)["accuracy_matrix"] == reference["accuracy_matrix"]


def test_resume_with_another_config_is_refused(tmp_path, monkeypatch):
    cfg = ExperimentConfig(**BASE, strategy="replay", loss="bsce")
    with monkeypatch.context() as m:
        crash_during_eval_of_step(m, step=1)
        with pytest.raises(Crash):
            run_experiment(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"different config \(keys \['lr'\] differ\)"):
        run_experiment(cfg.replace(lr=0.1), tmp_path, resume=True)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing the checkpoint leaves the previous one intact."""
    import torch

    from bsce_avalanche.runner import checkpoint

    # no first-experience cache: the second torch.save is the second checkpoint's
    cfg = ExperimentConfig(**{**BASE, "n_steps": 2}, strategy="replay", loss="bsce", first_experience_cache=False)
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *args, **kwargs):
        calls["n"] += not isinstance(f, io.BytesIO)  # files only (the memory is serialised in memory first)
        if calls["n"] == 2 and not isinstance(f, io.BytesIO):  # the second checkpoint: write half a file, then die
            with open(f, "wb") as fh:
                fh.write(b"garbage")
            raise Crash("died while writing")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(Crash):
        run_experiment(cfg, tmp_path)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    payload = checkpoint.load_checkpoint(tmp_path / "checkpoint.pt")
    assert len(payload["extra"]["results"]["steps"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.fixture(scope="module")
def kill_test(tmp_path_factory):
    """The CLI command of the kill tests, its environment, and the uninterrupted run's results."""
    tmp_path = tmp_path_factory.mktemp("kill")
    config = tmp_path / "cfg.yaml"
    config.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in {
        **BASE, "wandb": True, "strategy": "replay", "epochs": 3, "name": "kill-test", "grid": {"loss": ["bsce"]},
    }.items()))
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    env.pop("WANDB_API_KEY", None)
    # a wandb.init earlier in this pytest process exports its service address; children
    # sharing that service would see the killed run's id as still "in use"
    env.pop("WANDB_SERVICE", None)

    def cli(out, *extra):
        return [sys.executable, "-m", "bsce_avalanche", "run", "--config", str(config), "--output-dir", str(out),
                "--no-progress", *extra]

    subprocess.run(cli(tmp_path / "reference"), env=env, check=True, capture_output=True, timeout=600)
    reference = json.loads((run_dir(tmp_path / "reference", "replay-bsce-seed0") / "results.json").read_text())
    return cli, env, reference


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["after step 2", "before the first checkpoint"])
def test_killed_process_resumes_with_same_results_and_wandb_run(tmp_path, kill_test, kill_at):
    """SIGKILL a real `bsce-experiment run` mid-way, then `--resume` it: after two steps
    (a checkpoint to resume from), or before the first step ends (nothing saved yet but the
    lock file of the killed process, which must not block)."""
    cli, env, reference = kill_test
    run_dir = tmp_path / "killed" / run_name(reference["config"])
    proc = subprocess.Popen(cli(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        results = run_dir / "results.json"
        if kill_at == "before the first checkpoint" and (run_dir / "wandb").exists():  # while W&B starts
            break
        if (run_dir / "checkpoint.pt").exists() and results.exists() and len(json.loads(results.read_text())["steps"]) >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if kill_at == "before the first checkpoint":
        assert not (run_dir / "results.json").exists() and not (run_dir / "checkpoint.pt").exists()
        assert (run_dir / ".lock").read_text().strip() in ("", str(proc.pid))  # the dead holder's
    else:
        partial = json.loads((run_dir / "results.json").read_text())
        assert not partial["finished"]

    done = subprocess.run(cli(tmp_path / "killed", "--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("resuming after step" in done.stdout) == (kill_at == "after step 2")
    resumed = json.loads((run_dir / "results.json").read_text())
    for key in COMPARED:
        assert resumed[key] == reference[key], key
    if kill_at == "before the first checkpoint":
        return
    # both parts of the run went to the same W&B run id
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2
    assert len({p.name.rsplit("-", 1)[1] for p in offline_runs}) == 1
    assert resumed["wandb"]["run_id"] == partial["wandb"]["run_id"]
