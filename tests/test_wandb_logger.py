"""Tests for bsce_avalanche.runner.wandb_logger.

Every test runs wandb offline inside pytest's tmp_path and reads back what the
run wrote with ``read_offline_run``, so the assertions are about the files
``wandb sync`` would upload, not about mocks.
"""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch

wandb = pytest.importorskip("wandb")

from bsce_avalanche.runner.wandb_logger import (  # noqa: E402
    WandBLogger,
    WandBOfflineWarning,
    has_wandb_credentials,
    read_offline_run,
    resolve_wandb_mode,
)


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


def _rows_with(history, key):
    return [row for row in history if key in row]


# --------------------------------------------------------------------------- #
# Mode selection (pure, no run started)
# --------------------------------------------------------------------------- #
def test_mode_resolution_precedence(wandb_env, monkeypatch):
    assert not has_wandb_credentials()
    assert resolve_wandb_mode() == ("offline", "no-credentials")

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
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
# Offline round trip
# --------------------------------------------------------------------------- #
def test_offline_roundtrip_of_all_helpers(wandb_env):
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

    logger.log_config({"seed": 0})
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

    run = read_offline_run(logger.run_dir)
    assert run["run_id"] == logger.run_id
    assert run["project"] == "bsce-test"
    assert (run["group"], run["job_type"]) == ("splitmnist/naive", "ce")
    assert run["name"] == "ce-seed0"
    assert run["tags"] == ["ce", "test"]
    assert run["exit_code"] == 0
    assert run["config"] == {"lr": 0.1, "model": {"depth": 2}, "seed": 0}

    losses = {row["global_step"]: row["loss"] for row in _rows_with(run["history"], "loss")}
    assert losses == {0: 2.5, 10: 1.0, 4: 1.5}
    assert _rows_with(run["history"], "acc")[0]["acc"] == pytest.approx(0.25)

    assert run["summary"]["final_acc"] == pytest.approx(0.7)
    assert run["summary"]["forgetting"] == pytest.approx(0.3)

    assert {"class_prior", "confusion_matrix", "per_class_accuracy",
            "accuracy_matrix_plot"} <= set(run["charts"])
    prior = run["tables"]["class_prior_table"][-1]
    assert prior["columns"] == ["class", "prior"]
    assert prior["data"] == [["cat", 0.5], ["dog", 0.3], ["fox", 0.2]]
    assert "class_prior_hist" in _rows_with(run["history"], "class_prior_hist")[0]

    cm = run["tables"]["confusion_matrix_table"][-1]
    assert cm["columns"] == ["Actual", "Predicted", "nPredictions"]
    counts = {(a, p): n for a, p, n in cm["data"]}
    assert counts[("fox", "dog")] == 1 and counts[("fox", "fox")] == 1
    assert sum(counts.values()) == 4

    acc = run["tables"]["per_class_accuracy_table"][-1]["data"]
    assert acc == [["0", 1.0], ["1", 0.5], ["2", 0.25]]

    matrix = run["tables"]["accuracy_matrix"][-1]
    assert matrix["columns"] == ["trained_up_to", "exp_0", "exp_1"]
    assert matrix["data"] == [[0, 0.9, None], [1, 0.6, 0.8]]
    assert all(p.startswith("media/table/") for p in run["media"])
    assert any("class_prior_table" in p for p in run["media"])


def test_log_metrics_converts_every_avalanche_value_type(wandb_env):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from avalanche.evaluation.metric_results import (
        AlternativeValues,
        LoggingType,
        MetricValue,
        TensorImage,
    )
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

    history = read_offline_run(logger.run_dir)["history"]
    assert len(history) == 2  # one row per x_plot
    first, second = history
    assert first["global_step"] == 3 and second["global_step"] == 7
    assert first["scalar"] == 0.5 and first["tensor_scalar"] == 2.0
    assert first["per_task/0"] == 0.1 and first["per_task/1"] == 0.2
    assert first["cm"]["_type"] == "image-file"
    assert second["tensor_image"]["_type"] == "image-file"
    assert second["tensor_image"]["width"] == 4
    assert second["figure"]["_type"] == "image-file"
    assert second["weights"]["_type"] == "histogram"
    assert not any(k.startswith("WeightCheckpoint") for row in history for k in row)


def test_explicit_offline_mode_is_silent_and_env_mode_wins_over_key(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # would mean "online"...
    monkeypatch.setenv("WANDB_MODE", "offline")  # ...but the env var wins
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(project="p", dir=wandb_env / "runs")
        logger.finish()
        explicit = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline")
        explicit.finish()
    assert logger.mode == explicit.mode == "offline"
    assert _offline_warnings(caught) == []  # chosen on purpose: no warning
    assert logger.run_dir != explicit.run_dir  # two runs, neither clobbered


def test_disabled_mode_writes_nothing(wandb_env):
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


def test_failed_online_init_falls_back_to_offline(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # credentials -> tries online
    real_init = wandb.init
    modes = []

    def flaky_init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        if kwargs.get("mode") == "online":
            raise wandb.errors.CommError("dial tcp: no such host\nmore details")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", flaky_init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = WandBLogger(project="p", dir=wandb_env / "runs", id="wanted01")
    offline = _offline_warnings(caught)
    assert modes == ["online", "offline"]
    assert logger.mode == "offline"
    assert len(offline) == 1
    message = str(offline[0].message)
    assert "no such host" in message and "more details" not in message
    assert "wanted01" in message and f"wandb sync {logger.run_dir}" in message
    # wandb-core keeps a failed id reserved, so the offline run gets a new one.
    assert logger.run_id != "wanted01"

    logger.log_step_metrics(3, {"loss": 0.25})
    logger.finish()
    history = read_offline_run(logger.run_dir)["history"]
    assert [(r["global_step"], r["loss"]) for r in _rows_with(history, "loss")] == [(3, 0.25)]


def test_pickling_reopens_the_same_run(wandb_env):
    logger = WandBLogger(project="p", dir=wandb_env / "runs", mode="offline")
    logger.log_step_metrics(1, {"loss": 1.0})
    state = pickle.dumps(logger)  # what an Avalanche checkpoint stores
    logger.finish()
    clone = pickle.loads(state)
    try:
        assert clone.run_id == logger.run_id
        assert clone.mode == "offline"
        clone.log_step_metrics(2, {"loss": 0.5})
    finally:
        clone.finish()
    assert read_offline_run(clone.run_dir)["run_id"] == logger.run_id


def test_arguments_are_validated_early(wandb_env):
    with pytest.raises(ValueError, match="not a W&B mode"):
        WandBLogger(project="p", mode="sometimes")
    with pytest.raises(TypeError, match="tags must be a list"):
        WandBLogger(project="p", tags="ce", mode="disabled")
    with pytest.raises(TypeError, match="config must be a dict"):
        WandBLogger(project="p", config=[1, 2], mode="disabled")
    with pytest.raises(ValueError, match="init_kwargs repeats"):
        WandBLogger(project="p", mode="disabled", init_kwargs={"group": "g"})

    logger = WandBLogger(project="p", mode="disabled")
    with pytest.raises(TypeError, match="step must be an int"):
        logger.log_step_metrics(1.5, {"a": 1})
    with pytest.raises(ValueError, match="step must be >= 0"):
        logger.log_step_metrics(-1, {"a": 1})
    with pytest.raises(ValueError, match="step column"):
        logger.log_step_metrics(1, {"global_step": 3})
    with pytest.raises(ValueError, match="class_names has 2 entries but prior has 3"):
        logger.log_class_prior(0, [0.2, 0.3, 0.5], class_names=["a", "b"])
    with pytest.raises(ValueError, match="non-finite"):
        logger.log_class_prior(0, [0.2, float("nan")])
    with pytest.raises(ValueError, match="divide percentages by 100"):
        logger.log_per_class_accuracy(0, [95.0, 80.0])
    with pytest.raises(ValueError, match="aligned sample by sample"):
        logger.log_confusion_matrix(0, [0, 1], [0])
    with pytest.raises(ValueError, match="only 2 class_names"):
        logger.log_confusion_matrix(0, [0, 2], [0, 1], class_names=["a", "b"])
    with pytest.raises(TypeError, match="argmax"):
        logger.log_confusion_matrix(0, [0, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match="2-D"):
        logger.log_accuracy_matrix([0.1, 0.2])
    with pytest.raises(ValueError, match="infinite"):
        logger.log_accuracy_matrix([[0.1, math.inf]])
    logger.finish()
    with pytest.raises(RuntimeError, match="already been finished"):
        logger.log_step_metrics(0, {"a": 1})


def test_read_offline_run_rejects_non_run_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_offline_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="exactly one run-<id>.wandb"):
        read_offline_run(tmp_path)
    bogus = tmp_path / "run-x.wandb"
    bogus.write_bytes(b"not a wandb file")
    with pytest.raises(ValueError, match="not a wandb run file"):
        read_offline_run(bogus)


# --------------------------------------------------------------------------- #
# End-to-end with an Avalanche strategy
# --------------------------------------------------------------------------- #
def test_avalanche_naive_metrics_land_in_the_offline_run(wandb_env):
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

    run = read_offline_run(logger.run_dir)
    history = run["history"]
    acc_key = "Top1_Acc_Stream/eval_phase/test_stream/Task000"
    loss_key = "Loss_Stream/eval_phase/test_stream/Task000"
    acc_rows = _rows_with(history, acc_key)
    assert [r[acc_key] for r in acc_rows] == pytest.approx([r[acc_key] for r in results])
    assert _rows_with(history, loss_key)[-1][loss_key] == pytest.approx(results[-1][loss_key])
    # x-axis: Avalanche's x_plot (training iterations) on our step column.
    assert [r["global_step"] for r in acc_rows] == [strategy.clock.train_iterations // 2,
                                                    strategy.clock.train_iterations]
    exp_key = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001"
    assert _rows_with(history, exp_key)[-1][exp_key] == pytest.approx(results[-1][exp_key])
    assert [r["TrainingExperience"] for r in _rows_with(history, "TrainingExperience")] == [0, 1]

    # Confusion matrix: Avalanche's image -> wandb.Image, W&B chart -> table.
    cm_key = "ConfusionMatrix_Stream/eval_phase/test_stream"
    cm_rows = _rows_with(history, cm_key)
    assert cm_rows and cm_rows[-1][cm_key]["_type"] == "image-file"
    assert any(p.startswith("media/images/") for p in run["media"])
    assert "W&BConfusionMatrix_Stream/eval_phase/test_stream" in run["charts"]
    wb_cm = run["tables"]["W&BConfusionMatrix_Stream/eval_phase/test_stream_table"][-1]
    assert sum(row[2] for row in wb_cm["data"]) == 32  # every test sample counted once
