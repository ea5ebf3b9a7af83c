"""Run folders in tests: a run's name is ``<label>-seed<n>-<settings digest>``; tests name it by its label and seed;
the results each holds."""

from __future__ import annotations

import json
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


def read_results(run_folder: str | Path) -> dict:
    """The ``results.json`` of a run folder."""
    return json.loads((Path(run_folder) / "results.json").read_text())


def results_in(parent: str | Path) -> dict[str, dict]:
    """``{run folder name: results}`` of every run folder of ``parent`` with a ``results.json``, by name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(parent).glob("*/results.json"))}
