"""The sliding-window prior (``prior="window"``, ER-LAS): the label frequency of the last ``l``
mini-batches trained, across experiences, resumable, identical on every DDP rank."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.training import Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin

from bsce_avalanche import BalancedSoftmaxPlugin, ClassPrior
from bsce_avalanche.losses import ZERO_PRIOR_OFFSET
from bsce_avalanche.runner.checkpoint import load_checkpoint, restore_strategy, save_checkpoint

from conftest import MLP, subprocess_env, torchrun


def window_frequency(label_batches, window, n_classes):
    """Label frequency of the last ``window`` batches of ``label_batches``."""
    counts = torch.bincount(torch.cat(label_batches[-window:]), minlength=n_classes).double()
    return counts / counts.sum()


def reference_loss(logits, targets, freq, tau):
    """ER-LAS's loss: CE(logits + tau * log f, y), classes absent from the window removed."""
    log_f = torch.where(freq > 0, freq.log(), torch.full_like(freq, float("-inf")))
    return F.cross_entropy(logits.double() + tau * log_f, targets)


class LossRecorder(SupervisedPlugin):
    """Labels, logits and loss of every training mini-batch."""

    def __init__(self):
        super().__init__()
        self.labels, self.logits, self.losses = [], [], []

    def after_forward(self, strategy, **kwargs):
        if strategy.is_training:
            self.labels.append(strategy.mb_y.detach().cpu().clone())
            self.logits.append(strategy.mb_output.detach().cpu().clone())

    def before_backward(self, strategy, **kwargs):
        self.losses.append(float(strategy.loss.detach()))


def quiet():
    return EvaluationPlugin(loggers=[])


def test_window_is_the_label_frequency_of_the_last_l_batches_across_experiences():
    """Hand-made mini-batches over three experiences (start/end calls between them): the
    adjustment is tau * log f of the last l batches, the current one included, never reset."""
    torch.manual_seed(0)
    n_classes, window, tau = 7, 3, 0.7
    prior = ClassPrior("window", tau=tau, window=window)
    batches = []
    for exp, classes in enumerate(([0, 1], [2, 3, 4], [5, 6])):
        prior.start_experience(loader=None)  # no loader needed: the window runs on
        for _ in range(4):
            stream = torch.tensor(classes)[torch.randint(len(classes), (6,))]
            memory = torch.randint(0, 2 * exp + 1, (4,))  # old classes, as a replay memory draws
            targets = torch.cat([stream, memory])
            logits = torch.randn(10, n_classes)
            adjustment = prior.adjustment(logits, targets)
            batches.append(targets)
            freq = window_frequency(batches, window, n_classes)
            torch.testing.assert_close(prior.prior, freq)
            torch.testing.assert_close(F.cross_entropy(logits + adjustment, targets).double(),
                                       reference_loss(logits, targets, freq, tau), atol=1e-6, rtol=1e-6)
            absent = freq == 0
            assert (adjustment[absent] == ZERO_PRIOR_OFFSET).all() and (adjustment[~absent] > -50).all()
        recorded = prior.end_experience()
        assert recorded == pytest.approx(window_frequency(batches, window, n_classes)[: len(recorded)].tolist())
    assert len(prior.history) == 3
    # a window longer than the batches so far: all of them
    long = ClassPrior("window", window=100)
    for targets in batches:
        long.adjustment(torch.zeros(10, n_classes), targets)
    torch.testing.assert_close(long.prior, window_frequency(batches, 100, n_classes))
    # a uniform window adds exactly nothing to the classes present
    uniform = ClassPrior("window", window=1).adjustment(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
    assert torch.equal(uniform, torch.tensor([0.0, 0.0, ZERO_PRIOR_OFFSET]))


@pytest.mark.parametrize("window", [1, 2, 5])
def test_window_prior_constructor_and_repr(window):
    plugin = BalancedSoftmaxPlugin(prior="window", window=window)
    assert plugin.class_prior.window == window and plugin.prior is None


def test_the_window_prior_is_its_own_class_beside_class_prior():
    """``WindowPrior`` holds the window, ``ClassPrior`` the per-experience priors; every way of asking for a window
    prior (make_prior, the plugins, ``ClassPrior("window", ...)`` as before WindowPrior) builds a WindowPrior, with
    the same state_dict format as before."""
    from bsce_avalanche import LogitAdjustmentPlugin, WindowPrior
    from bsce_avalanche.priors import make_prior

    built = [make_prior("window", 0.5, 3), ClassPrior("window", tau=0.5, window=3),
             BalancedSoftmaxPlugin(prior="window", tau=0.5, window=3).class_prior,
             LogitAdjustmentPlugin(prior="window", tau=0.5, window=3).class_prior]
    for prior in built:
        assert type(prior) is WindowPrior and (prior.mode, prior.window, prior.tau) == ("window", 3, 0.5)
        assert prior.counts_batches and prior.counts is None and prior.prior is None
        assert prior.state_dict() == {"mode": "window", "window": 3, "history": [], "ring": None, "ring_next": 0}
    for prior in (make_prior("auto"), ClassPrior("batch"), make_prior([1, 2])):
        assert type(prior) is ClassPrior and prior.window is None
        assert list(prior.state_dict()) == ["mode", "window", "history"]
    window = WindowPrior(2)
    window.adjustment(torch.zeros(3, 4), torch.tensor([0, 0, 1]))
    assert window.counts.tolist() == window.window_counts.tolist() == [2, 1, 0, 0]
    assert type(window.fresh()) is WindowPrior and window.fresh().counts is None


@pytest.mark.parametrize("how", ["checkpoint table", "pickle"])
def test_a_window_prior_saved_before_window_prior_existed_resumes_as_one(how):
    """A checkpoint written when the window was a mode of ClassPrior (a ClassPrior of mode "window" with its ring)
    loads as a WindowPrior that carries on exactly as the prior it was saved from."""
    import pickle

    from bsce_avalanche import WindowPrior
    from bsce_avalanche.runner import checkpoint, plain_state

    live = WindowPrior(3, tau=0.7)
    torch.manual_seed(0)
    batches = [torch.randint(0, 4, (8,)) for _ in range(5)]
    for targets in batches[:4]:
        live.adjustment(torch.zeros(8, 5), targets)
    live.end_experience()
    old = ClassPrior.__new__(ClassPrior)  # the attributes a window ClassPrior had
    old.__dict__.update(fixed_counts=None, mode="window", tau=0.7, window=3, _ring=live._ring.clone(),
                        _ring_next=live._ring_next, history=[list(h) for h in live.history], counts=None,
                        counts_batches=False, _adjustment=None)
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(old))
    else:
        table = plain_state.encode(old, checkpoint.ALLOWED)
        assert ["global", "bsce_avalanche.priors.ClassPrior"] in table["table"]  # saved as a ClassPrior
        loaded = plain_state.decode(table, checkpoint.ALLOWED)
    assert type(loaded) is WindowPrior and set(vars(loaded)) == set(WindowPrior.STATE_ATTRIBUTES)
    loaded.check_state()
    assert loaded.state_dict().keys() == live.state_dict().keys()
    torch.testing.assert_close(loaded.adjustment(torch.zeros(8, 5), batches[4]),
                               live.adjustment(torch.zeros(8, 5), batches[4]))
    assert loaded.end_experience() == live.end_experience() and loaded.history == live.history


@pytest.mark.parametrize("kwargs, message", [
    (dict(prior="window"), "needs window=l"),
    (dict(prior="window", window=0), "positive int"),
    (dict(prior="window", window=2.0), "positive int"),
    (dict(prior="window", window=True), "positive int"),
    (dict(prior="auto", window=3), "applies only to prior='window'"),
    (dict(prior=[1, 2], window=3), "applies only to prior='window'"),
])
def test_window_validated_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BalancedSoftmaxPlugin(**kwargs)


def test_a_window_beyond_memory_is_refused_at_construction():
    """issue 25: window=10**12 was accepted, then an 80 TB allocation at the first iteration."""
    from bsce_avalanche.catalog import MAX_WINDOW
    from bsce_avalanche.runner.config import ConfigError, ExperimentConfig

    with pytest.raises(ValueError, match=r"window=1000000000000 is beyond what memory allows.*at most 100,000"):
        BalancedSoftmaxPlugin(prior="window", window=10**12)
    assert BalancedSoftmaxPlugin(prior="window", window=MAX_WINDOW).class_prior.window == MAX_WINDOW
    with pytest.raises(ConfigError, match=r"prior_window must be in \[1, 100000\]"):
        ExperimentConfig(prior="window", prior_window=10**12)


@pytest.mark.parametrize("prior", ["window", "auto"])
def test_a_plugin_reused_for_another_strategy_starts_a_fresh_prior(blobs_benchmark, prior):
    """issue 25: a seed loop that builds the plugin once carried the first run's labels into the second's prior."""
    window = 4 if prior == "window" else None

    def run(bsce):
        torch.manual_seed(0)
        recorder = LossRecorder()
        strategy = _strategy("naive_replay_plugin", MLP(), [bsce, recorder])
        strategy.train(blobs_benchmark.train_stream[0])
        return recorder.losses, list(bsce.prior_history)

    reused = BalancedSoftmaxPlugin(prior=prior, window=window)
    first = run(reused)
    assert run(reused) == first == run(BalancedSoftmaxPlugin(prior=prior, window=window))
    assert len(reused.prior_history) == 1  # the second strategy's only


def _strategy(kind, model, plugins, batch=10):
    optimizer = SGD(model.parameters(), lr=0.05)
    if kind == "replay":  # Avalanche's Replay wrapper: batch + batch from the memory
        return Replay(model, optimizer, CrossEntropyLoss(), mem_size=40, train_mb_size=batch, train_epochs=1,
                      evaluator=quiet, plugins=plugins)
    return Naive(model, optimizer, CrossEntropyLoss(), train_mb_size=batch, train_epochs=1, evaluator=quiet,
                 plugins=plugins + [ReplayPlugin(mem_size=40, batch_size=batch, batch_size_mem=6)])


@pytest.mark.parametrize("kind", ["naive_replay_plugin", "replay"])
def test_trained_loss_is_er_las_over_the_window_in_avalanche(blobs_benchmark, kind):
    """In a real strategy, stream + memory samples as trained (strategy.mb_y): the loss of every
    mini-batch is CE(logits + tau * log f) with f the last l mini-batches' labels, across experiences."""
    torch.manual_seed(0)
    window, tau = 4, 1.0
    recorder = LossRecorder()
    bsce = BalancedSoftmaxPlugin(prior="window", window=window, tau=tau)
    strategy = _strategy(kind, MLP(), [bsce, recorder])
    per_exp = []
    for exp in blobs_benchmark.train_stream:
        strategy.train(exp)
        per_exp.append(len(recorder.labels))
    assert per_exp == [12, 24, 36] and len(recorder.losses) == 36
    assert any(len(y) > 10 for y in recorder.labels)  # memory samples are in the window
    for i, (logits, targets, loss) in enumerate(zip(recorder.logits, recorder.labels, recorder.losses)):
        freq = window_frequency(recorder.labels[: i + 1], window, 6)
        assert loss == pytest.approx(float(reference_loss(logits, targets, freq, tau)), abs=1e-5), i
    # the first batch of an experience still sees the previous experience's last batches: its loss is that
    # of the window across the boundary, not that of a window restarted with the experience
    first_of_second = window_frequency(recorder.labels[:13], window, 6)
    restarted = window_frequency(recorder.labels[12:13], window, 6)
    assert first_of_second[:2].sum() > 0 and first_of_second[2:4].sum() > 0
    assert not torch.equal(first_of_second, restarted)
    logits, targets = recorder.logits[12], recorder.labels[12]
    assert recorder.losses[12] == pytest.approx(float(reference_loss(logits, targets, first_of_second, tau)), abs=1e-5)
    assert recorder.losses[12] != pytest.approx(float(reference_loss(logits, targets, restarted, tau)), abs=1e-3)
    assert len(bsce.prior_history) == 3


def test_window_runs_across_online_experiences(blobs_benchmark):
    """Avalanche's online stream (one experience per mini-batch, one train() call each): the window spans them."""
    torch.manual_seed(0)
    recorder = LossRecorder()
    bsce = BalancedSoftmaxPlugin(prior="window", window=3)
    model = MLP()
    strategy = Naive(model, SGD(model.parameters(), lr=0.05), CrossEntropyLoss(), train_mb_size=10,
                     train_epochs=1, evaluator=quiet, plugins=[bsce, recorder])
    online = split_online_stream(blobs_benchmark.train_stream[:2], experience_size=10, shuffle=False)
    for exp in online:
        strategy.train(exp)
    assert len(recorder.losses) == 24
    for i, (logits, targets, loss) in enumerate(zip(recorder.logits, recorder.labels, recorder.losses)):
        freq = window_frequency(recorder.labels[: i + 1], 3, 6)
        assert loss == pytest.approx(float(reference_loss(logits, targets, freq, 1.0)), abs=1e-5)


@pytest.mark.parametrize("how", ["state_dict", "checkpoint"])
def test_resume_mid_stream_gives_the_same_run(blobs_benchmark, tmp_path, how):
    """Train experience 0 and stop; restore into a fresh strategy with a fresh plugin; the next
    losses equal those of the uninterrupted run (the window carries the last batches of experience 0)."""
    def build():
        torch.manual_seed(0)
        recorder = LossRecorder()
        bsce = BalancedSoftmaxPlugin(prior="window", window=5)
        return _strategy("naive_replay_plugin", MLP(), [bsce, recorder]), bsce, recorder

    torch.manual_seed(1)
    straight, _, straight_rec = build()
    for exp in blobs_benchmark.train_stream:
        straight.train(exp)

    torch.manual_seed(1)
    first, first_bsce, first_rec = build()
    first.train(blobs_benchmark.train_stream[0])
    exclude = [first_rec] + ([first_bsce] if how == "state_dict" else [])
    save_checkpoint(tmp_path / "ckpt.pt", first, exclude=exclude)
    torch.save(first_bsce.state_dict(), tmp_path / "prior.pt")

    resumed, bsce, recorder = build()  # fresh objects, other RNG state: all comes from the files
    torch.manual_seed(123)
    exclude = [recorder] + ([bsce] if how == "state_dict" else [])
    restore_strategy(resumed, load_checkpoint(tmp_path / "ckpt.pt"), exclude=exclude)
    if how == "state_dict":
        bsce.load_state_dict(torch.load(tmp_path / "prior.pt"))
    torch.testing.assert_close(bsce.class_prior._ring, first_bsce.class_prior._ring)
    for exp in blobs_benchmark.train_stream[1:]:
        resumed.train(exp)
    n_first = len(first_rec.losses)
    assert recorder.losses == straight_rec.losses[n_first:]
    assert bsce.prior_history == straight.plugins[0].prior_history
    with pytest.raises(ValueError, match="same settings"):
        BalancedSoftmaxPlugin(prior="window", window=6).load_state_dict(first_bsce.state_dict())


DDP_SCRIPT = '''
import json, sys
import torch
from torch import nn

from bsce_avalanche import BalancedSoftmaxPlugin
from bsce_avalanche.runner import distributed


def main(out, batch=24):
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as mk
    from avalanche.models import IncrementalClassifier
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

    class Priors(SupervisedPlugin):  # the window prior after every mini-batch
        def __init__(self, bsce):
            super().__init__()
            self.bsce, self.seen = bsce, []

        def after_training_iteration(self, strategy, **kwargs):
            self.seen.append(self.bsce.prior.tolist())

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(6, 8, generator=g) * 2
    x = torch.cat([centres[c] + torch.randn(60, 8, generator=g) for c in range(6)])
    y = torch.arange(6).repeat_interleave(60)
    y = y[torch.randperm(360, generator=g)].sort(stable=True).values  # classes in blocks
    bench = nc_benchmark(mk(x, y), mk(x, y), n_experiences=3, task_labels=False, fixed_class_order=list(range(6)))
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), IncrementalClassifier(32, initial_out_features=2))
    device = distributed.setup(torch.device("cpu"))
    bsce = BalancedSoftmaxPlugin(prior="window", window=3)
    priors = Priors(bsce)
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=distributed.per_rank_batch_size(batch),
                     train_epochs=1, eval_mb_size=100, device=device, plugins=[bsce, priors],
                     evaluator=EvaluationPlugin(loggers=[]))
    distributed.prepare_strategy(strategy, device, batch)
    for exp in bench.train_stream:
        strategy.train(exp, shuffle=False)  # the ranks' shards of a batch = the single process's batch
    ranks = [priors.seen]
    if distributed.is_distributed():
        ranks = [None] * distributed.world_size()
        torch.distributed.all_gather_object(ranks, priors.seen)
    digests = distributed.consistency_digests(model, bsce.prior_history)
    if distributed.is_main_process():
        with open(out, "w") as fh:
            json.dump({"ranks": ranks, "history": bsce.prior_history, "digests": digests}, fh)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
'''


@pytest.mark.slow
def test_ddp_ranks_agree_on_the_window_prior(tmp_path):
    """2 gloo ranks x 12 samples: after every mini-batch both ranks hold the window prior of the
    global batch of 24 (per-batch counts all-reduced), equal to the single-process one."""
    import runpy

    script = tmp_path / "ddp_window.py"
    script.write_text(DDP_SCRIPT)
    torchrun([tmp_path / "ddp.json"], cwd=tmp_path, env=subprocess_env(tmp_path), script=script)
    runpy.run_path(str(script))["main"](str(tmp_path / "single.json"))
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    single = json.loads((tmp_path / "single.json").read_text())
    assert len(ddp["ranks"]) == 2 and ddp["ranks"][0] == ddp["ranks"][1]
    assert ddp["ranks"][0] == single["ranks"][0] and len(single["ranks"][0]) == 15  # 3 x 120 / 24
    assert ddp["history"] == single["history"] and ddp["digests"]["consistent"]


@pytest.mark.parametrize("overrides, message", [
    (dict(loss="bsce", prior="window"), "prior: window needs prior_window"),
    (dict(loss="bsce", prior="auto", prior_window=2), "prior_window applies to prior: window only"),
    (dict(loss="ce", prior_window=2), "prior_window applies to prior: window only"),
    (dict(loss="bsce", prior="window", prior_window=0), r"prior_window must be in \[1, 100000\] or null, got 0"),
    (dict(strategy="lwf", batch_size_mem=5), "batch_size_mem applies to er_ace and to replay: half_batch"),
    (dict(strategy="replay", replay="concat", batch_size_mem=5), "batch_size_mem applies"),
])
def test_config_refuses_online_keys_that_cannot_apply(overrides, message):
    """Checked with the config (before anything is built, a whole grid at once), one line each."""
    from bsce_avalanche.runner.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(benchmark="digits", model="small_cnn", wandb=False, **overrides)
