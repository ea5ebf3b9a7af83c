"""The runner's errors that ``bsce-experiment`` reports in one line (torch-free: the CLI catches them
before importing the training machinery)."""

from __future__ import annotations

__all__ = ["ConfigError", "TrainingDiverged"]


class ConfigError(ValueError):
    """A configuration problem, with a message that says how to fix it."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or weights; ``record`` goes into ``results.json``."""

    def __init__(self, step: int, epoch: int, iteration: int, reason: str):
        self.record = {"step": step, "epoch": epoch, "iteration": iteration, "reason": reason}
        super().__init__(f"training diverged at step {step}, epoch {epoch}, iteration {iteration} (all counted "
                         f"from 0; iterations within the step): {reason}")

    def __reduce__(self):  # pickled across processes (run --jobs, DDP)
        return type(self), tuple(self.record.values())
