"""Tests of the benchmark builders, class orders and the batch-augmentation path.

Everything runs on small fake data written to tmp dirs; only the tests marked
``slow`` read the real CIFAR-100 copy (and skip when it is absent).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from bsce_avalanche.benchmarks import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATA_DIR_ENV,
    BatchAugmentPlugin,
    InputNormalize,
    RandomCropFlip,
    classic_eval_transform,
    crop_flip,
    get_class_order,
    imagenet_subset_wnids,
    imagenet_wnids,
    load_cifar100_arrays,
    random_crop_flip,
    resolve_data_dir,
    resolve_protocol,
    split_cifar100,
    split_digits,
    split_imagenet,
    split_imagenet_subset,
    split_tiny_imagenet,
)
from bsce_avalanche.benchmarks import cifar as cifar_module
from bsce_avalanche.models import make_icarl_parts, make_model

from conftest import icarl_nme_scores, stream_accuracy, write_fake_cifar

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared/data/cifar100"
SHARED_NPZ = SHARED_CIFAR / "cifar100.npz"
SHARED_ORDERS = SHARED_CIFAR / "class_orders.json"

TRAIN_PER_CLASS, TEST_PER_CLASS = 2, 1


# --------------------------------------------------------------------------
# helpers / fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_cifar_dir(tmp_path_factory) -> Path:
    """cifar100.npz with TRAIN_PER_CLASS / TEST_PER_CLASS random images per class."""
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"), n_train=100 * TRAIN_PER_CLASS,
                            n_test=100 * TEST_PER_CLASS)


@pytest.fixture(autouse=True)
def _no_data_dir_env(monkeypatch):
    """Tests must not depend on the developer's BSCE_DATA_DIR."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def _exp_classes(stream) -> list[set[int]]:
    return [set(exp.classes_in_this_experience) for exp in stream]


def _save_image(path: Path, size: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


# --------------------------------------------------------------------------
# class orders
# --------------------------------------------------------------------------


def test_icarl_orders_first_elements():
    icarl = get_class_order("icarl")
    original = get_class_order("icarl-original")
    assert icarl[:4] == [68, 56, 78, 8]
    assert original[:4] == [87, 0, 52, 58]
    assert sorted(icarl) == sorted(original) == list(range(100))


def test_icarl_order_is_numpy_seed_1993_permutation():
    state = np.random.get_state()
    try:
        np.random.seed(1993)
        expected = np.random.permutation(100).tolist()
    finally:
        np.random.set_state(state)
    assert get_class_order("icarl") == expected
    assert get_class_order("ICARL") == expected  # names are case-insensitive


@pytest.mark.skipif(not SHARED_ORDERS.is_file(), reason="shared class_orders.json not present")
def test_orders_match_shared_json():
    orders = json.loads(SHARED_ORDERS.read_text())
    assert get_class_order("icarl") == orders["icarl"]["order"]
    assert get_class_order("icarl-original") == orders["icarl-original"]["order"]


def test_natural_random_and_explicit_orders():
    assert get_class_order("natural", n_classes=10) == list(range(10))
    a = get_class_order("random", n_classes=100, seed=3)
    assert a == get_class_order("random", n_classes=100, seed=3) == get_class_order(3)
    assert a != get_class_order("random", n_classes=100, seed=4)
    assert sorted(a) == list(range(100))
    assert get_class_order([2, 0, 1], n_classes=3) == [2, 0, 1]
    assert get_class_order("icarl", n_classes=10) == np.random.RandomState(1993).permutation(10).tolist()


@pytest.mark.parametrize(
    "spec, kwargs, match",
    [
        ("icral", {}, "did you mean 'icarl'"),
        ("natrual", {}, "did you mean 'natural'"),
        ("random", {}, "needs a seed"),
        ("icarl-original", {"n_classes": 10}, "only for CIFAR-100"),
        ([0, 1, 1], {"n_classes": 3}, "permutation"),
    ],
)
def test_bad_class_orders(spec, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_class_order(spec, **kwargs)


# --------------------------------------------------------------------------
# protocols
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"protocol": "B0", "n_steps": 10}, (10, None)),
        ({"protocol": "B0", "n_steps": 50}, (50, None)),
        ({"protocol": "B50", "n_steps": 5}, (6, 50)),
        ({"protocol": "b50", "n_steps": 25}, (26, 50)),
        ({"n_experiences": 20}, (20, None)),
        ({"n_experiences": 11, "first_exp_classes": 50}, (11, 50)),
        ({"n_experiences": 1}, (1, None)),
    ],
)
def test_resolve_protocol(kwargs, expected):
    assert resolve_protocol(100, **kwargs) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_experiences": 7}, "cannot be split evenly into 7"),
        ({"protocol": "B50", "n_steps": 7}, "remaining 50 classes cannot be split evenly"),
        ({"protocol": "B0"}, "needs n_steps"),
        ({"protocol": "base50", "n_steps": 5}, "look like 'B0'"),
        ({"protocol": "B0", "n_steps": 10, "n_experiences": 10}, "not both"),
        ({"n_steps": 10}, "only meaningful with protocol"),
        ({"n_experiences": 0}, "at least one"),
        ({"n_experiences": 2, "first_exp_classes": 100}, "remaining 0 classes"),
    ],
)
def test_resolve_protocol_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_protocol(100, **kwargs)


# --------------------------------------------------------------------------
# Split CIFAR-100 on a fake local copy
# --------------------------------------------------------------------------


def test_split_cifar100_b0_from_local_npz(fake_cifar_dir):
    bench = split_cifar100(protocol="B0", n_steps=10, data_dir=fake_cifar_dir)
    order = get_class_order("icarl")
    assert bench.n_classes_per_exp == [10] * 10
    assert bench.classes_order == order  # original CIFAR labels are kept
    assert _exp_classes(bench.train_stream) == [set(order[i : i + 10]) for i in range(0, 100, 10)]
    assert _exp_classes(bench.test_stream) == _exp_classes(bench.train_stream)
    for exp in bench.train_stream:
        assert len(exp.dataset) == 10 * TRAIN_PER_CLASS
        assert set(exp.dataset.targets) == set(exp.classes_in_this_experience)
    assert len(bench.test_stream[0].dataset) == 10 * TEST_PER_CLASS
    x, y, t = bench.train_stream[0].dataset[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)  # fast path: raw pixels
    assert y in order[:10] and t == 0


def test_split_cifar100_b50_from_local_npz(fake_cifar_dir):
    bench = split_cifar100(protocol="B50", n_steps=5, class_order="icarl-original", data_dir=fake_cifar_dir)
    order = get_class_order("icarl-original")
    assert bench.n_experiences == 6
    assert bench.n_classes_per_exp == [50, 10, 10, 10, 10, 10]
    assert bench.classes_order == order
    expected = [set(order[:50])] + [set(order[i : i + 10]) for i in range(50, 100, 10)]
    assert _exp_classes(bench.train_stream) == expected
    assert len(bench.train_stream[0].dataset) == 50 * TRAIN_PER_CLASS
    # same split through the Avalanche-style arguments
    same = split_cifar100(11 - 5, first_exp_classes=50, class_order="icarl-original", data_dir=fake_cifar_dir)
    assert same.n_classes_per_exp == bench.n_classes_per_exp


def test_split_cifar100_remapped_ids(fake_cifar_dir):
    bench = split_cifar100(5, data_dir=fake_cifar_dir, remap_class_ids=True)
    assert bench.classes_order == list(range(100))
    assert set(bench.train_stream[0].classes_in_this_experience) == set(range(20))


def test_split_cifar100_classic_path_transforms(fake_cifar_dir):
    bench = split_cifar100(protocol="B0", n_steps=5, data_dir=fake_cifar_dir, fast_augment=False)
    x_train, _, _ = bench.train_stream[0].dataset.train()[0]
    x_eval, _, _ = bench.train_stream[0].dataset.eval()[0]
    for x in (x_train, x_eval):
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    # without random augmentation the classic path equals the fast path + InputNormalize
    fast = split_cifar100(protocol="B0", n_steps=5, data_dir=fake_cifar_dir)
    raw, _, _ = fast.train_stream[0].dataset.eval()[0]
    expected = InputNormalize(CIFAR100_MEAN, CIFAR100_STD)(raw.unsqueeze(0))[0]
    torch.testing.assert_close(x_eval, expected, atol=1e-5, rtol=0)


def test_data_dir_resolution(fake_cifar_dir, tmp_path, monkeypatch):
    assert resolve_data_dir(None) == Path("~/.cache/bsce_avalanche").expanduser()
    monkeypatch.setenv(DATA_DIR_ENV, str(fake_cifar_dir))
    assert resolve_data_dir(None) == fake_cifar_dir
    assert resolve_data_dir(tmp_path) == tmp_path  # explicit argument wins
    assert len(load_cifar100_arrays()["y_train"]) == 100 * TRAIN_PER_CLASS
    # <dir>/cifar100/cifar100.npz is found too (the shared-data layout)
    nested = write_fake_cifar(tmp_path / "data" / "cifar100", n_train=100 * TRAIN_PER_CLASS,
                              n_test=100 * TEST_PER_CLASS)
    assert len(load_cifar100_arrays(nested.parent)["y_test"]) == 100 * TEST_PER_CLASS


def test_missing_cifar_raises_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        split_cifar100(data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert "cifar100.npz" in msg and str(tmp_path / "nowhere") in msg
    assert "download=True" in msg and DATA_DIR_ENV in msg


def test_failed_download_raises_clear_error(tmp_path, monkeypatch):
    def offline(root, download):
        raise OSError("network unreachable")

    monkeypatch.setattr(cifar_module, "_load_torchvision", offline)
    with pytest.raises(FileNotFoundError, match="network unreachable"):
        load_cifar100_arrays(tmp_path, download=True)


def test_malformed_npz_rejected(tmp_path):
    np.savez(tmp_path / "cifar100.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks arrays"):
        load_cifar100_arrays(tmp_path)
    np.savez(
        tmp_path / "cifar100.npz",
        x_train=np.zeros((2, 3, 32, 32), np.uint8),  # CHW instead of HWC
        y_train=np.zeros(2),
        x_test=np.zeros((2, 32, 32, 3), np.uint8),
        y_test=np.zeros(2),
    )
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        load_cifar100_arrays(tmp_path)


@pytest.mark.slow
def test_real_split_cifar100_sizes():
    if not SHARED_NPZ.is_file():
        pytest.skip(f"real CIFAR-100 not present at {SHARED_NPZ}")
    bench = split_cifar100(protocol="B0", n_steps=10, data_dir=SHARED_CIFAR)
    for train_exp, test_exp in zip(bench.train_stream, bench.test_stream):
        assert len(train_exp.dataset) == 10 * 500
        assert len(test_exp.dataset) == 10 * 100
        counts = np.bincount(np.asarray(train_exp.dataset.targets), minlength=100)
        assert set(counts[list(train_exp.classes_in_this_experience)]) == {500}
    b50 = split_cifar100(protocol="B50", n_steps=25, data_dir=SHARED_CIFAR)
    assert b50.n_classes_per_exp == [50] + [2] * 25
    assert len(b50.train_stream[0].dataset) == 50 * 500


# --------------------------------------------------------------------------
# batch augmentation
# --------------------------------------------------------------------------


def _reference_crop_flip(img: torch.Tensor, top: int, left: int, flip: bool, padding: int):
    """torchvision's functional ops on one (C, H, W) image."""
    h, w = img.shape[1:]
    out = TF.crop(TF.pad(img, [padding]), top, left, h, w)
    return TF.hflip(out) if flip else out


def _known_batch(n=6, c=3, h=8, w=10) -> torch.Tensor:
    # distinct values everywhere (mod 256 is fine at this size) so any misplacement shows
    return (torch.arange(n * c * h * w) % 251 + 1).to(torch.uint8).view(n, c, h, w)


def test_crop_flip_matches_torchvision_semantics():
    images = _known_batch()
    padding = 2
    top = torch.tensor([0, 1, 2, 3, 4, 2])
    left = torch.tensor([4, 3, 2, 1, 0, 2])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, top, left, flip, padding)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(len(images)):
        expected = _reference_crop_flip(images[i], int(top[i]), int(left[i]), bool(flip[i]), padding)
        assert torch.equal(out[i], expected), i
    # centred crop without flip is the identity; a flip-only batch is a mirror
    assert torch.equal(out[5], images[5])
    assert torch.equal(crop_flip(images, top * 0 + 2, left * 0 + 2, flip | True, 2), images.flip(3))
    # top-left corner crop: 2 rows and 2 columns of zero padding come in
    zeros = torch.zeros(6, dtype=torch.long)
    corner = crop_flip(images, zeros, zeros, flip & False, 2)
    assert (corner[:, :, :2, :] == 0).all() and (corner[:, :, :, :2] == 0).all()
    assert torch.equal(corner[:, :, 2:, 2:], images[:, :, :-2, :-2])


def test_random_crop_flip_outputs_are_valid_crops_and_seeded():
    images = _known_batch(n=16, h=8, w=8)
    gen = torch.Generator().manual_seed(123)
    out = random_crop_flip(images, padding=2, generator=gen)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(len(images)):
        candidates = [
            _reference_crop_flip(images[i], t, l, f, 2)
            for t in range(5)
            for l in range(5)
            for f in (False, True)
        ]
        assert any(torch.equal(out[i], c) for c in candidates), i
    again = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(123))
    other = random_crop_flip(images, padding=2, generator=torch.Generator().manual_seed(124))
    assert torch.equal(out, again) and not torch.equal(out, other)
    # single image, no padding, no flip: identity
    assert torch.equal(random_crop_flip(images[0], padding=0, flip=False), images[0])
    assert RandomCropFlip(2)(images[0].float()).shape == (3, 8, 8)


def test_batch_augment_plugin_train_and_eval():
    images = _known_batch(n=32, h=8, w=8)
    targets = torch.arange(32)
    strategy = types.SimpleNamespace(mbatch=[images.clone(), targets, torch.zeros(32)])
    plugin = BatchAugmentPlugin(padding=2, seed=0)
    plugin.before_forward(strategy)
    augmented = strategy.mbatch[0]
    assert augmented.dtype == torch.uint8 and augmented.shape == images.shape
    assert not torch.equal(augmented, images)
    assert strategy.mbatch[1] is targets  # labels untouched
    expected = BatchAugmentPlugin(padding=2, seed=0).augment(images)
    assert torch.equal(augmented, expected)  # same seed, same augmentation
    # evaluation: the plugin does nothing (normalisation lives in the model)
    strategy.mbatch = [images.clone(), targets, torch.zeros(32)]
    plugin.before_eval_forward(strategy)
    plugin.before_eval_iteration(strategy)
    assert torch.equal(strategy.mbatch[0], images)



def test_batch_augment_plugin_augments_er_ace_memory_batch(fake_cifar_dir):
    """ER-ACE draws its memory batch apart from the mini-batch: on the fast path it is augmented too,
    as the per-sample transforms augment it on the classic path."""
    from avalanche.core import SupervisedPlugin
    from avalanche.training import ER_ACE

    class Recorder(SupervisedPlugin):  # after BatchAugmentPlugin: sees what the model gets
        def __init__(self):
            super().__init__()
            self.pairs = []

        def before_forward(self, strategy, **kwargs):
            if strategy.replay_loader is not None:
                self.pairs.append((raw.pop(), strategy.mb_buffer_x.clone()))

    class RawMemory(SupervisedPlugin):  # before BatchAugmentPlugin: the memory batch as drawn
        def before_forward(self, strategy, **kwargs):
            if strategy.replay_loader is not None:
                raw.append(strategy.mb_buffer_x.clone())

    raw, recorder = [], Recorder()
    torch.manual_seed(0)
    bench = split_cifar100(protocol="B50", n_steps=1, data_dir=fake_cifar_dir)
    model = make_model("small_cnn", 100, in_channels=3, widths=(8, 8, 16), input_norm="cifar100")
    strategy = ER_ACE(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), mem_size=40,
                      train_mb_size=16, train_epochs=1, eval_mb_size=64, evaluator=_evaluator(),
                      plugins=[RawMemory(), BatchAugmentPlugin(padding=4, seed=0), recorder])
    for exp in bench.train_stream:
        strategy.train(exp)
    assert recorder.pairs  # the second experience drew memory batches
    for drawn, seen in recorder.pairs:
        assert seen.dtype == torch.uint8 and seen.shape == drawn.shape
    assert any(not torch.equal(drawn, seen) for drawn, seen in recorder.pairs)
    # the mini-batch path alone (no memory loader) is left as it was
    strategy = types.SimpleNamespace(mbatch=[bench.train_stream[0].dataset[0][0][None]], replay_loader=None)
    BatchAugmentPlugin(padding=4, seed=0).before_forward(strategy)
    assert not hasattr(strategy, "mb_buffer_x")

def test_input_normalize_uint8_and_float():
    norm = InputNormalize(CIFAR100_MEAN, CIFAR100_STD)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), (x.float() / 255 - mean) / std)
    already = torch.randn(2, 3, 4, 4)
    assert norm(already) is already  # float input = already preprocessed
    # agrees with the classic per-sample eval transform
    pil = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    torch.testing.assert_close(classic_eval_transform()(pil), norm(x)[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"Unknown normalisation 'cifar10' \(did you mean 'cifar100'\?\); "
                                         r"valid: cifar100, imagenet, or \(mean, std\)\."):
        InputNormalize.named("cifar10")


def _evaluator():
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    return EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])


def _icarl_plugin(strategy):
    from avalanche.training.supervised.icarl import _ICaRLPlugin

    return next(p for p in strategy.plugins if isinstance(p, _ICaRLPlugin))


@pytest.mark.parametrize("fast_augment", [True, False])
def test_icarl_runs_on_split_cifar100(fake_cifar_dir, fast_augment):
    """Avalanche's iCaRL on both preprocessing paths (small CNN to stay fast)."""
    from avalanche.training import ICaRL

    torch.manual_seed(0)
    bench = split_cifar100(protocol="B50", n_steps=1, data_dir=fake_cifar_dir, fast_augment=fast_augment)
    feature_extractor, classifier = make_icarl_parts(
        "small_cnn", 100, in_channels=3, widths=(8, 8, 16), input_norm="cifar100"
    )
    params = list(feature_extractor.parameters()) + list(classifier.parameters())
    strategy = ICaRL(
        feature_extractor=feature_extractor,
        classifier=classifier,
        optimizer=torch.optim.SGD(params, lr=0.01),
        memory_size=100,
        buffer_transform=None if fast_augment else RandomCropFlip(4),
        fixed_memory=True,
        train_mb_size=32,
        train_epochs=1,
        eval_mb_size=64,
        plugins=[BatchAugmentPlugin()] if fast_augment else None,
        evaluator=_evaluator(),
    )
    for exp in bench.train_stream:
        strategy.train(exp)
    results = strategy.eval(bench.test_stream)
    # NME over the raw (uint8) or transformed test images, counted outside Avalanche's evaluation
    nme = stream_accuracy(icarl_nme_scores(strategy), bench.test_stream)
    assert results["Top1_Acc_Stream/eval_phase/test_stream/Task000"] == pytest.approx(nme, abs=1e-12)
    memory = _icarl_plugin(strategy).x_memory
    assert len(memory) == 100  # one exemplar set per class
    # fast path: exemplars stay raw uint8 (the model normalises them)
    assert memory[0].dtype == (torch.uint8 if fast_augment else torch.float32)


@pytest.mark.parametrize("strategy_name", ["naive", "replay", "lwf"])
def test_fast_path_with_incremental_head(fake_cifar_dir, strategy_name):
    from avalanche.training import LwF, Naive, Replay

    torch.manual_seed(0)
    bench = split_cifar100(protocol="B50", n_steps=2, data_dir=fake_cifar_dir)
    model = make_model(
        "small_cnn", 2, incremental=True, in_channels=3, widths=(8, 8, 16), input_norm="cifar100"
    )
    common = dict(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        criterion=torch.nn.CrossEntropyLoss(),
        train_mb_size=32,
        train_epochs=1,
        eval_mb_size=64,
        plugins=[BatchAugmentPlugin()],
        evaluator=_evaluator(),
    )
    if strategy_name == "naive":
        strategy = Naive(**common)
    elif strategy_name == "replay":
        strategy = Replay(mem_size=40, **common)
    else:
        strategy = LwF(alpha=1.0, temperature=2.0, **common)
    for exp in bench.train_stream:
        strategy.train(exp)
    strategy.eval(bench.test_stream)
    assert model.classifier.classifier.out_features == 100  # grown to max label + 1


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------


def test_split_digits_structure():
    bench = split_digits()
    assert bench.n_classes_per_exp == [2] * 5
    assert bench.classes_order == list(range(10))
    n_train = sum(len(e.dataset) for e in bench.train_stream)
    n_test = sum(len(e.dataset) for e in bench.test_stream)
    assert n_train + n_test == 1797
    assert abs(n_test / 1797 - 0.3) < 0.01
    x, y, _ = bench.train_stream[0].dataset[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y in (0, 1)
    # one of scikit-learn's digits, its pixels 0..16 scaled by 1/16, with its label
    from sklearn.datasets import load_digits

    digits = load_digits()
    same = ((digits.images / 16.0).astype(np.float32) == x[0].numpy()).reshape(len(digits.images), -1).all(1)
    assert same.any() and set(digits.target[same]) == {y}
    again = split_digits()
    assert list(again.train_stream[2].dataset.targets) == list(bench.train_stream[2].dataset.targets)
    b4 = split_digits(protocol="B4", n_steps=3, class_order="icarl")
    assert b4.n_classes_per_exp == [4, 2, 2, 2]
    assert b4.classes_order == get_class_order("icarl", n_classes=10)


def test_split_digits_bad_arguments():
    with pytest.raises(ValueError, match="cannot be split evenly into 3"):
        split_digits(3)
    with pytest.raises(ValueError, match="test_fraction"):
        split_digits(test_fraction=1.5)


def test_icarl_and_replay_on_digits():
    from avalanche.training import ICaRL, Replay

    torch.manual_seed(0)
    bench = split_digits()
    fe, cl = make_icarl_parts("small_cnn", 10)
    icarl = ICaRL(
        feature_extractor=fe,
        classifier=cl,
        optimizer=torch.optim.SGD(list(fe.parameters()) + list(cl.parameters()), lr=0.1),
        memory_size=100,
        buffer_transform=None,
        fixed_memory=True,
        train_mb_size=32,
        train_epochs=1,
        eval_mb_size=256,
        evaluator=_evaluator(),
    )
    model = make_model("small_cnn", 10)
    replay = Replay(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        criterion=torch.nn.CrossEntropyLoss(),
        mem_size=200,
        train_mb_size=32,
        train_epochs=4,
        eval_mb_size=256,
        evaluator=_evaluator(),
    )
    for strategy in (icarl, replay):
        for exp in bench.train_stream:
            strategy.train(exp)
        acc = strategy.eval(bench.test_stream)["Top1_Acc_Stream/eval_phase/test_stream/Task000"]
        assert acc > 0.5, type(strategy).__name__  # chance is 0.1; both reach ~0.8


# --------------------------------------------------------------------------
# ImageNet / Tiny-ImageNet from fake folders
# --------------------------------------------------------------------------


def _fake_imagenet(root: Path, wnids, n_train=2, n_val=1, size=8) -> Path:
    for label, wnid in enumerate(wnids):
        for i in range(n_train):
            _save_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", size, label)
        for i in range(n_val):
            _save_image(root / "val" / wnid / f"ILSVRC2012_val_{label:04d}{i}.JPEG", size, label)
    return root


def test_split_imagenet_custom_subset(tmp_path):
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361"]
    root = _fake_imagenet(tmp_path / "imagenet", wnids)
    (root / "train" / wnids[0] / "notes.txt").write_text("not an image")  # ignored
    bench = split_imagenet(root, subset=list(reversed(wnids)), n_experiences=2, class_order="natural")
    assert bench.n_classes_per_exp == [2, 2]
    assert _exp_classes(bench.train_stream) == [{0, 1}, {2, 3}]  # labels = sorted wnid index
    assert [len(e.dataset) for e in bench.train_stream] == [4, 4]
    assert [len(e.dataset) for e in bench.test_stream] == [2, 2]
    x, y, _ = bench.test_stream[1].dataset[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 2
    # default root: <data dir>/imagenet
    same = split_imagenet(subset=wnids, n_experiences=4, data_dir=tmp_path)
    assert same.n_classes_per_exp == [1] * 4


def test_split_imagenet_subset_seed1993(tmp_path):
    subset = imagenet_subset_wnids("seed1993")
    root = _fake_imagenet(tmp_path / "imagenet", subset, n_train=1, n_val=1, size=4)
    bench = split_imagenet_subset(root, protocol="B50", n_steps=5)
    assert bench.n_classes_per_exp == [50] + [10] * 5
    assert bench.classes_order == get_class_order("icarl")
    assert sum(len(e.dataset) for e in bench.train_stream) == 100


def test_imagenet_subset_definitions(tmp_path):
    all_wnids = imagenet_wnids()
    assert len(all_wnids) == 1000 and all_wnids == sorted(all_wnids)
    subset = imagenet_subset_wnids("seed1993")
    assert len(set(subset)) == 100 and subset == sorted(subset) and set(subset) <= set(all_wnids)
    # LUCIR's gen_imagenet_subset.py: np.random.seed(1993); np.random.choice(classes, 100, replace=False)
    state = np.random.get_state()
    try:
        np.random.seed(1993)
        lucir = np.random.choice(all_wnids, 100, replace=False).tolist()
    finally:
        np.random.set_state(state)
    assert subset == sorted(lucir)
    assert imagenet_subset_wnids("first100") == all_wnids[:100]
    listing = tmp_path / "subset.txt"
    listing.write_text("n01484850 2\nn01440764 0\n\n")
    assert imagenet_subset_wnids(listing) == ["n01440764", "n01484850"]
    with pytest.raises(ValueError, match="duplicate"):
        imagenet_subset_wnids(["n01440764", "n01440764"])
    with pytest.raises(ValueError, match="neither one of"):
        imagenet_subset_wnids("seed1994")


def test_imagenet_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        split_imagenet(tmp_path / "nothing", subset=["n01440764"], n_experiences=1)
    root = _fake_imagenet(tmp_path / "imagenet", ["n01440764"])
    with pytest.raises(FileNotFoundError, match="n01443537"):
        split_imagenet(root, subset=["n01440764", "n01443537"], n_experiences=1)


def _fake_tiny_imagenet(parent: Path, wnids, n_train=2, n_val=2) -> Path:
    root = parent / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for k, wnid in enumerate(wnids):
        for i in range(n_train):
            _save_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 64, 10 * k)
        for i in range(n_val):
            name = f"val_{k * n_val + i}.JPEG"
            _save_image(root / "val" / "images" / name, 64, 10 * k)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("fast_augment", [False, True])
def test_split_tiny_imagenet(tmp_path, fast_augment):
    wnids = ["n02124075", "n01443537", "n04067472", "n01629819"]  # not sorted on purpose
    _fake_tiny_imagenet(tmp_path, wnids)
    bench = split_tiny_imagenet(tmp_path, n_experiences=2, class_order="natural", fast_augment=fast_augment)
    assert bench.n_classes_per_exp == [2, 2]
    assert [len(e.dataset) for e in bench.train_stream] == [4, 4]
    assert [len(e.dataset) for e in bench.test_stream] == [4, 4]
    # labels follow the sorted wnids; pixel value 10*k encodes the wnids.txt position k
    sorted_wnids = sorted(wnids)
    for exp in bench.test_stream:
        for x, y, _ in exp.dataset.eval():
            k = wnids.index(sorted_wnids[y])
            if fast_augment:
                assert x.dtype == torch.uint8 and x.shape == (3, 64, 64)
                assert abs(int(x[0, 32, 32]) - 10 * k) <= 2  # JPEG rounding
            else:
                assert x.dtype == torch.float32 and x.shape == (3, 64, 64)


def test_tiny_imagenet_missing_and_failed_download(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="download=True"):
        split_tiny_imagenet(data_dir=tmp_path)

    import avalanche.benchmarks.datasets as av_datasets

    class OfflineTinyImagenet:
        def __init__(self, *args, **kwargs):
            raise OSError("no internet")

    monkeypatch.setattr(av_datasets, "TinyImagenet", OfflineTinyImagenet)
    with pytest.raises(FileNotFoundError, match="download failed: no internet"):
        split_tiny_imagenet(data_dir=tmp_path, download=True)


def test_tiny_imagenet_bad_annotation(tmp_path):
    root = _fake_tiny_imagenet(tmp_path, ["n01443537", "n01629819"], n_train=1, n_val=1)
    with open(root / "val" / "val_annotations.txt", "a") as fh:
        fh.write("val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="unknown wnid 'n99999999'"):
        split_tiny_imagenet(root, n_experiences=1)
