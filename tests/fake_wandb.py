"""What the W&B logger did, for the tests: a stand-in ``wandb`` and a recorder of real runs.

``FakeWandb`` replaces the ``wandb`` module inside ``bsce_avalanche.runner.wandb_logger``
(fixture ``fake_wandb`` in conftest.py): no wandb-core, no files. Each ``wandb.init`` makes a
:class:`FakeRun` holding the init arguments, the logged rows, config, summary, metric
definitions and exit code. Data types and charts (``Settings``, ``Table``, ``Histogram``,
``Image``, ``plot``) are wandb's own, so the tests see the objects real wandb would get.

``recording_init(wandb.init, path)`` leaves wandb real and writes, when each run finishes, its
public state (id, sweep id, tags, config, summary, exit code) as one JSON line to ``path``;
``wandb_spy/sitecustomize.py`` next to this file installs it in a subprocess
(``recording_env``).
"""

from __future__ import annotations

import itertools
import json
import os
import types
from pathlib import Path
from typing import Any, Optional

import wandb


class FakeConfig(dict):
    def update(self, values=(), allow_val_change: bool = False, **kwargs) -> None:
        super().update(values, **kwargs)


class FakeRun:
    _ids = itertools.count()

    def __init__(self, mode: str, **kwargs: Any):
        self.mode, self.init_kwargs = mode, kwargs
        self.id = kwargs.get("id") or os.environ.get("WANDB_RUN_ID") or f"fake{next(self._ids):04d}"
        for key in ("project", "name", "group", "job_type", "resume"):
            setattr(self, key, kwargs.get(key))
        self.tags = list(kwargs.get("tags") or [])
        self.config = FakeConfig(kwargs.get("config") or {})
        self.summary: dict = {}
        self.history: list = []
        self.metrics: dict = {}  # define_metric: name -> options
        self.exit_code: Optional[int] = None
        self.finished = False
        root = Path(kwargs.get("dir") or os.environ.get("WANDB_DIR") or ".") / "wandb"
        self.dir = str(root / f"{'offline-' if mode == 'offline' else ''}run-fake-{self.id}" / "files")

    def log(self, row: dict) -> None:
        assert not self.finished, "logged to a finished run"
        self.history.append(dict(row))

    def define_metric(self, name: str, **options: Any) -> None:
        self.metrics[name] = options

    def finish(self, exit_code: Optional[int] = None) -> None:
        self.exit_code, self.finished = exit_code or 0, True

    def rows_with(self, key: str) -> list:
        return [row for row in self.history if key in row]

    def logged(self, key: str) -> list:
        """Every value logged under ``key``, in order."""
        return [row[key] for row in self.rows_with(key)]


class FakeWandb(types.SimpleNamespace):
    """The part of the ``wandb`` module the logger uses. ``fail_online``: an exception that
    ``init(mode="online")`` raises (wandb's own for a refused key or a timeout)."""

    def __init__(self):
        super().__init__(Settings=wandb.Settings, Table=wandb.Table, Histogram=wandb.Histogram,
                         Image=wandb.Image, plot=wandb.plot, data_types=wandb.data_types, errors=wandb.errors)
        self.runs: list = []
        self.init_modes: list = []  # the mode of every init call, failed ones included
        self.fail_online: Optional[BaseException] = None

    def init(self, mode: str, settings=None, **kwargs: Any) -> FakeRun:
        self.init_modes.append(mode)
        if mode == "online" and self.fail_online is not None:
            raise self.fail_online
        run = FakeRun(mode, settings=settings, **kwargs)
        self.runs.append(run)
        return run


def recording_init(real_init, path: str | os.PathLike):
    """``wandb.init`` (``real_init``) whose runs append their public state to ``path`` (JSON
    lines) when they finish."""

    def init(*args: Any, **kwargs: Any):
        run = real_init(*args, **kwargs)
        real_finish = run.finish

        def finish(exit_code: Optional[int] = None, **more: Any) -> None:
            state = dict(id=run.id, sweep_id=run.sweep_id, tags=list(run.tags),
                         exit_code=exit_code or 0,  # finish() without a code: wandb records 0
                         mode="offline" if run.offline else "disabled" if run.disabled else "online",
                         config=dict(run.config), summary=dict(run.summary))
            with open(path, "a") as fh:
                fh.write(json.dumps(state, default=str) + "\n")
            real_finish(exit_code=exit_code, **more)

        run.finish = finish
        return run

    return init


def recording_env(path: str | os.PathLike) -> dict:
    """Environment variables making a Python subprocess record its real runs to ``path``."""
    spy = str(Path(__file__).resolve().parent / "wandb_spy")
    return {"BSCE_WANDB_RECORD": str(path),
            "PYTHONPATH": os.pathsep.join(p for p in (spy, os.environ.get("PYTHONPATH")) if p)}


def read_recorded_runs(path: str | os.PathLike) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]
