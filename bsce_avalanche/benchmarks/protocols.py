"""Class splits: the papers' ``B<k>`` protocols and Avalanche's numbers of experiences, checked
(numpy only, so that the runner checks a config without importing torch)."""

from __future__ import annotations

import re

import numpy as np

from .._numbers import plain_number

__all__ = ["resolve_protocol"]

_PROTOCOL_RE = re.compile(r"^B(\d+)$", re.IGNORECASE)


def resolve_protocol(
    n_classes: int,
    *,
    n_experiences: int | None = None,
    first_exp_classes: int | None = None,
    protocol: str | None = None,
    n_steps: int | None = None,
    default_n_experiences: int | None = None,
) -> tuple[int, int | None]:
    """Turn either description of a class split, not both, into ``(n_experiences, first_exp_classes)``.

    ``n_experiences`` (+ optional ``first_exp_classes``; ``None``: an even split) is Avalanche's
    view, counting every experience. ``protocol="B<k>"`` + ``n_steps`` is the papers' view, for any
    ``k``: ``"B0"`` (iCaRL) splits all classes evenly into ``n_steps`` experiences; ``"B50"`` (LUCIR,
    PODNet) trains 50 base classes, then ``n_steps`` steps over the rest (``n_steps + 1``
    experiences). ``default_n_experiences`` applies when neither is given.

    :raises ValueError: mixed descriptions, a malformed protocol, or class
        counts that do not divide evenly (the message names the valid choices).
    """
    n_experiences, first_exp_classes, n_steps = map(plain_number, (n_experiences, first_exp_classes, n_steps))
    if n_steps is not None:
        _check_int("n_steps", n_steps, 1)
    if n_experiences is None and protocol is None:
        n_experiences = default_n_experiences
    if protocol is not None:
        if n_experiences is not None or first_exp_classes is not None:
            raise ValueError(
                "pass either protocol=/n_steps= or n_experiences=/first_exp_classes=, "
                "not both"
            )
        match = _PROTOCOL_RE.match(str(protocol).strip())
        if match is None:
            raise ValueError(
                f"protocol must look like 'B0' or 'B50' ('B<k>': k classes in the first "
                f"experience, then n_steps steps; 'B0': n_steps equal steps), got {protocol!r}"
            )
        if n_steps is None:
            raise ValueError(f"protocol={protocol!r} needs n_steps=<number of incremental steps>")
        base = int(match.group(1))
        if base == 0:
            n_experiences, first_exp_classes = n_steps, None
        else:
            n_experiences, first_exp_classes = n_steps + 1, base
    elif n_steps is not None:
        raise ValueError("n_steps= is only meaningful with protocol='B<k>' (e.g. 'B0', 'B50')")
    if n_experiences is None:
        raise ValueError("give n_experiences=<int> or protocol='B<k>' with n_steps=<int>")

    _check_split(n_classes, n_experiences, first_exp_classes)
    return n_experiences, first_exp_classes


def _check_split(n_classes: int, n_experiences: int, first_exp_classes: int | None) -> None:
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, (int, np.integer)):
        raise TypeError(f"the number of experiences must be an int, got {n_experiences!r}")
    if n_experiences < 1:
        raise ValueError(f"need at least one experience (or step), got {n_experiences}")
    if first_exp_classes is None:
        if n_classes % n_experiences:
            valid = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
            raise ValueError(
                f"{n_classes} classes cannot be split evenly into {n_experiences} "
                f"experiences; use one of {valid} or set first_exp_classes"
            )
        return
    _check_int("first_exp_classes", first_exp_classes, 1)
    if not 0 < first_exp_classes <= n_classes:
        raise ValueError(f"first_exp_classes must be in 1..{n_classes}, got {first_exp_classes}")
    rest, later = n_classes - first_exp_classes, n_experiences - 1
    if later == 0:
        if rest:
            raise ValueError(
                f"a single experience must hold all {n_classes} classes, "
                f"not first_exp_classes={first_exp_classes}"
            )
        return
    if rest == 0 or rest % later:
        valid = [d for d in range(1, rest + 1) if rest % d == 0]
        raise ValueError(
            f"after a first experience of {first_exp_classes} classes, the remaining "
            f"{rest} classes cannot be split evenly into {later} experiences; "
            f"the number of later experiences (steps) must be one of {valid}"
        )


def _check_int(name: str, value, low: int) -> None:
    value = plain_number(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
