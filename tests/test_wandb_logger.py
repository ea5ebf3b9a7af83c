"""Tests for bsce_avalanche.runner.wandb_logger and the mode choice it starts from (runner/wandb_mode.py).

Most tests replace ``wandb`` inside the logger by a recorder (``fake_wandb`` fixture,
tests/fake_wandb.py) and assert on what the logger handed to wandb. The ``real`` tests run
the real wandb offline inside ``tmp_path``: every helper and value type is accepted, the run
directory is written, a pickled logger continues its run, and an online start without network
is quick, goes offline and obeys SIGTERM.
"""

from __future__ import annotations

import os
import pickle
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch
import wandb
from avalanche.evaluation.metric_results import AlternativeValues, LoggingType, MetricValue, TensorImage

from bsce_avalanche.runner import wandb_logger, wandb_mode
from bsce_avalanche.runner.wandb_logger import WandBLogger, WandBOfflineWarning
from bsce_avalanche.runner.wandb_mode import has_wandb_credentials, resolve_wandb_mode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_KEY = "k" * 40
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Isolate wandb: no credentials, every wandb directory inside tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc, nothing in the real home
    for var in (
        "WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL",
        "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_ENTITY", "NETRC",
    ):
        monkeypatch.delenv(var, raising=False)
    # the address of the wandb-core a real run starts here is removed afterwards, so that later
    # subprocesses of this pytest run (e.g. notebook kernels) start their own ("" counts as unset)
    monkeypatch.setenv("WANDB_SERVICE", "")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var, sub in (
        ("WANDB_DIR", "wandb_dir"),
        ("WANDB_DATA_DIR", "wandb_data"),
        ("WANDB_CACHE_DIR", "wandb_cache"),
        ("WANDB_CONFIG_DIR", "wandb_config"),
        ("WANDB_ARTIFACT_DIR", "wandb_artifacts"),
    ):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    return tmp_path


def _offline_warnings(caught):
    return [w for w in caught if issubclass(w.category, WandBOfflineWarning)]


# --------------------------------------------------------------------------- #
# Mode selection (pure, no run started)
# --------------------------------------------------------------------------- #
def test_mode_resolution_precedence(wandb_env, monkeypatch):
    assert not has_wandb_credentials()
    assert resolve_wandb_mode() == ("offline", "no-credentials")

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert has_wandb_credentials()
    assert resolve_wandb_mode() == ("online", "credentials")

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode() == ("offline", "env")
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # legacy spelling still honoured
    assert resolve_wandb_mode() == ("offline", "env")

    assert resolve_wandb_mode("disabled") == ("disabled", "argument")
    assert resolve_wandb_mode("Online") == ("online", "argument")

    with pytest.raises(ValueError, match="mode argument.*offline"):
        resolve_wandb_mode("ofline")
    monkeypatch.setenv("WANDB_MODE", "nope")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_wandb_mode()
    # the logger's module still offers them (their first home)
    assert (wandb_logger.resolve_wandb_mode, wandb_logger.has_wandb_credentials, wandb_logger.MODES) == \
        (resolve_wandb_mode, has_wandb_credentials, wandb_mode.MODES)


def test_netrc_entry_counts_as_credentials(wandb_env, monkeypatch):
    netrc_file = wandb_env / "netrc"
    netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert has_wandb_credentials()
    assert resolve_wandb_mode() == ("online", "credentials")

    netrc_file.write_text("machine example.com\n  login user\n  password secret\n")
    assert not has_wandb_credentials()


# --------------------------------------------------------------------------- #
# What the logger hands to wandb (recorded by the fake)
# --------------------------------------------------------------------------- #
def test_offline_roundtrip_of_all_helpers(wandb_env, fake_wandb):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(
            project="bsce-test", name="ce-seed0", group="splitmnist/naive",
            job_type="ce", tags=["ce", "test"], config={"lr": 0.1, "model": {"depth": 2}},
            dir=wandb_env / "runs",
        )
    offline = _offline_warnings(caught)
    assert len(offline) == 1, [str(w.message) for w in caught]
    assert f"wandb sync {logger.run_dir}" in str(offline[0].message)
    assert logger.mode == "offline"
    assert logger.sync_command == f"wandb sync {logger.run_dir}"
    assert logger.run_dir.parent == wandb_env / "runs" / "wandb"
    assert logger.run_dir.name.startswith("offline-run-")
    assert logger.run_dir.name.endswith(logger.run_id)

    logger.run.config.update({"seed": 0}, allow_val_change=True)
    logger.log_step_metrics(0, {"loss": torch.tensor(2.5), "acc": np.float32(0.25)})
    logger.log_step_metrics(10, {"loss": 1.0})
    logger.log_step_metrics(4, {"loss": 1.5})  # out of order: must not be dropped
    logger.log_class_prior(10, [0.5, 0.3, 0.2], class_names=["cat", "dog", "fox"])
    logger.log_confusion_matrix(10, y_true=[0, 1, 2, 2], y_pred=[0, 1, 1, 2],
                                class_names=["cat", "dog", "fox"])
    logger.log_per_class_accuracy(10, [1.0, 0.5, 0.25])
    logger.log_accuracy_matrix([[0.9], [0.6, 0.8]])  # ragged rows are padded
    logger.summary({"final_acc": np.float64(0.7), "forgetting": torch.tensor(0.3)})
    logger.finish()
    logger.finish()  # idempotent

    [run] = fake_wandb.runs
    assert run.id == logger.run_id
    assert run.project == "bsce-test"
    assert (run.group, run.job_type) == ("splitmnist/naive", "ce")
    assert run.name == "ce-seed0"
    assert run.tags == ["ce", "test"]
    assert run.exit_code == 0 and run.finished
    assert run.config == {"lr": 0.1, "model": {"depth": 2}, "seed": 0}
    # every metric on one step axis; rows logged at an earlier step are kept
    assert run.metrics == {"global_step": {}, "*": {"step_metric": "global_step", "step_sync": True}}
    assert all("global_step" in row for row in run.history)

    losses = {row["global_step"]: row["loss"] for row in run.rows_with("loss")}
    assert losses == {0: 2.5, 10: 1.0, 4: 1.5}
    assert run.logged("acc")[0] == pytest.approx(0.25)

    assert run.summary["final_acc"] == pytest.approx(0.7)
    assert float(run.summary["forgetting"]) == pytest.approx(0.3)

    prior = run.logged("class_prior")[-1]
    assert isinstance(prior, wandb.plot.CustomChart) and prior.spec.spec_name == "wandb/bar/v0"
    assert prior.table.columns == ["class", "prior"]
    assert prior.table.data == [["cat", 0.5], ["dog", 0.3], ["fox", 0.2]]
    assert isinstance(run.logged("class_prior_hist")[0], wandb.Histogram)

    cm = run.logged("confusion_matrix")[-1].table
    assert cm.columns == ["Actual", "Predicted", "nPredictions"]
    counts = {(a, p): n for a, p, n in cm.data}
    assert counts[("fox", "dog")] == 1 and counts[("fox", "fox")] == 1
    assert sum(counts.values()) == 4

    acc = run.logged("per_class_accuracy")[-1].table.data
    assert acc == [["0", 1.0], ["1", 0.5], ["2", 0.25]]

    [matrix_row] = run.rows_with("accuracy_matrix")
    assert matrix_row["global_step"] == 10  # the last step logged
    matrix = matrix_row["accuracy_matrix"]
    assert matrix.columns == ["trained_up_to", "exp_0", "exp_1"]
    assert matrix.data == [[0, 0.9, None], [1, 0.6, 0.8]]
    lines = matrix_row["accuracy_matrix_plot"]
    assert isinstance(lines, wandb.plot.CustomChart) and "line" in lines.spec.spec_name


def test_log_metrics_converts_every_avalanche_value_type(wandb_env, fake_wandb):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig = plt.figure(figsize=(1, 1))
    values = [
        MetricValue(None, "scalar", 0.5, 3),
        MetricValue(None, "tensor_scalar", torch.tensor(2.0), 3),
        MetricValue(None, "per_task", {0: 0.1, 1: 0.2}, 3),  # dict -> name/key
        MetricValue(None, "cm", AlternativeValues(Image.new("RGB", (4, 4)), torch.eye(2)), 3),
        MetricValue(None, "tensor_image", TensorImage(torch.rand(3, 4, 4)), 7),
        MetricValue(None, "figure", fig, 7),
        MetricValue(None, "weights", torch.randn(50), 7, LoggingType.HISTOGRAM),
        MetricValue(None, "WeightCheckpoint/x", b"raw bytes", 7),  # unsupported
        MetricValue(None, "WeightCheckpoint/y", b"more bytes", 7),
    ]
    logger = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.log_metrics(values)
    plt.close(fig)
    logger.finish()
    skipped = [w for w in caught if "cannot log metric" in str(w.message)]
    assert len(skipped) == 1  # once per unsupported type, not per value

    history = fake_wandb.runs[-1].history
    assert len(history) == 2  # one row per x_plot
    first, second = history
    assert first["global_step"] == 3 and second["global_step"] == 7
    assert first["scalar"] == 0.5 and first["tensor_scalar"] == 2.0
    assert first["per_task/0"] == 0.1 and first["per_task/1"] == 0.2
    assert isinstance(first["cm"], wandb.Image)  # the preferred alternative (the image)
    assert isinstance(second["tensor_image"], wandb.Image)
    assert second["tensor_image"].image.size == (4, 4)
    assert isinstance(second["figure"], wandb.Image)
    assert isinstance(second["weights"], wandb.Histogram)
    assert not any(k.startswith("WeightCheckpoint") for row in history for k in row)


def test_explicit_offline_mode_is_silent_and_env_mode_wins_over_key(wandb_env, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # would mean "online"...
    monkeypatch.setenv("WANDB_MODE", "offline")  # ...but the env var wins
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(project="p", dir=wandb_env / "runs")
        logger.finish()
        explicit = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline")
        explicit.finish()
    assert logger.mode == explicit.mode == "offline"
    assert fake_wandb.init_modes == ["offline", "offline"]
    assert _offline_warnings(caught) == []  # chosen on purpose: no warning
    assert logger.run_dir != explicit.run_dir  # two runs, neither clobbered


def test_failed_online_init_falls_back_to_offline(wandb_env, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # credentials -> tries online
    monkeypatch.setattr(wandb_mode, "server_unreachable", lambda url: None)  # the server answers...
    fake_wandb.fail_online = wandb.errors.CommError("dial tcp: no such host\nmore details")  # ...init fails
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(project="p", dir=wandb_env / "runs", id="wanted01")
    offline = _offline_warnings(caught)
    assert fake_wandb.init_modes == ["online", "offline"]
    assert logger.mode == "offline"
    assert len(offline) == 1
    message = str(offline[0].message)
    assert "no such host" in message and "more details" not in message
    assert "wanted01" in message and f"wandb sync {logger.run_dir}" in message
    # wandb-core keeps a failed id reserved, so the offline run gets a new one.
    assert logger.run_id != "wanted01" and logger.run_id in message

    logger.log_step_metrics(3, {"loss": 0.25})
    logger.finish()
    run = fake_wandb.runs[-1]
    assert [(r["global_step"], r["loss"]) for r in run.rows_with("loss")] == [(3, 0.25)]


def test_online_start_without_network_is_decided_once(wandb_env, fake_wandb, monkeypatch):
    """No server: no online wandb.init at all (it would retry for init_timeout), the run keeps
    its id, the warning comes once, and the next runs of the process go straight offline."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.monotonic()
        first = WandBLogger(project="p", dir=wandb_env / "runs", id="wanted02")
        assert time.monotonic() - start < 2.0
        monkeypatch.setattr(wandb_mode, "server_unreachable", lambda url: pytest.fail("probed twice"))
        second = WandBLogger(project="p", dir=wandb_env / "runs", mode="online")
    assert fake_wandb.init_modes == ["offline", "offline"]
    assert (first.mode, second.mode) == ("offline", "offline")
    assert first.run_id == "wanted02"  # no online attempt reserved it
    [warning] = _offline_warnings(caught)
    assert f"{UNREACHABLE} does not answer" in str(warning.message)
    assert f"later runs to {UNREACHABLE} for the next 10 minutes" in str(warning.message)
    assert first.sync_command in str(warning.message)
    # another server is tried; the failed one again once ONLINE_RETRY_S have passed
    probed = []
    monkeypatch.setattr(wandb_mode, "server_unreachable", lambda url: probed.append(url) or "down")
    monkeypatch.setenv("WANDB_BASE_URL", "http://other.invalid")
    WandBLogger(project="p", dir=wandb_env / "runs", mode="online")
    monkeypatch.setenv("WANDB_BASE_URL", UNREACHABLE)
    WandBLogger(project="p", dir=wandb_env / "runs", mode="online")
    when, why = wandb_mode._online_failures[UNREACHABLE]
    wandb_mode._online_failures[UNREACHABLE] = (when - wandb_mode.ONLINE_RETRY_S - 1, why)
    WandBLogger(project="p", dir=wandb_env / "runs", mode="online")
    assert probed == ["http://other.invalid", UNREACHABLE]


@pytest.mark.parametrize("error, answers", [
    (urllib.error.HTTPError("http://w/graphql", 401, "Unauthorized", {}, None), True),  # any status
    (urllib.error.URLError(ssl.SSLCertVerificationError("self-signed")), True),  # wandb judges TLS
    (ssl.SSLError("handshake"), True),
    (urllib.error.URLError(ConnectionRefusedError("refused")), False),
    (TimeoutError("timed out"), False),
])
def test_the_server_probe(monkeypatch, error, answers):
    def urlopen(request, timeout):
        assert (request.full_url, request.get_method(), timeout) == ("http://w/graphql", "HEAD", 5.0)
        raise error

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    assert (wandb_mode.server_unreachable("http://w/") is None) == answers


def test_online_start_that_works_stays_online(wandb_env, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setattr(wandb_mode, "server_unreachable", lambda url: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(project="p", dir=wandb_env / "runs", init_timeout=12.0)
    assert logger.mode == "online" and logger.sync_command is None
    assert _offline_warnings(caught) == []
    assert fake_wandb.runs[0].init_kwargs["settings"].init_timeout == 12.0


def test_resume_passes_the_run_id(wandb_env, fake_wandb):
    logger = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline", id="run00042", resume="allow")
    assert logger.run_id == "run00042"
    assert fake_wandb.runs[0].init_kwargs["resume"] == "allow"


def test_pickled_logger_continues_its_run(wandb_env, fake_wandb):
    logger = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline")
    state = pickle.dumps(logger)  # what an Avalanche checkpoint stores
    logger.finish()
    clone = pickle.loads(state)
    clone.log_step_metrics(2, {"loss": 0.5})
    clone.finish()
    first, second = fake_wandb.runs
    assert (second.id, second.resume, second.mode) == (first.id, "allow", "offline")
    assert second.logged("loss") == [0.5]


def test_finished_logger_and_bad_mode_are_clear_errors(wandb_env, fake_wandb):
    with pytest.raises(ValueError, match="not a W&B mode"):
        WandBLogger(project="p", mode="sometimes")
    logger = WandBLogger(project="p", mode="disabled")
    logger.finish()
    with pytest.raises(RuntimeError, match="already been finished"):
        logger.log_step_metrics(0, {"a": 1})


def test_avalanche_naive_metrics_reach_wandb(wandb_env, fake_wandb):
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as make_dataset,
    )
    from avalanche.evaluation.metrics import (
        accuracy_metrics,
        confusion_matrix_metrics,
        loss_metrics,
    )
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    torch.manual_seed(0)
    n_classes, dim = 4, 8

    def dataset(n):
        x = torch.randn(n, dim)
        y = torch.arange(n) % n_classes
        return make_dataset(x, y, targets=y.tolist())

    benchmark = nc_benchmark(dataset(64), dataset(32), n_experiences=2,
                             task_labels=False, seed=0)
    logger = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline",
                         group="toy/naive", job_type="ce")
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(epoch=True, stream=True),
        confusion_matrix_metrics(num_classes=n_classes, stream=True, wandb=True,
                                 class_names=[str(c) for c in range(n_classes)]),
        loggers=[logger],
    )
    model = torch.nn.Linear(dim, n_classes)
    strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.1),
                     train_mb_size=16, train_epochs=1, eval_mb_size=32,
                     evaluator=evaluator, device="cpu")

    results = []
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results.append(strategy.eval(benchmark.test_stream))
    logger.finish()

    run = fake_wandb.runs[-1]
    acc_key = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
    loss_key = "Loss_Stream/eval_phase/test_stream/Task000"
    acc_rows = run.rows_with(acc_key)
    assert [r[acc_key] for r in acc_rows] == pytest.approx([r[acc_key] for r in results])
    assert run.logged(loss_key)[-1] == pytest.approx(results[-1][loss_key])
    # x-axis: Avalanche's x_plot (training iterations) on our step column.
    assert [r["global_step"] for r in acc_rows] == [strategy.clock.train_iterations // 2,
                                                    strategy.clock.train_iterations]
    exp_key = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001"
    assert run.logged(exp_key)[-1] == pytest.approx(results[-1][exp_key])
    assert run.logged("TrainingExperience") == [0, 1]

    # Confusion matrix: Avalanche's image -> wandb.Image, its W&B chart passed through.
    cm_key = "ConfusionMatrix_Stream/eval_phase/test_stream"
    assert run.logged(cm_key) and isinstance(run.logged(cm_key)[-1], wandb.Image)
    wb_cm = run.logged("W&BConfusionMatrix_Stream/eval_phase/test_stream")[-1]
    assert isinstance(wb_cm, wandb.plot.CustomChart)
    assert sum(row[2] for row in wb_cm.table.data) == 32  # every test sample counted once


def test_per_class_accuracy_averaged_per_experience(wandb_env, fake_wandb):
    """One bar per experience: the mean accuracy over its classes (ids out of order, uneven sizes)."""
    logger = WandBLogger(project="bsce-test", dir=wandb_env / "runs", mode="offline")
    accuracies = [1.0, 0.5, 0.25, 0.0, 0.75]
    logger.log_per_class_accuracy(4, accuracies, classes_per_step=[[3, 0], [4, 1, 2]])
    logger.log_per_class_accuracy(5, accuracies)  # without the experiences: the per-class chart only
    logger.finish()
    [run] = fake_wandb.runs
    [chart] = run.logged("per_class_accuracy_per_experience")
    assert isinstance(chart, wandb.plot.CustomChart) and chart.spec.spec_name == "wandb/bar/v0"
    assert chart.table.columns == ["experience", "accuracy"]
    assert chart.table.data == [["exp_0", pytest.approx((0.0 + 1.0) / 2)],
                                ["exp_1", pytest.approx((0.75 + 0.5 + 0.25) / 3)]]
    assert [row["global_step"] for row in run.rows_with("per_class_accuracy")] == [4, 5]


# --------------------------------------------------------------------------- #
# The real wandb (offline, no network)
# --------------------------------------------------------------------------- #
def test_real_wandb_takes_every_helper_and_writes_an_offline_run(wandb_env):
    from PIL import Image

    logger = WandBLogger(project="bsce-test", group="g/naive", job_type="ce", tags=["ce"],
                         config={"lr": 0.1}, dir=wandb_env / "runs", mode="offline")
    logger.run.config.update({"seed": 0}, allow_val_change=True)
    logger.log_metrics([
        MetricValue(None, "scalar", 0.5, 3),
        MetricValue(None, "cm", AlternativeValues(Image.new("RGB", (4, 4)), torch.eye(2)), 3),
        MetricValue(None, "tensor_image", TensorImage(torch.rand(3, 4, 4)), 7),
        MetricValue(None, "weights", torch.randn(50), 7, LoggingType.HISTOGRAM),
    ])
    logger.log_step_metrics(0, {"loss": torch.tensor(2.5), "acc": np.float32(0.25)})
    logger.log_class_prior(1, [0.5, 0.3, 0.2])
    logger.log_confusion_matrix(1, [0, 1, 2, 2], [0, 1, 1, 2])
    logger.log_per_class_accuracy(1, [1.0, 0.5, 0.25], classes_per_step=[[0, 2], [1]])
    logger.log_accuracy_matrix([[0.9, None], [0.6, 0.8]])
    logger.summary({"final_acc": np.float64(0.7), "forgetting": torch.tensor(0.3)})
    logger.finish()

    assert logger.run_dir.parent == wandb_env / "runs" / "wandb"
    assert logger.run_dir.name.startswith("offline-run-") and logger.run_dir.name.endswith(logger.run_id)
    run_file = logger.run_dir / f"run-{logger.run_id}.wandb"
    assert run_file.is_file() and run_file.stat().st_size > 0
    assert logger.sync_command == f"wandb sync {logger.run_dir}"


def test_real_wandb_pickled_logger_reopens_the_same_run(wandb_env):
    logger = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline")
    logger.log_step_metrics(1, {"loss": 1.0})
    state = pickle.dumps(logger)  # what an Avalanche checkpoint stores
    logger.finish()
    clone = pickle.loads(state)
    try:
        assert clone.run_id == logger.run_id and clone.mode == "offline"
        clone.log_step_metrics(2, {"loss": 0.5})
    finally:
        clone.finish()
    assert clone.run_dir != logger.run_dir and logger.run_id in clone.run_dir.name
    assert (clone.run_dir / f"run-{logger.run_id}.wandb").is_file()


def test_real_wandb_disabled_mode_writes_nothing(wandb_env):
    target = wandb_env / "runs"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(project="p", dir=target, mode="disabled", config={"a": 1})
        logger.log_step_metrics(1, {"loss": 0.5})
        logger.log_class_prior(1, [0.5, 0.5])
        logger.log_confusion_matrix(1, [0, 1], [1, 1])
        logger.summary({"x": 1})
        logger.finish()
    assert logger.mode == "disabled"
    assert logger.run_dir is None and logger.sync_command is None
    assert _offline_warnings(caught) == []
    assert not target.exists()
    assert [p for p in wandb_env.rglob("*") if p.is_file()] == []


_START_SCRIPT = """
import signal, sys, time, warnings
from bsce_avalanche.runner.wandb_logger import WandBLogger
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # as the CLI does
warnings.simplefilter("ignore")
for i in range(2):
    start = time.monotonic()
    print("starting", flush=True)
    logger = WandBLogger(project="p", dir=sys.argv[1])
    print(f"started {logger.mode} {time.monotonic() - start:.2f}", flush=True)
    logger.finish()
"""


def _start_online(wandb_env, base_url, **popen):
    """A process that starts two online runs (WANDB_MODE=online, a key) against ``base_url``."""
    env = dict(os.environ)  # wandb_env: wandb's folders in tmp_path
    env.pop("WANDB_SERVICE", None)  # this process's wandb-core: the child starts its own
    env.update(WANDB_MODE="online", WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=base_url, WANDB_SILENT="true",
               PYTHONPATH=os.pathsep.join([REPO, env.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(_START_SCRIPT), str(wandb_env / "runs")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.slow  # a fresh interpreter imports torch, Avalanche and wandb
def test_real_wandb_online_start_without_network_is_quick(wandb_env):
    proc = _start_online(wandb_env, UNREACHABLE)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    starts = [line.split() for line in out.splitlines() if line.startswith("started")]
    assert [mode for _, mode, _ in starts] == ["offline", "offline"], out
    # wandb alone: ~100 s each; ours ~1 s idle, 16 s seen for the first (wandb-core starting) at load 6 on 2 cores
    assert all(float(seconds) < 30.0 for _, _, seconds in starts), out


@pytest.mark.slow
def test_real_wandb_online_start_obeys_sigterm(wandb_env):
    """A server that accepts the connection and never answers: SIGTERM during the start ends
    the process in seconds (wandb's own start would hold it until init_timeout, 30 to 90 s)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        proc = _start_online(wandb_env, f"http://127.0.0.1:{server.getsockname()[1]}")
        assert proc.stdout.readline().strip() == "starting"
        time.sleep(1.0)
        sent = time.monotonic()
        proc.terminate()
        out, _ = proc.communicate(timeout=120)
        # about 1-3 s: the interpreter's shutdown with torch and Avalanche loaded, on a busy machine
        assert time.monotonic() - sent < 10.0, out
    assert proc.returncode == 128 + 15, out
    assert "started" not in out
