"""Post-hoc logit adjustment: the formula, the plugin (training untouched, evaluation adjusted), and the
runner's post-hoc figures from the same evaluation pass."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from avalanche.training import Naive
from avalanche.training.plugins import SupervisedPlugin

from bsce_avalanche import (BalancedSoftmaxPlugin, ConcatReplayPlugin, LogitAdjustmentPlugin, logit_adjusted,
                            posthoc_adjustment)
from bsce_avalanche.catalog import ZERO_PRIOR_OFFSET
from bsce_avalanche.runner.config import ExperimentConfig
from bsce_avalanche.runner.experiment import run_experiment


def test_posthoc_adjustment_subtracts_tau_log_prior_and_removes_absent_classes():
    counts = [30.0, 10.0, 0.0, 60.0]
    adj = posthoc_adjustment(counts, tau=0.5, dtype=torch.float64)
    assert adj[[0, 1, 3]].tolist() == pytest.approx([-0.5 * math.log(0.3), -0.5 * math.log(0.1), -0.5 * math.log(0.6)])
    assert adj[2] == ZERO_PRIOR_OFFSET
    logits = torch.tensor([[2.0, 1.0, 50.0, 2.5]])  # class 2 would win, but has no training sample
    adjusted = logit_adjusted(logits, counts, tau=1.0)
    expected = [2.0 - math.log(0.3), 1.0 - math.log(0.1), 2.5 - math.log(0.6)]
    assert adjusted[0, [0, 1, 3]].tolist() == pytest.approx(expected)
    assert adjusted.argmax(1).item() == 1  # the rare class wins after the adjustment; plain argmax: class 2
    # tau 0: the plain logits of the present classes, absent ones still never predicted
    assert logit_adjusted(logits, counts, tau=0.0)[0, [0, 1, 3]].tolist() == [2.0, 1.0, 2.5]
    # padded to the logits' width: units beyond the counts are absent
    assert posthoc_adjustment([1.0, 3.0], num_classes=3)[2] == ZERO_PRIOR_OFFSET


def _strategy(benchmark, plugins, seed=0):
    torch.manual_seed(seed)
    model = _mlp()
    return Naive(model=model, optimizer=SGD(model.parameters(), lr=0.1, momentum=0.9), criterion=CrossEntropyLoss(),
                 train_mb_size=16, train_epochs=2, eval_mb_size=64, plugins=plugins)


def _mlp():
    from avalanche.models import IncrementalClassifier

    body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
    return torch.nn.Sequential(body, IncrementalClassifier(16, initial_out_features=2))


class _Outputs(SupervisedPlugin):
    """The outputs every later consumer sees at evaluation."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def after_eval_iteration(self, strategy, **kwargs):
        self.outputs.append(strategy.mb_output.detach().clone())


def test_plugin_leaves_training_untouched_and_adjusts_every_evaluation_output(blobs_benchmark):
    plain_outputs, adjusted_outputs = _Outputs(), _Outputs()
    plain = _strategy(blobs_benchmark, [ConcatReplayPlugin(20), plain_outputs])
    la = LogitAdjustmentPlugin()
    adjusted = _strategy(blobs_benchmark, [ConcatReplayPlugin(20), la, adjusted_outputs])
    for experience in blobs_benchmark.train_stream[:2]:
        torch.manual_seed(1)
        plain.train(experience)
        torch.manual_seed(1)
        adjusted.train(experience)
    for a, b in zip(plain.model.state_dict().values(), adjusted.model.state_dict().values()):
        assert torch.equal(a, b)  # the same weights, bit for bit
    plain.eval(blobs_benchmark.test_stream[:2])
    adjusted.eval(blobs_benchmark.test_stream[:2])
    # the prior of the last experience: its 120 samples of classes 2, 3 plus the 20 stored of classes 0, 1
    counts = torch.zeros(6, dtype=torch.float64)
    for c, n in ((0, 10), (1, 10), (2, 60), (3, 60)):
        counts[c] = n
    assert la.prior_history[-1] == pytest.approx((counts[:4] / counts.sum()).tolist())
    for p, q in zip(plain_outputs.outputs, adjusted_outputs.outputs):
        assert torch.allclose(q, logit_adjusted(p, counts), rtol=0, atol=1e-5)
        assert (q[:, 4:] <= ZERO_PRIOR_OFFSET / 2).all()  # classes never trained: never predicted


def test_plugin_refuses_bsce_in_the_same_strategy(blobs_benchmark):
    strategy = _strategy(blobs_benchmark, [BalancedSoftmaxPlugin(), LogitAdjustmentPlugin()])
    with pytest.raises(ValueError, match="applied twice"):
        strategy.train(blobs_benchmark.train_stream[0])


def test_window_prior_is_the_last_training_mini_batches(blobs_benchmark):
    la = LogitAdjustmentPlugin(prior="window", window=1, adjust_outputs=False)
    labels = []

    class _Last(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            labels.append(strategy.mb_y.clone())

    strategy = _strategy(blobs_benchmark, [la, _Last()])
    strategy.train(blobs_benchmark.train_stream[0])
    counts = torch.bincount(labels[-1], minlength=2).double()
    logits = torch.zeros(3, 2)
    assert torch.allclose(la.adjust(logits), logit_adjusted(logits, counts))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="window"):
        LogitAdjustmentPlugin(prior="window")
    with pytest.raises(TypeError, match="adjust_outputs"):
        LogitAdjustmentPlugin(adjust_outputs="yes")


FAST = dict(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn", epochs=1,
            batch_size=32, memory_size=30, progress=False, wandb=False, replay="concat", strategy="replay")


def test_runner_reports_posthoc_of_ce_runs_from_the_same_pass(tmp_path):
    ce = run_experiment(ExperimentConfig(**FAST, loss="ce", output_dir=str(tmp_path / "ce")))
    bsce = run_experiment(ExperimentConfig(**FAST, loss="bsce", output_dir=str(tmp_path / "bsce")))
    assert "posthoc" not in bsce
    posthoc = ce["posthoc"]
    assert posthoc["tau"] == 1.0 and len(posthoc["steps"]) == len(ce["steps"]) == 2
    for key in ("average_incremental_accuracy", "last_accuracy", "forgetting", "new_class_prediction_share"):
        assert key in posthoc
    # step 0: a balanced first experience, the adjustment is a constant: the same predictions
    assert posthoc["steps"][0]["accuracy_seen"] == ce["steps"][0]["accuracy_seen"]
    # step 1: memory of 30 against 2 x ~90 new samples: fewer predictions go to the new classes
    assert posthoc["new_class_prediction_share"][1] < ce["new_class_prediction_share"][1]

    # compare: the post-hoc view is a method of its own, and BSCE's gain is stated against it
    from bsce_avalanche.runner.compare import compare

    text = compare([tmp_path], tmp_path / "cmp").read_text()
    assert "| replay-ce-concat + post-hoc LA |" in text
    assert "| replay-bsce-concat | replay-ce-concat + post-hoc LA" in text and "(1 seed)" in text


def test_gains_pair_runs_of_one_protocol_only():
    """BSCE at 1 epoch is not measured against CE at 3 epochs (another protocol); a baseline at its own recipe
    is still its baseline; a baseline with no seed in common gives no row."""
    from bsce_avalanche.runner.compare import gains_table, same_protocol

    def run(seed, loss, acc, data="d1", **config):
        config = {"strategy": "replay", "replay": "concat", "loss": loss, "seed": seed, "epochs": 1, **config}
        return {"config": config, "average_incremental_accuracy": acc, "last_accuracy": acc, "data_digest": data}

    runs = [run(s, loss, acc + s / 100, epochs=e) for s in (0, 1) for e, loss, acc in
            ((1, "ce", 0.20), (1, "bsce", 0.25), (3, "ce", 0.40), (3, "bsce", 0.45))]
    recipe = {"recipes": {"replay-ce": {"lr": 0.5}}, "recipe": "replay-ce"}
    assert same_protocol(runs[0], run(0, "ce", 0.2, lr=0.5, **recipe))  # its recipe's lr: still a baseline
    assert not same_protocol(runs[0], run(0, "ce", 0.2, lr=0.5))  # the same lr change without a recipe: not
    assert not same_protocol(runs[0], run(0, "ce", 0.2, data="d2"))  # other data
    assert same_protocol(runs[0], run(0, "ce", 0.2, data=None))  # data not recorded: not told apart
    rows = [line for line in gains_table(runs).splitlines()[2:]]
    assert len(rows) == 2 and all(row.count("epochs=1") == 2 or row.count("epochs=3") == 2 for row in rows), rows
    assert "+5.0 [+5.0, +5.0]" in rows[0] and "+5.0" in rows[1]
    alone = gains_table([runs[1], run(5, "ce", 0.1)])  # BSCE seed 0 against CE seed 5 only: nothing paired
    assert alone == ""


def test_paired_difference_and_its_t_interval():
    from bsce_avalanche.runner.stats import format_gain, paired_difference

    a = [{"seed": s, "v": v} for s, v in ((0, 0.30), (1, 0.32), (2, 0.34), (3, 0.5))]
    b = [{"seed": s, "v": v} for s, v in ((0, 0.29), (1, 0.30), (2, 0.31))]  # seed 3 unpaired: left out
    diff = paired_difference(a, b, lambda r: r["v"])
    assert diff.seeds == (0, 1, 2) and diff.differences == pytest.approx((0.01, 0.02, 0.03))
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (diff.low, diff.high) == pytest.approx((0.02 - half, 0.02 + half))
    assert diff.level and format_gain(diff) == "+2.0 [-0.5, +4.5], level within noise"
    tight = paired_difference(a[:3], [{"seed": s, "v": 0.1} for s in range(3)], lambda r: r["v"])
    assert not tight.level and format_gain(tight) == "+22.0 [+17.0, +27.0]"
    with pytest.raises(ValueError, match="twice"):
        paired_difference(a + a[:1], b, lambda r: r["v"])


def test_ncm_diagnostic_predicts_the_nearest_memory_class_mean():
    """Cosine to the normalised class means of the memory's features; a class absent from memory is never
    predicted; the test features come from the evaluation's own forward pass (a hook)."""
    from types import SimpleNamespace

    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make_tensor_classification_dataset
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    from bsce_avalanche.runner.ncm import NCMDiagnostic

    buffer = ReservoirSamplingBuffer(4)
    buffer.buffer = make_tensor_classification_dataset(torch.tensor([[1.0, 0.0], [3.0, 0.2], [0.0, 1.0], [0.1, 2.0]]),
                                                       torch.tensor([0, 0, 2, 2]))
    model = torch.nn.Module()
    model.feature_extractor = torch.nn.Identity()
    strategy = SimpleNamespace(model=model, plugins=[SimpleNamespace(storage_policy=buffer)], eval_mb_size=2,
                               device="cpu")
    ncm = NCMDiagnostic()
    ncm.before_eval(strategy)
    test = torch.tensor([[2.0, 0.1], [0.2, 5.0], [1.0, 0.9], [-1.0, 0.0]])
    model.feature_extractor(test)  # the evaluation's forward pass
    ncm.after_eval_iteration(strategy)
    ncm.after_eval(strategy)
    assert ncm.predictions().tolist() == [0, 2, 0, 2]  # [1, 0.9]: nearer (cosine) to class 0's mean; 1 absent
    assert not model.feature_extractor._forward_hooks  # the hook is gone after the evaluation


def test_runner_reports_ncm_when_asked(tmp_path):
    on = run_experiment(ExperimentConfig(**FAST, loss="bsce", ncm_diagnostic=True, output_dir=str(tmp_path / "on")))
    off = run_experiment(ExperimentConfig(**FAST, loss="bsce", output_dir=str(tmp_path / "off")))
    assert "ncm" not in off and [s["accuracy_seen"] for s in on["steps"]] == [s["accuracy_seen"] for s in off["steps"]]
    assert len(on["ncm"]["steps"]) == 2 and on["ncm"]["last_accuracy"] > 0.3  # 10 digits: chance is 0.1


def test_plugin_composes_with_lwf_and_avalanche_replay(blobs_benchmark):
    """LwF + concatenated memory and Avalanche's 50/50 ReplayPlugin: training as without the plugin, and the prior
    is what the loader draws (the replay loader's sampling distribution, as BalancedSoftmaxPlugin's "auto")."""
    from avalanche.training import LwF
    from avalanche.training.plugins import ReplayPlugin

    from bsce_avalanche import ClassPrior

    def lwf(plugins):
        torch.manual_seed(0)
        model = _mlp()
        return LwF(model=model, optimizer=SGD(model.parameters(), lr=0.1), criterion=CrossEntropyLoss(), alpha=1.0,
                   temperature=2.0, train_mb_size=16, train_epochs=1, eval_mb_size=64, plugins=plugins)

    plain, la = LogitAdjustmentPlugin(), None
    with_la, without = lwf([ConcatReplayPlugin(20), plain]), lwf([ConcatReplayPlugin(20)])
    for experience in blobs_benchmark.train_stream[:2]:
        torch.manual_seed(1)
        with_la.train(experience)
        torch.manual_seed(1)
        without.train(experience)
    assert all(torch.equal(a, b) for a, b in zip(with_la.model.state_dict().values(), without.model.state_dict().values()))

    la, sampling = LogitAdjustmentPlugin(), ClassPrior("auto")

    class _Prior(SupervisedPlugin):  # what BalancedSoftmaxPlugin's auto prior would use on the same loader
        def before_training_epoch(self, strategy, **kwargs):
            sampling.start_experience(strategy.dataloader)

        def after_training_exp(self, strategy, **kwargs):
            sampling.end_experience()

    replay = _strategy(blobs_benchmark, [ReplayPlugin(20, batch_size_mem=16), la, _Prior()])
    for experience in blobs_benchmark.train_stream[:2]:
        replay.train(experience)
    assert la.prior_history == sampling.history
    old = sum(la.prior_history[-1][:2])
    assert 0.3 < old < 0.7  # the 50/50 loader: old classes far above their 20 / 140 share of the data
