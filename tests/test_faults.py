"""The runner under faults: non-finite training, overwrites, concurrent writers, unwritable
directories, corrupt or truncated files, file modes, checkpoint size."""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from avalanche.training import ER_ACE, ICaRL, Naive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin, SupervisedPlugin
from torch.nn import CrossEntropyLoss
from torch.optim import SGD

from bsce_avalanche import BalancedSoftmaxPlugin, ConcatReplayPlugin
from bsce_avalanche.losses import MAX_TAU
from bsce_avalanche.runner import divergence, experiment
from bsce_avalanche.runner.checkpoint import CheckpointError, load_checkpoint, restore_strategy, save_checkpoint
from bsce_avalanche.runner.cli import main
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.divergence import NonFiniteLossGuard, TrainingDiverged
from bsce_avalanche.runner.experiment import run_experiment
from bsce_avalanche.runner.fileio import LOCK_FILE, atomic_write, lock_run_dir, write_json_atomic, write_text_atomic

from conftest import MLP, Crash, blobs_data, crash_during_eval_of_step, make_blobs_benchmark, tensor_benchmark

BASE = dict(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn",
            strategy="replay", loss="bsce", epochs=1, batch_size=32, memory_size=30, progress=False, wandb=False)
NAME = ExperimentConfig(**BASE).run_name  # the run folder of BASE (replay-bsce-seed0-<digest>)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """CLI arguments running BASE (one run, :data:`NAME`)."""
    config = tmp_path_factory.mktemp("config") / "base.yaml"
    config.write_text(json.dumps(BASE))  # JSON is YAML
    return ["--config", str(config)]


def one_line_error(capsys) -> str:
    """The CLI's error line (stderr may also hold library warnings)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("bsce-experiment: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cfg = ExperimentConfig(**BASE)
    out = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(cfg, out)
    return cfg, out


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A run that crashed while evaluating step 1: results and checkpoint of step 0."""
    cfg = ExperimentConfig(**BASE)
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.MonkeyPatch.context() as m:
        crash_during_eval_of_step(m, step=1)
        with pytest.raises(Crash):
            run_experiment(cfg, out)
    return cfg, out


def copy_run(run, tmp_path):
    cfg, out = run
    return cfg, shutil.copytree(out, tmp_path / "run")


# ---------------------------------------------------------------- non-finite training
def test_huge_lr_stops_at_the_first_nonfinite_loss_and_records_it(tmp_path):
    cfg = ExperimentConfig(**{**BASE, "lr": 1e30})
    with pytest.raises(TrainingDiverged, match=r"at step 0, epoch 0, iteration \d+ .*learning rate \(1e\+30\)") as err:
        run_experiment(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["finished"] is False and results["failed"] == err.value.record
    assert results["steps"] == [] and "last_accuracy" not in results  # no metrics of the diverged model
    assert err.value.record["iteration"] >= 1  # the first update made the weights overflow
    copy = pickle.loads(pickle.dumps(err.value))  # as from a `run --jobs` process
    assert str(copy) == str(err.value) and copy.record == err.value.record
    with pytest.raises(ConfigError, match=r"unfinished run \(0 step\(s\) done, failed: the loss is"):
        run_experiment(cfg, tmp_path)  # kept until --overwrite


def test_cli_diverged_run_exits_1_with_one_line(tmp_path, capsys, cli):
    assert main(["run", "--output-dir", str(tmp_path), *cli, "--lr", "1e30"]) == 1
    err = one_line_error(capsys)
    assert "training diverged at step 0" in err and "learning rate" in err
    results = json.loads((tmp_path / ExperimentConfig(**BASE, lr=1e30).run_name / "results.json").read_text())
    assert results["failed"]["step"] == 0 and not results["finished"]


class InfInput(SupervisedPlugin):
    """Puts inf into one mini-batch: ``iteration`` (counted within the experience) of ``step``."""

    def __init__(self, step: int, iteration: int):
        super().__init__()
        self.step, self.iteration, self.seen = step, iteration, -1

    def before_training_exp(self, strategy, **kwargs):
        self.seen = -1

    def before_forward(self, strategy, **kwargs):
        self.seen += 1
        if strategy.experience.current_experience == self.step and self.seen == self.iteration:
            strategy.mb_x[0].fill_(float("inf"))


def test_nonfinite_input_is_named_and_earlier_steps_are_kept(tmp_path, monkeypatch):
    real_build = experiment.build_strategy

    def with_bad_input(*args, **kwargs):
        strategy = real_build(*args, **kwargs)
        strategy.plugins.append(InfInput(step=1, iteration=2))
        return strategy

    monkeypatch.setattr(experiment, "build_strategy", with_bad_input)
    with pytest.raises(TrainingDiverged, match="non-finite input") as err:
        run_experiment(ExperimentConfig(**BASE), tmp_path)
    assert {k: err.value.record[k] for k in ("step", "epoch", "iteration")} == {"step": 1, "epoch": 0, "iteration": 2}
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["steps"]) == 1 and results["failed"]["step"] == 1 and not results["finished"]


@pytest.fixture
def blobs():
    return make_blobs_benchmark(n_classes=4, n_experiences=2, train=40, test=10)


def naive(*plugins, lr=0.05, epochs=2):
    model = MLP(n_classes=4)
    return Naive(model=model, optimizer=SGD(model.parameters(), lr=lr), criterion=CrossEntropyLoss(),
                 train_mb_size=16, train_epochs=epochs, evaluator=EvaluationPlugin(loggers=[]), plugins=list(plugins))


def test_tau_at_its_bound_keeps_the_loss_finite(blobs):
    """tau cannot make the loss non-finite (the library bounds it): no false alarm at MAX_TAU."""
    losses = []

    class Losses(SupervisedPlugin):
        def after_training_iteration(self, strategy, **kwargs):
            losses.append(float(strategy.loss.detach()))

    naive(BalancedSoftmaxPlugin(tau=MAX_TAU), NonFiniteLossGuard(), Losses()).train(blobs.train_stream[0])
    assert len(losses) == 10 and all(math.isfinite(loss) for loss in losses)


def test_deferred_check_still_reports_the_first_bad_iteration(blobs, monkeypatch):
    """With the host read deferred (as on an accelerator), the error comes at the epoch's end
    but names the first bad iteration."""
    monkeypatch.setattr(divergence, "CPU_CHECK_EVERY", 1000)
    bad = InfInput(step=0, iteration=3)
    with pytest.raises(TrainingDiverged, match=r"step 0, epoch 0, iteration 3 .*non-finite input"):
        naive(bad, NonFiniteLossGuard()).train(blobs.train_stream[0])
    assert bad.seen == 4, "the epoch (5 mini-batches) finished before the read"


def test_weights_overflowing_after_a_finite_loss_are_caught(blobs):
    class OverflowWeights(SupervisedPlugin):
        def after_training_epoch(self, strategy, **kwargs):
            strategy.model.classifier.weight.data[0, 0] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"step 0, epoch 0, iteration 4 .*weights became non-finite"):
        naive(OverflowWeights(), NonFiniteLossGuard()).train(blobs.train_stream[0])


def test_finite_training_is_untouched(blobs):
    """The guard raises nothing on finite training, checks every iteration, and changes nothing it trains: the
    same weights, bit for bit, as without it (no RNG drawn, no gradient or loss touched)."""
    weights = []
    for plugins in ((), (NonFiniteLossGuard(),)):
        torch.manual_seed(0)
        strategy = naive(*plugins)
        for exp in blobs.train_stream:
            strategy.train(exp)
        weights.append([p.detach().clone() for p in strategy.model.parameters()])
    guard = plugins[0]
    assert guard._iteration == 2 * 5  # the last experience: 2 epochs of 5 mini-batches (80 samples), each checked
    assert guard._first_bad is not None and int(guard._first_bad) == int(divergence._NONE)
    assert all(torch.equal(a, b) for a, b in zip(*weights)) and len(weights[0]) > 0


# ---------------------------------------------------------------- results never lost
def test_plain_rerun_of_a_finished_run_is_refused(finished_run, tmp_path):
    cfg, out = copy_run(finished_run, tmp_path)
    before = (out / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds this finished run: use --resume to keep it, --overwrite"):
        run_experiment(cfg, out)
    with pytest.raises(ConfigError, match=r"different config \(keys \['lr'\] differ\): use --overwrite"):
        run_experiment(cfg.replace(lr=0.1), out, resume=True)  # no checkpoint left: was overwritten before
    with pytest.raises(ConfigError, match=r"different config"):
        run_experiment(cfg.replace(seed=1), out)
    assert (out / "results.json").read_bytes() == before
    assert run_experiment(cfg, out, resume=True)["accuracy_matrix"] == json.loads(before)["accuracy_matrix"]


def test_overwrite_replaces_a_finished_run(finished_run, tmp_path):
    cfg, out = copy_run(finished_run, tmp_path)
    results = run_experiment(cfg.replace(lr=0.1), out, overwrite=True)
    assert results["finished"] and json.loads((out / "results.json").read_text())["config"]["lr"] == 0.1


def test_plain_rerun_of_an_unfinished_run_is_refused(interrupted_run, tmp_path):
    cfg, out = copy_run(interrupted_run, tmp_path)
    with pytest.raises(ConfigError, match=r"holds an unfinished run \(1 step\(s\) done\): use --resume"):
        run_experiment(cfg, out)
    (out / "results.json").unlink()  # the checkpoint alone is a run too
    with pytest.raises(ConfigError, match=r"unfinished run \(a checkpoint\)"):
        run_experiment(cfg, out)


def test_resume_without_a_checkpoint_says_it_starts_afresh(interrupted_run, tmp_path, capsys):
    cfg, out = copy_run(interrupted_run, tmp_path)
    (out / "checkpoint.pt").unlink()  # e.g. killed between the step's results and its checkpoint
    assert run_experiment(cfg, out, resume=True)["finished"]
    assert "no checkpoint.pt to resume from: starting the run afresh" in capsys.readouterr().out


def test_cli_overwrite_flag(finished_run, tmp_path, capsys, cli):
    cfg, out = finished_run
    shutil.copytree(out, tmp_path / NAME)
    assert main(["run", "--output-dir", str(tmp_path), *cli]) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert main(["run", "--output-dir", str(tmp_path), *cli, "--overwrite"]) == 0
    with pytest.raises(SystemExit, match="2"):
        main(["run", "--output-dir", str(tmp_path), *cli, "--overwrite", "--resume"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_results_honour_the_umask(finished_run):
    umask = os.umask(0o022)
    os.umask(umask)
    assert (finished_run[1] / "results.json").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
        write_text_atomic(tmp_path / "comparison.md", "x")
        atomic_write(tmp_path / "checkpoint.pt", lambda tmp: torch.save({}, tmp))
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == dict.fromkeys(
        ["results.json", "comparison.md", "checkpoint.pt"], 0o666 & ~umask)


# ---------------------------------------------------------------- one writer, writable directory
def test_second_writer_is_refused_with_the_holders_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "build_benchmark", lambda cfg: pytest.fail("built while locked"))
    with lock_run_dir(tmp_path):
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            run_experiment(ExperimentConfig(**BASE), tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_killed_writers_lock_file_does_not_block(tmp_path):
    (tmp_path / LOCK_FILE).write_text("999999999\n")  # left by a killed process: no flock held
    with lock_run_dir(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_filesystem_without_locks_is_used_with_a_warning(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="no file locks on this filesystem"):
        with lock_run_dir(tmp_path):
            assert (tmp_path / LOCK_FILE).exists()
    assert not (tmp_path / LOCK_FILE).exists()  # removed, as with locks


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unusable_output_dir_is_one_line_before_training(tmp_path, monkeypatch, capsys, cli, where):
    monkeypatch.setattr(experiment, "build_benchmark", lambda cfg: pytest.fail("built for an unusable dir"))
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "run"
    reason = "it is a file" if where == "a file" else "Not a directory"
    with pytest.raises(ConfigError, match=f"cannot write to the output directory {out} \\({reason}\\)"):
        run_experiment(ExperimentConfig(**BASE), out)
    assert main(["run", "--output-dir", str(tmp_path / "f"), *cli]) == 2
    assert "cannot write to the output directory" in one_line_error(capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "build_benchmark", lambda cfg: pytest.fail("built for a read-only dir"))
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match=r"cannot write to the output directory .*Permission denied"):
            run_experiment(ExperimentConfig(**BASE), tmp_path)
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.slow
def test_concurrent_process_is_refused_and_a_killed_holder_frees_the_dir(tmp_path, capsys, cli):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bsce_avalanche.runner.fileio import lock_run_dir\n"
         f"with lock_run_dir({str(tmp_path / NAME)!r}):\n print('locked', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", "--output-dir", str(tmp_path), *cli]) == 2
        assert f"in use by another run (pid {holder.pid})" in one_line_error(capsys)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with lock_run_dir(tmp_path / NAME):
        pass


# ---------------------------------------------------------------- corrupt and truncated files
def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "truncated": _truncate,
    "random bytes": lambda path: path.write_bytes(os.urandom(4096)),
    "empty": lambda path: path.write_bytes(b""),
    "old format": lambda path: torch.save({"format": 1}, path),
    # issue 25: a checkpoint without its optimizer entry, or without the runner's record, was a KeyError
    "no optimizer entry": lambda path: _edit_checkpoint(path, lambda payload: payload.pop("optimizer")),
    "no run record": lambda path: _edit_checkpoint(path, lambda payload: payload.update(extra=None)),
}


def _edit_checkpoint(path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


def _cut_window_ring(node, window):
    """The first (window, classes) int64 tensor below ``node`` (the window ring) cut to ``window - 1`` rows."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(value, torch.Tensor) and value.dtype == torch.long and value.dim() == 2 and \
                value.shape[0] == window:
            node[key] = value[: window - 1].clone()
            return True
        if isinstance(value, (dict, list)) and _cut_window_ring(value, window):
            return True
    return False


def test_a_checkpoint_with_a_cut_window_ring_is_one_line(tmp_path, capsys):
    """issue 25: a window ring cut short in a checkpoint ended in a traceback at the first iteration."""
    cfg = ExperimentConfig(**{**BASE, "prior": "window", "prior_window": 3})
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:
        crash_during_eval_of_step(m, step=1)
        with pytest.raises(Crash):
            run_experiment(cfg, out)
    _edit_checkpoint(out / "checkpoint.pt", lambda payload: _cut_window_ring(payload["memory"], 3) or 1 / 0)
    with pytest.raises(CheckpointError, match=r"BalancedSoftmaxPlugin cannot be restored: .*window ring is \(2, "
                                              r"\d+\), not \(3, classes\).*Delete the checkpoint"):
        run_experiment(cfg, out, resume=True)


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_unreadable_checkpoint_is_one_line_naming_it(interrupted_run, tmp_path, capsys, cli, corrupt):
    cfg, out = copy_run(interrupted_run, tmp_path)
    CORRUPTIONS[corrupt](out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=rf"{out / 'checkpoint.pt'} .*delete it to start the run afresh"):
        run_experiment(cfg, out, resume=True)
    shutil.move(out, tmp_path / "cli" / cfg.run_name)
    assert main(["run", "--output-dir", str(tmp_path / "cli"), *cli, "--resume"]) == 2
    assert "checkpoint.pt" in one_line_error(capsys)


class RunsCode:
    """Unpickled, it would run ``touch marker`` (what a file dropped into a shared folder could do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoint_loads_with_weights_only(interrupted_run):
    payload = torch.load(interrupted_run[1] / "checkpoint.pt", weights_only=True)
    assert payload["memory"]["table"] and not any(isinstance(v, bytes) for v in payload.values())


@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_checkpoint_that_would_run_code_is_refused_with_one_line(interrupted_run, tmp_path, capsys, cli, where):
    cfg, out = copy_run(interrupted_run, tmp_path)
    marker, system = tmp_path / "marker", f"{os.system.__module__}.{os.system.__name__}"
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    if where == "file":  # a pickled object anywhere in the file
        payload["extra"]["results"]["note"] = RunsCode(marker)
        expected = f"{out / 'checkpoint.pt'} is unreadable (truncated or corrupt: it holds objects other than " \
                   f"tensors, numbers and strings, which are not loaded: {system})"
    else:  # a plain memory table that names a function to call
        table = payload["memory"]["table"]
        table += [["object", "call", ("@", len(table) + 1), [f"touch {marker}"], None, None, None], ["global", system]]
        payload["memory"]["root"] = ("@", len(table) - 2)
        expected = f"The checkpoint's memory cannot be restored (it holds {system}, which is not loaded)"
    torch.save(payload, out / "checkpoint.pt")
    with pytest.raises(CheckpointError) as err:
        run_experiment(cfg, out, resume=True)
    assert str(err.value).startswith(expected) and "delete" in str(err.value) and "\n" not in str(err.value)
    shutil.move(out, tmp_path / "cli" / cfg.run_name)
    assert main(["run", "--output-dir", str(tmp_path / "cli"), *cli, "--resume"]) == 2
    assert expected.split(":")[-1] in one_line_error(capsys)
    assert not marker.exists()


RESULTS_CORRUPTIONS = {
    "truncated": _truncate,
    "random bytes": lambda path: path.write_bytes(os.urandom(4096)),
    "not an object": lambda path: path.write_text("[]"),
    "no config": lambda path: path.write_text('{"finished": true}'),
}


@pytest.mark.parametrize("corrupt", RESULTS_CORRUPTIONS)
@pytest.mark.parametrize("run", ["finished_run", "interrupted_run"])
def test_unreadable_results_is_one_line_naming_it(request, tmp_path, corrupt, run):
    cfg, out = copy_run(request.getfixturevalue(run), tmp_path)
    RESULTS_CORRUPTIONS[corrupt](out / "results.json")
    fix = "--resume continues from checkpoint.pt" if run == "interrupted_run" else "the run starts afresh"
    for resume in (False, True):
        with pytest.raises(ConfigError, match=rf"{out / 'results.json'} is unreadable .*delete it \({fix}\)"):
            run_experiment(cfg, out, resume=resume)


# ---------------------------------------------------------------- checkpoint size
def _memory_state(strategy) -> list:
    """Every memory sample (input and label), in the order of the memory."""
    if isinstance(strategy, ICaRL):
        plugin = next(p for p in strategy.plugins if hasattr(p, "x_memory"))
        return [(x, y) for xs, ys in zip(plugin.x_memory, plugin.y_memory) for x, y in zip(xs, ys)]
    owner = next((p for p in strategy.plugins if hasattr(p, "storage_policy")), strategy)
    return [(x, int(y)) for x, y, *_ in owner.storage_policy.buffer]


MEMORIES = {
    "replay": lambda: dict(plugins=[ReplayPlugin(mem_size=40)]),
    "concat_replay": lambda: dict(plugins=[ConcatReplayPlugin(40)]),
    "er_ace": lambda: dict(cls=ER_ACE, mem_size=40),
    "icarl": lambda: dict(cls=ICaRL, memory_size=40, fixed_memory=True, buffer_transform=None),
}


def _memory_strategy(kind):
    spec = MEMORIES[kind]()
    cls, plugins = spec.pop("cls", Naive), spec.pop("plugins", [])
    torch.manual_seed(0)
    model = MLP(dim=256, n_classes=4)
    common = dict(optimizer=SGD(model.parameters(), lr=0.05), train_mb_size=64, train_epochs=1,
                  evaluator=EvaluationPlugin(loggers=[]), plugins=plugins, **spec)
    if cls is ICaRL:
        return cls(feature_extractor=model.feature_extractor, classifier=model.classifier, **common)
    return cls(model=model, criterion=CrossEntropyLoss(), **common)


@pytest.mark.parametrize("kind", MEMORIES)
def test_checkpoint_holds_the_memory_not_the_dataset(tmp_path, kind):
    x, y, xt, yt = blobs_data(4, train=1000, test=10, seed=2, dim=256)  # 4 MB of training inputs
    benchmark = tensor_benchmark(x, y, xt, yt, n_experiences=2)
    strategy = _memory_strategy(kind)
    strategy.train(benchmark.train_stream[0])
    save_checkpoint(tmp_path / "refs.pt", strategy, benchmark=benchmark)
    save_checkpoint(tmp_path / "whole.pt", strategy)
    model_bytes = sum(t.numel() * t.element_size() for t in strategy.model.state_dict().values())
    memory_bytes = 40 * 256 * 4
    size = (tmp_path / "refs.pt").stat().st_size
    assert size < 3 * model_bytes + 2 * memory_bytes + 100_000, size  # model, momentum-free SGD, memory
    if kind != "icarl":  # iCaRL's exemplars are copies: small both ways
        assert (tmp_path / "whole.pt").stat().st_size > x.numel() * 4

    rebuilt = tensor_benchmark(x.clone(), y.clone(), xt, yt, n_experiences=2)  # as on resume
    resumed = _memory_strategy(kind)
    restore_strategy(resumed, load_checkpoint(tmp_path / "refs.pt"), benchmark=rebuilt)
    saved, restored = _memory_state(strategy), _memory_state(resumed)
    assert len(restored) == len(saved) > 0
    assert all(torch.equal(a, b) and ya == yb for (a, ya), (b, yb) in zip(saved, restored))
    if kind != "icarl":
        with pytest.raises(CheckpointError, match="pass benchmark= to restore_strategy"):
            restore_strategy(_memory_strategy(kind), load_checkpoint(tmp_path / "refs.pt"))


class Unlisted:
    pass


class HoldsUnlisted(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.thing = Unlisted()


def test_a_plugin_state_checkpoints_cannot_hold_is_refused_when_saving(tmp_path):
    strategy = _memory_strategy("replay")
    strategy.plugins.append(HoldsUnlisted())
    with pytest.raises(CheckpointError, match=r"cannot be saved in a checkpoint \(test_faults.Unlisted is not among"):
        save_checkpoint(tmp_path / "ckpt.pt", strategy)
    assert not (tmp_path / "ckpt.pt").exists()


# ---------------------------------------------------------------- what a new user does
def test_an_unwritable_first_experience_cache_is_one_line(tmp_path, monkeypatch, capsys, cli):
    cache = tmp_path / "cache"
    real_open = os.open

    def read_only(path, *args, **kwargs):  # as a read-only folder does, also for root
        if str(path).startswith(str(cache)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["run", "--output-dir", str(tmp_path / "out"), "--set", f"first_experience_cache={cache}", *cli]) == 2
    assert f"cannot write to the first-experience cache folder {cache} (Permission denied): make it writable, or " \
           "set first_experience_cache to another folder" in one_line_error(capsys)


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r.pop("average_incremental_accuracy"), "has no average_incremental_accuracy"),
    (lambda r: r.update(last_accuracy="0.9"), "has a str as last_accuracy"),
    (lambda r: r.update(steps=r["steps"][:1]), "has lists of different lengths (steps: 1, classes_per_step: 2"),
])
def test_resume_and_compare_over_a_hand_edited_results_file_are_one_line(finished_run, tmp_path, capsys, cli, edit,
                                                                          problem):
    out = tmp_path / "grid" / finished_run[0].run_name
    shutil.copytree(finished_run[1], out)
    results = json.loads((out / "results.json").read_text())
    edit(results)
    (out / "results.json").write_text(json.dumps(results))
    assert main(["run", "--output-dir", str(tmp_path / "grid"), *cli, "--resume"]) == 2
    line = one_line_error(capsys)
    assert f"{out / 'results.json'} {problem}" in line and "(edited by hand, or written by another version): " \
        "delete it (the run starts afresh), or use --overwrite." in line
    assert main(["compare", str(tmp_path / "grid")]) == 2
    assert f"{out / 'results.json'} {problem}" in one_line_error(capsys)


def test_compare_over_a_truncated_results_file_is_one_line(finished_run, tmp_path, capsys):
    out = shutil.copytree(finished_run[1], tmp_path / "run")
    _truncate(out / "results.json")
    assert main(["compare", str(tmp_path)]) == 2
    assert f"{out / 'results.json'} is unreadable (truncated or corrupt: " in one_line_error(capsys)


def test_compare_over_runs_of_different_benchmarks_or_splits_is_one_line(finished_run, tmp_path, capsys):
    for name, sizes in (("digits", [2, 2, 2, 2, 2]), ("cifar", [50, 50])):
        out = shutil.copytree(finished_run[1], tmp_path / name)
        results = json.loads((out / "results.json").read_text())
        results["classes_per_step"] = [list(range(n)) for n in sizes]
        for key in ("steps", "old_new_accuracy", "new_class_prediction_share"):
            results[key] = [results[key][0]] * len(sizes)
        results["config"]["benchmark"] = "cifar100" if name == "cifar" else "digits"
        (out / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(tmp_path)]) == 2
    assert "these runs are of different benchmarks or class splits (cifar100, 2 x 50 classes: 1 run(s), e.g. " \
           f"{tmp_path / 'cifar'}; digits, 5 x 2 classes: 1 run(s), e.g. {tmp_path / 'digits'}): compare each on " \
           "its own" in one_line_error(capsys)


@pytest.mark.slow
def test_a_killed_worker_under_jobs_says_resume_continues(tmp_path, monkeypatch, capsys, cli):
    import functools

    from bsce_avalanche.runner import runs
    from conftest import kill_own_process

    monkeypatch.setattr(runs, "_run_in_processes", functools.partial(runs._run_in_processes, worker=kill_own_process))
    assert main(["grid", "--output-dir", str(tmp_path), *cli, "--losses", "ce", "bsce", "--jobs", "2"]) == 1
    assert "died (killed, e.g. by the out-of-memory killer), and the runs under way with it; the finished runs " \
           "are saved: run the same command with --resume" in one_line_error(capsys)
