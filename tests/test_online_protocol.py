"""The runner's online protocol (``online: true``, ``memory_selection: reservoir``): each stream sample trained on
once, a reservoir memory updated after every mini-batch with the samples just trained on, ER-ACE's buffer never
holding the mini-batch it trains on, evaluation once per task."""

from collections import Counter

import pytest
import torch
from avalanche.models import IncrementalClassifier
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ReservoirSamplingBuffer

from bsce_avalanche.runner import experiment
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.identity import method_label
from bsce_avalanche.runner.online import online_experiences, split_seed
from bsce_avalanche.runner.strategies import build_strategy

from conftest import make_blobs_benchmark
from test_plugin import quiet_evaluator

ONLINE = dict(benchmark="digits", n_steps=2, class_order="natural", model="small_cnn", memory_size=100, epochs=1,
              batch_size=10, batch_size_mem=10, lr=0.1, momentum=0.0, wandb=False, progress=False, threads=1,
              online=True, memory_selection="reservoir", checkpoint=True)


def _key(x):
    return tuple(round(float(v), 5) for v in x.flatten())


def _keys(dataset):
    return [_key(dataset[i][0]) for i in range(len(dataset))]


class _Spy(SupervisedPlugin):
    """Records, per mini-batch experience, the stream samples, the memory before and after, and every training row."""

    def __init__(self):
        super().__init__()
        self.trained, self.rows_current, self.violations, self.sizes = [], Counter(), [], []

    def before_training_exp(self, strategy, **kwargs):
        self.current = Counter(_keys(strategy.experience.dataset))
        memory = set(_keys(self._policy(strategy).buffer))
        if memory & set(self.current):  # the memory holds a sample of the mini-batch before training on it
            self.violations.append("current sample in memory before training")
        if not memory <= set(self.trained):
            self.violations.append("memory holds a sample not trained on")

    def after_training_iteration(self, strategy, **kwargs):
        rows = [_key(x) for x in strategy.mb_x]
        if getattr(strategy, "replay_loader", None) is not None:  # ER-ACE's memory batch
            rows += [_key(x) for x in strategy.mb_buffer_x]
        for r in rows:
            if r in self.current:
                self.rows_current[r] += 1
            elif r not in set(self.trained):
                self.violations.append("a row neither current nor trained")

    def after_training_exp(self, strategy, **kwargs):  # before the memory's update (plugins after this one)
        self.trained += list(self.current.elements())

    @staticmethod
    def _policy(strategy):
        return getattr(strategy, "storage_policy", None) or next(p.storage_policy for p in strategy.plugins
                                                                  if hasattr(p, "storage_policy"))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.feature_extractor = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU())
        self.classifier = IncrementalClassifier(32, initial_out_features=2)

    def forward(self, x):
        return self.classifier(self.feature_extractor(x))


@pytest.mark.parametrize("strategy", ["replay", "er_ace"])
def test_reservoir_memory_per_minibatch(strategy):
    torch.manual_seed(0)
    bench = make_blobs_benchmark()
    cfg = ExperimentConfig(**{**ONLINE, "strategy": strategy, "loss": "ce", "memory_size": 30})
    spy = _Spy()
    s = build_strategy(cfg, _Model(), 6, torch.device("cpu"), [spy], quiet_evaluator)
    policy = _Spy._policy(s)
    assert isinstance(policy, ReservoirSamplingBuffer) and policy.max_size == 30
    stream, n_minis = [], 0
    for t, experience in enumerate(bench.train_stream):
        stream += _keys(experience.dataset)
        for mini in online_experiences(experience, cfg.batch_size, split_seed(cfg.seed, t)):
            assert len(mini.dataset) <= 10
            s.train(mini)
            n_minis += 1
            memory = _keys(policy.buffer)
            assert len(memory) == min(30, len(spy.trained))  # a reservoir: full as soon as it can be
            assert set(memory) <= set(spy.trained)  # only samples already trained on
            assert len(set(memory)) == len(memory)
        # the head grew with the classes the stream showed, task by task
        assert int(s.model.classifier.active_units.sum()) == 2 * (t + 1)
    assert not spy.violations, spy.violations[:3]
    assert n_minis == sum((len(e.dataset) + 9) // 10 for e in bench.train_stream)
    assert spy.rows_current == Counter(stream)  # every stream sample trained on exactly once


def test_online_run_evaluates_once_per_task(tmp_path, monkeypatch):
    calls = []
    evaluate = experiment._evaluate
    monkeypatch.setattr(experiment, "_evaluate", lambda *a, **k: calls.append(a[4]) or evaluate(*a, **k))
    cfg = ExperimentConfig(**ONLINE, strategy="replay", loss="ce", posthoc_window=63)
    result = experiment.run_experiment(cfg, tmp_path / "er")
    assert calls == [0, 1] and len(result["steps"]) == 2
    n = [(len(e.dataset) + 9) // 10 for e in experiment.build_benchmark(cfg).train_stream]
    assert result["gradient_steps"] == n  # one step per stream mini-batch, counted over the task
    assert result["images_seen"][0] == 10 + 20 * (n[0] - 1)  # replay from the second mini-batch on
    assert result["samples_stored"] == [100, 100]
    assert "first_experience" not in result and not (tmp_path / "first_experience").exists()
    assert result["posthoc"]["prior"] == "window" and result["posthoc"]["prior_window"] == 63
    assert len(result["posthoc"]["steps"]) == 2


def test_online_run_resumes_between_tasks(tmp_path, monkeypatch):
    cfg = ExperimentConfig(**ONLINE, strategy="replay", loss="bsce", prior="window", prior_window=1)
    whole = experiment.run_experiment(cfg, tmp_path / "whole")
    evaluate = experiment._evaluate

    def interrupted(*args, **kwargs):
        if args[4] == 1:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(experiment, "_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(cfg, tmp_path / "cut")
    monkeypatch.setattr(experiment, "_evaluate", evaluate)
    resumed = experiment.run_experiment(cfg, tmp_path / "cut", resume=True)  # from the reservoir after task 0
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]
    assert resumed["samples_stored"] == whole["samples_stored"]


def test_online_names_and_checks():
    old = ExperimentConfig(**{**ONLINE, "online": False, "memory_selection": "random"}, strategy="replay", loss="ce")
    new = ExperimentConfig(**ONLINE, strategy="replay", loss="ce")
    assert method_label(vars(new)) == "replay-ce-reservoir-online" and old.run_name != new.run_name
    assert method_label(vars(ExperimentConfig(**ONLINE, strategy="er_ace", loss="ce"))) == "er_ace-ce-reservoir-online"
    for bad, match in [(dict(epochs=2), "epochs: 1"), (dict(strategy="icarl", memory_selection="random"), "online: true applies"),
                       (dict(strategy="replay", replay="concat"), "half_batch"),
                       (dict(strategy="er_ace", memory_selection="herding"), "er_ace's memory"),
                       (dict(strategy="naive", online=False), "reservoir applies")]:
        with pytest.raises(ConfigError, match=match):
            ExperimentConfig(**{**ONLINE, "loss": "ce", "batch_size_mem": None, **bad})
