"""The notebooks: they execute without error, produce their plots, and are saved with outputs.

Each notebook runs in a fresh ``python3`` kernel (nbclient + ipykernel, the ``dev``
extras) through ``notebooks/execute.py``, the same code that regenerates the saved
outputs. The kernel's working directory is a temporary folder and W&B's data/cache/config
folders point there too, so nothing is written into the checkout or the home directory.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

import nbformat  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SHIPPED_RESULTS = REPO / "experiments" / "results" / "prior_modes_digits"


def _load_execute_module():
    spec = importlib.util.spec_from_file_location("notebooks_execute", NOTEBOOKS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


execute = _load_execute_module()


@pytest.fixture
def kernel_env(tmp_path):
    """Environment for the kernel: W&B writes only below ``tmp_path``, offline, quietly;
    one torch thread (much faster than two when the CPU is shared with other tests)."""
    env = {"WANDB_SILENT": "true", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        env[var] = str(tmp_path / "wandb-home" / var.lower())
    return env


def _outputs(nb, output_type=None):
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output_type is None or output.output_type == output_type:
                yield output


def _stdout(nb) -> str:
    return "".join(o.text for o in _outputs(nb, "stream") if o.name == "stdout")


def _images(nb) -> list:
    return [o for o in _outputs(nb) if "image/png" in o.get("data", {})]


def _markdown_outputs(nb) -> list[str]:
    return [o.data["text/markdown"] for o in _outputs(nb) if "text/markdown" in o.get("data", {})]


def _assert_clean(nb):
    errors = list(_outputs(nb, "error"))
    assert not errors, errors


def _probe(nb) -> dict:
    """The JSON printed by the probe cell appended to the notebook (last line marked PROBE)."""
    match = re.findall(r"^PROBE (.*)$", _stdout(nb), flags=re.M)
    assert match, "the probe cell printed nothing"
    return json.loads(match[-1])


# ---------------------------------------------------------------- quickstart
QUICKSTART_PROBE = """
import json, os
print("PROBE " + json.dumps({
    label: {
        "accuracy_seen": [s["accuracy_seen"] for s in run["steps"]],
        "new_class_prediction_share": [s["new_class_prediction_share"] for s in run["steps"]],
        "confusion_matrix": [s["confusion_matrix"] for s in run["steps"]],
        "classes_per_step": [list(map(int, c)) for c in classes_per_step],
        "prior_history": run["plugin"].prior_history if run["plugin"] is not None else None,
        "wandb_mode": run["wandb"].mode,
        "wandb_run_dir": os.path.abspath(run["wandb"].run_dir),
    }
    for label, run in runs.items()
}))
"""


@pytest.mark.slow  # executes a notebook in a fresh kernel
def test_quickstart_runs_offline_and_shows_its_results(tmp_path, kernel_env):
    nb = execute.execute_notebook(NOTEBOOKS / "quickstart.ipynb", cwd=tmp_path, env=kernel_env,
                                  extra_cells=[QUICKSTART_PROBE])
    _assert_clean(nb)
    assert len(_images(nb)) >= 2  # accuracy / new-class share, priors
    probe = _probe(nb)
    assert set(probe) == {"CE", "BSCE"}
    for label, run in probe.items():
        assert len(run["accuracy_seen"]) == 5
        # each step's figures recounted from its confusion matrix (rows: seen-class test samples)
        for t, cm in enumerate(map(np.asarray, run["confusion_matrix"])):
            assert cm.sum() > 0 and run["accuracy_seen"][t] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-12)
            newest = cm[:, run["classes_per_step"][t]].sum() / cm.sum()
            assert run["new_class_prediction_share"][t] == pytest.approx(newest, abs=1e-12)
        assert run["wandb_mode"] == "offline"
        run_dir = Path(run["wandb_run_dir"])
        assert tmp_path in run_dir.parents  # W&B wrote below the kernel's cwd, not into the repo
        assert list(run_dir.glob("run-*.wandb"))
    final = probe["BSCE"]["accuracy_seen"][-1]
    assert f"final accuracy: {final:.3f}" in _stdout(nb)  # the printed number is the recorded one
    assert probe["CE"]["prior_history"] is None
    priors = probe["BSCE"]["prior_history"]
    assert len(priors) == 5 and all(abs(sum(p) - 1.0) < 1e-6 for p in priors)
    assert "wandb sync wandb/offline-run-" in _stdout(nb)


# ---------------------------------------------------------------- analysis
ANALYSIS_PROBE = """
import json
print("PROBE " + json.dumps({"groups": {label: len(group) for label, group in groups.items()},
                             "runs": len(runs), "finished": len(finished)}))
"""


@pytest.mark.slow  # executes a notebook in a fresh kernel
def test_analysis_on_the_shipped_results(tmp_path, kernel_env):
    assert SHIPPED_RESULTS.is_dir()
    env = dict(kernel_env, **{execute.RESULTS_DIR_ENV: str(SHIPPED_RESULTS)})
    nb = execute.execute_notebook(NOTEBOOKS / "analysis.ipynb", cwd=tmp_path, env=env,
                                  extra_cells=[ANALYSIS_PROBE])
    _assert_clean(nb)
    # accuracy, old/new, new-class share, per-class accuracy, confusion matrices
    assert len(_images(nb)) == 5
    table = "\n".join(_markdown_outputs(nb))
    for label in ("replay-ce", "replay-bsce", "replay-bsce-prior_dataset"):
        assert f"| {label} | – | 3 |" in table
    probe = _probe(nb)
    assert probe["groups"] == {"replay-bsce": 3, "replay-bsce-prior_dataset": 3, "replay-ce": 3}


@pytest.mark.slow  # executes a notebook in a fresh kernel
def test_analysis_on_another_results_directory(tmp_path, kernel_env):
    """Fresh runner output with another shape (2 steps, another class order, 1 seed, an
    interrupted run): the notebook only needs the directory."""
    from bsce_avalanche.runner.config import ExperimentConfig
    from bsce_avalanche.runner.experiment import run_experiment

    results = tmp_path / "results"
    base = dict(benchmark="digits", protocol="B0", n_steps=2, class_order=[9, 7, 5, 3, 1, 8, 6, 4, 2, 0],
                model="small_cnn", strategy="replay", epochs=1, memory_size=20, progress=False,
                wandb=False, checkpoint=False, seed=0)
    for loss in ("ce", "bsce"):
        cfg = ExperimentConfig(**base, loss=loss, output_dir=str(results / f"replay-{loss}-seed0"))
        run_experiment(cfg)
    # an interrupted run of a second seed: one step done, not finished
    partial = json.loads((results / "replay-ce-seed0" / "results.json").read_text())
    partial.update(finished=False, steps=partial["steps"][:1])
    partial["config"]["seed"] = 1
    (results / "replay-ce-seed1").mkdir()
    (results / "replay-ce-seed1" / "results.json").write_text(json.dumps(partial))

    env = dict(kernel_env, **{execute.RESULTS_DIR_ENV: str(results)})
    nb = execute.execute_notebook(NOTEBOOKS / "analysis.ipynb", cwd=tmp_path, env=env,
                                  extra_cells=[ANALYSIS_PROBE])
    _assert_clean(nb)
    assert len(_images(nb)) == 5
    table = "\n".join(_markdown_outputs(nb))
    assert "| replay-ce | – | 1 |" in table and "| replay-bsce | – | 1 |" in table  # finished runs only
    assert "Left out, not finished: replay-ce-seed1" in _stdout(nb)
    probe = _probe(nb)
    assert probe == {"groups": {"replay-bsce": 1, "replay-ce": 1}, "runs": 3, "finished": 2}


# ---------------------------------------------------------------- saved notebooks
@pytest.mark.parametrize("name", ["quickstart", "analysis"])
def test_saved_notebooks_carry_their_outputs(name):
    """GitHub shows the saved outputs: every code cell executed, in order, with plots, no
    error, no path of the machine that ran them, small files. Regenerate them with
    ``python notebooks/execute.py``."""
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size < 1_000_000
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1)), (
        f"{path.name} is not saved fully executed in order: run `python notebooks/execute.py {name}`"
    )
    assert not list(_outputs(nb, "error"))
    assert len(_images(nb)) >= 2
    leaks = execute.local_paths_in_outputs(nb)
    assert not leaks, leaks
