"""The results format (runner/results_format.py): every field the runner writes is declared, the version is
written, older files (the committed evidence, without a version) load, a newer or broken one is one message;
and compare still reproduces the committed comparison tables from the committed results."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from bsce_avalanche.runner.cli import main
from bsce_avalanche.runner.compare import comparison_table
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.experiment import run_experiment
from bsce_avalanche.runner.results import load_results, with_posthoc
from bsce_avalanche.runner.results_format import (FIELDS, FINISHED_FIELDS, FORMAT_VERSION, ResultsFormatError,
                                                  format_version, read_results)

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"
GUIDE = Path(__file__).resolve().parents[1] / "experiments" / "GUIDE.md"


TINY = dict(benchmark="digits", model="small_cnn", n_steps=2, epochs=1, memory_size=20, progress=False, wandb=False,
            checkpoint=False, first_experience_cache=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A Replay-CE run with the NCM diagnostic (posthoc, ncm, the compute counters) and an iCaRL run."""
    out = tmp_path_factory.mktemp("format")
    runs = [ExperimentConfig(**TINY, loss="ce", ncm_diagnostic=True), ExperimentConfig(**TINY, strategy="icarl")]
    for cfg in runs:
        run_experiment(cfg, out / cfg.run_name)
    return runs[0], out / runs[0].run_name, out / runs[1].run_name


def test_a_run_writes_the_version_and_only_declared_fields(finished_run):
    for folder in finished_run[1:]:
        results = json.loads((folder / "results.json").read_text())
        assert results["format"] == FORMAT_VERSION and format_version(results) == FORMAT_VERSION
        assert set(results) <= set(FIELDS), set(results) - set(FIELDS)
    assert {"posthoc", "ncm", "images_seen", "samples_stored"} <= set(results) | set(
        json.loads((finished_run[1] / "results.json").read_text())) and "icarl_head" in results
    assert set(FINISHED_FIELDS) <= set(FIELDS)


def test_the_guide_lists_every_field():
    text = GUIDE.read_text()
    section = text[text.index("## The results format"):]
    section = section[:section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    assert f"format {FORMAT_VERSION}" in section
    missing = [name for name in FIELDS if f"`{name}`" not in section]
    assert not missing, missing


def test_committed_results_without_a_version_load_as_format_1():
    paths = sorted(RESULTS.glob("**/results.json"))
    assert len(paths) > 100
    for path in paths:
        results = read_results(path, "fix")
        # the evidence written before the version field, and files of this version (compile_end_to_end_10epochs)
        assert format_version(results) == (FORMAT_VERSION if "format" in results else 1), path


def _write(tmp_path, results) -> Path:
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results))
    return path


def test_a_newer_or_broken_file_is_one_message_naming_it(finished_run, tmp_path):
    results = json.loads((finished_run[1] / "results.json").read_text())
    path = _write(tmp_path, {**results, "format": FORMAT_VERSION + 1})
    with pytest.raises(ResultsFormatError, match=rf"{re.escape(str(path))} is of results format {FORMAT_VERSION + 1}, "
                                                 rf"newer than this version of bsce-avalanche reads \(up to "
                                                 rf"{FORMAT_VERSION}\): update bsce-avalanche to read it: fix\.$"):
        read_results(path, "fix")
    with pytest.raises(ConfigError, match=r"has 'two' as its results format"):
        load_results([_write(tmp_path, {**results, "format": "two"})])
    with pytest.raises(ConfigError, match=r"has no last_accuracy \(edited by hand, or written by another version\)"):
        load_results([_write(tmp_path, {k: v for k, v in results.items() if k != "last_accuracy"})])
    # an older file (no version) that holds what a finished run must: loads
    old = {k: v for k, v in results.items() if k != "format"}
    assert format_version(load_results([_write(tmp_path, old)])[0]) == 1


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _without_column(lines: list[str], name: str) -> list[str]:
    """The table's lines without the column ``name`` (a column added after the committed file was written)."""
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    if name not in header:
        return lines
    i = header.index(name)
    return ["|" + "|".join(c for j, c in enumerate(line.strip("|").split("|")) if j != i) + "|" for line in lines]


#: The committed comparison.md files, and the table compare now makes of their results.json files: written
#: before the recipe column existed, so that column (every row "–") is left out of the comparison.
@pytest.mark.parametrize("name", ["cifar100_cpu", "cifar100_cpu_longer", "cifar100_cpu_timing", "prior_modes_digits"])
def test_compare_reproduces_the_committed_comparison_table(name):
    committed = (RESULTS / name / "comparison.md").read_text()
    runs = [r for r in load_results([RESULTS / name]) if r.get("finished")]
    lines = _table_lines(comparison_table(with_posthoc(runs)))
    assert {line.split("|")[2].strip() for line in lines[2:]} == {"–"}  # no recipes in these runs
    assert _without_column(lines, "recipe") == _table_lines(committed)[:len(lines)]


def test_the_posthoc_view_of_an_icarl_run_is_labelled_as_the_trained_head():
    """Post-hoc adjustment is of the head's logits: an iCaRL run evaluated with NME must not give an "-nme" row."""
    from bsce_avalanche.runner.labels import run_label
    from bsce_avalanche.runner.results import posthoc_view

    run = json.loads((RESULTS / "cifar100_cpu_concat" / "replay-ce-concat-seed0-18da67" / "results.json").read_text())
    assert run["posthoc"]
    for icarl_eval in ("nme", "head"):
        icarl = {**run, "config": {**run["config"], "strategy": "icarl", "icarl_eval": icarl_eval}}
        label = run_label(posthoc_view(icarl))
        assert "-head" in label and "-nme" not in label and label.endswith("+ post-hoc LA"), label
    assert run_label(posthoc_view(run)) == "replay-ce-concat + post-hoc LA"
