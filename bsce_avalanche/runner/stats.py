"""Paired per-seed differences and their 95% t-intervals: how every gain is stated (compare, the evidence
scripts, RESULTS.md). Runs of two methods are paired by seed (same first-experience model, same data order),
the interval is Student's t over the n paired differences (n - 1 degrees of freedom); where it contains 0,
the difference is "level within noise". A table's cell: the mean ± sample std over seeds (:func:`format_mean_std`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "t_interval", "format_gain", "format_mean_std", "LEVEL"]

#: What a difference whose interval contains 0 is called.
LEVEL = "level within noise"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of Student's t-interval for the mean of ``values`` (n >= 2); with one value the
    interval is (nan, nan)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("t_interval needs at least one value.")
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, float("nan"), float("nan")
    from scipy.stats import t  # scipy comes with scikit-learn

    half = float(t.ppf(0.5 + confidence / 2, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` per seed for one metric: the seeds both have, the differences, their mean and 95% interval."""

    seeds: tuple
    differences: tuple
    mean: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def level(self) -> bool:
        """The interval contains 0 (or there are fewer than 2 seeds: no interval)."""
        return not (self.low > 0 or self.high < 0)

    def as_dict(self, scale: float = 100.0) -> dict:
        return {"seeds": list(self.seeds), "differences": [scale * d for d in self.differences],
                "mean": scale * self.mean, "ci95": [scale * self.low, scale * self.high], "level": self.level}


def paired_difference(a: Sequence[Mapping], b: Sequence[Mapping], value, seed=lambda r: r["seed"]
                      ) -> Optional[PairedDifference]:
    """``value(run_a) - value(run_b)`` for the seeds both groups have (``seed(run)`` names a run's seed; a
    seed twice in one group is an error); None when no seed is shared."""
    def by_seed(group):
        out = {}
        for run in group:
            s = seed(run)
            if s in out:
                raise ValueError(f"seed {s} appears twice in one group: pair runs of distinct seeds only.")
            out[s] = value(run)
        return out

    first, second = by_seed(a), by_seed(b)
    seeds = tuple(sorted(s for s in first if s in second and first[s] is not None and second[s] is not None))
    if not seeds:
        return None
    diffs = tuple(float(first[s] - second[s]) for s in seeds)
    mean, low, high = t_interval(diffs)
    return PairedDifference(seeds, diffs, mean, low, high)


def format_gain(diff: Optional[PairedDifference], scale: float = 100.0, digits: int = 1) -> str:
    """``+1.5 [+0.4, +2.6]`` (points, 95% interval; "level within noise" where it contains 0), ``+1.5 (1 seed)``
    without an interval, ``–`` without shared seeds."""
    if diff is None:
        return "–"
    mean = f"{scale * diff.mean:+.{digits}f}"
    if diff.n < 2:
        return f"{mean} (1 seed)"
    text = f"{mean} [{scale * diff.low:+.{digits}f}, {scale * diff.high:+.{digits}f}]"
    return f"{text}, {LEVEL}" if diff.level else text


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sample std`` of the non-null values, scaled (fractions -> percent by default)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    arr = np.asarray(values, dtype=float) * scale
    if len(arr) == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"
