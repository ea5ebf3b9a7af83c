"""Weight Aligning (WA): the maths on a known head, the plugin's aligning and clipping, its errors, its state,
an end-to-end Avalanche run and a runner run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from bsce_avalanche import ConcatReplayPlugin, WeightAligningPlugin
from bsce_avalanche.runner import checkpoint, plain_state
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.identity import method_label
from bsce_avalanche.runner.experiment import run_experiment
from bsce_avalanche.weight_aligning import (align_weights_, clip_weights_, find_linear_head,
                                            weight_aligning_gamma)


def known_head() -> nn.Linear:
    """Rows 0, 1 (old) of norms 5 and 1, rows 2, 3 (new) of norms 10 and 2: gamma = 3 / 6 = 0.5."""
    head = nn.Linear(2, 5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, -1.0], [6.0, 8.0], [0.0, 2.0], [7.0, 7.0]]))
        head.bias.copy_(torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0]))
    return head


# ---------------------------------------------------------------- the maths
def test_gamma_and_the_aligned_head_follow_the_formula():
    head = known_head()
    assert weight_aligning_gamma(head.weight, [0, 1], [2, 3]) == pytest.approx(0.5)
    assert align_weights_(head, [0, 1], [2, 3]) == pytest.approx(0.5)
    expected = torch.tensor([[3.0, 4.0], [0.0, -1.0], [3.0, 4.0], [0.0, 1.0], [7.0, 7.0]])
    assert torch.equal(head.weight.detach(), expected)  # new rows halved; old rows and row 4 (neither) as they were
    assert torch.equal(head.bias.detach(), torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0]))  # the bias is not aligned
    norms = head.weight.detach().norm(dim=1)
    assert float(norms[[2, 3]].mean()) == pytest.approx(float(norms[[0, 1]].mean()))


def test_clipping_makes_the_weights_non_negative_and_leaves_the_bias():
    head = known_head()
    clip_weights_(head)
    assert torch.equal(head.weight.detach(), torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [0.0, 2.0], [7.0, 7.0]]))
    assert torch.equal(head.bias.detach(), torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0]))


@pytest.mark.parametrize("old, new, message", [
    ([], [2], "old_classes is empty"),
    ([0], [], "new_classes is empty"),
    ([0, 2], [2], r"share \[2\]"),
    ([0], [5], "outside the head's 5 rows"),
])
def test_gamma_errors(old, new, message):
    with pytest.raises(ValueError, match=message):
        weight_aligning_gamma(known_head().weight, old, new)


def test_zero_new_rows_leave_gamma_undefined():
    with pytest.raises(ValueError, match="all zero"):
        weight_aligning_gamma(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), [0], [1])


# ---------------------------------------------------------------- finding the head, arguments
class Net(nn.Module):
    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.features(x))


def test_the_head_is_found_in_an_incremental_classifier_a_linear_and_at_a_path():
    incremental = Net(IncrementalClassifier(16, initial_out_features=2))
    assert find_linear_head(incremental) is incremental.classifier.classifier
    plain = Net(nn.Linear(16, 6))
    assert find_linear_head(plain) is plain.classifier
    assert find_linear_head(plain, "features.0") is plain.features[0]
    assert find_linear_head(plain.classifier, "") is plain.classifier


def test_a_model_without_a_linear_head_is_a_clear_error():
    with pytest.raises(ValueError, match="has no module 'head'.*pass head="):
        find_linear_head(Net(nn.Linear(16, 6)), "head")
    with pytest.raises(ValueError, match="is a Sequential, not an nn.Linear"):
        find_linear_head(Net(nn.Linear(16, 6)), "features")
    strategy = SimpleNamespace(model=Net(nn.Linear(16, 6)), plugins=[])
    plugin = WeightAligningPlugin(head="fc")
    strategy.plugins.append(plugin)
    with pytest.raises(ValueError, match="has no module 'fc'"):
        plugin.before_training(strategy)


@pytest.mark.parametrize("kwargs, message", [
    (dict(head=None), "head must be the attribute path"),
    (dict(clip=1), "clip must be True or False"),
])
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightAligningPlugin(**kwargs)


def test_a_plugin_listed_twice_is_refused():
    plugin = WeightAligningPlugin()
    with pytest.raises(ValueError, match="listed 2 times"):
        plugin.before_training(SimpleNamespace(model=Net(nn.Linear(16, 6)), plugins=[plugin, plugin]))


# ---------------------------------------------------------------- the plugin's callbacks
def _after_experience(plugin, model, classes):
    plugin.after_training_exp(SimpleNamespace(model=model, experience=SimpleNamespace(
        classes_in_this_experience=classes)))


def test_the_first_experience_is_not_aligned_and_later_ones_are():
    model = Net(known_head())
    before = model.classifier.weight.detach().clone()
    plugin = WeightAligningPlugin()
    _after_experience(plugin, model, [1, 0])
    assert torch.equal(model.classifier.weight.detach(), before)  # no old classes: nothing to align
    assert (plugin.gamma_history, plugin.seen_classes) == ([None], [0, 1])
    _after_experience(plugin, model, [2, 3])
    assert plugin.gamma_history[1] == pytest.approx(0.5) and plugin.seen_classes == [0, 1, 2, 3]
    assert torch.equal(model.classifier.weight[2:4].detach(), torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    _after_experience(plugin, model, [1, 2])  # only seen classes (a repeated experience): nothing new to align
    assert plugin.gamma_history[2] is None


def test_clipping_follows_every_optimizer_step_and_can_be_off():
    model = Net(known_head())
    strategy = SimpleNamespace(model=model)
    WeightAligningPlugin(clip=False).after_update(strategy)
    assert (model.classifier.weight < 0).any()
    WeightAligningPlugin().after_update(strategy)
    assert (model.classifier.weight >= 0).all() and (model.classifier.bias < 0).any()


def test_state_round_trips_and_is_plain_for_checkpoints():
    plugin = WeightAligningPlugin()
    plugin.seen_classes, plugin.gamma_history = [0, 1, 2, 3], [None, 0.5]
    other = WeightAligningPlugin()
    other.load_state_dict(plugin.state_dict())
    assert (other.seen_classes, other.gamma_history) == ([0, 1, 2, 3], [None, 0.5])
    table = plain_state.encode(vars(plugin), checkpoint.ALLOWED)  # what the runner's checkpoints save
    assert plain_state.decode(table, checkpoint.ALLOWED) == vars(plugin)


# ---------------------------------------------------------------- end to end
def test_naive_with_concat_replay_ends_each_experience_aligned(blobs_benchmark):
    torch.manual_seed(0)
    model = Net(IncrementalClassifier(16, initial_out_features=2))
    wa = WeightAligningPlugin()
    strategy = Naive(model=model, optimizer=SGD(model.parameters(), lr=0.1, momentum=0.9),
                     criterion=CrossEntropyLoss(), train_mb_size=32, train_epochs=2, eval_mb_size=64,
                     plugins=[ConcatReplayPlugin(20), wa], evaluator=EvaluationPlugin())
    seen = []
    for experience in blobs_benchmark.train_stream:
        strategy.train(experience)
        head = model.classifier.classifier
        assert (head.weight >= 0).all()  # clipped after every step, the first experience's included
        new = [c for c in experience.classes_in_this_experience if c not in seen]
        if seen:  # the new classes' mean norm is the old classes' (aligned after clipping: still >= 0)
            norms = head.weight.detach().norm(dim=1)
            assert norms[new].mean() == pytest.approx(float(norms[seen].mean()), rel=1e-5)
        seen += new
    assert wa.gamma_history[0] is None and all(g > 0 for g in wa.gamma_history[1:])
    assert len(wa.gamma_history) == 3 and wa.seen_classes == list(range(6))


# ---------------------------------------------------------------- the runner
def test_the_method_label_shows_wa_where_it_applies():
    assert method_label(dict(strategy="replay", loss="ce", replay="concat", weight_aligning=True)) == \
        "replay-ce-concat-wa"
    assert method_label(dict(strategy="lwf", loss="ce", lwf_memory=True, replay="concat", weight_aligning=True)) == \
        "lwf+mem-ce-concat-wa"
    assert method_label(dict(strategy="naive", loss="ce", weight_aligning=True)) == "naive-ce"  # not its key


def test_replay_with_weight_aligning_runs_through_the_runner(tmp_path):
    cfg = ExperimentConfig(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn",
                           epochs=1, batch_size=32, memory_size=30, progress=False, strategy="replay", loss="ce",
                           replay="concat", weight_aligning=True, wandb=False, first_experience_cache=False,
                           output_dir=str(tmp_path))
    results = run_experiment(cfg)
    assert results["finished"] and cfg.run_name.startswith("replay-ce-concat-wa-seed0-")
    gamma = results["weight_aligning_gamma"]
    assert len(gamma) == 2 and gamma[0] is None and gamma[1] > 0


def test_a_resumed_run_keeps_its_seen_classes_and_gammas(tmp_path, monkeypatch):
    from conftest import Crash, crash_during_eval_of_step

    cfg = ExperimentConfig(benchmark="digits", protocol="B4", n_steps=3, class_order="natural", model="small_cnn",
                           epochs=1, batch_size=32, memory_size=30, progress=False, strategy="replay", loss="ce",
                           replay="concat", weight_aligning=True, wandb=False, first_experience_cache=False)
    whole = run_experiment(cfg, tmp_path / "whole")
    with monkeypatch.context() as m:
        crash_during_eval_of_step(m, step=2)
        with pytest.raises(Crash):
            run_experiment(cfg, tmp_path / "resumed")
    resumed = run_experiment(cfg, tmp_path / "resumed", resume=True)
    assert resumed["weight_aligning_gamma"] == whole["weight_aligning_gamma"]
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
