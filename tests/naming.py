"""Run folders in tests: a run's name is ``<label>-seed<n>-<settings digest>``; tests name it by its label and seed."""

from __future__ import annotations

import re
from pathlib import Path

DIGEST = re.compile(r"-[0-9a-f]{6}$")


def without_digest(name: str) -> str:
    """``replay-bsce-seed0-3fa9c1`` -> ``replay-bsce-seed0``."""
    return DIGEST.sub("", name)


def run_dir(parent: str | Path, label_seed: str) -> Path:
    """The one run folder of ``parent`` named ``<label_seed>-<digest>``."""
    found = [p for p in Path(parent).iterdir() if p.is_dir() and without_digest(p.name) == label_seed
             and p.name != label_seed]
    assert len(found) == 1, f"expected one run folder {label_seed}-<digest> in {parent}, found {found}"
    return found[0]
