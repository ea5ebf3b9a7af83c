"""The device-resident data path, bf16 autocast, ``--jobs`` and the throughput script.

The device path must change the fetch and nothing else: the same sampler draws the same
positions, so (on a CPU) training is bit-identical to Avalanche's per-sample loader.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from avalanche.benchmarks.utils.data_loader import ReplayDataLoader
from avalanche.training import ICaRL, Naive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from bsce_avalanche import BalancedSoftmaxPlugin, ConcatReplayPlugin, balanced_softmax_cross_entropy
from bsce_avalanche.benchmarks import (
    BatchAugmentPlugin,
    PILImageDataset,
    TensorImageDataset,
    classic_train_transform,
    make_class_incremental_benchmark,
)
from bsce_avalanche.benchmarks.device_data import DeviceBatches, DeviceDataPlugin, use_device_batches
from bsce_avalanche.models import Autocast, make_model
from bsce_avalanche.runner.cli import main
from bsce_avalanche.runner.config import ConfigError
from bsce_avalanche.runner.config_files import load_config
from conftest import assert_accuracies_consistent, subprocess_env, torchrun
from naming import results_in, without_digest

from test_benchmark_scripts import load_script


def uint8_benchmark(n_experiences=3, per_class=24, n_classes=6, size=8, **kwargs):
    """CIFAR-like: uint8 (3, size, size) images in a TensorImageDataset, ``per_class`` per class."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n_classes).repeat(per_class)
    images = torch.randint(0, 256, (len(labels), 3, size, size), dtype=torch.uint8, generator=g)
    train = TensorImageDataset(images, labels.tolist())
    test = TensorImageDataset(images[: len(labels) // 4], labels[: len(labels) // 4].tolist())
    return make_class_incremental_benchmark(
        train, test, n_classes=n_classes, n_experiences=n_experiences, first_exp_classes=None,
        class_order="natural", seed=0, **kwargs,
    )


class Recorder(SupervisedPlugin):
    """Training batches as the model sees them (after augmentation) and eval predictions."""

    def __init__(self):
        super().__init__()
        self.x, self.y, self.predictions = [], [], []

    def before_forward(self, strategy, **kwargs):
        self.x.append(strategy.mb_x.clone())
        self.y.append(strategy.mb_y.clone())

    def after_eval_forward(self, strategy, **kwargs):
        self.predictions.append(strategy.mb_output.argmax(1))


def train_run(device_path: bool, strategy: str = "replay", epochs: int = 1):
    """Train on :func:`uint8_benchmark`; returns the recorder, BSCE plugin and model."""
    torch.manual_seed(0)
    bench = uint8_benchmark()
    model = make_model("small_cnn", 6, input_norm="cifar100", in_channels=3)
    recorder, bsce = Recorder(), BalancedSoftmaxPlugin()
    plugins = ([DeviceDataPlugin()] if device_path else []) + [BatchAugmentPlugin(), bsce, recorder]
    common = dict(optimizer=SGD(model.parameters(), lr=0.05, momentum=0.9), train_mb_size=16, train_epochs=epochs,
                  eval_mb_size=200 if device_path else 16, evaluator=EvaluationPlugin(loggers=[]), device="cpu")
    if strategy == "icarl":
        learner = ICaRL(feature_extractor=model.feature_extractor, classifier=model.classifier, memory_size=24,
                        buffer_transform=None, fixed_memory=True, plugins=plugins, **common)
    else:
        extra = [ReplayPlugin(mem_size=30) if strategy == "replay" else ConcatReplayPlugin(mem_size=30)]
        learner = Naive(model=model, criterion=CrossEntropyLoss(), plugins=plugins + extra, **common)
    for experience in bench.train_stream:
        learner.train(experience)
        learner.eval(bench.test_stream)
    return recorder, bsce, model


def assert_same_training(a, b):
    (rec_a, bsce_a, model_a), (rec_b, bsce_b, model_b) = a, b
    assert len(rec_a.y) == len(rec_b.y) > 0
    assert all(torch.equal(p, q) for p, q in zip(rec_a.y, rec_b.y)), "different labels drawn"
    assert all(torch.equal(p, q) for p, q in zip(rec_a.x, rec_b.x)), "different images"
    assert bsce_a.prior_history == bsce_b.prior_history and len(bsce_a.prior_history) == 3
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert torch.equal(torch.cat(rec_a.predictions), torch.cat(rec_b.predictions))


@pytest.mark.parametrize("strategy", ["replay", "concat", "icarl"])
def test_device_path_trains_bit_identically(strategy):
    """ReplayDataLoader's 50/50 batches, the paper's memory concatenated into the training set
    (a shuffled loader over a concatenated dataset), and iCaRL's tensor memory: same labels, images, priors, weights and eval predictions (the
    device path evaluates with batches of 200 instead of 16)."""
    assert_same_training(train_run(False, strategy), train_run(True, strategy))


def test_device_batches_equal_the_per_sample_items():
    bench = uint8_benchmark()
    first, second = bench.train_stream[0].dataset.train(), bench.train_stream[1].dataset.train()
    memory = first.subset([3, 0, 7]).concat(second.subset([5, 1]))
    loader = ReplayDataLoader(second, memory, batch_size=4, batch_size_mem=2)
    batches = DeviceBatches.from_datasets(loader.datasets, "cpu")
    items = [d[i] for d in loader.datasets for i in range(len(d))]
    x, y, t = batches.__getitems__(list(range(len(items))))
    assert torch.equal(x, torch.stack([item[0] for item in items]))
    assert y.tolist() == [item[1] for item in items] and t.tolist() == [item[2] for item in items]


def test_device_path_keeps_the_sampling():
    """The loader, patched in place, draws the same batches from the same random numbers."""
    bench = uint8_benchmark()
    data, memory = bench.train_stream[1].dataset.train(), bench.train_stream[0].dataset.train().subset(range(10))
    drawn = []
    for device_path in (False, True):
        torch.manual_seed(3)
        loader = ReplayDataLoader(data, memory, batch_size=8, batch_size_mem=8, oversample_small_tasks=True)
        if device_path:
            use_device_batches(loader, "cpu")
            use_device_batches(loader, "cpu")  # idempotent
        drawn.append([(x, y) for _ in range(2) for x, y, _ in loader])
    assert len(drawn[0]) == len(drawn[1]) > 0
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*drawn))


def test_device_path_consumes_the_rng_like_the_loader():
    bench = uint8_benchmark()
    data = bench.train_stream[0].dataset.train()
    after = []
    for device_path in (False, True):
        torch.manual_seed(5)
        loader = ReplayDataLoader(data, data.subset(range(6)), batch_size=8, batch_size_mem=4)
        if device_path:
            use_device_batches(loader, "cpu")
        list(loader)
        after.append(torch.rand(3))
    assert torch.equal(*after)


def test_device_path_refuses_what_it_cannot_reproduce():
    bench = uint8_benchmark(n_experiences=2)
    data = bench.train_stream[0].dataset.train()
    with pytest.raises(ValueError, match="num_workers=0"):
        use_device_batches(ReplayDataLoader(data, data, batch_size=4, num_workers=2), "cpu")
    images = torch.randint(0, 256, (24, 8, 8, 3), dtype=torch.uint8)
    pil = PILImageDataset(images.numpy(), [i % 2 for i in range(24)])
    with_transform = make_class_incremental_benchmark(
        pil, pil, n_classes=2, n_experiences=1, first_exp_classes=None, class_order="natural", seed=0,
        train_transform=classic_train_transform(8, 1),
    ).train_stream[0].dataset.train()
    with pytest.raises(ValueError, match="no per-sample transforms"):
        use_device_batches(ReplayDataLoader(with_transform, with_transform, batch_size=4), "cpu")
    plain = make_class_incremental_benchmark(
        pil, pil, n_classes=2, n_experiences=1, first_exp_classes=None, class_order="natural", seed=0,
    ).train_stream[0].dataset.train()
    with pytest.raises(TypeError, match="tensor datasets"):
        use_device_batches(ReplayDataLoader(plain, plain, batch_size=4), "cpu")
    with pytest.raises(TypeError, match="multi-dataset loaders"):
        use_device_batches(torch.utils.data.DataLoader(data), "cpu")


# ---------------------------------------------------------------------- bf16
def test_bsce_is_finite_with_bf16_logits_and_absent_classes():
    """-1e30 for zero-prior classes is finite in bf16 (its range is float32's)."""
    counts = torch.tensor([50.0, 50.0, 2.0, 2.0, 0.0, 0.0])
    logits = torch.randn(8, 6) * 5
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    reference = balanced_softmax_cross_entropy(logits, targets, counts)
    low = logits.bfloat16().requires_grad_()
    loss = balanced_softmax_cross_entropy(low, targets, counts)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(low.grad).all()
    assert low.grad[:, 4:].abs().max() == 0  # absent classes get no gradient
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2)


@pytest.mark.parametrize("prior", ["auto", "batch"])
def test_bsce_trains_under_bf16_autocast(prior):
    torch.manual_seed(0)
    bench = uint8_benchmark(n_experiences=2)
    model = make_model("small_cnn", 6, input_norm="cifar100", in_channels=3)
    model.feature_extractor = Autocast(model.feature_extractor)
    recorder = Recorder()
    losses = []

    class LossLog(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            losses.append(strategy.loss.detach())
            assert strategy.mb_output.dtype == torch.float32
            assert all(torch.isfinite(p.grad).all() for p in strategy.model.parameters() if p.grad is not None)

    strategy = Naive(model=model, optimizer=SGD(model.parameters(), lr=0.05), criterion=CrossEntropyLoss(),
                     train_mb_size=16, train_epochs=1, eval_mb_size=64, evaluator=EvaluationPlugin(loggers=[]),
                     plugins=[DeviceDataPlugin(), BatchAugmentPlugin(), BalancedSoftmaxPlugin(prior=prior),
                              ReplayPlugin(mem_size=20), recorder, LossLog()])
    for experience in bench.train_stream:
        strategy.train(experience)
    strategy.eval(bench.test_stream)
    assert losses and torch.isfinite(torch.stack(losses)).all()
    assert torch.cat(recorder.predictions).numel() == 36


def test_autocast_runs_bf16_inside_and_returns_float32():
    seen = []
    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    inner.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    wrapped = Autocast(inner)
    out = wrapped(torch.randn(2, 3, 5, 5))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert isinstance(copy.deepcopy(wrapped), Autocast)  # old-model copies (LwF, iCaRL) keep it


# ---------------------------------------------------------------------- runner
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data_path": "device", "benchmark": "tiny_imagenet"}, "held in memory as tensors"),
        ({"data_path": "device", "benchmark": "cifar100", "fast_augment": False}, "fast_augment: false"),
        ({"data_path": "device", "num_workers": 2}, "num_workers: 0"),
        ({"data_path": "gpu"}, "Unknown data_path"),
        ({"amp": "fp16"}, "Unknown amp"),
    ],
)
def test_fast_path_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_cli_rejects_bad_jobs(capsys):
    assert main(["run", "--jobs", "0", "--no-wandb"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("strategy, loss", [("replay", "bsce"), ("icarl", "bsce"), ("lwf", "bsce"), ("bic", "bsce"),
                                            ("er_ace", "ce")])
def test_runner_device_path_matches_loader_path(tmp_path, strategy, loss):
    from bsce_avalanche.runner.experiment import run_experiment

    results = {}
    for path in ("loader", "device"):
        cfg = load_config(None, dict(
            strategy=strategy, loss=loss, epochs=1, n_steps=2, memory_size=40, lwf_memory=True, bic_stage2_epochs=2,
            data_path=path, eval_batch_size=1000 if path == "device" else 256, wandb=False, progress=False))
        results[path] = run_experiment(cfg, tmp_path / path)
    assert results["loader"]["accuracy_matrix"] == results["device"]["accuracy_matrix"]
    assert results["loader"]["priors"] == results["device"]["priors"]


@pytest.mark.slow
def test_runner_bf16_runs_are_finite(tmp_path):
    from bsce_avalanche.runner.experiment import run_experiment

    cfg = load_config(None, dict(strategy="icarl", epochs=1, n_steps=2, memory_size=40, data_path="device",
                                 amp="bf16", wandb=False, progress=False))
    result = run_experiment(cfg, tmp_path)
    assert 0 <= result["last_accuracy"] <= 1 and result["finished"]  # a number (not NaN)
    assert_accuracies_consistent(result)  # and every accuracy the count its confusion matrix gives


@pytest.mark.slow
def test_jobs_give_the_same_results_as_one_process(tmp_path):
    """The digits default (CE and BSCE) with --jobs 1 and --jobs 2, one torch thread each."""
    matrices = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert main(["run", "--output-dir", str(out), "--epochs", "2", "--no-wandb", "--no-progress",
                     "--jobs", str(jobs), "--set", "threads=1"]) == 0
        matrices[jobs] = {without_digest(name): run["accuracy_matrix"] for name, run in results_in(out).items()}
    assert set(matrices[1]) == {"replay-ce-seed0", "replay-bsce-seed0"}
    assert matrices[1] == matrices[2]


@pytest.mark.slow
def test_throughput_script_quick(tmp_path):
    throughput = load_script("throughput")
    result = throughput.main(["--quick", "--threads", "1", "--output", str(tmp_path / "t.json")])
    on_disk = json.loads((tmp_path / "t.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert {(r["path"], r["loss"]) for r in on_disk["results"]} == {
        (p, l) for p in ("loader", "device", "device+bf16") for l in ("ce", "bsce")}
    for row in on_disk["results"]:
        assert min(row["images_per_s"], row["bare_images_per_s"]) > 0 and row["rounds"] == 2
        assert row["avalanche_overhead_ms_per_iteration"] == pytest.approx(
            row["ms_per_iteration"] - row["bare_ms_per_iteration"], abs=2e-3)
    assert on_disk["device_name"] and on_disk["command"].startswith("python experiments/throughput.py --quick")
    for key in ("eval", "loader_alone"):
        assert len(on_disk[key]) == 3 and all(e["images_per_s"] > 0 for e in on_disk[key])


def test_device_path_model_is_channels_last_on_cuda(monkeypatch):
    """What build_model does for a CUDA device (checked on the CPU: only the layout changes)."""
    from bsce_avalanche.runner.experiment import build_model

    cfg = load_config(None, dict(benchmark="cifar100", model="resnet8", data_path="device", amp="bf16"))
    model = build_model(cfg, 10, torch.device("cuda"))
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert isinstance(model.feature_extractor, Autocast)
    reference = build_model(cfg.replace(data_path="loader"), 10, torch.device("cuda"))
    reference.load_state_dict(model.state_dict())
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(model(x), reference(x), atol=1e-2)


def test_cudnn_autotuner_is_on_while_a_run_trains_then_as_the_caller_left_it(monkeypatch):
    from bsce_avalanche.runner.experiment import cudnn_benchmark

    for before in (False, True):
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", before)
        for enabled in (False, True):
            with cudnn_benchmark(enabled):
                assert torch.backends.cudnn.benchmark is (before or enabled)
            assert torch.backends.cudnn.benchmark is before
    with pytest.raises(KeyboardInterrupt), cudnn_benchmark(True):  # an interrupted run too
        raise KeyboardInterrupt
    assert torch.backends.cudnn.benchmark is True


@pytest.mark.slow
def test_device_path_under_ddp_matches_the_loader_path(tmp_path):
    """torchrun, 2 gloo processes: the sharded samplers are kept, so both paths train alike."""
    from test_distributed import BASE

    results = {}
    for path in ("loader", "device"):
        config = tmp_path / f"{path}.yaml"
        config.write_text(json.dumps({**BASE, "epochs": 1, "n_steps": 2, "data_path": path, "wandb": False}))
        torchrun(["run", "--config", str(config), "--output-dir", str(tmp_path / path)], cwd=tmp_path,
                 env=subprocess_env(tmp_path))
        [results[path]] = results_in(tmp_path / path).values()
    assert results["device"]["distributed"]["consistent_per_step"] == [True, True]
    for key in ("accuracy_matrix", "priors"):
        assert results["loader"][key] == results["device"][key]
