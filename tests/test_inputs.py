"""Fault battery for bad input: config values, YAML files, command lines, data files.

Every bad input must give one clear line (a ConfigError / ValueError naming the problem, or on
the command line one line on stderr and exit code 2), before anything is built or trained.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bsce_avalanche import ConcatReplayPlugin, herding_buffer
from bsce_avalanche.benchmarks import (
    TensorImageDataset,
    load_cifar100_arrays,
    load_tiny_imagenet_files,
    split_cifar100,
    split_digits,
    split_tiny_imagenet,
)
from bsce_avalanche.losses import (
    MAX_TAU,
    ZERO_PRIOR_OFFSET,
    BalancedSoftmaxCrossEntropyLoss,
    balanced_softmax_cross_entropy,
)
from bsce_avalanche.runner import cli, experiment
from bsce_avalanche.runner import compare as compare_module
from bsce_avalanche.runner.cli import build_parser, config_from_args, main, run_configs
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.config_files import load_config
from conftest import fake_cifar_arrays
from naming import without_digest

REPO = Path(__file__).resolve().parents[1]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# ---------------------------------------------------------------- config values
BAD_VALUES = [
    ({"lr": float("nan")}, r"lr must be a finite number, got float nan"),
    ({"lr": float("inf")}, r"lr must be a finite number"),
    ({"lr": 0}, r"lr must be > 0"),
    ({"lr": -0.1}, r"lr must be > 0"),
    ({"momentum": -1}, r"momentum must be in \[0, 1\)"),
    ({"momentum": 1}, r"momentum must be in \[0, 1\)"),
    ({"weight_decay": -1e-4}, r"weight_decay must be >= 0"),
    ({"lr_gamma": 0}, r"lr_gamma must be in \(0, 1\]"),
    ({"lr_gamma": 2}, r"lr_gamma must be in \(0, 1\]"),
    ({"tau": -1}, r"tau must be finite and >= 0"),
    ({"tau": float("nan")}, r"tau must be a finite number"),
    ({"tau": float("inf")}, r"tau must be a finite number"),
    ({"tau": 1e40}, r"at most 1e\+28 .*got 1e\+40: for priors down to 2\*\*-31, tau \* log\(prior\) must stay above -5e\+29"),
    ({"memory_size": -1}, r"memory_size must be >= 0"),
    ({"memory_per_class": -5}, r"memory_per_class must be >= 1 or null, got -5"),
    ({"memory_per_class": 0}, r"memory_per_class must be >= 1 or null"),
    ({"num_workers": -1}, r"num_workers must be >= 0"),
    ({"threads": -1}, r"threads must be >= 1 or null"),
    ({"threads": 0}, r"threads must be >= 1 or null"),
    ({"epochs": 0}, r"epochs must be >= 1"),
    ({"batch_size": 0}, r"batch_size must be >= 1"),
    ({"eval_batch_size": -1}, r"eval_batch_size must be >= 1"),
    ({"n_steps": 0}, r"n_steps must be >= 1"),
    ({"benchmark": "cifar100", "width": 0}, r"width must be >= 1"),
    ({"bic_val_fraction": 0}, r"bic_val_fraction must be in \(0, 1\)"),
    ({"bic_val_fraction": 1.5}, r"bic_val_fraction must be in \(0, 1\)"),
    ({"bic_stage2_epochs": -1}, r"bic_stage2_epochs must be >= 0"),
    ({"lwf_temperature": 0}, r"lwf_temperature must be > 0"),
    ({"lwf_alpha": -1}, r"lwf_alpha must be >= 0"),
    ({"seed": -1}, r"seed must be in \[0, 4294967295\]"),
    ({"seed": 2**32}, r"seed must be in \[0, 4294967295\]"),
    ({"lr_milestones": [3, 1]}, r"lr_milestones must be strictly increasing"),
    ({"lr_milestones": [2, 2]}, r"lr_milestones must be strictly increasing"),
    ({"lr_milestones": [0]}, r"lr_milestones must be strictly increasing epochs >= 1"),
    ({"lr_milestones": ["a"]}, r"lr_milestones must be strictly increasing epochs >= 1"),
    ({"lr_milestones": [1.5]}, r"lr_milestones must be"),
    ({"lr_milestones": [True]}, r"lr_milestones must be"),
    ({"lr_milestones": 80}, r"lr_milestones must be of type list"),
    ({"epochs": 3, "lr_milestones": [2, 3]}, r"lr_milestones \[2, 3\] reach epochs \(3\): .* never lowers.*"
                                             r"'lr_milestones=\[2\]'"),
    ({"epochs": 1, "lr_milestones": [1]}, r"reach epochs \(1\).*with one epoch, set lr_milestones: \[\]"),
    ({"class_order": [0.5 + i for i in range(10)]}, r"integer class ids"),
    ({"class_order": ["a"] * 10}, r"integer class ids"),
    ({"wandb_mode": "bogus"}, r"Unknown wandb_mode 'bogus'; valid: online, offline, disabled"),
    ({"device": "gpu"}, r"Unknown device 'gpu'"),
    ({"output_dir": ""}, r"output_dir must not be empty"),
    ({"wandb_project": " "}, r"wandb_project must not be empty"),
    ({"lr": "0.1"}, r"lr must be a finite number, got str"),
    ({"epochs": 2.5}, r"epochs must be of type int"),
    ({"epochs": True}, r"epochs must be of type int"),
    ({"grid": {"lr": [0.1, float("nan")]}}, r"grid combination \{'lr': nan\}: lr must be a finite number"),
    ({"grid": {"momentum": [0.9, 1.0]}}, r"grid combination \{'momentum': 1.0\}: momentum must be in"),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES, ids=[str(o) for o, _ in BAD_VALUES])
def test_bad_config_value_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, overrides)
    one_line(str(err.value))


def test_range_edges_are_valid():
    cfg = load_config(None, dict(momentum=0, weight_decay=0, lr_gamma=1, tau=MAX_TAU, memory_per_class=None,
                                 num_workers=0, threads=None, seed=2**32 - 1, epochs=3, lr_milestones=[1, 2]))
    assert cfg.tau == MAX_TAU and cfg.seed == 2**32 - 1 and cfg.lr_milestones == [1, 2]


# ---------------------------------------------------------------- YAML files
BAD_YAML = [
    ("lr: 0.1\nepochs: 3\nlr: 0.2\n", r"line 3, column 1: key 'lr' is set twice"),
    ("grid:\n  loss: [ce]\n  loss: [bsce]\n", r"line 3, column 3: key 'loss' is set twice"),
    ("lr: [0.1\nepochs: 3\n", r"line 2, column 7: expected ',' or '\]'.*flow sequence at line 1"),
    ("lr: 0.1\n  epochs: 3\n", r"line 2, column 9: mapping values are not allowed here"),
    ("lr: 0.1\n\tepochs: 3\n", r"line 2, column 1: found character '\\t'"),
    ("strategy: 'replay\n", r"line 2, column 1: found unexpected end of stream"),
    ("- lr\n- epochs\n", r"must hold a mapping of keys to values"),
    ("lr: .nan\n", r"lr must be a finite number"),
    ("memroy_size: 20\n", r"Unknown config key 'memroy_size'.*did you mean 'memory_size'"),
]


@pytest.mark.parametrize("text, message", BAD_YAML, ids=[t[:20] for t, _ in BAD_YAML])
def test_bad_yaml_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in one_line(str(err.value))


@pytest.mark.parametrize("content", [random.Random(0).randbytes(300), b"lr: 1\n\xff\xfe\x00\x81", b"\x00\x01\x02"],
                         ids=["random-300", "yaml-then-binary", "control-bytes"])  # fixed: one collection per xdist worker
def test_binary_config_file(tmp_path, content):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"{path}") as err:
        load_config(path)
    one_line(str(err.value))


def test_empty_config_file_means_the_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("# nothing set\n")
    assert load_config(tmp_path / "c.yaml") == ExperimentConfig()


def test_duplicate_key_in_a_sweep_file(tmp_path):
    from bsce_avalanche.runner.sweep import sweep_validate

    path = tmp_path / "s.yaml"
    path.write_text("method: grid\nmethod: random\n")
    assert sweep_validate([str(path)]) == 2


# ---------------------------------------------------------------- command line (in process)
BAD_COMMANDS = [
    (["run", "--lr", "nan"], r"lr must be a finite number"),
    (["run", "--lr", "inf"], r"lr must be a finite number"),
    (["run", "--tau", "1e40"], r"tau must be finite and >= 0, at most 1e\+28"),
    (["run", "--momentum", "-1"], r"momentum must be in \[0, 1\)"),
    (["run", "--wandb-mode", "bogus"], r"Unknown wandb_mode 'bogus'"),
    (["run", "--num-workers", "-1"], r"num_workers must be >= 0"),
    (["run", "--threads", "-1"], r"threads must be >= 1 or null"),
    (["run", "--memory-per-class", "-5"], r"memory_per_class must be >= 1"),
    (["run", "--lr-milestones", "[3, 1]"], r"lr_milestones must be strictly increasing"),
    (["run", "--set", "lr_milestones=[1,"], r"YAML value '\[1,', line 1, column 4"),
    (["run", "--set", "lr"], r"--set expects KEY=VALUE"),
    (["run", "--set", "lr=nan"], r"lr must be a finite number, got str 'nan'"),
    (["run", "--set", "lernrate=1"], r"Unknown config key 'lernrate'"),
    (["run", "--config", "does/not/exist.yaml"], r"does/not/exist.yaml does not exist"),
    (["run", "--strategy", "er_ace", "--loss", "bsce"], r"er_ace cannot be combined with loss: bsce"),
    (["grid", "--strategies", "er_ace", "--losses", "bsce"], r"er_ace cannot be combined with loss: bsce"),
    (["grid", "--strategies", "replya"], r"Unknown strategy 'replya' \(did you mean 'replay'\?\)"),
    (["grid", "--losses", "bsce", "--loss", "ce"], r"--losses and --loss .*both set loss"),
    (["grid", "--seeds", "0", "--set", "seed=1"], r"--seeds and --seed .*both set seed"),
    (["grid", "--seeds", "0", "-1"], r"grid combination \{.*'seed': -1\}: seed must be in"),
    (["compare", "no/such/results"], r"no/such/results"),
]


@pytest.mark.parametrize("argv, message", BAD_COMMANDS, ids=[" ".join(a) for a, _ in BAD_COMMANDS])
def test_bad_command_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    if argv[0] in ("run", "grid"):
        argv = [*argv, "--no-wandb", "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing started
    assert __import__("re").search(message, one_line(captured.err)), captured.err
    assert not (tmp_path / "out").exists()


BAD_USAGE = [
    ["run", "--lr", "abc"],
    ["run", "--epochs", "2.5"],
    ["run", "--lr-milestones", "[1,"],
    ["run", "--strategy"],
    ["run", "--no-such-option"],
    ["grid", "--seeds", "a"],
    ["bogus"],
    [],
]


@pytest.mark.parametrize("argv", BAD_USAGE, ids=[" ".join(a) or "(none)" for a in BAD_USAGE])
def test_bad_usage_is_one_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "see bsce-experiment" in one_line(capsys.readouterr().err)


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        main(["run", "--lr", "nan", "--debug"])


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_configs", interrupted)
    assert main(["run", "--no-wandb"]) == 130
    assert "interrupted (--resume continues" in one_line(capsys.readouterr().err)
    with pytest.raises(KeyboardInterrupt):
        main(["run", "--no-wandb", "--debug"])


def test_os_errors_are_one_line(monkeypatch, capsys):
    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/results/run")

    monkeypatch.setattr(cli, "run_configs", unwritable)
    assert main(["run", "--no-wandb"]) == 2
    assert "Permission denied: '/results/run'" in one_line(capsys.readouterr().err)


# ---------------------------------------------------------------- grid: explicit flags, skipped combinations
def test_explicit_flag_replaces_the_config_grid_axis():
    parse = build_parser().parse_args
    assert load_config(REPO / "experiments/configs/default.yaml").grid == {"loss": ["ce", "bsce"]}
    for command in ("run", "grid"):
        cfg = config_from_args(parse([command, "--loss", "ce"]))
        assert (cfg.loss, cfg.grid) == ("ce", {})
        cfg = config_from_args(parse([command, "--set", "loss=ce"]))
        assert (cfg.loss, cfg.grid) == ("ce", {})
    cfg = config_from_args(parse(["grid", "--losses", "bsce", "--strategies", "lwf", "naive"]))
    assert cfg.grid == {"loss": ["bsce"], "strategy": ["lwf", "naive"]}
    help_text = build_parser()._subparsers._group_actions[0].choices["grid"].format_help()
    assert "replaces the config file's value and its grid over that key" in " ".join(help_text.split())
    assert "replaces the config's grid over loss" in " ".join(help_text.split())


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """run_experiment and compare replaced by recorders: which runs the grid starts."""
    started, compared = [], []

    def run_experiment(cfg, out, resume=False, **kwargs):
        started.append(cfg.run_name)
        return {"average_incremental_accuracy": 0.5, "last_accuracy": 0.4, "train_time_s": 1.0}

    def compare(paths, out):
        compared.extend(Path(p).parent.name for p in paths)
        table = tmp_path / "comparison.md"
        table.write_text("# comparison\n\n| method |\n")
        return table

    monkeypatch.setattr(experiment, "run_experiment", run_experiment)  # run_configs imports them when it runs
    monkeypatch.setattr(compare_module, "compare", compare)
    return started, compared


def test_grid_skips_combinations_that_cannot_run(fake_runs, capsys):
    started, compared = fake_runs
    assert main(["grid", "--strategies", "replay", "er_ace", "--losses", "ce", "bsce", "--no-wandb"]) == 0
    out = capsys.readouterr().out
    assert started == compared
    assert sorted(map(without_digest, started)) == ["er_ace-ce-seed0", "replay-bsce-seed0", "replay-ce-seed0"]
    skipped = [re.sub(r"-[0-9a-f]{6}:", ":", line) for line in out.splitlines() if "skipping" in line]
    assert skipped == ["  skipping er_ace-bsce-seed0: er_ace cannot be combined with loss: bsce (ER-ACE uses its "
                       "own loss); use loss: ce."]
    assert "3 run(s)" in out and "comparison:" in out


def test_grid_of_only_invalid_combinations_is_an_error(fake_runs):
    started, _ = fake_runs
    cfg = load_config(None, {"strategy": "er_ace", "grid": {"seed": [0, 1]}})
    with pytest.raises(ConfigError, match="no combination of the grid can run: er_ace cannot be combined"):
        run_configs(cfg)
    assert started == []


# ---------------------------------------------------------------- tau bound (finite training maths)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_largest_tau_keeps_the_loss_finite_and_absent_classes_out(dtype):
    """MAX_TAU with the rarest prior the bound allows (one sample in 2**31) and a class with
    zero count: finite loss and gradients, and the absent class keeps exactly zero mass."""
    counts = torch.tensor([1.0, 2.0**31 - 1, 0.0])
    logits = torch.randn(4, 3).to(dtype).requires_grad_()
    targets = torch.tensor([0, 1, 0, 1])
    for loss in (balanced_softmax_cross_entropy(logits, targets, counts, tau=MAX_TAU),
                 BalancedSoftmaxCrossEntropyLoss(counts, tau=MAX_TAU)(logits, targets)):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()
        assert (grad[:, 2] == 0).all()  # absent class: no mass, no gradient
    adjustment = MAX_TAU * torch.log(torch.tensor(2.0**-31, dtype=torch.float64))
    assert ZERO_PRIOR_OFFSET / 2 < adjustment < 0


def test_tau_bound_is_enforced_by_the_library():
    with pytest.raises(ValueError, match="at most 1e\\+28"):
        BalancedSoftmaxCrossEntropyLoss([1, 1], tau=MAX_TAU * 2)
    with pytest.raises(ValueError, match="for the rarest class falls below -5e\\+29"):  # an extreme given prior
        balanced_softmax_cross_entropy(torch.zeros(1, 2), torch.tensor([1]), [1e-300, 1e300], tau=1.0)


# ---------------------------------------------------------------- data files
def npz_bytes(compressed=False, **changes) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **fake_cifar_arrays(**changes))
    return buffer.getvalue()


def _corrupt(data: bytes, at: float) -> bytes:
    data = bytearray(data)
    start = int(len(data) * at)
    data[start:start + 256] = np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8).tobytes()
    return bytes(data)


BAD_FILES = {
    "truncated to half": lambda: npz_bytes()[: len(npz_bytes()) // 2],
    "truncated to 10 bytes": lambda: npz_bytes()[:10],
    "compressed, truncated": lambda: npz_bytes(compressed=True)[:-100],
    "empty": lambda: b"",
    "random bytes": lambda: np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "random after a zip signature": lambda: b"PK\x03\x04" + bytes(5000),
    "corrupt in the middle": lambda: _corrupt(npz_bytes(), 0.5),
    "compressed, corrupt in the middle": lambda: _corrupt(npz_bytes(compressed=True), 0.5),
    "corrupt header": lambda: _corrupt(npz_bytes(), 0.0),
    "a pickle": lambda: pickle.dumps({"x_train": 1}),
    "text": lambda: b"x_train,y_train\n1,2\n",
}


@pytest.mark.parametrize("make", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_unreadable_npz_is_one_line_naming_the_file(tmp_path, make):
    path = tmp_path / "cifar100.npz"
    path.write_bytes(make())
    with pytest.raises(ValueError, match="is not a readable .npz archive") as err:
        load_cifar100_arrays(tmp_path)
    message = one_line(str(err.value))
    assert message.startswith(str(path)) and "download=True" in message
    assert "pickle" not in message  # never numpy's advice to load it unsafely


def test_a_npy_file_is_not_an_npz(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    (tmp_path / "x.npy").rename(tmp_path / "cifar100.npz")
    with pytest.raises(ValueError, match="is not a readable .npz archive"):
        load_cifar100_arrays(tmp_path)


BAD_ARRAYS = {
    "label 100": (dict(y_train=np.r_[np.arange(199) % 100, 100]), r"y_train has labels outside 0..99: \[100\]"),
    "label -1": (dict(y_test=np.r_[np.arange(99), -1]), r"y_test has labels outside 0..99: \[-1\]"),
    "fractional labels": (dict(y_train=np.arange(200) % 100 + 0.5), r"integer class ids, got dtype float64 with "
                                                                     r"fractional values"),
    "float labels": (dict(y_train=(np.arange(200) % 100).astype(float)), r"integer class ids, got dtype float64"),
    "string labels": (dict(y_train=np.array([str(i % 100) for i in range(200)])), r"integer class ids"),
    "bool labels": (dict(y_test=np.ones(100, bool)), r"integer class ids, got dtype bool"),
    "2-D labels": (dict(y_train=np.zeros((200, 2), int)), r"one class id per sample \(shape \(N,\)\)"),
    "fewer labels": (dict(y_train=np.arange(199) % 100), r"200 x_train images but 199 labels"),
    "missing class": (dict(y_test=np.r_[np.arange(99), 0]), r"y_test has no sample of 1 of the 100 classes, e.g. "
                                                             r"\[99\]"),
    "no images": (dict(x_train=np.zeros((0, 32, 32, 3), np.uint8), y_train=np.zeros(0, int)), r"no sample of 100"),
    "float images": (dict(x_train=np.zeros((200, 32, 32, 3), np.float32)), r"x_train must be uint8 of shape"),
    "CHW images": (dict(x_test=np.zeros((100, 3, 32, 32), np.uint8)), r"x_test must be uint8 of shape \(N, 32, 32"),
    "missing array": (dict(y_test=None), r"lacks arrays \['y_test'\]"),
    "object labels": (dict(y_train=np.array([str(i % 100) for i in range(200)], dtype=object)),
                      r"y_train holds Python objects \(dtype object\), which are not loaded .*save it as a numeric "
                      r"array, e.g. np.asarray\(y_train, dtype=np.int64\)"),
}


@pytest.mark.parametrize("changes, message", BAD_ARRAYS.values(), ids=BAD_ARRAYS.keys())
def test_malformed_cifar_arrays_are_refused(tmp_path, changes, message):
    (tmp_path / "cifar100.npz").write_bytes(npz_bytes(**changes))
    with pytest.raises(ValueError, match=message) as err:
        load_cifar100_arrays(tmp_path)
    assert one_line(str(err.value)).startswith(str(tmp_path / "cifar100.npz"))


def test_good_small_archives_load(tmp_path):
    (tmp_path / "cifar100.npz").write_bytes(npz_bytes(compressed=True, y_train=(np.arange(200) % 100)[:, None]))
    arrays = load_cifar100_arrays(tmp_path)  # Keras's (N, 1) labels are flattened
    assert arrays["y_train"].shape == (200,) and arrays["y_train"].dtype == np.int64
    bench = split_cifar100(protocol="B50", n_steps=5, data_dir=tmp_path)
    assert len(bench.train_stream) == 6


def test_corrupt_data_on_the_command_line(tmp_path, capsys):
    (tmp_path / "cifar100.npz").write_bytes(npz_bytes(y_train=np.r_[np.arange(199) % 100, 100]))
    argv = ["run", "--benchmark", "cifar100", "--model", "resnet8", "--class-order", "natural", "--data-dir",
            str(tmp_path), "--no-wandb", "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "cifar100.npz: y_train has labels outside 0..99: [100]" in one_line(capsys.readouterr().err)
    (tmp_path / "cifar100.npz").unlink()
    assert main(argv) == 2
    assert "CIFAR-100 not found" in one_line(capsys.readouterr().err)


def test_dataset_labels_are_never_truncated():
    with pytest.raises(ValueError, match="fractional values"):
        TensorImageDataset(torch.zeros(2, 1, 8, 8), [0.0, 1.5])
    with pytest.raises(ValueError, match="fractional values"):
        TensorImageDataset(torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match="labels below 0: \\[-1\\]"):
        TensorImageDataset(torch.zeros(2, 1, 8, 8), [0, -1])
    assert TensorImageDataset(torch.zeros(2, 1, 8, 8), np.array([3, 1], np.uint8)).targets == [3, 1]


def _image(path: Path, size=64):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size)).save(path)


def test_tiny_imagenet_class_without_images_and_corrupt_image(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    _image(root / "train" / "n01" / "images" / "a.JPEG")
    (root / "train" / "n02" / "images").mkdir(parents=True)
    for k, wnid in enumerate(wnids):
        _image(root / "val" / "images" / f"v{k}.JPEG")
    (root / "val" / "val_annotations.txt").write_text("v0.JPEG\tn01\t0\t0\t1\t1\nv1.JPEG\tn02\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="no sample of 1 of the 2 classes, e.g. \\[1\\]"):
        load_tiny_imagenet_files(root)
    _image(root / "train" / "n02" / "images" / "b.JPEG")
    (root / "train" / "n02" / "images" / "b.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="b.JPEG cannot be decoded .*replace or remove it"):
        split_tiny_imagenet(root, n_experiences=2, fast_augment=True)


# ---------------------------------------------------------------- library entry points
BAD_CALLS = {
    "n_steps float": (lambda: split_digits(protocol="B0", n_steps=2.5), TypeError, "n_steps must be an int"),
    "n_steps -1 (B4)": (lambda: split_digits(protocol="B4", n_steps=-1), ValueError, "n_steps must be >= 1"),
    "first_exp_classes float": (lambda: split_digits(2, first_exp_classes=4.5), TypeError,
                                "first_exp_classes must be an int"),
    "first_exp_classes bool": (lambda: split_digits(2, first_exp_classes=True), TypeError,
                               "first_exp_classes must be an int"),
    "class order of floats": (lambda: split_digits(class_order=[i + 0.5 for i in range(10)]), TypeError,
                              "integer class ids"),
    "remap_class_ids str": (lambda: split_digits(remap_class_ids="no"), TypeError,
                            "remap_class_ids must be True or False"),
    "fast_augment str": (lambda: split_cifar100(fast_augment="no"), TypeError, "fast_augment must be True or False"),
    "download int": (lambda: split_tiny_imagenet(download=1), TypeError, "download must be True or False"),
    "data_dir int": (lambda: split_cifar100(data_dir=5), TypeError, "data_dir must be a path"),
    "ConcatReplayPlugin(-1)": (lambda: ConcatReplayPlugin(-1), ValueError, "mem_size must be a positive integer"),
    "herding_buffer(0)": (lambda: herding_buffer(0), ValueError, "mem_size must be a positive integer"),
    "herding_buffer('10')": (lambda: herding_buffer("10"), ValueError, "mem_size must be a positive integer"),
}


@pytest.mark.parametrize("call, error, message", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_library_entry_points_refuse_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------- real processes
@pytest.mark.slow
def test_process_exit_codes_and_streams(tmp_path):
    """As a user sees it: one line and code 2; the traceback with --debug; Ctrl-C: 130."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    (tmp_path / "bad.yaml").write_text("lr: 0.1\nlr: 0.2\n")
    command = [sys.executable, "-m", "bsce_avalanche", "run", "--config", str(tmp_path / "bad.yaml")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert one_line(done.stderr) == f"bsce-experiment: error: {tmp_path / 'bad.yaml'}, line 2, column 1: key 'lr' " \
                                    "is set twice; keep one."
    done = subprocess.run([*command, "--debug"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" in done.stderr and "ConfigError" in done.stderr

    # Ctrl-C as at a terminal: a suite started in the background (`pytest &`) passes SIGINT on ignored,
    # and Python (rightly) keeps an inherited SIG_IGN, so the child restores the default first
    run = subprocess.Popen([sys.executable, "-m", "bsce_avalanche", "run", "--no-wandb", "--no-progress",
                            "--epochs", "50", "--output-dir", str(tmp_path / "out")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "run(s)" in run.stdout.readline()  # training has started
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130
    assert one_line("\n".join(l for l in err.splitlines() if "Warning" not in l and "warn(" not in l)) == \
        "bsce-experiment: interrupted (--resume continues from the last finished step)"


def test_a_grid_over_a_key_of_a_cross_key_check_is_checked_per_combination():
    """issue 25: a grid over prior_window alone (prior: window set) was refused with "set both or neither";
    a grid over epochs whose milestones fit every combination likewise."""
    from bsce_avalanche.runner.config import ExperimentConfig
    from bsce_avalanche.runner.grid import expand_grid

    runs = expand_grid(ExperimentConfig(loss="bsce", prior="window", grid={"prior_window": [1, 5]}))
    assert [r.prior_window for r in runs] == [1, 5]
    runs = expand_grid(ExperimentConfig(epochs=1, lr_milestones=[2], grid={"epochs": [3, 4]}))
    assert [r.epochs for r in runs] == [3, 4]
    with pytest.raises(ConfigError, match=r"grid combination \{'prior_window': 1\}: prior: window needs"):
        ExperimentConfig(loss="bsce", grid={"prior_window": [1, 5]})
    with pytest.raises(ConfigError, match=r"grid combination \{'epochs': 2\}: lr_milestones \[2\] reach epochs"):
        ExperimentConfig(epochs=10, lr_milestones=[2], grid={"epochs": [3, 2]})
