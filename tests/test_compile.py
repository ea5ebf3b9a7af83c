"""``compile: true``: torch.compile of the feature extractor (:func:`bsce_avalanche.models.compile_model`).

The fast tests compile with ``backend="aot_eager"`` (dynamo's tracing and AOT autograd, no code
generation: seconds, eager's numbers); the ``slow`` ones with the runner's inductor on CPU, which
compiles for about a minute per graph here.
"""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch

from bsce_avalanche.models import compile_model, make_model
from bsce_avalanche.runner import experiment
from bsce_avalanche.runner.checkpoint import load_checkpoint
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.experiment import build_model, run_experiment

from conftest import crash_during_eval_of_step

BASE = dict(benchmark="digits", protocol="B0", n_steps=5, class_order="natural", model="small_cnn",
            epochs=1, batch_size=32, memory_size=30, progress=False, wandb=False, threads=1)
COMPARED = ("accuracy_matrix", "priors", "new_class_prediction_share", "average_incremental_accuracy")


def compiled(module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


@pytest.fixture
def traced_only(monkeypatch):
    """The runner's ``compile: true`` with the aot_eager backend."""
    monkeypatch.setattr(experiment, "compile_model", functools.partial(compile_model, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compile_model_compiles_the_feature_extractor_in_place():
    model = make_model("resnet8", 10, incremental=True, widths=(4, 8, 16))
    keys, params = list(model.state_dict()), list(model.parameters())
    assert compile_model(model) is model
    assert compiled(model.feature_extractor) and not compiled(model.classifier) and not compiled(model)
    assert list(model.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    assert all(a is b for a, b in zip(model.parameters(), params))
    with pytest.raises(TypeError, match="needs a model with a feature_extractor"):
        compile_model(torch.nn.Linear(2, 2))


def test_one_graph_per_mode_does_not_recompile_for_another_last_batch():
    """The runner's policy: a graph per mode (train, eval) at its full batch; the last, smaller batch of each
    epoch (another size each epoch) runs eager, so a second epoch compiles nothing; a larger batch compiles once."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = compile_model(make_model("small_cnn", 4, input_norm=None), one_graph_per_mode=True, backend="aot_eager")

    def epoch(last: int):
        model.train()
        for batch in (32, 32, last):
            model(torch.randn(batch, 1, 8, 8)).sum().backward()
        model.eval()
        reference = copy.deepcopy(model)  # eager, the same weights and BatchNorm statistics
        with torch.no_grad():
            for batch in (64, 64, last):
                x = torch.randn(batch, 1, 8, 8)
                assert torch.allclose(model(x), reference(x), atol=1e-5)
        return counters["stats"]["unique_graphs"]

    assert epoch(last=8) == 2  # train at 32, eval at 64; the 8s eager
    assert epoch(last=24) == 2  # another last batch: no recompilation
    model.train()
    model(torch.randn(48, 1, 8, 8))
    assert counters["stats"]["unique_graphs"] == 3  # a larger batch: one more graph
    torch._dynamo.reset()


def test_runner_compiles_the_feature_extractor_only_and_autocast_inside():
    cfg = ExperimentConfig(**BASE, compile=True, amp="bf16")
    model = build_model(cfg, 10)
    assert compiled(model.feature_extractor) and type(model.feature_extractor).__name__ == "Autocast"
    assert not compiled(model.classifier)
    assert not compiled(build_model(ExperimentConfig(**BASE), 10).feature_extractor)


def test_deepcopy_of_a_compiled_model_is_an_eager_copy_of_its_own():
    """LwF, iCaRL and BiC deep-copy the model for the old one: the copy must not call the original."""
    torch.manual_seed(0)
    model = compile_model(make_model("small_cnn", 4, input_norm=None), backend="aot_eager").eval()
    x = torch.randn(3, 1, 8, 8)
    before = model.feature_extractor(x)
    old = copy.deepcopy(model)
    assert not compiled(old.feature_extractor)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    assert torch.equal(old.feature_extractor(x), before)
    assert not torch.allclose(model.feature_extractor(x), before)


def test_an_eager_batch_then_a_compiled_one_before_one_backward():
    """ER-ACE's step: the last, smaller new batch runs eager, then its memory batch (full size) compiled, one
    backward for both. Training-mode BatchNorm saves its running statistics for the eager backward, which the
    compiled call then updates in place: the eager call saves copies, and the gradients are eager code's."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = make_model("resnet8", 10, incremental=False, widths=(4, 8, 16)).train()
    reference = copy.deepcopy(model)
    compile_model(model, one_graph_per_mode=True, backend="aot_eager")
    full, last = torch.randn(8, 3, 32, 32), torch.randn(5, 3, 32, 32)
    for net in (model, reference):
        net(full).sum().backward()  # the mode's graph, at the full batch
        net.zero_grad()
        (net(last).square().mean() + net(full).mean()).backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5)
    for b, c in zip(model.buffers(), reference.buffers()):
        assert torch.allclose(b.float(), c.float(), atol=1e-6)
    torch._dynamo.reset()


def _close(a, b) -> bool:
    """Nested lists of numbers (None for a metric that does not exist) equal within 1e-6."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    return a == b if a is None or b is None else abs(a - b) <= 1e-6


@pytest.mark.parametrize(
    "strategy, extra",
    [("replay", {}), pytest.param("icarl", {}, marks=pytest.mark.slow),  # icarl: 15 s (loaded 2-core machine)
     pytest.param("lwf", {"lwf_memory": True}, marks=pytest.mark.slow),
     pytest.param("bic", {"bic_stage2_epochs": 2}, marks=pytest.mark.slow)],
)
def test_compiled_run_matches_eager_and_resumes(tmp_path, monkeypatch, traced_only, strategy, extra):
    """With every strategy: the same numbers as eager (traced by dynamo, no code generation); the checkpoint
    of a compiled run loads into an uncompiled model; an interrupted compiled run resumes bit for bit."""
    cfg = ExperimentConfig(**{**BASE, "epochs": 2}, strategy=strategy, loss="bsce", lr_milestones=[1], **extra)
    eager = run_experiment(cfg, tmp_path / "eager")
    on = cfg.replace(compile=True)
    reference = run_experiment(on, tmp_path / "compiled")
    for key in COMPARED:
        assert _close(reference[key], eager[key]), key
    assert reference["environment"]["compile"] == experiment.COMPILE_RECORD and eager["environment"]["compile"] is None

    with monkeypatch.context() as m:
        crash_during_eval_of_step(m, step=3, error=KeyboardInterrupt)
        for run_cfg, folder in ((on, "interrupted"), (cfg, "eager-interrupted")):
            with pytest.raises(KeyboardInterrupt):
                run_experiment(run_cfg, tmp_path / folder)
    state, eager_state = (load_checkpoint(tmp_path / folder / "checkpoint.pt")["model"]
                          for folder in ("interrupted", "eager-interrupted"))
    # the uncompiled model's keys and shapes (no _orig_mod.): it loads into an uncompiled model
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in eager_state.items()}
    if strategy != "icarl":  # iCaRL's model is Avalanche's wrapper of the two parts
        build_model(cfg, int(reference["n_classes"])).load_state_dict(state)  # strict
    resumed = run_experiment(on, tmp_path / "interrupted", resume=True)
    for key in COMPARED:
        assert resumed[key] == reference[key], key


def _accuracies(cfg, out, seeds) -> list:
    return [run_experiment(cfg.replace(seed=s), out / f"seed{s}")["average_incremental_accuracy"] for s in seeds]


@pytest.mark.slow
def test_inductor_digits_accuracy_matches_eager_within_seed_noise(tmp_path):
    """Real compilation (inductor, CPU): Replay + BSCE on digits, the same accuracy as eager within the seeds'
    spread (inductor's float32 kernels round differently: the runs differ like two seeds)."""
    torch._dynamo.reset()
    cfg = ExperimentConfig(**{**BASE, "epochs": 3}, strategy="replay", loss="bsce")
    eager = _accuracies(cfg, tmp_path / "eager", seeds=(0, 1, 2))
    on = _accuracies(cfg.replace(compile=True), tmp_path / "compiled", seeds=(0,))
    spread = max(eager) - min(eager)
    assert abs(on[0] - eager[0]) <= max(spread, 0.02), (on, eager)
    assert on[0] > 0.5  # learned (chance: 0.1 at the end)


def _cifar_like(path, per_class: int = 48, seed: int = 0):
    """A learnable CIFAR-shaped set: each class a random colour layout plus noise (uint8, NHWC)."""
    rng = np.random.default_rng(seed)
    means = rng.integers(40, 216, (100, 4, 4, 3))

    def split(n):
        y = np.repeat(np.arange(100), n)
        base = np.kron(means[y], np.ones((1, 8, 8, 1)))
        x = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        return x, y

    (x_train, y_train), (x_test, y_test) = split(per_class), split(per_class // 3)
    np.savez(path / "cifar100.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


@pytest.mark.slow
def test_inductor_cifar_shaped_run_matches_eager(tmp_path):
    """Real compilation on the CIFAR path (ResNet-8, uint8 batches augmented on the device, bf16 autocast
    inside the compiled region, device data path): the same accuracy as eager within the seeds' spread."""
    torch._dynamo.reset()
    _cifar_like(tmp_path)
    cfg = ExperimentConfig(benchmark="cifar100", data_dir=str(tmp_path), protocol="B0", n_steps=5, model="resnet8",
                           width=4, epochs=4, batch_size=64, memory_size=200, replay="concat", strategy="replay",
                           loss="bsce", data_path="device", amp="bf16", progress=False, wandb=False, threads=1)
    eager = _accuracies(cfg, tmp_path / "eager", seeds=(0, 1))
    on = _accuracies(cfg.replace(compile=True), tmp_path / "compiled", seeds=(0,))
    assert abs(on[0] - eager[0]) <= max(max(eager) - min(eager), 0.03), (on, eager)
    # learned (chance over the seen classes: 0.01 to 0.05). With 24 images per class and 2 epochs neither variant
    # learned (eager 0.035, compiled 0.036): this check failed, not the comparison; eager now reaches 0.48 and 0.51
    assert on[0] > 0.3
    results = json.loads((tmp_path / "compiled" / "seed0" / "results.json").read_text())
    assert results["config"]["compile"] is True and results["finished"]


def test_throughput_compile_comparison_quick(tmp_path, traced_only):
    """experiments/throughput.py --compile-comparison: both variants timed in alternating rounds, compile times apart
    (traced only here: the numbers say nothing, the bookkeeping is checked)."""
    from test_benchmark_scripts import load_script

    result = load_script("throughput").main(["--quick", "--compile-comparison", "--threads", "1", "--paths", "device",
                                            "--losses", "bsce", "--output", str(tmp_path / "c.json")])
    assert json.loads((tmp_path / "c.json").read_text()) == json.loads(json.dumps(result))
    (row,) = result["results"]
    assert row["path"] == "device" and row["rounds"] == 2 and row["iterations_per_round"] == 2
    assert all(len(row["seconds_per_round"][v]) == 2 for v in ("eager", "compiled"))
    eager, compiled = (sum(row["seconds_per_round"][v]) for v in ("eager", "compiled"))
    assert row["ratio"] == pytest.approx(eager / compiled, rel=5e-2)
    assert min(row["eager_images_per_s"], row["compiled_images_per_s"], row["eval_compiled_images_per_s"]) > 0
    assert {"compile_s_first_call", "compile_s_new_batch_shape", "compile_s_eval"} <= set(row)
    assert set(result["load_average_1min"]) == {"start", "end"}
