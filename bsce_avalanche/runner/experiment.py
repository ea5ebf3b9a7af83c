"""Run one class-incremental experiment from an :class:`ExperimentConfig`: build the benchmark, the
model and the Avalanche strategy, train step by step, evaluate on the test set after every step, and
write ``results.json`` (atomically, after every step) and a W&B run."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch
from avalanche import __version__ as avalanche_version
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from tqdm.auto import tqdm

from ..benchmarks import BENCHMARKS, BatchAugmentPlugin, DeviceDataPlugin
from ..models import AMP_DTYPES, Autocast, compile_model, make_model
from ..icarl import set_icarl_eval
from ..plugin import BalancedSoftmaxPlugin
from ..posthoc import LogitAdjustmentPlugin
from ..weight_aligning import WeightAligningPlugin
from . import distributed
from .catalog import STRATEGIES, uses_replay_option
from .checkpoint import CheckpointError, benchmark_digest, load_checkpoint, restore_strategy, save_checkpoint
from .compute import COMPUTE_KEYS, ComputeCounter, samples_stored
from .results_format import new_results, problem_cause, results_problem
from .config import ConfigError, ExperimentConfig
from .divergence import NonFiniteLossGuard, TrainingDiverged
from .fileio import lock_run_dir, write_json_atomic
from .first_experience import FirstExperiencePlugin, cache_dir
from .grid import combination_error
from .identity import RESULT_KEYS, result_settings
from .metrics import evaluate_step, summarise
from .online import online_experiences, split_seed
from .strategies import build_strategy
from .catalog import posthoc_applies
from .ncm import NCMDiagnostic

__all__ = ["run_experiment", "build_benchmark", "build_model", "build_strategy", "resolve_device"]

RESULTS_FILE = "results.json"
CHECKPOINT_FILE = "checkpoint.pt"


def _nan_to_none(value):
    """JSON has no NaN: metrics that do not exist (no old classes yet) become null."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but no CUDA device is available; use device: auto or cpu.")
    return torch.device(name)


def build_benchmark(cfg: ExperimentConfig):
    """The Avalanche benchmark of ``cfg`` (an ``nc_benchmark``-style scenario)."""
    info = BENCHMARKS[cfg.benchmark]
    options = {key: cfg.use_fast_augment if key == "fast_augment" else getattr(cfg, key) for key in info.options}
    try:
        return info.build(protocol=cfg.protocol, n_steps=cfg.n_steps, class_order=cfg.class_order, seed=cfg.seed,
                          **options)
    except ValueError as err:  # e.g. a malformed data file
        raise ConfigError(f"benchmark {cfg.benchmark!r}: {err}") from err


def build_model(cfg: ExperimentConfig, n_classes: int, device: Optional[torch.device] = None):
    """The network, normalising uint8 input as the benchmark needs, with ``amp``, ``data_path`` and ``compile``
    applied."""
    widths = {"widths": (cfg.width, 2 * cfg.width, 4 * cfg.width)} if cfg.width != 16 else {}
    model = make_model(cfg.model_name, n_classes, input_norm=BENCHMARKS[cfg.benchmark].input_norm,
                       incremental=cfg.incremental_head, **widths)
    if AMP_DTYPES[cfg.amp] is not None:
        model.feature_extractor = Autocast(model.feature_extractor, AMP_DTYPES[cfg.amp])
    if cfg.data_path == "device" and device is not None and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # NHWC convolutions for the tensor cores
    if cfg.compile:
        if not _cxx_compiler():  # inductor builds C++ (and Triton's launchers) at the first step: say so now
            raise ConfigError("compile: true needs a C++ compiler (torch.compile's inductor builds its kernels with "
                              "one) and none was found ($CXX, c++, g++, clang++): install one (e.g. apt-get install "
                              "g++), or set compile: false.")
        # the feature extractor only, in place (state_dict keys unchanged; the growing head stays eager), torch's
        # default mode on CPU and CUDA alike: CUDA graphs would overwrite the features iCaRL keeps between calls.
        # Static shapes, one graph per mode (train, eval) at its full batch; the last, smaller batch of an epoch
        # runs eager instead of compiling again (RESULTS.md section 4c)
        compile_model(model, one_graph_per_mode=True)
    return model


#: results["environment"]["compile"] of a run with compile: true (null without): how it was compiled.
COMPILE_RECORD = ("inductor, feature extractor only, static shapes: one graph per mode (train, eval) at its largest "
                  "batch, other batch sizes eager")


def _cxx_compiler() -> Optional[str]:
    """The C++ compiler torch.compile would use ($CXX, else c++, g++, clang++ on the PATH), or None."""
    import shutil

    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    return next((path for name in names if (path := shutil.which(name))), None)


class _PredictionRecorder(SupervisedPlugin, supports_distributed=True):  # evaluates the whole test set
    """Plugin collecting the predictions of ``strategy.eval`` (after all plugins ran) and, with ``posthoc`` (a
    :class:`LogitAdjustmentPlugin` that leaves the outputs alone), the post-hoc adjusted predictions of the
    same forward pass."""

    def __init__(self):
        super().__init__()
        self.posthoc: Optional[LogitAdjustmentPlugin] = None
        self.reset()

    def reset(self):
        self.y_true, self.y_pred, self.y_posthoc = [], [], []

    # after_eval_iteration: BiC corrects mb_output in after_eval_forward
    def after_eval_iteration(self, strategy, **kwargs):
        output = strategy.mb_output.detach()
        self.y_true.append(strategy.mb_y.detach().cpu())
        self.y_pred.append(output.argmax(1).cpu())
        if self.posthoc is not None:
            self.y_posthoc.append(self.posthoc.adjust(output).argmax(1).cpu())

    def arrays(self):
        return torch.cat(self.y_true).numpy(), torch.cat(self.y_pred).numpy()

    def posthoc_predictions(self) -> Optional[np.ndarray]:
        return torch.cat(self.y_posthoc).numpy() if self.y_posthoc else None


def run_experiment(cfg: ExperimentConfig, output_dir: Optional[str | os.PathLike] = None, resume: bool = False,
                   overwrite: bool = False) -> dict:
    """Train and evaluate one configuration; return (and write) its results.

    After every step the results so far and ``checkpoint.pt`` are written atomically. ``resume=True``
    continues a run from its last finished step (its W&B run too), or returns a finished one as is; a
    directory holding a run is refused unless resuming it or ``overwrite=True``.

    :raises TrainingDiverged: a non-finite training loss (recorded in ``results.json``).
    """
    if combination_error(cfg):
        raise ConfigError(combination_error(cfg))
    out = Path(output_dir or cfg.output_dir)
    # under torchrun (WORLD_SIZE > 1): join the process group; rank 0 alone writes files
    device = distributed.setup(resolve_device(cfg.device))
    with contextlib.ExitStack() as lock:
        checkpoint = distributed.run_on_main(_claim_run_dir, lock, cfg, out, resume, overwrite)
        if checkpoint == "finished":
            return distributed.run_on_main(lambda: json.loads((out / RESULTS_FILE).read_text()))
        lock.enter_context(cudnn_benchmark(cfg.data_path == "device" and device.type == "cuda"))
        return _run(cfg, out, device, checkpoint)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """cuDNN's autotuner on while this run trains (the device path's batch shapes are fixed: the fastest
    convolutions are picked once), then as it was: the process's setting is the caller's."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@dataclasses.dataclass
class _Run:
    """What a run's three parts share: :func:`_setup` builds it (resuming a checkpoint's state), :func:`_train_steps`
    trains and records one experience at a time, :func:`_finish` writes the final record."""

    cfg: ExperimentConfig
    out: Path
    main: bool  # this process writes the files (rank 0 under torchrun)
    benchmark: Any
    classes_per_step: list
    n_classes: int
    logger: Any  # the WandBLogger, or None
    # the plugins the runner reads (None: not in this run), and those it adds to the strategy, in order
    recorder: _PredictionRecorder
    counter: ComputeCounter
    guard: NonFiniteLossGuard
    bsce: Optional[BalancedSoftmaxPlugin]
    posthoc: Optional[LogitAdjustmentPlugin]
    ncm: Optional[NCMDiagnostic]
    first: Optional[FirstExperiencePlugin]
    plugins: list
    strategy: Any = None
    aligning: Optional[WeightAligningPlugin] = None
    results: dict = dataclasses.field(default_factory=dict)
    alt_steps: list = dataclasses.field(default_factory=list)  # iCaRL: the other eval mode (head vs NME)

    @property
    def head(self) -> bool:
        """Whether the reported evaluation uses the trained head (iCaRL's NME does not); post-hoc adjusts its logits."""
        return self.cfg.strategy != "icarl" or self.cfg.icarl_eval == "head"

    @property
    def has_memory(self) -> bool:
        """Whether the strategy keeps a rehearsal memory (``samples_stored`` counts it)."""
        return STRATEGIES[self.cfg.strategy].memory or uses_replay_option(vars(self.cfg))


def _run(cfg: ExperimentConfig, out: Path, device, checkpoint) -> dict:
    """The run in ``out`` (locked), from ``checkpoint`` when resuming: set up, train the steps left, finish."""
    run = _setup(cfg, out, device, checkpoint)
    _train_steps(run)
    return _finish(run)


def _setup(cfg: ExperimentConfig, out: Path, device, checkpoint) -> _Run:
    """Seed; build the benchmark, the model, the W&B logger, the plugins and the strategy; start the results, and
    put a checkpoint's state back."""
    main = distributed.is_main_process()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    RNGManager.set_random_seeds(cfg.seed)  # random, numpy, torch (CPU and CUDA)

    benchmark = build_benchmark(cfg)
    classes_per_step = [list(map(int, e.classes_in_this_experience)) for e in benchmark.train_stream]
    n_classes = int(benchmark.n_classes)
    model = build_model(cfg, n_classes, device)
    logger = _start_logger(cfg, out, checkpoint) if cfg.wandb and main else None
    metrics = accuracy_metrics(experience=True, stream=True), loss_metrics(experience=True, stream=True)
    evaluator = EvaluationPlugin(*metrics, loggers=[logger] if logger is not None else [])
    run = _Run(cfg=cfg, out=out, main=main, benchmark=benchmark, classes_per_step=classes_per_step, n_classes=n_classes,
               logger=logger, **_make_plugins(cfg, n_classes, device, out, checkpoint))
    # DDP: cfg.batch_size is the global mini-batch; each rank loads its share
    train_cfg = cfg.replace(batch_size=distributed.per_rank_batch_size(cfg.batch_size),
                            batch_size_mem=cfg.batch_size_mem and distributed.per_rank_batch_size(cfg.batch_size_mem))
    run.strategy = build_strategy(train_cfg, model, n_classes, device, run.plugins, evaluator)
    distributed.prepare_strategy(run.strategy, device, cfg.batch_size)

    # the fields and their meaning: results_format.FIELDS
    run.results = new_results(cfg.to_dict(), n_classes, list(map(int, benchmark.classes_order)), classes_per_step,
                              _data_digest(cfg, benchmark),
                              {**_environment(device), "compile": COMPILE_RECORD if cfg.compile else None})
    if distributed.is_distributed():
        run.results["distributed"] = distributed.describe(cfg.batch_size)
    if logger is not None:
        run.results["wandb"] = {"run_id": logger.run_id, "run_dir": str(logger.run_dir) if logger.run_dir else None,
                                "sync_command": logger.sync_command}
    if checkpoint:
        _resume(run, checkpoint)
    run.aligning = next((p for p in run.strategy.plugins if isinstance(p, WeightAligningPlugin)), None)
    return run


def _start_logger(cfg: ExperimentConfig, out: Path, checkpoint):
    """The run's W&B logger (a resumed run continues its W&B run)."""
    from .wandb_logger import WandBLogger  # wandb is a heavy import, not needed with --no-wandb

    run_id = ((checkpoint["extra"]["results"].get("wandb") or {}) if checkpoint else {}).get("run_id")
    return WandBLogger(id=run_id, resume="allow" if run_id else None, project=cfg.wandb_project,
                       entity=cfg.wandb_entity, name=f"{cfg.name}/{cfg.run_name}", group=f"{cfg.name}/{cfg.strategy}",
                       job_type=cfg.loss, tags=[cfg.benchmark, cfg.strategy, cfg.loss], config=cfg.to_dict(), dir=out,
                       mode=cfg.wandb_mode)


def _make_plugins(cfg: ExperimentConfig, n_classes: int, device, out: Path, checkpoint) -> dict:
    """The runner's plugins by name, and ``plugins``: the list the strategy gets, in order."""
    recorder = _PredictionRecorder()
    # its counts go to results (and so into checkpoints) after each step (online: summed over the task's
    # mini-batch experiences)
    counter = ComputeCounter(per_experience=not cfg.online)
    bsce = (BalancedSoftmaxPlugin(prior=cfg.prior, tau=cfg.tau, distillation_weight=cfg.icarl_distillation_weight,
                                  window=cfg.prior_window)
            if cfg.loss == "bsce" else None)
    # first, the first experience's cache (its after_training_exp runs before the others'); the batch
    # augmentation before the plugins that should see the augmented batch
    # (online: off; its first experience is a single mini-batch, and no run shares its first task's training)
    first = None if checkpoint or cfg.online else FirstExperiencePlugin(cfg, n_classes, device, cache_dir(cfg, out))
    plugins = [first] if first else []
    plugins += [DeviceDataPlugin()] if cfg.data_path == "device" else []
    plugins += [BatchAugmentPlugin()] if cfg.use_fast_augment else []
    guard = NonFiniteLossGuard()
    # post-hoc logit adjustment of a softmax-CE run: recorded from the same evaluation pass, training untouched
    posthoc = LogitAdjustmentPlugin(prior="window" if cfg.posthoc_window else "auto", window=cfg.posthoc_window,
                                    adjust_outputs=False) if posthoc_applies(vars(cfg)) else None
    ncm = NCMDiagnostic() if cfg.ncm_diagnostic else None  # features' NCM accuracy, class means from the memory
    plugins += [p for p in (bsce, posthoc, ncm, recorder, counter, guard) if p is not None]
    return dict(recorder=recorder, counter=counter, guard=guard, bsce=bsce, posthoc=posthoc, ncm=ncm, first=first,
                plugins=plugins)


def _resume(run: _Run, checkpoint: dict) -> None:
    """Put the checkpoint's strategy state and results (not its W&B record: the logger's) into ``run``, after
    checking that it trained on the same data."""
    cfg, results = run.cfg, run.results
    before = checkpoint["extra"]["results"].get("data_digest")
    if before is not None and before != results["data_digest"]:
        raise ConfigError(f"{run.out / CHECKPOINT_FILE} was trained on other data (digest {before}, now "
                          f"{results['data_digest']}: data_dir {cfg.data_dir or 'default'}): resume with the data "
                          "it started on, or use --overwrite or another --output-dir to start afresh on this data.")
    saved = restore_strategy(run.strategy, checkpoint, exclude=[run.recorder, run.counter, run.guard],
                             benchmark=run.benchmark)
    results.update({k: v for k, v in saved["results"].items() if k != "wandb"})
    for key in COMPUTE_KEYS:  # a checkpoint of a version that did not count: its steps are null
        results[key] = results.get(key, []) + [None] * (len(results["steps"]) - len(results.get(key, [])))
    run.alt_steps = saved["alt_steps"]
    if run.main:
        print(f"{cfg.run_name}: resuming after step {len(results['steps'])} of {len(run.classes_per_step)}",
              flush=True)


def _train_steps(run: _Run) -> None:
    """Train and evaluate the steps not done yet, one at a time, writing the results (and a checkpoint) after each.
    A failure finishes the W&B run as failed; a divergence is recorded in the results first."""
    start_step = len(run.results["steps"])
    bar = tqdm(desc=run.cfg.run_name, unit="step", disable=not (run.cfg.progress and run.main), initial=start_step,
               total=len(run.classes_per_step))
    try:
        for t, experience in enumerate(run.benchmark.train_stream):
            if t < start_step:
                continue
            distributed.sync_rng()
            _train_step(run, t, experience)
            step_eval = _evaluate_step(run, t)
            bar.set_postfix(acc=f"{step_eval['accuracy_seen']:.3f}", refresh=False)
            _save_step(run, t, step_eval)
            bar.update(1)
    except BaseException as err:
        if isinstance(err, TrainingDiverged) and run.main:  # the steps before it stay valid
            run.results["failed"] = err.record
            write_json_atomic(run.out / RESULTS_FILE, _nan_to_none(run.results))
        if run.logger is not None:
            run.logger.finish(exit_code=1)
        raise
    finally:
        bar.close()


def _train_step(run: _Run, t: int, experience) -> None:
    """Train on experience ``t`` and record what training did (time, prior, compute, memory)."""
    cfg, results, strategy = run.cfg, run.results, run.strategy
    start = time.perf_counter()
    if cfg.online:  # one train() per mini-batch: the memory updated after each, evaluation once per task
        run.counter.reset()
        for mini in online_experiences(experience, cfg.batch_size, split_seed(cfg.seed, t)):
            strategy.train(mini, num_workers=cfg.num_workers)
        run.counter.epochs = 1  # one pass over the task
        for plugin in (run.bsce, run.posthoc):  # one prior per mini-batch: keep the task's last (results["priors"])
            if plugin is not None:
                del plugin.class_prior.history[:-1]
    else:
        strategy.train(experience, num_workers=cfg.num_workers)
    results["step_times_s"].append(time.perf_counter() - start)
    if run.first is not None and t == 0:  # done: checkpoints hold the plugins of a resumed run
        strategy.plugins.remove(run.first)
        results["first_experience"] = run.first.info
    results["priors"].append(run.bsce.prior_history[-1] if run.bsce is not None else None)
    if run.aligning is not None:  # its whole history: a resumed run's plugin holds the earlier steps'
        results["weight_aligning_gamma"] = list(run.aligning.gamma_history)
    for key, value in run.counter.step_record(distributed.world_size()).items():
        results[key].append(value)
    results["samples_stored"].append(samples_stored(strategy) if run.has_memory else 0)


def _evaluate_step(run: _Run, t: int) -> dict:
    """Evaluate on the test experiences seen so far (iCaRL: with both classifiers), record it with its post-hoc and
    NCM views, and summarise the steps so far; return the step's evaluation."""
    cfg, results, posthoc = run.cfg, run.results, run.posthoc
    evaluation = (run.strategy, run.recorder, run.benchmark, run.classes_per_step, t, run.n_classes, cfg.num_workers)
    step_eval = _evaluate(*evaluation, posthoc=posthoc if run.head else None, ncm=run.ncm)
    results["steps"].append(step_eval)
    if cfg.strategy == "icarl":
        other = "head" if cfg.icarl_eval == "nme" else "nme"
        set_icarl_eval(run.strategy, other)
        run.alt_steps.append(_evaluate(*evaluation, quiet=True, posthoc=None if run.head else posthoc))
        set_icarl_eval(run.strategy, cfg.icarl_eval)
        results["icarl_" + other] = summarise(run.alt_steps)
    if posthoc is not None:
        _record_view(results, "posthoc", (results["steps"] if run.head else run.alt_steps)[-1].pop("posthoc"),
                     method="post-hoc logit adjustment (Menon et al., ICLR 2021): logits - tau * log prior "
                            "of the step's training data", tau=posthoc.tau, prior=posthoc.class_prior.mode,
                     prior_window=posthoc.class_prior.window)
    if "ncm" in step_eval:
        _record_view(results, "ncm", step_eval.pop("ncm"), method="nearest class mean of the memory's "
                                                                  "features (cosine), a diagnostic")
    results.update(summarise(results["steps"]))
    results["train_time_s"] = float(sum(results["step_times_s"]))
    if distributed.is_distributed():
        digests = distributed.consistency_digests(run.strategy.model, run.bsce.prior_history if run.bsce else None)
        results["distributed"]["consistent_per_step"].append(digests["consistent"])
        results["distributed"]["last_digests"] = digests
    return step_eval


def _save_step(run: _Run, t: int, step_eval: dict) -> None:
    """Log step ``t`` to W&B, write the results so far and (last) the checkpoint to resume after it."""
    if run.logger is not None:
        _log_step(run.logger, t, step_eval, run.results)
    if run.main:
        write_json_atomic(run.out / RESULTS_FILE, _nan_to_none(run.results))
    if run.cfg.checkpoint and run.main:  # saved last: the RNG state is the one the next step starts from
        save_checkpoint(run.out / CHECKPOINT_FILE, run.strategy, exclude=[run.recorder, run.counter, run.guard],
                        benchmark=run.benchmark,
                        extra={"results": run.results, "alt_steps": run.alt_steps, "config": run.cfg.to_dict()})


def _finish(run: _Run) -> dict:
    """Complete the results with the last step's per-class accuracy and confusion matrix, log the final figures and
    close the W&B run, write ``results.json`` (the checkpoint goes) and return the results."""
    results, steps = run.results, run.results["steps"]
    results["finished"] = True
    results.update({k: steps[-1][k] for k in ("per_class_accuracy", "confusion_matrix")})
    for s in steps + run.alt_steps + [v for k in ("posthoc", "ncm") for v in results.get(k, {}).get("steps", [])]:
        s.pop("confusion_matrix", None)  # keep the per-step file small: the last matrix is enough
    if run.logger is not None:
        _log_final(run.logger, results)
    if run.main:
        write_json_atomic(run.out / RESULTS_FILE, _nan_to_none(results))
        (run.out / CHECKPOINT_FILE).unlink(missing_ok=True)  # finished: results.json is the record
    distributed.barrier()
    return _nan_to_none(results)


def _differing_keys(saved: dict, cfg: ExperimentConfig) -> list:
    """The settings that change results (:data:`~.config.RESULT_KEYS`) on which a saved run and ``cfg`` differ."""
    before, now = result_settings(saved), result_settings(cfg.to_dict())
    return [k for k in RESULT_KEYS if before[k] != now[k]]


def _claim_run_dir(lock: contextlib.ExitStack, cfg: ExperimentConfig, out: Path, resume: bool, overwrite: bool):
    """Lock ``out`` (held until ``lock`` closes); return the checkpoint to resume from, ``"finished"``,
    or None (start afresh); a ConfigError where the run's files would be replaced without ``overwrite``."""
    lock.enter_context(lock_run_dir(out))
    results_path, ckpt_path = out / RESULTS_FILE, out / CHECKPOINT_FILE
    if overwrite:
        ckpt_path.unlink(missing_ok=True)  # results.json is replaced after the first step
        return None
    done = None  # what results.json says was done
    if results_path.exists():
        try:
            results = json.loads(results_path.read_text())
            diff = _differing_keys(results["config"], cfg)
            failed = results.get("failed") and f", failed: {results['failed']['reason'].rstrip('.')}"
            done = f"{len(results['steps'])} step(s) done{failed or ''}"
        except (ValueError, KeyError, TypeError) as err:
            fix = "--resume continues from checkpoint.pt" if ckpt_path.exists() else "the run starts afresh"
            raise ConfigError(f"{results_path} is unreadable (truncated or corrupt: {type(err).__name__}): delete "
                              f"it ({fix}), or use --overwrite.") from None
        if diff:
            raise ConfigError(f"{results_path} was written with a different config (keys {diff} differ): use "
                              "--overwrite to replace it, or another --output-dir.")
        if problem := results_problem(results):
            raise ConfigError(f"{results_path} {problem}{problem_cause(problem)}: delete it (the run starts "
                              "afresh), or use --overwrite.")
        if results.get("finished"):
            if resume:
                return "finished"
            raise ConfigError(f"{out} already holds this finished run: use --resume to keep it, --overwrite "
                              "to run it again, or another --output-dir.")
    if not resume and (done or ckpt_path.exists()):
        raise ConfigError(f"{out} holds an unfinished run ({done or 'a checkpoint'}): use --resume to continue "
                          "it, --overwrite to start afresh, or another --output-dir.")
    if not ckpt_path.exists():
        if done:
            print(f"{out}: no {CHECKPOINT_FILE} to resume from: starting the run afresh", flush=True)
        return None
    checkpoint = load_checkpoint(ckpt_path)
    extra = checkpoint.get("extra")
    if not (isinstance(extra, dict) and isinstance(extra.get("config"), dict) and isinstance(extra.get("results"), dict)
            and isinstance(extra.get("alt_steps"), list)):
        raise CheckpointError(f"{ckpt_path} has no run record (config, results) of this runner: delete it to start the "
                          "run afresh, or use --overwrite.")
    diff = _differing_keys(checkpoint["extra"]["config"], cfg)
    if diff:
        raise ConfigError(f"{ckpt_path} was written with a different config (keys {diff} differ): resume with the "
                          "same config and overrides, or use another --output-dir.")
    return checkpoint


def _record_view(results: dict, name: str, step_eval: dict, **about) -> None:
    """Append a step's evaluation by another rule (post-hoc adjustment, NCM) to ``results[name]`` (``about``
    describes it) and summarise it like the run's own."""
    record = results.setdefault(name, {**about, "steps": []})
    for s in record["steps"]:
        s.pop("confusion_matrix", None)
    record["steps"].append(step_eval)
    record.update(summarise(record["steps"]))


def _evaluate(strategy, recorder, benchmark, classes_per_step, t, n_classes, num_workers, quiet=False,
              posthoc=None, ncm=None):
    """The step's metrics; with ``posthoc``, also those of its adjusted predictions, as ``["posthoc"]``; with
    ``ncm``, those of its nearest-class-mean predictions (when the strategy has a memory), as ``["ncm"]``."""
    recorder.reset()
    recorder.posthoc = posthoc
    evaluator, plugins = strategy.evaluator, strategy.plugins
    if quiet:  # second eval pass (iCaRL's other classifier): keep it out of the metric logs
        strategy.evaluator = SimpleNamespace(get_last_metrics=dict)
        strategy.plugins = [p for p in plugins if p is not evaluator]
    try:  # experiences not seen yet are not evaluated (their accuracy is null)
        strategy.eval(benchmark.test_stream[: t + 1], num_workers=num_workers)
    finally:
        strategy.evaluator, strategy.plugins = evaluator, plugins
        recorder.posthoc = None
    y_true, y_pred = recorder.arrays()
    step = evaluate_step(y_true, y_pred, classes_per_step, t, n_classes)
    if posthoc is not None:
        step["posthoc"] = evaluate_step(y_true, recorder.posthoc_predictions(), classes_per_step, t, n_classes)
    if ncm is not None and not quiet and (predictions := ncm.predictions()) is not None:
        step["ncm"] = evaluate_step(y_true, predictions, classes_per_step, t, n_classes)
    return step


def _data_digest(cfg: ExperimentConfig, benchmark) -> str:
    """The digest of the data a run trains on, the same for every seed: that of the benchmark as built with seed 0
    (a seed may draw its own split or class order from the same data, which is no other data)."""
    return benchmark_digest(benchmark if cfg.seed == 0 else build_benchmark(cfg.replace(seed=0)))


def _environment(device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    return {"device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "torch": str(torch.__version__), "avalanche": avalanche_version}


def _log_step(logger, t, step_eval, results):
    metrics = {k: step_eval[k] for k in ("accuracy_seen", "new_accuracy", "old_accuracy", "new_class_prediction_share")}
    metrics.update(train_time_s=results["step_times_s"][-1],
                   average_incremental_accuracy=results["average_incremental_accuracy"])
    logger.log_step_metrics(t, {f"step/{k}": v for k, v in metrics.items() if v is not None and np.isfinite(v)})
    if results["priors"][-1] is not None:
        logger.log_class_prior(t, results["priors"][-1])


def _log_final(logger, results):
    last = len(results["steps"]) - 1
    logger.log_accuracy_matrix(results["accuracy_matrix"])
    logger.log_per_class_accuracy(last, [a if a is not None else 0.0 for a in results["per_class_accuracy"]],
                                  classes_per_step=results["classes_per_step"])
    cm = np.asarray(results["confusion_matrix"])
    # the labels back from the matrix: the pair (i, j) repeated cm[i][j] times
    y_true, y_pred = np.repeat(np.indices(cm.shape).reshape(2, -1), cm.ravel(), axis=1)
    logger.log_confusion_matrix(last, y_true, y_pred, class_names=range(cm.shape[0]))
    # and the first experience's model it started from, to find the runs that share one
    logger.summary({k: results[k] for k in ("average_incremental_accuracy", "last_accuracy", "forgetting",
                                            "train_time_s", "first_experience") if k in results})
    logger.finish()
