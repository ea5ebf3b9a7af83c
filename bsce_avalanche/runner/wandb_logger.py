"""Weights & Biases logging for Avalanche experiments, on wandb's public API (tested with 0.31).

A drop-in Avalanche logger (Avalanche 0.6.0's own fails on current wandb: issue #1674) with the runner's helpers.
The mode a run starts in is :mod:`.wandb_mode`'s choice: an online start first probes the server, and a server
that did not answer, or on which ``wandb.init`` failed, takes this process's later runs offline at once for
``ONLINE_RETRY_S`` (10 minutes), after which an online start is tried again; a grid is told once per server and period.
"""

from __future__ import annotations

import numbers
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import wandb
from avalanche.evaluation.metric_results import AlternativeValues, LoggingType, MetricValue, TensorImage
from avalanche.logging import BaseLogger
from matplotlib.figure import Figure
from PIL.Image import Image as PILImage

from . import wandb_mode
from .metrics import mean_per_experience
from .wandb_mode import MODES, has_wandb_credentials, resolve_wandb_mode  # also here, where they were first

__all__ = ["WandBLogger", "WandBOfflineWarning", "has_wandb_credentials", "resolve_wandb_mode", "MODES"]

_WANDB_VALUES = (wandb.data_types.WBValue, wandb.plot.CustomChart)  # logged as they are


class WandBOfflineWarning(UserWarning):
    """A run is logged offline without being asked to (``warnings.filterwarnings`` silences it)."""


def _to_wandb(value: Any, logging_type: LoggingType = LoggingType.ANY) -> Any:
    """An Avalanche metric value as something ``run.log`` takes, or None when it has no form."""
    if isinstance(value, AlternativeValues):  # ordered by preference: take the first loggable
        return next((c for v in value.alternatives if (c := _to_wandb(v, logging_type)) is not None), None)
    if isinstance(value, (str, *_WANDB_VALUES)):
        return value
    if isinstance(value, TensorImage):
        return wandb.Image(value.image)
    if isinstance(value, (PILImage, Figure)) or logging_type in (LoggingType.IMAGE, LoggingType.FIGURE):
        return wandb.Image(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (numbers.Number, np.ndarray)):
        array = np.asarray(value)
        if array.size == 1 and logging_type != LoggingType.HISTOGRAM:
            return array.item()
        return wandb.Histogram(np_histogram=np.histogram(array.astype(float).ravel()))
    return None


class WandBLogger(BaseLogger):
    """Avalanche logger writing to Weights & Biases; the run starts in the constructor::

        logger = WandBLogger(project="bsce", group="digits/replay", job_type="bsce", config=cfg)
        evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[logger])
        ...
        logger.finish()

    Every metric is plotted against one step column (``step_metric``): Avalanche's ``x_plot`` or the
    helpers' ``step`` (wandb's ``_step`` keeps counting, so a row logged at an earlier step is kept;
    ``run.log(step=...)`` would drop it). Unpickling (an Avalanche checkpoint) continues the same run.

    :param mode: ``"online"``, ``"offline"`` or ``"disabled"``; None: :func:`resolve_wandb_mode`.
    :param dir: parent of the ``wandb/`` folder of runs (created when missing).
    :param id: run id; with ``resume="allow"`` an existing run continues.
    :param init_timeout: seconds ``wandb.init`` may take online before the run goes offline.
    :param init_kwargs: other ``wandb.init`` arguments (``entity``, ``notes``, ...).
    """

    def __init__(self, project: str = "bsce-avalanche", *, name: Optional[str] = None, group: Optional[str] = None,
                 job_type: Optional[str] = None, tags: Optional[Sequence[str]] = None,
                 config: Optional[Mapping[str, Any]] = None, dir: Optional[str | os.PathLike] = None,
                 mode: Optional[str] = None, resume: Optional[str] = None, id: Optional[str] = None,
                 step_metric: str = "global_step", init_timeout: float = 30.0, **init_kwargs: Any):
        super().__init__()
        self.requested_mode, self._mode_reason = resolve_wandb_mode(mode)
        self.step_metric, self.init_timeout = step_metric, init_timeout
        self._dir = None if dir is None else Path(dir).expanduser()
        self._init_kwargs = dict(project=project, name=name, group=group, job_type=job_type, config=config,
                                 tags=list(tags) if tags is not None else None, resume=resume, id=id,
                                 **init_kwargs)
        self._last_step = self._exp_count = 0
        self._skipped_types: set = set()
        self._start()

    def _init(self, mode: str):
        kwargs = dict(self._init_kwargs)
        if self._dir is not None and mode != "disabled":  # disabled: write nothing
            self._dir.mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(self._dir)
        settings = wandb.Settings(reinit="create_new", init_timeout=self.init_timeout)
        return wandb.init(mode=mode, settings=settings, **kwargs)

    def _start(self) -> None:
        self.mode, self._run, failed_id, failure = self.requested_mode, None, None, None
        url = wandb_mode.base_url() if self.mode == "online" else None
        if self.mode == "online" and wandb_mode.online_start_due(url):
            failure = wandb_mode.server_unreachable(url)
            if failure is None:
                try:
                    self._run = self._init("online")
                except Exception as exc:  # a refused key, a server error, init_timeout
                    failure = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
                    # wandb keeps the failed id reserved ("run ID ... is in use"): take a new one
                    failed_id, self._init_kwargs["id"] = self._init_kwargs["id"], uuid.uuid4().hex[:8]
            wandb_mode.record_online_start(url, failure)
        if self._run is None:
            self.mode = "offline" if self.mode == "online" else self.mode
            self._run = self._init(self.mode)
        self.run_id = self._init_kwargs["id"] = self._run.id
        self.run_dir = None if self.mode == "disabled" else Path(self._run.dir).parent
        if self.mode != "disabled":  # one x-axis for every panel
            self._run.define_metric(self.step_metric)
            self._run.define_metric("*", step_metric=self.step_metric, step_sync=True)

        sync = f"Sync it later with: {self.sync_command}"
        if failure is not None:
            warnings.warn(f"W&B could not start online{f' run {failed_id}' if failed_id else ''} ({failure}); "
                          f"logging offline as run {self.run_id}, as will this process's later runs to {url} for the next {wandb_mode.ONLINE_RETRY_S / 60:g} minutes. {sync}",
                          WandBOfflineWarning, stacklevel=3)
        elif self._mode_reason == "no-credentials":
            warnings.warn(f"No W&B API key found (WANDB_API_KEY or `wandb login`), so this run is logged "
                          f"offline. {sync}", WandBOfflineWarning, stacklevel=3)

    @property
    def sync_command(self) -> Optional[str]:
        """``wandb sync <run_dir>`` for an offline run, else None."""
        return f"wandb sync {self.run_dir}" if self.mode == "offline" else None

    @property
    def run(self):
        """The ``wandb`` run; an error once the logger is finished."""
        if self._run is None:
            raise RuntimeError("This WandBLogger has already been finished; create a new one "
                               "(id=<run_id>, resume='allow' continues the same run).")
        return self._run

    def finish(self, exit_code: Optional[int] = None) -> None:
        """Finish the run (a non-zero ``exit_code`` marks it failed); calling it again does nothing."""
        if self._run is not None:
            run, self._run = self._run, None
            run.finish(exit_code=exit_code)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_run": None}

    def __setstate__(self, state: dict) -> None:
        """Loaded from a checkpoint: continue the same run, in the mode it had."""
        self.__dict__.update(state)
        self._init_kwargs["resume"] = "allow"
        self.requested_mode, self._mode_reason = self.mode, "argument"
        self._start()

    def _log_row(self, step: int, row: Mapping[str, Any]) -> None:
        self._last_step = step
        self.run.log({**row, self.step_metric: step})

    def _convert(self, name: str, value: Any, logging_type: LoggingType = LoggingType.ANY) -> Any:
        converted, kind = _to_wandb(value, logging_type), type(value).__name__
        if converted is None and kind not in self._skipped_types:  # warn once per type
            self._skipped_types.add(kind)
            warnings.warn(f"WandBLogger cannot log metric {name!r} of type {kind}; values of this type are skipped.",
                          stacklevel=3)
        return converted

    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        converted = self._convert(name, value)
        if converted is not None:
            self._log_row(int(x_plot), {name: converted})

    def log_metrics(self, metric_values: Sequence[MetricValue]) -> None:
        """One history row per ``x_plot`` (the evaluation plugin calls this on every callback)."""
        rows: dict = {}
        for mval in metric_values:
            values = mval.value if isinstance(mval.value, dict) else {None: mval.value}
            for key, value in values.items():  # a dict value: one metric per key, as BaseLogger
                name = mval.name if key is None else f"{mval.name}/{key}"
                converted = self._convert(name, value, mval.logging_type)
                if converted is not None:
                    rows.setdefault(int(mval.x_plot), {})[name] = converted
        for step, row in rows.items():
            self._log_row(step, row)

    def after_training_exp(self, strategy, metric_values=None, **kwargs) -> None:
        """Mark the end of each training experience on the step axis (as Avalanche's logger)."""
        self._log_row(int(strategy.clock.train_iterations), {"TrainingExperience": self._exp_count})
        self._exp_count += 1

    def log_step_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``{name: value}`` at ``step`` (numbers, tensors as histograms, images, wandb objects)."""
        self._log_row(step, {name: c for name, v in metrics.items() if (c := self._convert(name, v)) is not None})

    @staticmethod
    def _bar_chart(values: Sequence[float], class_names, column: str, title: str):
        names = [str(c) for c in (range(len(values)) if class_names is None else class_names)]
        table = wandb.Table(columns=["class", column], data=[[n, float(v)] for n, v in zip(names, values)])
        return wandb.plot.bar(table, "class", column, title=title)

    def log_class_prior(self, step: int, prior: Sequence[float], class_names=None, key: str = "class_prior") -> None:
        """The class prior as a bar chart under ``key`` (its table: ``<key>_table``) and a histogram (the
        skew over steps) under ``<key>_hist``."""
        values = np.asarray(prior, dtype=float)
        self._log_row(step, {key: self._bar_chart(values, class_names, "prior", f"Class prior (step {step})"),
                             f"{key}_hist": wandb.Histogram(np_histogram=np.histogram(values))})

    def log_per_class_accuracy(self, step: int, accuracies: Sequence[float], class_names=None,
                               key: str = "per_class_accuracy",
                               classes_per_step: Optional[Sequence[Sequence[int]]] = None) -> None:
        """Per-class accuracies (fractions, indexed by class id) as a bar chart; with
        ``classes_per_step``, also their mean over the classes of each experience (``exp_0``, ...) as a
        bar chart under ``<key>_per_experience`` (one bar per experience instead of one per class)."""
        row = {key: self._bar_chart(accuracies, class_names, "accuracy", f"Per-class accuracy (step {step})")}
        if classes_per_step is not None:
            means = mean_per_experience([float(a) for a in accuracies], classes_per_step)
            table = wandb.Table(columns=["experience", "accuracy"],
                                data=[[f"exp_{j}", m] for j, m in enumerate(means) if m is not None])
            row[f"{key}_per_experience"] = wandb.plot.bar(
                table, "experience", "accuracy", title=f"Mean accuracy on each experience's classes (step {step})")
        self._log_row(step, row)

    def log_confusion_matrix(self, step: int, y_true: Sequence[int], y_pred: Sequence[int], class_names=None,
                             key: str = "confusion_matrix", title: Optional[str] = None) -> None:
        """A confusion matrix chart from class ids; without ``class_names``, ``"0"`` to the largest id
        (wandb's default renumbers the ids it sees: the steps' matrices would not compare)."""
        y_true, y_pred = np.asarray(y_true, dtype=int).tolist(), np.asarray(y_pred, dtype=int).tolist()
        names = [str(c) for c in (range(max(y_true + y_pred) + 1) if class_names is None else class_names)]
        chart = wandb.plot.confusion_matrix(y_true=y_true, preds=y_pred, class_names=names,
                                            title=title or f"Confusion matrix (step {step})")
        self._log_row(step, {key: chart})

    def log_accuracy_matrix(self, matrix: Sequence[Sequence[Optional[float]]], step: Optional[int] = None,
                            key: str = "accuracy_matrix", experience_names: Optional[Sequence[str]] = None) -> None:
        """``matrix[i][j]``: accuracy on experience ``j`` after training on experience ``i`` (None or NaN:
        not evaluated; short rows are padded), as a table under ``key`` and a line chart (one line per
        experience) under ``<key>_plot``, at ``step`` or the last step logged."""
        width = max(len(row) for row in matrix)
        rows = [[None if v is None or np.isnan(v) else float(v) for v in row] + [None] * (width - len(row))
                for row in matrix]
        names = [f"exp_{j}" for j in range(width)] if experience_names is None else list(experience_names)
        table = wandb.Table(columns=["trained_up_to", *names], data=[[i, *row] for i, row in enumerate(rows)])
        xs = [[i for i, row in enumerate(rows) if row[j] is not None] for j in range(width)]
        ys = [[row[j] for row in rows if row[j] is not None] for j in range(width)]
        chart = wandb.plot.line_series(xs=xs, ys=ys, keys=names, title="Accuracy per experience",
                                       xname="trained_up_to")
        self._log_row(self._last_step if step is None else step, {key: table, f"{key}_plot": chart})

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final numbers (average accuracy, forgetting...) on the run's summary."""
        self.run.summary.update(dict(values))
