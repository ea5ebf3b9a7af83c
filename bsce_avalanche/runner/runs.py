"""Running a set of runs, the one path of ``bsce-experiment run`` and ``grid`` and of the evidence scripts' plans
(:mod:`.plans`): :func:`run_each` runs configs one after the other in this process, or ``jobs`` at a time in fresh
processes (each a :func:`_run_one`), one line per finished run; :func:`run_configs` runs every combination of a
config's grid that way, then compares them; :func:`exit_on_sigterm` makes SIGTERM unwind like Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import ConfigError, ExperimentConfig
from .grid import combination_error, expand_grid
from .identity import differing_settings, result_settings
from .results_format import results_problem

__all__ = ["run_configs", "run_each", "exit_on_sigterm", "nothing_to_resume", "RunProcessDied"]


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
    run_each(runs, out, resume=resume, jobs=jobs, overwrite=overwrite, say=say)
    if not main:
        return None
    table = compare([out / r.run_name / "results.json" for r in runs], out)
    print(f"comparison: {table}", flush=True)
    print(table.read_text().split("\n\n")[1], flush=True)
    return table


def run_each(runs: Sequence[ExperimentConfig], out: Path, resume: bool = False, jobs: int = 1, overwrite: bool = False,
             keep_going: bool = False, quiet: bool = False, say: Callable = print,
             folder: Optional[Callable[[ExperimentConfig], str]] = None) -> list[str]:
    """Run each of ``runs`` into ``out/<run name>/`` (``folder(config)``: another folder name): one after the
    other in this process, or (``jobs`` > 1) ``jobs`` at a time in fresh processes (:func:`_run_in_processes`;
    with ``resume``, a run finished before is read here, not handed to a process); say one line per finished run
    (and the W&B command that uploads an offline run). A run that fails raises its error, or with ``keep_going``
    is reported with its traceback while the others go on; ``quiet``: the runs' Python warnings are not shown.

    :returns: the names of the runs that failed (``keep_going``).
    :raises RunProcessDied: a worker process died."""
    failed = []
    for run_cfg, result in _finished_runs(runs, out, resume, min(jobs, len(runs)), overwrite, keep_going, quiet,
                                          folder or _run_name):
        if isinstance(result, BaseException):  # keep_going
            failed.append(run_cfg.run_name)
            say(f"  {run_cfg.run_name}: FAILED\n{''.join(traceback.format_exception(result))}", flush=True)
            continue
        say(f"  {run_cfg.run_name}: average incremental accuracy {100 * result['average_incremental_accuracy']:.2f}%, "
            f"last {100 * result['last_accuracy']:.2f}%, {result['train_time_s']:.0f} s", flush=True)
        if sync := (result.get("wandb") or {}).get("sync_command"):
            say(f"  W&B run saved offline; upload it with: {sync}", flush=True)
    return failed


def _run_name(run_cfg: ExperimentConfig) -> str:
    return run_cfg.run_name


def _finished_runs(runs, out: Path, resume: bool, jobs: int, overwrite: bool, keep_going: bool, quiet: bool,
                   folder: Callable = _run_name):
    """Yield ``(config, results)`` of each run as it finishes (``keep_going``: ``(config, its error)`` of a run
    that failed), here or in ``jobs`` processes (the runs finished before: read here, first)."""
    if jobs > 1:
        done = {id(run_cfg): _done_before(run_cfg, out / folder(run_cfg)) if resume and not overwrite else None
                for run_cfg in runs}
        yield from ((run_cfg, done[id(run_cfg)]) for run_cfg in runs if done[id(run_cfg)] is not None)
        if todo := [run_cfg for run_cfg in runs if done[id(run_cfg)] is None]:
            yield from _run_in_processes(todo, out, resume, jobs, overwrite, keep_going=keep_going, quiet=quiet,
                                         folder=folder)
        return
    from .experiment import run_experiment

    for run_cfg in runs:
        try:
            with _no_warnings() if quiet else contextlib.nullcontext():
                result = run_experiment(run_cfg, out / folder(run_cfg), resume=resume, overwrite=overwrite)
        except Exception as err:  # noqa: BLE001 - reported, and the other runs go on
            if not keep_going:
                raise
            result = err
        yield run_cfg, result


def _done_before(run_cfg: ExperimentConfig, run_dir: Path) -> Optional[dict]:
    """The results of ``run_cfg`` if ``run_dir`` holds it finished (what ``run_experiment`` with ``resume``
    returns as is), else None (anything else, an unreadable file included, is the run's process's to report)."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or not results.get("finished") or results_problem(results):
        return None
    try:
        same = result_settings(results["config"]) == result_settings(run_cfg.to_dict())
    except (KeyError, TypeError):
        return None
    return results if same else None


@contextlib.contextmanager
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def exit_on_sigterm() -> None:
    """From now on SIGTERM (a cluster pre-empting the job, a W&B agent stopping a run, ``kill``) unwinds like
    Ctrl-C: ``SystemExit(128 + 15)`` in the main thread, so that ``finally`` blocks run (the W&B run is closed)
    and :func:`_run_in_processes` stops the runs under way at their last finished step. Only the main thread can
    set a handler: from another thread, nothing changes."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum, frame):
    sys.exit(128 + signum)


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

    def __init__(self, message: str, run_name: str = ""):
        super().__init__(message)
        self.run_name = run_name


def _run_in_processes(runs: list, out: Path, resume: bool, jobs: int, overwrite: bool = False, worker=None,
                      keep_going: bool = False, quiet: bool = False, folder: Callable = _run_name):
    """Yield ``(config, results)`` of each run as it finishes, ``jobs`` fresh processes at a time, each
    with ``cores // jobs`` torch threads unless its config sets ``threads`` (same numbers as alone);
    ``keep_going``: ``(config, its error)`` of a run that raised one, and the others go on. On an exit (SIGTERM:
    :func:`exit_on_sigterm`) the runs under way are stopped the same way, at their last finished step; on any
    other error (Ctrl-C reaches the workers itself) they end as they do.

    :param worker: what a process runs, ``_run_one`` (a module-level function; tests pass another).
    :param folder: a run's folder name in ``out`` (default: its run name).
    :raises RunProcessDied: a worker process died."""
    worker = worker or _run_one
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // jobs)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    stopping = context.Event()  # set: the runs not started yet do not start (the pool queues one ahead)
    # waiting workers ignore Ctrl-C (no tracebacks); a worker's run takes it like a single run
    with ProcessPoolExecutor(jobs, mp_context=context, max_tasks_per_child=1, initializer=_start_worker,
                             initargs=(quiet, stopping)) as pool:
        futures = {pool.submit(_start_run, worker, run_cfg.replace(progress=False), out / folder(run_cfg), resume,
                               threads, overwrite): run_cfg for run_cfg in runs}
        try:
            for future in as_completed(futures):
                yield futures[future], _result(future, futures[future].run_name, keep_going)
        except BaseException as err:
            stopping.set()
            if isinstance(err, SystemExit):  # SIGTERM here: there too
                _interrupt(pool)
            pool.shutdown(wait=True, cancel_futures=True)  # the runs under way end (and are saved)
            raise


def _interrupt(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to the pool's processes (:func:`_start_worker`: it unwinds like Ctrl-C): the runs under way stop at
    their last finished step, the waiting processes end."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(ProcessLookupError):
            process.terminate()


def _result(future, name: str, keep_going: bool):
    """A finished run's results; with ``keep_going``, the error of a run that raised one."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise RunProcessDied(
            f"the process of run {name} died (killed, e.g. by the out-of-memory killer), and the runs under way "
            "with it; the finished runs are saved: run the same command with --resume to continue the others from "
            "their last finished step.", name) from None
    except Exception as err:  # noqa: BLE001 - a run's own error, raised in its process
        if not keep_going:
            raise
        return err


#: In a worker process: its pool's event, set when the runs not started yet are not to start.
_stopping = None


def _start_worker(quiet: bool, stopping) -> None:
    """A worker process ignores Ctrl-C while it waits (:func:`_run_one` takes it back), unwinds on SIGTERM
    (:func:`exit_on_sigterm`), and with ``quiet`` ignores Python's warnings."""
    global _stopping
    _stopping = stopping
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_on_sigterm()
    if quiet:
        warnings.simplefilter("ignore")


def _start_run(worker, *args):
    """``worker(*args)`` in a worker process, unless its pool is stopping (a run queued before an interrupt)."""
    if _stopping is not None and _stopping.is_set():
        return None
    return worker(*args)


def _run_one(cfg: ExperimentConfig, out: Path, resume: bool, threads: int, overwrite: bool = False) -> dict:
    import torch

    from .experiment import run_experiment

    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(cfg.threads or threads)
    return run_experiment(cfg, out, resume=resume, overwrite=overwrite)
