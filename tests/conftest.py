"""Shared fixtures: tiny, deterministic class-incremental problems built from tensors."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
import warnings

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


@pytest.fixture
def blobs_benchmark():
    """6 classes in 3 experiences, 60 train / 20 test samples per class, 8-D inputs."""
    x, y = make_blobs(6, 60, seed=1)
    xt, yt = make_blobs(6, 20, seed=1)
    return tensor_benchmark(x, y, xt, yt, n_experiences=3)


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
    from bsce_avalanche.runner import wandb_logger
    from fake_wandb import FakeWandb

    fake = FakeWandb()
    monkeypatch.setattr(wandb_logger, "wandb", fake)
    monkeypatch.setattr(wandb_logger, "_online_failures", {})
    return fake


def kill_own_process(*args, **kwargs):
    """A ``--jobs`` worker killed as the out-of-memory killer does (runner/runs.py ``_run_in_processes``)."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
