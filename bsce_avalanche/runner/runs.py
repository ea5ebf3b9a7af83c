"""Running a config's runs: :func:`run_configs` runs every combination of its grid, one after the other or
in fresh processes (``--jobs``), then compares them (``bsce-experiment run`` and ``grid``, a sweep's run)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Optional

from .config import ConfigError, ExperimentConfig
from .grid import combination_error, expand_grid
from .identity import differing_settings, result_settings

__all__ = ["run_configs", "nothing_to_resume", "RunProcessDied"]


def run_configs(cfg: ExperimentConfig, resume: bool = False, jobs: int = 1, overwrite: bool = False,
                announce: bool = True) -> Optional[Path]:
    """Run every combination of ``cfg`` into ``output_dir/<run name>/``, ``jobs`` at once, then compare them;
    with ``resume`` (and ``announce``), a run that finds nothing to resume says so (:func:`nothing_to_resume`)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}.")
    runs, out = expand_grid(cfg), Path(cfg.output_dir)
    skipped = {run.run_name: combination_error(run) for run in runs if combination_error(run)}
    if len(skipped) == len(runs):
        raise ConfigError(next(iter(skipped.values())) if len(runs) == 1 else
                          f"no combination of the grid can run: {'; '.join(sorted(set(skipped.values())))}")
    from . import distributed
    from .compare import compare
    from .experiment import run_experiment

    if jobs > 1 and distributed.launched_distributed():
        raise ConfigError("--jobs starts processes of its own: do not combine it with torchrun (use --jobs 1).")
    main = distributed.is_main_process()  # under torchrun every rank runs this; rank 0 reports
    say = print if main else (lambda *args, **kwargs: None)
    runs = [run for run in runs if run.run_name not in skipped]
    jobs = min(jobs, len(runs))
    say(f"bsce-experiment: {len(runs)} run(s) -> {out}" + (f", {jobs} at once" if jobs > 1 else ""), flush=True)
    for name, reason in skipped.items():
        say(f"  skipping {name}: {reason}", flush=True)
    if resume and announce:
        for run in runs:
            if note := nothing_to_resume(run, out):
                say(f"  {note}", flush=True)
    if jobs > 1:
        results = _run_in_processes(runs, out, resume, jobs, overwrite)
    else:
        results = ((run_cfg, run_experiment(run_cfg, out / run_cfg.run_name, resume=resume, overwrite=overwrite))
                   for run_cfg in runs)
    for run_cfg, result in results:
        say(f"  {run_cfg.run_name}: average incremental accuracy {100 * result['average_incremental_accuracy']:.2f}%, "
            f"last {100 * result['last_accuracy']:.2f}%, {result['train_time_s']:.0f} s", flush=True)
        if sync := (result.get("wandb") or {}).get("sync_command"):
            say(f"  W&B run saved offline; upload it with: {sync}", flush=True)
    if not main:
        return None
    table = compare([out / r.run_name / "results.json" for r in runs], out)
    print(f"comparison: {table}", flush=True)
    print(table.read_text().split("\n\n")[1], flush=True)
    return table


def nothing_to_resume(run: ExperimentConfig, out: Path) -> Optional[str]:
    """Where ``--resume`` finds no run of ``run``'s name in ``out``: a line saying so, naming the nearest run
    folder there (the fewest result settings apart) and the settings that differ; else None."""
    if (out / run.run_name / "results.json").exists() or (out / run.run_name / "checkpoint.pt").exists():
        return None
    nearest = None
    for path in sorted(out.glob("*/results.json")) if out.is_dir() else ():
        try:
            config = json.loads(path.read_text())["config"]
            differ = differing_settings([config, run.to_dict()])
            if result_settings(config)["seed"] != run.seed:
                differ.append("seed")
        except (ValueError, KeyError, TypeError):
            continue
        if nearest is None or len(differ) < len(nearest[1]):
            nearest = (path.parent, differ, result_settings(config))
    if nearest is None:
        return f"--resume: nothing to resume for {run.run_name} (no run in {out}): starting it afresh"
    folder, differ, before = nearest
    now = result_settings(run.to_dict())
    shown = ", ".join(f"{k} {before[k]!r} -> {now[k]!r}" for k in differ[:4]) + (", ..." if len(differ) > 4 else "")
    return (f"--resume: nothing to resume for {run.run_name}: the nearest run, {folder.name}, differs in {shown}; "
            "starting it afresh (to continue that run, resume with its settings)")


class RunProcessDied(RuntimeError):
    """A ``--jobs`` worker process died (killed by a signal, e.g. the out-of-memory killer)."""


def _run_in_processes(runs: list, out: Path, resume: bool, jobs: int, overwrite: bool = False, worker=None):
    """Yield ``(config, results)`` of each run as it finishes, ``jobs`` fresh processes at a time, each
    with ``cores // jobs`` torch threads unless its config sets ``threads`` (same numbers as alone).

    :param worker: what a process runs, ``_run_one`` (a module-level function; tests pass another).
    :raises RunProcessDied: a worker process died."""
    worker = worker or _run_one
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // jobs)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    # waiting workers ignore Ctrl-C (no tracebacks); a worker's run takes it like a single run
    with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1,
                             initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        futures = {pool.submit(worker, run_cfg.replace(progress=False), out / run_cfg.run_name, resume, threads,
                               overwrite):
                   run_cfg for run_cfg in runs}
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    raise RunProcessDied(
                        f"the process of run {futures[future].run_name} died (killed, e.g. by the out-of-memory "
                        "killer), and the runs under way with it; the finished runs are saved: run the same command "
                        "with --resume to continue the others from their last finished step.") from None
                yield futures[future], result
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the runs under way finish (and are saved)
            raise


def _run_one(cfg: ExperimentConfig, out: Path, resume: bool, threads: int, overwrite: bool = False) -> dict:
    import torch

    from .experiment import run_experiment

    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(cfg.threads or threads)
    return run_experiment(cfg, out, resume=resume, overwrite=overwrite)
