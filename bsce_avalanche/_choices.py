"""The one "did you mean" check for every name a user chooses (library and runner)."""

from __future__ import annotations

import difflib
from collections.abc import Collection


def did_you_mean(value, choices: Collection) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(what: str, value, choices: Collection, alternative: str = ""):
    """``value`` if it is one of ``choices``; else a ValueError naming the closest one.

    :param alternative: what else is accepted, e.g. ``"a sequence of per-class counts"``.
    """
    if isinstance(value, str) and value in choices:
        return value
    valid = ", ".join(map(str, choices)) + (f", or {alternative}" if alternative else "")
    raise ValueError(f"Unknown {what} {value!r}{did_you_mean(value, choices)}; valid: {valid}.")
