"""One first-experience model per key (runner/first_experience.py): what the key holds, the
cache files, and that a run started from the cache gives the numbers of one that trained."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from bsce_avalanche.losses import ZERO_PRIOR_OFFSET, log_prior_adjustment
from bsce_avalanche.runner import experiment
from bsce_avalanche.runner.checkpoint import benchmark_digest
from bsce_avalanche.runner.compare import compare
from bsce_avalanche.runner.compute import COMPUTE_KEYS
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.schema import CHOICES
from bsce_avalanche.runner.experiment import run_experiment
from bsce_avalanche.runner.first_experience import (
    FirstExperienceError,
    _read,
    first_experience_key,
    key_digest,
)

from conftest import Crash, crash_during_eval_of_step, write_fake_cifar
from naming import results_in

UNIFORM = torch.tensor([0.0, 50.0, 0.0, 50.0])  # a B0 first experience: classes 1 and 3, balanced
SKEWED = torch.tensor([0.0, 50.0, 0.0, 40.0])
# digits with a balanced first experience (classes 1 and 4: 127 training images each), then 8 classes
DIGITS = dict(benchmark="digits", protocol="B2", n_steps=1, class_order=[1, 4, 0, 2, 3, 5, 6, 7, 8, 9],
              model="small_cnn", epochs=2, lr_milestones=[1], batch_size=32, memory_size=30, progress=False,
              wandb=False)


def digest(counts=UNIFORM, **overrides) -> str:
    cfg = ExperimentConfig(**{"benchmark": "digits", "model": "small_cnn", **overrides})
    return key_digest(first_experience_key(cfg, counts, 4))


# ---------------------------------------------------------------- the key
def test_methods_that_train_the_first_experience_alike_share_its_key():
    plain = digest(strategy="replay", loss="ce")
    for overrides in (
        dict(strategy="replay", loss="bsce"),  # uniform prior: BSCE is CE
        dict(strategy="replay", loss="bsce", tau=2.0, prior="dataset"),
        dict(strategy="naive", loss="ce"),
        dict(strategy="lwf", loss="bsce", lwf_alpha=3.0),
        dict(strategy="lwf", loss="ce", lwf_memory=True, replay="concat", memory_selection="herding"),
        dict(strategy="replay", loss="ce", replay="concat", memory_size=500),
        dict(strategy="replay", loss="bsce", prior="batch", tau=0.0),  # tau 0: a zero adjustment
        dict(strategy="naive", loss="ce", weight_aligning=True),  # a key of replay and lwf only: ignored
        dict(strategy="er_ace", loss="ce"),  # its memory is filled after training: an empty one is Naive's loop
        dict(strategy="er_ace", loss="ce", batch_size_mem=10),
    ):
        assert digest(**overrides) == plain, overrides
    assert digest(strategy="icarl", loss="bsce", tau=0.5, icarl_eval="head") == digest(strategy="icarl", loss="bsce")
    assert digest(strategy="bic", loss="bsce") == digest(strategy="bic", loss="ce")
    assert digest(SKEWED, strategy="replay", loss="bsce", prior="dataset") == \
        digest(SKEWED, strategy="lwf", loss="bsce")  # the same counts, whatever the prior mode


def test_methods_that_train_the_first_experience_differently_do_not():
    keys = {
        "plain CE": digest(strategy="replay", loss="ce"),
        "iCaRL's sigmoid BCE": digest(strategy="icarl", loss="ce"),
        "iCaRL's extra forward pass": digest(strategy="icarl", loss="bsce"),
        "BSCE, a skewed prior": digest(SKEWED, strategy="replay", loss="bsce"),
        "BSCE, another tau": digest(SKEWED, strategy="replay", loss="bsce", tau=0.5),
        "BSCE, counted per mini-batch": digest(None, strategy="replay", loss="bsce", prior="batch"),
        "BSCE, a fixed head (unseen classes not masked)": digest(strategy="replay", loss="bsce", incremental_head=False),
        "BiC's validation split": digest(strategy="bic", loss="ce"),
        "BiC's split of another memory": digest(strategy="bic", loss="ce", memory_size=400),
        "GDumb's training on its memory": digest(strategy="gdumb", loss="ce"),
        "another seed": digest(strategy="replay", loss="ce", seed=1),
        "WA's weight clipping": digest(strategy="replay", loss="ce", weight_aligning=True),
    }
    assert digest(strategy="lwf", loss="ce", weight_aligning=True) == keys["WA's weight clipping"]
    assert len(set(keys.values())) == len(keys), keys


def _another_value(name, value):
    if name in CHOICES:
        return next(c for c in CHOICES[name] if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, 1]
    if isinstance(value, dict):
        return {**value, "seed": [1]}
    return 1  # None


#: Written by hand, not read off the code it tests: the keys whose change leaves a plain Replay-CE run's first
#: experience as it is (they act from the second experience on, on the evaluation, or not on the numbers at
#: all). Marking a key that changes the first experience (lr, epochs, batch_size, ...) as ``later`` or ``run``
#: fails the test below; so does leaving a key added later out of the key without adding it here.
DOES_NOT_CHANGE_THE_FIRST_EXPERIENCE = {
    # bookkeeping and environment
    "name", "data_dir", "download", "output_dir", "progress", "checkpoint", "first_experience_cache", "wandb",
    "wandb_project", "wandb_entity", "wandb_mode", "grid", "recipes", "recipe", "device", "threads",
    "eval_batch_size", "ncm_diagnostic",
    # the memory and what uses it: empty during the first experience (Replay's; BiC's and GDumb's: below)
    "memory_size", "memory_per_class", "replay", "memory_selection", "batch_size_mem", "posthoc_window",
    # other strategies' keys, and settings of the later steps or the evaluation
    "lwf_alpha", "lwf_temperature", "lwf_memory", "icarl_eval", "icarl_distillation_weight", "bic_stage2_epochs",
    "bic_stage2_lr", "bic_val_fraction",
    # BSCE's settings with loss: ce (no adjustment is built)
    "tau", "prior", "prior_window",
}
#: ... and for BiC, whose validation split is made from its memory before the first experience trains (and
#: weight_aligning, a key of replay and lwf only, does nothing)
BIC_FIRST_EXPERIENCE_KEYS = {"memory_size", "memory_per_class", "bic_val_fraction"}
BIC_UNCHANGED = (DOES_NOT_CHANGE_THE_FIRST_EXPERIENCE - BIC_FIRST_EXPERIENCE_KEYS) | {"weight_aligning"}


@pytest.mark.parametrize("strategy", ["replay", "bic"])
@pytest.mark.parametrize("name", [f.name for f in fields(ExperimentConfig) if f.name not in ("strategy", "loss")])
def test_every_config_key_is_in_the_key_or_cannot_change_the_first_experience(name, strategy):
    """Strategy and loss: the tests above. The expected answer is the hand-written list, not the code's EFFECT."""
    cfg = ExperimentConfig(benchmark="digits", model="small_cnn", strategy=strategy, loss="ce")
    changed = copy.copy(cfg)
    setattr(changed, name, _another_value(name, getattr(cfg, name)))  # not validated: only the key reads it
    if name == "model":  # in the key as the network it resolves to
        changed.model = "resnet8"
        assert digest(model="auto") == digest(model="small_cnn")
    if name == "fast_augment":  # in the key as resolved: digits does not augment by default
        assert digest(fast_augment=None) == digest(fast_augment=False)
        changed.fast_augment = True
    unchanged = name in (BIC_UNCHANGED if strategy == "bic" else DOES_NOT_CHANGE_THE_FIRST_EXPERIENCE)
    assert (first_experience_key(changed, UNIFORM, 4) == first_experience_key(cfg, UNIFORM, 4)) is unchanged


def test_bsce_settings_are_in_the_key_as_the_loss_they_train_with():
    base = dict(strategy="replay", loss="bsce")
    assert digest(SKEWED, **base, tau=0.5) != digest(SKEWED, **base)
    assert digest(SKEWED, **base, prior="window", prior_window=2) != digest(SKEWED, **base, prior="window", prior_window=1)


def test_a_uniform_prior_trains_exactly_as_cross_entropy():
    """Its log is a constant: zeros are added (not log(1/2)), so loss and gradients are CE's bit for bit."""
    adjustment = log_prior_adjustment(UNIFORM, tau=1.5, num_classes=4)
    assert adjustment[[1, 3]].eq(0).all() and adjustment[[0, 2]].eq(ZERO_PRIOR_OFFSET).all()
    logits = torch.randn(8, 4, requires_grad=True)
    masked = logits.masked_fill(torch.tensor([True, False, True, False]), -1000.0)  # IncrementalClassifier
    targets = torch.tensor([1, 3] * 4)
    ce, bsce = F.cross_entropy(masked, targets), F.cross_entropy(masked + adjustment, targets)
    assert torch.equal(ce, bsce)
    assert torch.equal(*(torch.autograd.grad(loss, logits, retain_graph=True)[0] for loss in (ce, bsce)))


def test_an_unusable_cache_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "seed0-0123.pt"
    assert _read(path, {"a": 1}) is None  # absent: train
    path.write_bytes(b"half a file")
    with pytest.raises(FirstExperienceError, match=re.escape(str(path)) + ".* cannot be read .*delete it"):
        _read(path, {"a": 1})
    torch.save({"key": {"a": 2}}, path)
    with pytest.raises(FirstExperienceError, match=re.escape(str(path)) + " was not written for this run"):
        _read(path, {"a": 1})


# ---------------------------------------------------------------- runs
@pytest.mark.slow
def test_cached_start_gives_the_numbers_of_an_uncached_run(tmp_path):
    """A: no cache; B fills it; C (BSCE) starts from B's first experience: A == B, C's step 0 is B's,
    and C equals its own uncached run; comparison.md reports the step-0 accuracy once."""
    ce = ExperimentConfig(**DIGITS, strategy="replay", loss="ce")
    bsce = ce.replace(loss="bsce", replay="concat")
    a = run_experiment(ce.replace(first_experience_cache=False), tmp_path / "a" / ce.run_name)
    b = run_experiment(ce, tmp_path / "grid" / ce.run_name)
    c = run_experiment(bsce, tmp_path / "grid" / bsce.run_name)
    c_alone = run_experiment(bsce.replace(first_experience_cache=False), tmp_path / "a" / bsce.run_name)
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert c["accuracy_matrix"] == c_alone["accuracy_matrix"] and c["priors"] == c_alone["priors"]
    assert c["accuracy_matrix"][0] == b["accuracy_matrix"][0]  # step 0: the same network
    assert c["accuracy_matrix"][1] != b["accuracy_matrix"][1]
    assert (a["first_experience"]["cached"], b["first_experience"]["cached"], c["first_experience"]["cached"]) == \
        (False, False, True)
    assert a["first_experience"]["file"] is None and c["first_experience"]["file"] == b["first_experience"]["file"]
    assert json.loads((tmp_path / "grid" / bsce.run_name / "results.json").read_text())["first_experience"]["cached"]
    text = compare([tmp_path / "grid"], tmp_path / "grid").read_text()
    row = next(line for line in text.split("## First experience")[1].splitlines() if line.startswith("| 0 |"))
    assert "replay-bsce-concat, replay-ce" in row and f"{100 * b['accuracy_matrix'][0][0]:.1f}" in row


STRATEGY_RUNS = {
    "replay-ce": dict(strategy="replay", loss="ce"),
    "replay-bsce-concat-herding": dict(strategy="replay", loss="bsce", replay="concat", memory_selection="herding"),
    "replay-bsce-batch-prior": dict(strategy="replay", loss="bsce", prior="batch"),  # its counts are restored
    "lwf+mem-bsce": dict(strategy="lwf", loss="bsce", lwf_memory=True),
    "icarl-ce": dict(strategy="icarl", loss="ce"),
    "icarl-bsce": dict(strategy="icarl", loss="bsce"),
    "bic-bsce": dict(strategy="bic", loss="bsce", bic_stage2_epochs=2),
    "er_ace-ce": dict(strategy="er_ace", loss="ce"),
    "gdumb-ce": dict(strategy="gdumb", loss="ce"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STRATEGY_RUNS))
def test_every_strategy_started_from_the_cache_matches_its_training(tmp_path, name):
    cfg = ExperimentConfig(**DIGITS, **STRATEGY_RUNS[name])
    trained = run_experiment(cfg.replace(first_experience_cache=False), tmp_path / "trained")
    filled = run_experiment(cfg, tmp_path / "filled")
    loaded = run_experiment(cfg, tmp_path / "loaded")
    assert not filled["first_experience"]["cached"] and loaded["first_experience"]["cached"]
    for key in ("accuracy_matrix", "priors", "new_class_prediction_share", *COMPUTE_KEYS):
        assert trained[key] == filled[key] == loaded[key], key
    if cfg.strategy == "icarl":
        assert trained["icarl_head"]["accuracy_matrix"] == loaded["icarl_head"]["accuracy_matrix"]


@pytest.mark.slow
def test_runs_with_one_key_train_the_same_first_experience(tmp_path):
    """Trained separately (each its own cache folder), they save the same state, bit for bit."""
    runs = [dict(strategy="replay", loss="ce"), dict(strategy="replay", loss="bsce", tau=2.0),
            dict(strategy="lwf", loss="bsce", lwf_memory=True, replay="concat"), dict(strategy="naive", loss="ce")]
    states = []
    for i, overrides in enumerate(runs):
        cfg = ExperimentConfig(**DIGITS, **overrides, first_experience_cache=str(tmp_path / f"cache{i}"))
        result = run_experiment(cfg, tmp_path / f"run{i}")
        assert not result["first_experience"]["cached"]
        states.append(torch.load(result["first_experience"]["file"], weights_only=True))
    for state in states[1:]:
        assert state["key"] == states[0]["key"]
        for part in ("model", "optimizer"):
            flat = lambda s: {k: v for k, v in s[part].items() if k != "state"} if part == "optimizer" else s[part]
            assert all(torch.equal(v, flat(states[0])[k]) if torch.is_tensor(v) else v == flat(states[0])[k]
                       for k, v in flat(state).items()), part
        momentum = lambda s: [v["momentum_buffer"] for v in s["optimizer"]["state"].values()]
        assert all(torch.equal(x, y) for x, y in zip(momentum(state), momentum(states[0])))
        assert torch.equal(state["rng"]["torch"], states[0]["rng"]["torch"])


@pytest.mark.slow
def test_a_run_resumed_past_its_first_step_needs_no_cache(tmp_path, monkeypatch):
    cfg = ExperimentConfig(**DIGITS, strategy="replay", loss="bsce")
    reference = run_experiment(cfg.replace(first_experience_cache=False), tmp_path / "reference")
    with monkeypatch.context() as m:
        crash_during_eval_of_step(m, step=1)
        with pytest.raises(Crash):
            run_experiment(cfg, tmp_path / "grid" / "run")
    for path in (tmp_path / "grid" / "first_experience").iterdir():
        path.unlink()
    resumed = run_experiment(cfg, tmp_path / "grid" / "run", resume=True)
    assert resumed["accuracy_matrix"] == reference["accuracy_matrix"]
    assert resumed["first_experience"]["cached"] is False


@pytest.mark.slow
def test_runs_of_one_key_started_at_once_train_it_once(tmp_path):
    """--jobs 2 over CE and BSCE: one run trains the first experience, the other waits and loads it."""
    from bsce_avalanche.runner.cli import run_configs

    cfg = ExperimentConfig(**DIGITS, strategy="replay", output_dir=str(tmp_path), grid={"loss": ["ce", "bsce"]})
    run_configs(cfg, jobs=2)
    runs = list(results_in(tmp_path).values())
    assert sorted(r["first_experience"]["cached"] for r in runs) == [False, True]
    assert runs[0]["accuracy_matrix"][0] == runs[1]["accuracy_matrix"][0]


# ---------------------------------------------------------------- the data in the key
TINY_CIFAR = dict(benchmark="cifar100", protocol="B50", n_steps=1, model="resnet8", width=4, epochs=1, batch_size=50,
                  strategy="naive", loss="ce", progress=False, wandb=False)


def test_the_data_digest_follows_the_data_not_its_path(tmp_path):
    cfg = ExperimentConfig(**TINY_CIFAR, data_dir=str(tmp_path))
    write_fake_cifar(tmp_path, seed=0)
    old = benchmark_digest(experiment.build_benchmark(cfg))
    assert benchmark_digest(experiment.build_benchmark(cfg)) == old  # same data: same digest
    write_fake_cifar(tmp_path, seed=1)  # replaced in place: same path, other images
    assert benchmark_digest(experiment.build_benchmark(cfg)) != old
    keys = [first_experience_key(ExperimentConfig(**DIGITS), UNIFORM, 4, data=d) for d in ("a", "b")]
    assert key_digest(keys[0]) != key_digest(keys[1])


def test_other_cpu_kernels_are_another_key(monkeypatch):
    # measured: one key and seed trained another first step with other kernels (RESULTS.md §4d)
    digests = set()
    for capability in ("AVX2", "AVX512", "DEFAULT"):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        key = first_experience_key(ExperimentConfig(**DIGITS), UNIFORM, 4)
        assert key["environment"]["cpu_capability"] == capability
        digests.add(key_digest(key))
    assert len(digests) == 3


@pytest.mark.slow
def test_a_data_file_replaced_in_place_trains_its_first_experience_again(tmp_path):
    cfg = ExperimentConfig(**TINY_CIFAR, data_dir=str(tmp_path))
    out = tmp_path / "runs" / cfg.run_name
    write_fake_cifar(tmp_path, seed=0)
    old = run_experiment(cfg, out)["first_experience"]
    write_fake_cifar(tmp_path, seed=1)
    new = run_experiment(cfg, out, overwrite=True)["first_experience"]
    assert not new["cached"] and new["key"] != old["key"]
    write_fake_cifar(tmp_path, seed=0)  # the old data again: its cached first experience
    assert run_experiment(cfg, out, overwrite=True)["first_experience"] == {**old, "cached": True}
