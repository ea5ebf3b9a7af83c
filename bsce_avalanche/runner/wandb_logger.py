"""Weights & Biases logging for Avalanche experiments, compatible with current wandb.

Why this module exists
----------------------
``avalanche.logging.WandBLogger`` (avalanche-lib 0.6.0) no longer works with
current wandb releases: it calls ``wandb.util.generate_id`` (removed) and
``wandb.viz.CustomChart`` on every metric (``wandb.viz`` is gone; Avalanche
issue #1674).  Rather than pinning an old wandb, this module provides a drop-in
logger written against the wandb 0.31 API, plus helpers the experiment runner
uses directly (class priors, confusion matrices, per-class accuracy, the
continual-learning accuracy matrix).

Design choices
--------------
* **Offline unless credentials exist.**  Most of our runs happen on machines
  without network access or a W&B account.  The mode is resolved as: explicit
  ``mode`` argument, else ``WANDB_MODE``, else ``"online"`` when an API key is
  configured locally (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a
  netrc entry), else ``"offline"``.  Only local files and environment variables
  are read to decide this; nothing touches the network.
* **A failed online start never kills the experiment.**  If ``wandb.init``
  raises in online mode (no network, bad key, server down), the logger warns
  once and starts the same run offline so it can be synced later with
  ``wandb sync <run_dir>``.
* **One step axis for everything.**  Avalanche's ``x_plot`` (usually the number
  of training iterations) and the runner's own steps are written to the
  ``step_metric`` column (default ``"global_step"``) and every other metric is
  bound to it with ``define_metric``.  wandb's internal ``_step`` keeps
  auto-incrementing, so rows are never dropped when a caller logs at a step
  that is not strictly increasing (wandb silently discards such rows when the
  step is passed to ``run.log(step=...)``).
* **Runs never clobber each other.**  Runs are created with
  ``reinit="create_new"`` and all logging goes through the run object, so a
  runner may hold several loggers in one process (the wandb default would
  silently hand back the *previous* run instead).

``read_offline_run`` decodes the ``run-<id>.wandb`` transaction log that an
offline run writes, so tests can assert on what was actually logged.

Note on files outside ``dir``: wandb keeps artifact staging copies (needed by
``wandb sync`` to upload tables) under ``WANDB_DATA_DIR`` (default
``~/.local/share/wandb``) and its core debug logs under ``WANDB_CACHE_DIR``
(default ``~/.cache/wandb``).  Point those variables elsewhere if that matters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import netrc
import numbers
import os
import struct
import time
import uuid
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union
from urllib.parse import urlsplit

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL.Image import Image as PILImage

try:
    import wandb
    from wandb.sdk.data_types.base_types.wb_value import WBValue

    try:
        from wandb.plot.custom_chart import CustomChart

        _WANDB_PASSTHROUGH: tuple = (WBValue, CustomChart)
    except ImportError:  # pragma: no cover - wandb < 0.19 (wandb.viz era)
        _WANDB_PASSTHROUGH = (WBValue,)
except ImportError:  # pragma: no cover - wandb not installed
    wandb = None  # type: ignore[assignment]
    _WANDB_PASSTHROUGH = ()

from avalanche.evaluation.metric_results import (
    AlternativeValues,
    LoggingType,
    MetricValue,
    TensorImage,
)
from avalanche.logging import BaseLogger

if TYPE_CHECKING:  # pragma: no cover
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "WandBLogger",
    "WandBOfflineWarning",
    "has_wandb_credentials",
    "resolve_wandb_mode",
    "read_offline_run",
]

_log = logging.getLogger(__name__)

VALID_MODES = ("online", "offline", "disabled")
# Spellings wandb itself still accepts in WANDB_MODE.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
_DEFAULT_BASE_URL = "https://api.wandb.ai"


class WandBOfflineWarning(UserWarning):
    """Emitted once per run when it is logged offline without being asked to.

    A dedicated category lets users silence it with
    ``warnings.filterwarnings("ignore", category=WandBOfflineWarning)``.
    """


# --------------------------------------------------------------------------- #
# Mode selection
# --------------------------------------------------------------------------- #
def _require_wandb() -> None:
    if wandb is None:  # pragma: no cover
        raise ImportError(
            "wandb is not installed; install it with `pip install wandb` "
            "or use a different Avalanche logger."
        )


def _wandb_base_url() -> str:
    """The W&B server URL wandb would talk to, read from env / defaults only."""
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url
    try:
        from wandb.sdk.lib import urls as _urls

        return _urls.DEFAULT_BASE_URL
    except Exception:  # pragma: no cover - older/newer wandb layouts
        return _DEFAULT_BASE_URL


def _netrc_has_key(base_url: str) -> bool:
    """Whether a netrc file holds a password for the W&B host.

    Uses wandb's own reader when available (it knows about host aliases such as
    the forge/api.wandb.ai pair used by wandb 0.31); falls back to the standard
    library.  Both only read the local file.
    """
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        return bool(read_netrc_auth(host=base_url))
    except ImportError:  # pragma: no cover - other wandb versions
        pass
    except Exception:
        # An entry exists but wandb considers it malformed: treat as no key,
        # the user gets an offline run instead of a failing online one.
        return False

    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        parsed = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    hosts = {urlsplit(base_url).netloc, urlsplit(_DEFAULT_BASE_URL).netloc}
    return any(
        (creds := parsed.authenticators(h)) is not None and bool(creds[2])
        for h in hosts
        if h
    )


def has_wandb_credentials() -> bool:
    """Whether W&B credentials are configured on this machine.

    Checks, in order: ``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` and a
    netrc entry for the W&B host (``WANDB_BASE_URL`` or wandb's default, which
    is where ``wandb login`` stores the key).  Never contacts the server, so a
    ``True`` result does not prove the key is valid; ``WandBLogger`` handles
    that case by falling back to offline mode.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    return _netrc_has_key(_wandb_base_url())


def _normalize_mode(value: str, source: str) -> str:
    mode = _MODE_ALIASES.get(value.strip().lower(), value.strip().lower())
    if mode not in VALID_MODES:
        raise ValueError(
            f"{source} is {value!r}, which is not a W&B mode; "
            f"use one of {', '.join(VALID_MODES)}."
        )
    return mode


def resolve_wandb_mode(mode: Optional[str] = None) -> tuple:
    """Decide the W&B mode and say why.

    Precedence: the explicit ``mode`` argument, then the ``WANDB_MODE``
    environment variable, then ``"online"`` if :func:`has_wandb_credentials`,
    else ``"offline"``.

    :return: ``(mode, reason)`` where ``reason`` is one of ``"argument"``,
        ``"env"``, ``"credentials"`` or ``"no-credentials"``.
    :raises ValueError: for an unknown mode string.
    """
    if mode is not None:
        if not isinstance(mode, str):
            raise TypeError(
                f"mode must be a string such as 'offline', got {type(mode).__name__}."
            )
        return _normalize_mode(mode, "mode argument"), "argument"
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return _normalize_mode(env_mode, "WANDB_MODE"), "env"
    if has_wandb_credentials():
        return "online", "credentials"
    return "offline", "no-credentials"


def _generate_run_id() -> str:
    try:
        from wandb.sdk.lib.runid import generate_id

        return generate_id()
    except ImportError:  # pragma: no cover - other wandb versions
        return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------- #
# Value conversion and validation helpers
# --------------------------------------------------------------------------- #
def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _is_pil_image(value: Any) -> bool:
    return isinstance(value, PILImage)


def _is_figure(value: Any) -> bool:
    return isinstance(value, Figure)


def _is_wandb_object(value: Any) -> bool:
    """wandb media/data types and custom charts pass through unchanged."""
    return isinstance(value, _WANDB_PASSTHROUGH)


def _to_numpy(value: Any) -> np.ndarray:
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _histogram(value: Any) -> Any:
    arr = _to_numpy(value).astype(float).reshape(-1)
    return wandb.Histogram(np_histogram=np.histogram(arr))


def _image(value: Any) -> Any:
    if isinstance(value, TensorImage):
        value = value.image
    if _is_tensor(value):
        # wandb.Image understands CHW torch tensors directly.
        return wandb.Image(value.detach().cpu())
    return wandb.Image(value)


def _as_step(step: Any, what: str = "step") -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(
            f"{what} must be an int (e.g. the training iteration), "
            f"got {type(step).__name__} {step!r}."
        )
    if step < 0:
        raise ValueError(f"{what} must be >= 0, got {step}.")
    return int(step)


def _as_vector(values: Any, what: str) -> List[float]:
    try:
        arr = _to_numpy(values).astype(float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be a sequence of numbers: {exc}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            f"{what} must be a non-empty 1-D sequence (one value per class), "
            f"got shape {arr.shape}."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{what} contains non-finite values at positions "
            f"{np.flatnonzero(bad).tolist()}; replace them before logging."
        )
    return arr.tolist()


def _as_matrix(matrix: Any) -> np.ndarray:
    """2-D float array; None -> NaN, ragged rows padded with NaN on the right."""
    if _is_tensor(matrix) or isinstance(matrix, np.ndarray):
        rows = _to_numpy(matrix)
    elif isinstance(matrix, Sequence) and not isinstance(matrix, (str, bytes)):
        rows = list(matrix)
    else:
        raise TypeError(f"matrix must be a 2-D sequence of numbers, got {type(matrix).__name__}.")
    if len(rows) == 0 or not all(
        isinstance(r, (Sequence, np.ndarray)) and not isinstance(r, (str, bytes)) for r in rows
    ):
        raise ValueError(
            "matrix must be 2-D (trained experiences x evaluated experiences), "
            "e.g. [[0.9, nan], [0.6, 0.8]]."
        )
    width = max(len(r) for r in rows)
    try:
        arr = np.array(
            [[np.nan if v is None else float(v) for v in r] + [np.nan] * (width - len(r))
             for r in rows],
            dtype=float,
        )
    except (TypeError, ValueError) as exc:
        raise TypeError(f"matrix entries must be numbers or None: {exc}") from None
    if arr.size == 0:
        raise ValueError("matrix is empty; log it after at least one evaluation.")
    return arr


def _names(
    names: Optional[Sequence[Any]], n: int, what: str, param: str = "class_names"
) -> List[str]:
    """Validate display names, one per entry of ``what``; default '0', '1', ..."""
    if names is None:
        return [str(i) for i in range(n)]
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(
            f"{param} must be a sequence with one name per entry, "
            f"got {type(names).__name__}."
        )
    if len(names) != n:
        raise ValueError(
            f"{param} has {len(names)} entries but {what} has {n}; "
            f"pass one name per entry (or {param}=None for '0', '1', ...)."
        )
    out = [str(c) for c in names]
    if len(set(out)) != len(out):
        raise ValueError(f"{param} must be unique; charts and tables key by name.")
    return out


def _as_config_dict(config: Any) -> Dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, argparse.Namespace):
        return vars(config).copy()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise TypeError(
        f"config must be a dict (or dataclass / argparse.Namespace), got "
        f"{type(config).__name__}; convert it with dict(...) first."
    )


def _plain(value: Any) -> Any:
    """Make numpy/torch scalars JSON-friendly for summaries and config."""
    if _is_tensor(value):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- #
# The logger
# --------------------------------------------------------------------------- #
class WandBLogger(BaseLogger):
    """Avalanche logger that writes to Weights & Biases (wandb >= 0.19, tested on 0.31).

    Use it as any Avalanche logger::

        logger = WandBLogger(project="bsce", group="splitcifar/naive",
                             job_type="bsce", config=cfg, dir="runs")
        eval_plugin = EvaluationPlugin(accuracy_metrics(stream=True),
                                       loggers=[logger])
        ...
        logger.finish()

    The run starts in the constructor (like Avalanche's own logger) because
    the evaluation plugin begins calling the logger as soon as training starts.
    The helper methods (``log_step_metrics``, ``log_class_prior``,
    ``log_confusion_matrix``, ...) need no Avalanche strategy.

    See the module docstring for how the mode (online/offline/disabled) is
    chosen and for the fallback when an online start fails.
    """

    def __init__(
        self,
        project: str = "bsce-avalanche",
        *,
        entity: Optional[str] = None,
        name: Optional[str] = None,
        group: Optional[str] = None,
        job_type: Optional[str] = None,
        tags: Optional[Sequence[str]] = None,
        notes: Optional[str] = None,
        config: Any = None,
        dir: Optional[Union[str, os.PathLike]] = None,
        mode: Optional[str] = None,
        resume: Optional[Union[str, bool]] = None,
        id: Optional[str] = None,
        step_metric: str = "global_step",
        init_timeout: Optional[float] = None,
        init_kwargs: Optional[Mapping[str, Any]] = None,
    ):
        """Start a W&B run.

        :param project: W&B project name.
        :param entity: W&B user or team; ``None`` uses the account default.
        :param name: display name of the run.
        :param group: runs with the same group are shown together (the runner
            groups by benchmark/strategy so CE and BSCE runs sit side by side).
        :param job_type: e.g. the loss name (``"ce"``, ``"bsce"``).
        :param tags: free-form labels.
        :param notes: run description.
        :param config: hyper-parameters (dict, dataclass or argparse.Namespace).
        :param dir: directory under which wandb creates ``wandb/<run dir>``;
            created if missing.  ``None`` uses ``WANDB_DIR`` or the cwd.
        :param mode: ``"online"``, ``"offline"`` or ``"disabled"``; ``None``
            lets :func:`resolve_wandb_mode` decide.
        :param resume: passed to ``wandb.init`` (e.g. ``"allow"`` together with
            ``id`` to continue a run).
        :param id: run id; generated when ``None`` (or taken from
            ``WANDB_RUN_ID``), so it is known before the run starts.
        :param step_metric: name of the step column every metric is plotted
            against.
        :param init_timeout: seconds wandb may spend starting an online run
            before we fall back to offline (wandb's default is 90 s).
        :param init_kwargs: any other ``wandb.init`` keyword arguments.
        """
        super().__init__()
        _require_wandb()

        if not isinstance(project, str) or not project.strip():
            raise ValueError("project must be a non-empty string, e.g. 'bsce-avalanche'.")
        if not isinstance(step_metric, str) or not step_metric.strip():
            raise ValueError("step_metric must be a non-empty string such as 'global_step'.")
        if tags is not None and (
            isinstance(tags, str) or not all(isinstance(t, str) for t in tags)
        ):
            raise TypeError("tags must be a list of strings, e.g. ['bsce', 'split-mnist'].")
        if init_timeout is not None and not init_timeout > 0:
            raise ValueError(
                f"init_timeout must be a positive number of seconds, got {init_timeout!r}."
            )
        if id is not None and (not isinstance(id, str) or not id):
            raise ValueError("id must be a non-empty string (the run id to create or resume).")

        self.requested_mode, self._mode_reason = resolve_wandb_mode(mode)
        self.step_metric = step_metric
        self.dir = Path(dir).expanduser() if dir is not None else None

        extra = dict(init_kwargs or {})
        explicit = {
            "project", "entity", "name", "group", "job_type", "tags", "notes",
            "config", "dir", "mode", "resume", "id",
        }
        clash = sorted(explicit & extra.keys())
        if clash:
            raise ValueError(
                f"init_kwargs repeats {clash}; pass these as WandBLogger "
                "arguments instead."
            )

        self._init_kwargs: Dict[str, Any] = dict(
            project=project,
            entity=entity,
            name=name,
            group=group,
            job_type=job_type,
            tags=list(tags) if tags is not None else None,
            notes=notes,
            config=_as_config_dict(config),
            dir=str(self.dir) if self.dir is not None else None,
            resume=resume,
            id=id or os.environ.get("WANDB_RUN_ID") or _generate_run_id(),
            **extra,
        )
        self._init_timeout = init_timeout

        self._run: Any = None
        self.mode: Optional[str] = None  # the mode the run actually uses
        self._last_step = 0
        self._exp_count = 0
        self._warned_types: set = set()
        self._start_run()

    # ------------------------------------------------------------------ #
    # Run lifecycle
    # ------------------------------------------------------------------ #
    def _settings(self, mode: str) -> Any:
        extra: Dict[str, Any] = {}
        if self._init_timeout is not None and mode == "online":
            extra["init_timeout"] = float(self._init_timeout)
        try:
            return wandb.Settings(reinit="create_new", **extra)
        except Exception:  # pragma: no cover - wandb < 0.19.10 lacks "create_new"
            return wandb.Settings(reinit=True, **extra)

    def _init(self, mode: str) -> Any:
        kwargs = dict(self._init_kwargs)
        if mode == "disabled":
            kwargs.pop("dir", None)  # wandb would still create the directory
        if "settings" not in kwargs:
            kwargs["settings"] = self._settings(mode)
        # wandb-core releases a finished run's id shortly *after* finish()
        # returns; re-opening it at once (e.g. loading a checkpoint right
        # after finishing) can hit "run ID ... is in use", so retry briefly.
        deadline = time.monotonic() + 5.0
        while True:
            try:
                return wandb.init(mode=mode, **kwargs)
            except Exception as exc:
                if "is in use" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"W&B run id {kwargs['id']!r} is still open in this process; "
                        "finish the logger that uses it first, or pass a different id."
                    ) from exc
                time.sleep(0.1)

    def _start_run(self) -> None:
        if self.dir is not None and self.requested_mode != "disabled":
            self.dir.mkdir(parents=True, exist_ok=True)

        mode = self.requested_mode
        fallback_error: Optional[BaseException] = None
        failed_id: Optional[str] = None
        if mode == "online":
            try:
                self._run = self._init("online")
            except Exception as exc:  # no network, bad key, server down...
                fallback_error = exc
                mode = "offline"
                # wandb-core keeps the failed run's id registered ("run ID ...
                # is in use"; releasing it makes the next init hang), so the
                # offline run needs a fresh id.
                failed_id = self._init_kwargs["id"]
                self._init_kwargs["id"] = _generate_run_id()
        if self._run is None:
            self._run = self._init(mode)
        self.mode = mode

        if mode != "disabled":
            # Bind every metric to our step counter so panels share one x-axis.
            self._run.define_metric(self.step_metric)
            self._run.define_metric("*", step_metric=self.step_metric, step_sync=True)

        if mode == "offline":
            sync_hint = f"Sync it later with: wandb sync {self.run_dir}"
            if fallback_error is not None:
                reason = (str(fallback_error).strip().splitlines() or [""])[0]
                warnings.warn(
                    f"W&B could not start online run {failed_id} "
                    f"({type(fallback_error).__name__}: {reason}); "
                    f"logging offline as run {self.run_id} instead. {sync_hint}",
                    WandBOfflineWarning,
                    stacklevel=3,
                )
            elif self._mode_reason == "no-credentials":
                warnings.warn(
                    "No W&B API key found (WANDB_API_KEY / `wandb login`), so this "
                    f"run is logged offline. {sync_hint}",
                    WandBOfflineWarning,
                    stacklevel=3,
                )
            else:
                _log.info("W&B run is offline (%s). %s", self._mode_reason, sync_hint)

    @property
    def run(self) -> Any:
        """The underlying ``wandb.Run`` (``None`` after :meth:`finish`)."""
        return self._run

    @property
    def run_id(self) -> str:
        """Run id; pass it back as ``id=`` with ``resume="allow"`` to continue."""
        return self._init_kwargs["id"]

    @property
    def run_dir(self) -> Optional[Path]:
        """Local run directory (``.../wandb/offline-run-<time>-<id>``).

        ``None`` for disabled runs.  Stays valid after :meth:`finish`.
        """
        if self.mode == "disabled":
            return None
        if not hasattr(self, "_run_dir"):
            self._run_dir = Path(self._run.settings.sync_dir)
        return self._run_dir

    @property
    def sync_command(self) -> Optional[str]:
        """``wandb sync <run_dir>`` for offline runs, else ``None``."""
        if self.mode != "offline":
            return None
        return f"wandb sync {self.run_dir}"

    def _active_run(self) -> Any:
        if self._run is None:
            raise RuntimeError(
                "This WandBLogger has already been finished; create a new logger "
                "(with id=<run_id>, resume='allow' to continue the same run)."
            )
        if self.mode != "disabled":
            self.run_dir  # cache the path while the run object is alive
        return self._run

    def finish(self, exit_code: Optional[int] = None, flush_timeout: float = 10.0) -> None:
        """Finish the run and wait until its local log is complete.  Safe to call twice.

        wandb-core writes the ``run-<id>.wandb`` file asynchronously and closes
        it only after ``run.finish()`` has returned, so right after
        ``run.finish()`` the file can still be empty.  For offline runs we wait
        (up to ``flush_timeout`` seconds) until the exit record is on disk, so
        ``wandb sync`` or :func:`read_offline_run` can be used immediately.
        """
        if self._run is None:
            return
        run = self._active_run()
        self._run = None
        run.finish(exit_code=exit_code)
        if self.mode == "offline" and not _wait_for_exit_record(self.run_dir, flush_timeout):
            warnings.warn(
                f"wandb has not finished writing {self.run_dir} after {flush_timeout}s; "
                "it will complete in the background before the process exits.",
                stacklevel=2,
            )

    def __enter__(self) -> "WandBLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)

    # Avalanche checkpoints pickle the strategy including its loggers.
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Re-open the same run when a checkpoint is loaded."""
        self.__dict__.update(state)
        self.__dict__.pop("_run_dir", None)
        self._init_kwargs["resume"] = "allow"
        self._mode_reason = "argument"  # do not repeat the no-key warning
        self._start_run()

    # ------------------------------------------------------------------ #
    # Avalanche logger interface
    # ------------------------------------------------------------------ #
    def _convert(self, name: str, value: Any, logging_type: LoggingType = LoggingType.ANY) -> Any:
        """Turn an Avalanche metric value into something ``run.log`` accepts.

        Returns ``None`` for values we cannot log (e.g. the raw checkpoint
        bytes of ``WeightCheckpoint``), after warning once per type.
        """
        if isinstance(value, AlternativeValues):
            # Alternatives are ordered by preference (e.g. confusion matrix:
            # image first, raw tensor second); take the first we can log.
            for alternative in value.alternatives:
                converted = self._convert_quiet(alternative, logging_type)
                if converted is not None:
                    return converted
        else:
            converted = self._convert_quiet(value, logging_type)
        if converted is None:
            key = type(value).__name__
            if key not in self._warned_types:
                self._warned_types.add(key)
                warnings.warn(
                    f"WandBLogger cannot log metric {name!r} of type {key}; "
                    "values of this type are skipped.",
                    stacklevel=4,
                )
        return converted

    def _convert_quiet(self, value: Any, logging_type: LoggingType) -> Any:
        if value is None:
            return None
        if _is_wandb_object(value):
            return value
        if logging_type == LoggingType.HISTOGRAM:
            return _histogram(value)
        if (
            logging_type == LoggingType.IMAGE
            or isinstance(value, TensorImage)
            or _is_pil_image(value)
        ):
            return _image(value)
        if logging_type == LoggingType.FIGURE or _is_figure(value):
            return wandb.Image(value)
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, numbers.Number):
            return value.item() if isinstance(value, np.generic) else value
        if isinstance(value, str):
            return value
        if _is_tensor(value) or isinstance(value, np.ndarray):
            arr = _to_numpy(value)
            if arr.size == 1:
                return arr.reshape(()).item()
            return _histogram(arr)
        return None

    def _flatten_metrics(self, metric_values: Sequence[MetricValue]):
        for mval in metric_values:
            logging_type = getattr(mval, "logging_type", LoggingType.ANY)
            if isinstance(mval.value, dict):  # same convention as BaseLogger
                for k, v in mval.value.items():
                    yield f"{mval.name}/{k}", v, mval.x_plot, logging_type
            else:
                yield mval.name, mval.value, mval.x_plot, logging_type

    def log_metrics(self, metric_values: List[MetricValue]) -> None:
        """Log the values one evaluation-plugin callback produced.

        Values sharing an ``x_plot`` are written as one history row, keeping
        the run compact (the plugin calls this on every callback).
        """
        rows: Dict[int, Dict[str, Any]] = {}
        for name, value, x_plot, logging_type in self._flatten_metrics(metric_values):
            converted = self._convert(name, value, logging_type)
            if converted is not None:
                rows.setdefault(int(x_plot), {})[name] = converted
        for step, row in rows.items():
            self._log_row(step, row)

    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        """Log one metric value at step ``x_plot`` (BaseLogger interface)."""
        converted = self._convert(name, value)
        if converted is not None:
            self._log_row(int(x_plot), {name: converted})

    def after_training_exp(
        self, strategy: "SupervisedTemplate", metric_values: Any = None, **kwargs
    ) -> None:
        """Mark where each training experience ends on the step axis."""
        self._log_row(int(strategy.clock.train_iterations), {"TrainingExperience": self._exp_count})
        self._exp_count += 1

    def _log_row(self, step: int, row: Dict[str, Any]) -> None:
        run = self._active_run()
        self._last_step = step
        run.log({**row, self.step_metric: step})

    # ------------------------------------------------------------------ #
    # Helpers for the experiment runner
    # ------------------------------------------------------------------ #
    def log_config(self, config: Any) -> None:
        """Add or update hyper-parameters (dict, dataclass or Namespace)."""
        values = _as_config_dict(config)
        self._active_run().config.update(_plain(values), allow_val_change=True)

    def log_step_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log ``{name: value}`` at ``step`` on the shared step axis.

        Values may be Python/numpy/torch scalars, tensors (logged as
        histograms), images or any wandb object.
        """
        step = _as_step(step)
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics must be a dict of name -> value, got {type(metrics).__name__}."
            )
        row: Dict[str, Any] = {}
        for name, value in metrics.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"metric names must be non-empty strings, got {name!r}.")
            if name == self.step_metric:
                raise ValueError(
                    f"{name!r} is the step column; pass the step as the `step` argument."
                )
            converted = self._convert(name, value)
            if converted is not None:
                row[name] = converted
        self._log_row(step, row)

    @staticmethod
    def _bar_chart(labels: List[str], values: List[float], value_col: str, title: str) -> Any:
        table = wandb.Table(
            columns=["class", value_col],
            data=[[label, value] for label, value in zip(labels, values)],
        )
        return wandb.plot.bar(table, "class", value_col, title=title)

    def log_class_prior(
        self,
        step: int,
        prior: Sequence[float],
        class_names: Optional[Sequence[Any]] = None,
        key: str = "class_prior",
    ) -> None:
        """Log the class prior (the BSCE logit adjustment) as a bar chart.

        Writes a bar chart under ``key`` (backed by the table ``<key>_table``)
        and a histogram of the prior values under ``<key>_hist``; the histogram
        panel shows how skewed the prior becomes across steps.
        """
        step = _as_step(step)
        values = _as_vector(prior, "prior")
        if any(v < 0 for v in values):
            raise ValueError("prior must be non-negative (class frequencies or probabilities).")
        labels = _names(class_names, len(values), "prior")
        chart = self._bar_chart(labels, values, "prior", f"Class prior (step {step})")
        self._log_row(step, {key: chart, f"{key}_hist": _histogram(np.asarray(values))})

    def log_per_class_accuracy(
        self,
        step: int,
        accuracies: Sequence[float],
        class_names: Optional[Sequence[Any]] = None,
        key: str = "per_class_accuracy",
    ) -> None:
        """Log per-class accuracies (fractions in [0, 1]) as a bar chart."""
        step = _as_step(step)
        values = _as_vector(accuracies, "accuracies")
        if any(v < 0 or v > 1 for v in values):
            raise ValueError(
                "accuracies must be fractions in [0, 1]; divide percentages by 100."
            )
        labels = _names(class_names, len(values), "accuracies")
        chart = self._bar_chart(labels, values, "accuracy", f"Per-class accuracy (step {step})")
        self._log_row(step, {key: chart})

    def log_confusion_matrix(
        self,
        step: int,
        y_true: Sequence[int],
        y_pred: Sequence[int],
        class_names: Optional[Sequence[Any]] = None,
        key: str = "confusion_matrix",
        title: Optional[str] = None,
    ) -> None:
        """Log a confusion matrix chart built with ``wandb.plot.confusion_matrix``.

        Labels must be integer class ids ``0..n_classes-1``.  Without
        ``class_names`` the classes are named ``"0"``, ``"1"``, ... up to the
        largest label seen (wandb's own default renumbers the labels it happens
        to see, which makes matrices from different steps incomparable).
        """
        step = _as_step(step)
        true = self._labels(y_true, "y_true")
        pred = self._labels(y_pred, "y_pred")
        if len(true) != len(pred):
            raise ValueError(
                f"y_true has {len(true)} labels but y_pred has {len(pred)}; "
                "they must be aligned sample by sample."
            )
        if not true:
            raise ValueError("y_true is empty; nothing to build a confusion matrix from.")
        n = max(max(true), max(pred)) + 1 if class_names is None else len(class_names)
        names = _names(class_names, n, "the label range")
        if max(max(true), max(pred)) >= n:
            raise ValueError(
                f"labels go up to {max(max(true), max(pred))} but only {n} "
                "class_names were given; pass one name per class id."
            )
        chart = wandb.plot.confusion_matrix(
            y_true=true,
            preds=pred,
            class_names=names,
            title=title or f"Confusion matrix (step {step})",
        )
        self._log_row(step, {key: chart})

    @staticmethod
    def _labels(values: Any, what: str) -> List[int]:
        arr = _to_numpy(values)
        if arr.ndim != 1:
            raise ValueError(f"{what} must be a 1-D sequence of class ids, got shape {arr.shape}.")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(
                f"{what} must hold integer class ids, got dtype {arr.dtype}; "
                "take argmax of the logits first."
            )
        if arr.size and arr.min() < 0:
            raise ValueError(f"{what} contains negative class ids.")
        return [int(v) for v in arr]

    def log_accuracy_matrix(
        self,
        matrix: Sequence[Sequence[float]],
        step: Optional[int] = None,
        key: str = "accuracy_matrix",
        experience_names: Optional[Sequence[str]] = None,
    ) -> None:
        """Log the continual-learning accuracy matrix.

        ``matrix[i][j]`` is the accuracy on experience ``j`` after training on
        experience ``i``; NaN or None marks entries that were not evaluated,
        and shorter (e.g. lower-triangular) rows are padded with NaN.  Written
        as a table (``key``) and as a line chart (``<key>_plot``) with one line
        per evaluated experience, x = training experience, so forgetting shows
        as a falling line.  ``step`` defaults to the last step logged.
        """
        step = self._last_step if step is None else _as_step(step)
        arr = _as_matrix(matrix)
        if np.isinf(arr).any():
            raise ValueError("matrix contains infinite values; use NaN for missing entries.")
        n_rows, n_cols = arr.shape
        if experience_names is None:
            names = [f"exp_{j}" for j in range(n_cols)]
        else:
            names = _names(experience_names, n_cols, "matrix columns", "experience_names")

        columns = ["trained_up_to"] + names
        data = [
            [i] + [None if math.isnan(v) else float(v) for v in arr[i]]
            for i in range(n_rows)
        ]
        table = wandb.Table(columns=columns, data=data)

        xs, ys = [], []
        for j in range(n_cols):
            keep = ~np.isnan(arr[:, j])
            xs.append(np.flatnonzero(keep).tolist())
            ys.append(arr[keep, j].tolist())
        chart = wandb.plot.line_series(
            xs=xs, ys=ys, keys=names,
            title="Accuracy per experience", xname="trained_up_to",
        )
        self._log_row(step, {key: table, f"{key}_plot": chart})

    def summary(self, values: Mapping[str, Any]) -> None:
        """Set final numbers (e.g. average accuracy, forgetting) on run.summary."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"summary expects a dict of name -> value, got {type(values).__name__}."
            )
        run = self._active_run()
        for k, v in values.items():
            if not isinstance(k, str) or not k:
                raise TypeError(f"summary keys must be non-empty strings, got {k!r}.")
            run.summary[k] = _plain(v)


# --------------------------------------------------------------------------- #
# Reading an offline run back
# --------------------------------------------------------------------------- #
# The .wandb file is a LevelDB-style log (same framing as wandb's former
# Python DataStore, now written by wandb-core): a 7-byte file header
# (b":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a
# 7-byte header (crc32 over type byte + data, length, type). A protobuf
# ``Record`` may span several chunks (FIRST/MIDDLE/LAST).
_LOG_BLOCK = 32768
_LOG_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_FILE_IDENT = b":W&B"
_FILE_MAGIC = 0xBEE1


def _iter_log_records(path: Path):
    data = path.read_bytes()
    if len(data) < _LOG_HEADER:
        raise ValueError(f"{path} is too short to be a wandb run file.")
    ident, magic, version = struct.unpack("<4sHB", data[:_LOG_HEADER])
    if ident != _FILE_IDENT or magic != _FILE_MAGIC:
        raise ValueError(f"{path} is not a wandb run file (bad header {data[:7]!r}).")
    if version != 0:
        raise ValueError(f"{path} uses wandb log format version {version}; only 0 is supported.")

    pos, pending = _LOG_HEADER, None
    while pos < len(data):
        left_in_block = _LOG_BLOCK - pos % _LOG_BLOCK
        if left_in_block < _LOG_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        if pos + _LOG_HEADER > len(data):
            break  # truncated header: the writer was interrupted
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + _LOG_HEADER])
        pos += _LOG_HEADER
        if kind == 0 and length == 0:
            break  # zero padding at end of a preallocated file
        chunk = data[pos:pos + length]
        if len(chunk) < length:
            break  # truncated record
        pos += length
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path} is corrupt: checksum mismatch at byte {pos - length}.")
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE and pending is not None:
            pending += chunk
        elif kind == _LAST and pending is not None:
            yield pending + chunk
            pending = None


def _set_nested(target: Dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    value = json.loads(item.value_json)
    for k in keys[:-1]:
        nxt = target.get(k)
        if not isinstance(nxt, dict):
            nxt = target[k] = {}
        target = nxt
    target[keys[-1]] = value


def _remove_nested(target: Dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.get(k)
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def _find_run_file(run_dir: Union[str, os.PathLike]) -> Path:
    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; pass the run directory (logger.run_dir).")
    files = sorted(path.glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"expected exactly one run-<id>.wandb in {path}, found {len(files)}; "
            "pass an offline-run-* directory (logger.run_dir)."
        )
    return files[0]


def _log_has_exit_record(path: Path) -> bool:
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        for raw in _iter_log_records(path):
            record = pb.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "exit":
                return True
    except (OSError, ValueError):
        pass  # not written yet, or mid-write
    return False


def _wait_for_exit_record(run_dir: Union[str, os.PathLike, None], timeout: float) -> bool:
    """Poll until the run log holds its exit record (the run is fully written)."""
    if run_dir is None:
        return True
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            if _log_has_exit_record(_find_run_file(run_dir)):
                return True
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def read_offline_run(run_dir: Union[str, os.PathLike], *, wait: float = 10.0) -> Dict[str, Any]:
    """Decode what a wandb run wrote locally, without any network access.

    ``run_dir`` is the run directory (``WandBLogger.run_dir``, i.e.
    ``<dir>/wandb/offline-run-<time>-<id>``) or the ``run-<id>.wandb`` file.
    Call it after :meth:`WandBLogger.finish`.  Because wandb-core closes the
    file asynchronously, this waits up to ``wait`` seconds for the run's exit
    record before parsing; after that it parses whatever is on disk (useful
    for inspecting a live or crashed run, with ``wait=0``).

    Returns a dict with:

    * ``run_id``, ``project``, ``name``, ``group``, ``job_type``, ``tags``
    * ``config``: the final config (wandb's internal ``_wandb`` key removed)
    * ``history``: one dict per logged row, in order.  Metric names are kept
      whole (``"Top1_Acc_Stream/eval_phase/test_stream/Task000"``); media and
      tables appear as wandb's JSON descriptors (dicts with ``_type`` and
      ``path``).
    * ``summary``: the final summary
    * ``charts``: keys of custom charts logged (bar charts, confusion matrices,
      line plots), from the run's chart definitions
    * ``tables``: ``{history key: [{"path", "columns", "data"}, ...]}`` for
      every table logged, loaded from ``files/``, in logging order
    * ``media``: paths (relative to ``files/``) of media files and tables
    * ``exit_code``: the exit code recorded by ``finish`` (``None`` if the run
      did not finish)

    The file is the protobuf ``Record`` stream wandb-core writes (the
    format ``wandb sync`` uploads); records are parsed with
    ``wandb.proto.wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = _find_run_file(run_dir)
    _wait_for_exit_record(path, wait)
    files_dir = path.parent / "files"
    out: Dict[str, Any] = {
        "run_id": None, "project": None, "name": None, "group": None,
        "job_type": None, "tags": [], "config": {}, "history": [],
        "summary": {}, "charts": [], "tables": {}, "media": [], "exit_code": None,
    }
    config: Dict[str, Any] = {}
    summary: Dict[str, Any] = {}
    media: List[str] = []

    for raw in _iter_log_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out.update(
                run_id=run.run_id, project=run.project, name=run.display_name or None,
                group=run.run_group or None, job_type=run.job_type or None,
                tags=list(run.tags),
            )
            for item in run.config.update:
                _set_nested(config, item)
            for item in run.summary.update:
                _set_nested(summary, item)
        elif kind == "config":
            for item in record.config.update:
                _set_nested(config, item)
            for item in record.config.remove:
                _remove_nested(config, item)
        elif kind == "history":
            row: Dict[str, Any] = {}
            for item in record.history.item:
                _set_nested(row, item)
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _set_nested(summary, item)
            for item in record.summary.remove:
                _remove_nested(summary, item)
        elif kind == "files":
            media.extend(f.path for f in record.files.files if f.path.startswith("media/"))
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code

    visualize = config.pop("_wandb", {}).get("visualize", {})
    out["charts"] = sorted(visualize)
    summary.pop("_wandb", None)
    out["config"] = config
    out["summary"] = summary
    out["media"] = sorted(set(media))

    for row in out["history"]:
        for key, value in row.items():
            if isinstance(value, dict) and value.get("_type") in ("table-file", "table"):
                entry: Dict[str, Any] = {"path": value.get("path"), "columns": None, "data": None}
                table_file = files_dir / entry["path"] if entry["path"] else None
                if table_file is not None and table_file.is_file():
                    content = json.loads(table_file.read_text())
                    entry["columns"] = content.get("columns")
                    entry["data"] = content.get("data")
                out["tables"].setdefault(key, []).append(entry)
    return out
