"""Shared fixtures and helpers: tiny, deterministic class-incremental problems built from tensors,
fake CIFAR-100 archives, a crash injected into a run, torchrun launches (one copy each)."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# wandb stages artifacts and logs under the home directory; keep test runs out of it
_wandb_home = tempfile.mkdtemp(prefix="bsce-tests-wandb-")
atexit.register(shutil.rmtree, _wandb_home, ignore_errors=True)
for _var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
    os.environ.setdefault(_var, os.path.join(_wandb_home, _var.lower()))
warnings.filterwarnings("ignore", message="no QP solver found")
torch.set_num_threads(1)


def _avalanche_as_shipped() -> dict:
    """The names of the Avalanche modules and classes bsce_avalanche.compat fixes, as they are now."""
    from avalanche.benchmarks.utils import data_loader
    from avalanche.training.plugins import bic
    from avalanche.training.supervised import icarl

    return {f"{owner.__name__}.{name}": value
            for owner in (data_loader, bic, icarl, bic.BiCPlugin, icarl._ICaRLPlugin)
            for name, value in vars(owner).items() if not name.startswith("__")}  # not __warningregistry__


#: Avalanche as shipped, captured before any test imports bsce_avalanche.
AVALANCHE_AS_SHIPPED = _avalanche_as_shipped()


def avalanche_changes() -> list[str]:
    """The names of Avalanche's modules and classes that no longer hold what they shipped with."""
    now = _avalanche_as_shipped()
    return sorted(name for name in AVALANCHE_AS_SHIPPED.keys() | now.keys()
                  if AVALANCHE_AS_SHIPPED.get(name) is not now.get(name))


@pytest.fixture(scope="session", autouse=True)
def _avalanche_left_as_shipped():
    """After the whole session (every strategy built and trained, by the library and the runner):
    Avalanche's modules and classes are as shipped."""
    yield
    assert avalanche_changes() == [], "bsce_avalanche left Avalanche patched"


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def make_blobs(n_classes: int, per_class, dim: int = 8, seed: int = 0, spread: float = 1.0):
    """Gaussian blobs: class ``c`` centred at a random point, ``per_class[c]`` samples."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(per_class, int):
        per_class = [per_class] * n_classes
    centres = torch.randn(n_classes, dim, generator=g) * 2.0
    xs, ys = [], []
    for c, n in enumerate(per_class):
        xs.append(centres[c] + spread * torch.randn(n, dim, generator=g))
        ys.append(torch.full((n,), c, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def tensor_benchmark(x_train, y_train, x_test, y_test, n_experiences, class_order=None):
    """An ``nc_benchmark`` (the kind iCaRL needs) over tensor data."""
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as mk

    n_classes = int(y_train.max()) + 1
    return nc_benchmark(
        mk(x_train, y_train),
        mk(x_test, y_test),
        n_experiences=n_experiences,
        task_labels=False,
        fixed_class_order=class_order or list(range(n_classes)),
    )


def blobs_data(n_classes: int = 6, train: int = 60, test: int = 20, seed: int = 1, **kwargs):
    """``(x_train, y_train, x_test, y_test)`` of :func:`make_blobs` (the test set drawn around the same centres)."""
    return (*make_blobs(n_classes, train, seed=seed, **kwargs), *make_blobs(n_classes, test, seed=seed, **kwargs))


def make_blobs_benchmark(n_classes: int = 6, n_experiences: int = 3, train: int = 60, test: int = 20, seed: int = 1,
                         **kwargs):
    """A class-incremental benchmark over :func:`blobs_data`, classes in their natural order."""
    return tensor_benchmark(*blobs_data(n_classes, train, test, seed, **kwargs), n_experiences=n_experiences)


@pytest.fixture
def blobs_benchmark():
    """6 classes in 3 experiences, 60 train / 20 test samples per class, 8-D inputs."""
    return make_blobs_benchmark()


def stream_accuracy(predict, stream, batch_size: int = 64) -> float:
    """The accuracy of ``predict`` (inputs -> logits or scores; a model is put in eval mode) on the eval-mode
    data of every experience of ``stream``: counted here, outside Avalanche's evaluation loop and metrics."""
    if isinstance(predict, torch.nn.Module):
        predict.eval()
    correct = total = 0
    with torch.no_grad():
        for experience in stream:
            for x, y, *_ in torch.utils.data.DataLoader(experience.dataset.eval(), batch_size=batch_size):
                correct += int((predict(x).argmax(1) == y).sum())
                total += len(y)
    return correct / total


def icarl_nme_scores(strategy):
    """iCaRL's nearest-mean-of-exemplars rule outside Avalanche's NCMClassifier: the unit-length feature's
    dot product with each unit-length class mean of iCaRL's plugin (the largest is the nearest mean)."""
    from avalanche.training.supervised.icarl import _ICaRLPlugin

    plugin = next(p for p in strategy.plugins if isinstance(p, _ICaRLPlugin))
    means = torch.stack([plugin.class_means[c] for c in range(len(plugin.class_means))])
    strategy.model.eval()
    return lambda x: torch.nn.functional.normalize(strategy.model.feature_extractor(x), dim=1) @ means.T


def icarl_head_scores(strategy):
    """iCaRL's trained linear head on its features."""
    strategy.model.eval()
    return lambda x: strategy.model.train_classifier(strategy.model.feature_extractor(x))


class MLP(torch.nn.Module):
    """Small model with separate feature extractor and classifier (as iCaRL needs)."""

    def __init__(self, dim: int = 8, n_classes: int = 6, hidden: int = 32):
        super().__init__()
        self.feature_extractor = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU())
        self.classifier = torch.nn.Linear(hidden, n_classes)

    def forward(self, x):
        return self.classifier(self.feature_extractor(x))


class BatchRecorder:
    """Plugin that records the labels of every training mini-batch and eval outputs."""

    def __new__(cls, *args, **kwargs):
        from avalanche.training.plugins import SupervisedPlugin

        class _Recorder(SupervisedPlugin):
            def __init__(self):
                super().__init__()
                self.train_labels = {}  # experience index -> list of label tensors
                self.eval_outputs = []
                self.train_losses = []

            def before_forward(self, strategy, **kw):
                exp = strategy.clock.train_exp_counter
                self.train_labels.setdefault(exp, []).append(strategy.mb_y.detach().cpu().clone())

            def after_backward(self, strategy, **kw):
                self.train_losses.append(float(strategy.loss.detach()))

            def after_eval_forward(self, strategy, **kw):
                self.eval_outputs.append(strategy.mb_output.detach().cpu().clone())

        return _Recorder()


@pytest.fixture
def fake_wandb(monkeypatch):
    """``wandb`` inside the W&B logger replaced by a recorder (tests/fake_wandb.py); the
    process's memo of servers that failed starts empty."""
    from bsce_avalanche.runner import wandb_logger, wandb_mode
    from fake_wandb import FakeWandb

    fake = FakeWandb()
    monkeypatch.setattr(wandb_logger, "wandb", fake)
    monkeypatch.setattr(wandb_mode, "_online_failures", {})
    return fake


def kill_own_process(*args, **kwargs):
    """A ``--jobs`` worker killed as the out-of-memory killer does (runner/runs.py ``_run_in_processes``)."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def fail_bsce_runs(cfg, out, resume, threads, overwrite=False):
    """A ``--jobs`` worker whose BSCE runs fail (a run's own error) and whose other runs finish at once."""
    if cfg.loss == "bsce":
        raise RuntimeError(f"{cfg.run_name} failed")
    return {"average_incremental_accuracy": 0.5, "last_accuracy": 0.25, "train_time_s": 1.0}


# ---------------------------------------------------------------- interrupted runs
class Crash(Exception):
    """A simulated crash (raised into a run to interrupt it)."""


def crash_during_eval_of_step(monkeypatch, step: int, error: type[BaseException] = Crash) -> None:
    """Make the runner raise ``error`` (a :class:`Crash`; ``KeyboardInterrupt`` for a Ctrl-C) when it
    evaluates step ``step`` (the steps before it are recorded and checkpointed as usual)."""
    from bsce_avalanche.runner import experiment

    real = experiment._evaluate

    def flaky(strategy, recorder, benchmark, classes_per_step, t, *args, **kwargs):
        if t == step:
            raise error(f"simulated crash at step {t}")
        return real(strategy, recorder, benchmark, classes_per_step, t, *args, **kwargs)

    monkeypatch.setattr(experiment, "_evaluate", flaky)


# ---------------------------------------------------------------- fake CIFAR-100
def fake_cifar_arrays(n_train: int = 200, n_test: int = 100, seed: int = 0, **changes) -> dict:
    """A tiny CIFAR-100 archive's arrays: random uint8 NHWC images, labels ``0..99`` repeated (every class
    in both splits when ``n_train``, ``n_test`` >= 100); ``changes`` replace arrays (``None`` drops one)."""
    rng = np.random.default_rng(seed)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n_train) % 100,
                  x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), y_test=np.arange(n_test) % 100)
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def write_fake_cifar(folder, n_train: int = 200, n_test: int = 100, seed: int = 0, **changes) -> Path:
    """``folder``/cifar100.npz holding :func:`fake_cifar_arrays`; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "cifar100.npz", **fake_cifar_arrays(n_train, n_test, seed, **changes))
    return folder


# ---------------------------------------------------------------- subprocesses, torchrun
def subprocess_env(tmp_path, **extra) -> dict:
    """The environment of a child process (a CLI run, a torchrun rank): W&B offline, quiet and writing
    below ``tmp_path``; one torch thread; nothing of this process's W&B run or of a DDP launch."""
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1",
               WANDB_DATA_DIR=str(tmp_path / "wandb-data"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    for key in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SERVICE", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)  # (WANDB_SERVICE: this process's wandb-core; a child starts its own)
    env.update(extra)
    return env


def torchrun(args, cwd, env, nproc: int = 2, timeout: int = 300, script=None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc``, of ``python -m bsce_avalanche args`` or, with
    ``script``, of that file with ``args``; asserts it exits 0."""
    target = [str(script)] if script is not None else ["-m", "bsce_avalanche"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *target, *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


# ---------------------------------------------------------------- a run's results
def assert_accuracies_consistent(results: dict) -> None:
    """A finished run's accuracies recounted from its last confusion matrix and checked against each
    other (:mod:`bsce_avalanche.runner.metrics` computes them from the predictions):

    * ``accuracy_matrix`` is steps x experiences, ``None`` for experiences not seen yet, and each
      entry is a number of correct predictions over the experience's number of test samples;
    * each step's ``accuracy_seen`` is the mean of its row weighted by those numbers;
    * the last row, ``last_accuracy`` and ``per_class_accuracy`` are the confusion matrix's diagonal
      over its row sums: per experience, overall and per class;
    * ``average_incremental_accuracy`` is the mean of the steps' ``accuracy_seen``.
    """
    cm = np.asarray(results["confusion_matrix"])
    classes = results["classes_per_step"]
    matrix = results["accuracy_matrix"]
    assert len(matrix) == len(classes) and all(len(row) == len(classes) for row in matrix), matrix
    support = cm.sum(1)
    n_test = [int(support[c].sum()) for c in classes]  # test samples of each experience
    for t, row in enumerate(matrix):
        assert all(a is None for a in row[t + 1:]), (t, row)
        for j in range(t + 1):
            assert row[j] * n_test[j] == pytest.approx(round(row[j] * n_test[j]), abs=1e-6), (t, j, row[j])
        seen = sum(row[j] * n_test[j] for j in range(t + 1)) / sum(n_test[:t + 1])
        assert results["steps"][t]["accuracy_seen"] == pytest.approx(seen, abs=1e-12), t
    assert matrix[-1] == pytest.approx([np.trace(cm[np.ix_(c, c)]) / n for c, n in zip(classes, n_test)], abs=1e-12)
    assert results["last_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-12)
    assert results["per_class_accuracy"] == pytest.approx(list(np.diag(cm) / support), abs=1e-12)
    assert results["average_incremental_accuracy"] == pytest.approx(
        np.mean([s["accuracy_seen"] for s in results["steps"]]), abs=1e-12)
