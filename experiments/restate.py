"""Restate the measured tables of README.md and experiments/RESULTS.md from the committed results.

    python experiments/restate.py           # rewrite every block between <!-- NAME:start --> and <!-- NAME:end -->
    python experiments/restate.py --check   # exit 1 naming the blocks that differ from the results (the tests run it)

Each block is built by the evidence script that owns its results (``cifar100_cpu_concat.py``: section 4a and
README's table and gains; ``cifar100_cpu_epochs.py``: training length; ``cifar100_cpu_settings.py``: the
settings; ``cifar100_online.py``: section 6b), from the finished runs' ``results.json``: no number in a block is
written by hand. Blocks whose results are missing (a fresh clone keeps them all) are left as they are.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from typing import Callable, Optional

from bsce_avalanche.runner.fileio import write_text_atomic
from bsce_avalanche.runner.labels import POSTHOC_LABEL
from bsce_avalanche.runner.plans import summary_rows
from bsce_avalanche.runner.results import load_results
from bsce_avalanche.runner.stats import format_gain, format_mean_std, paired_difference

EXPERIMENTS = Path(__file__).resolve().parent
RESULTS_DIR = EXPERIMENTS / "results"
README = EXPERIMENTS.parent / "README.md"
RESULTS_MD = EXPERIMENTS / "RESULTS.md"
METRICS = ("average_incremental_accuracy", "last_accuracy")


@cache  # each script loaded once per restate, however many blocks it builds
def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache  # section 4's runs read once for its four blocks
def _concat_groups() -> Optional[tuple[list[dict], dict]]:
    out = RESULTS_DIR / "cifar100_cpu_concat"
    runs = [r for r in load_results([out]) if r.get("finished")] if out.is_dir() else []
    if not runs:
        return None
    rows = summary_rows(runs, out.parent)
    return rows, _script("cifar100_cpu_concat")._by_row(rows)


def _gain(groups: dict, a: tuple, b: tuple) -> str:
    return " / ".join(format_gain(paired_difference(groups[a], groups[b], lambda r, k=k: r[k])) for k in METRICS)


def fair_table() -> Optional[str]:
    """RESULTS.md 4a: the fair table, the compute note and three accuracy matrices."""
    if not (found := _concat_groups()):
        return None
    rows, groups = found
    script = _script("cifar100_cpu_concat")
    matrices = ""
    for name, label in (("Replay + BSCE", "replay-bsce-concat"),
                        ("Replay + CE + post-hoc LA (the strongest baseline)", "replay-ce-concat" + POSTHOC_LABEL),
                        ("ER-ACE", "er_ace-ce")):
        if group := groups.get((label, None)):
            matrices += (f"\nAccuracy matrix, {name} ({len(group)} seeds, mean): accuracy (%) on each step's classes "
                         f"(columns) after each step (rows)\n\n" + script.matrix_table(group))
    return (script.fair_table(rows) + "\nImages and gradient steps per epoch: the mean over steps 1-9 (step 0: 5,000 "
            "images in 40 steps; BiC holds out its validation split from it); '–': runs that predate the counters, all "
            "of them concatenated rehearsal, 7,000 images in 55 steps per epoch at steps 1-9. Samples stored: after "
            "the last step.\n" + matrices)


#: README's rows: (name, method label, recipe or None for the shared schedule).
README_ROWS = (
    ("Replay + CE", "replay-ce-concat", None), ("Replay + CE + post-hoc LA", "replay-ce-concat" + POSTHOC_LABEL, None),
    ("Replay + WA (aligning alone)", "replay-ce-concat-wa", None), ("**Replay + BSCE**", "replay-bsce-concat", None),
    ("LwF + memory + CE", "lwf+mem-ce-concat", None), ("WA (LwF + memory + aligning)", "lwf+mem-ce-concat-wa", None),
    ("**LwF + memory + BSCE**", "lwf+mem-bsce-concat", None),
    ("iCaRL (NME), its own loss (sigmoid BCE)", "icarl-ce-nme", "icarl-ce"),
    ("iCaRL (NME), softmax CE (BSCE, tau 0)", "icarl-bsce-nme-tau0", None),
    ("**iCaRL (NME) + BSCE**", "icarl-bsce-nme", None),
    ("BiC (fixed), shared schedule", "bic-ce-concat", None), ("BiC (fixed), its recipe", "bic-ce-concat", "bic"),
    ("ER-ACE (Replay's memory)", "er_ace-ce", None))


def readme_table() -> Optional[str]:
    if not (found := _concat_groups()):
        return None
    groups = found[1]
    lines = ["| method | recipe | seeds | step-0 acc. (%) | avg. incremental acc. (%) | last acc. (%) | predictions to "
             "the 10 newest classes (%) |", "|---|---|---|---|---|---|---|"]
    for name, label, recipe in README_ROWS:
        if group := groups.get((label, recipe)):
            lines.append(f"| {name} | {recipe or 'shared'} | {len(group)} | " + " | ".join(
                format_mean_std([r[k] for r in group]) for k in (
                    "step0_accuracy", *METRICS, "new_class_prediction_share_last_step")) + " |")
    return "\n".join(lines) + "\n"


def readme_posthoc() -> Optional[str]:
    if not (found := _concat_groups()):
        return None
    groups = found[1]
    lines = []
    for name, bsce, base in (("Replay + BSCE", "replay-bsce-concat", "replay-ce-concat"),
                             ("LwF + memory + BSCE", "lwf+mem-bsce-concat", "lwf+mem-ce-concat"),
                             ("iCaRL + BSCE (trained head)", "icarl-bsce-head", "icarl-bsce-head-tau0")):
        adjusted = (base + POSTHOC_LABEL, None)
        if groups.get((bsce, None)) and groups.get(adjusted):
            lines.append(f"- {name} minus its CE run adjusted post hoc: **{_gain(groups, (bsce, None), adjusted)}** "
                         f"points (average incremental / last accuracy; BSCE minus plain CE: "
                         f"{_gain(groups, (bsce, None), (base, None))}).")
    return "\n".join(lines) + "\n"


#: README's gains: BSCE's row -> the baselines of its family.
FAMILIES = {
    "Replay + BSCE": ("replay-bsce-concat", ("replay-ce-concat", "replay-ce-concat" + POSTHOC_LABEL, "replay-ce-concat-wa")),
    "LwF + memory + BSCE": ("lwf+mem-bsce-concat", ("lwf+mem-ce-concat", "lwf+mem-ce-concat" + POSTHOC_LABEL,
                                                    "lwf+mem-ce-concat-wa")),
    "iCaRL (NME) + BSCE": ("icarl-bsce-nme", ("icarl-bsce-nme-tau0",)),
    "iCaRL (trained head) + BSCE": ("icarl-bsce-head", ("icarl-bsce-head-tau0", "icarl-bsce-head-tau0" + POSTHOC_LABEL))}
BASELINE_NAMES = {label: name.strip("*") for name, label, _ in README_ROWS} | {
    "icarl-bsce-head-tau0": "its softmax-CE ablation",
    "icarl-bsce-head-tau0" + POSTHOC_LABEL: "its softmax-CE ablation adjusted post hoc",
    "icarl-bsce-nme-tau0": "its softmax-CE ablation (NME)",
    "lwf+mem-ce-concat" + POSTHOC_LABEL: "LwF + memory + CE + post-hoc LA"}


def _name_of_all(label: str) -> str:
    """A baseline's name outside its family ("its" ablation named as iCaRL's, with its classifier)."""
    name = BASELINE_NAMES.get(label, label)
    if label.startswith("icarl") and name.startswith("its "):
        name = "iCaRL's " + name[len("its "):] + (", trained head" if "-head" in label else "")
    return name


def readme_gains() -> Optional[str]:
    if not (found := _concat_groups()):
        return None
    groups = found[1]

    def mean(key):
        return sum(r["average_incremental_accuracy"] for r in groups[key]) / len(groups[key])

    strongest = max((k for k in groups if "-bsce" not in k[0] or "tau0" in k[0]), key=mean)
    lines = []
    for name, (bsce, bases) in FAMILIES.items():
        present = [(b, None) for b in bases if groups.get((b, None))]
        if groups.get((bsce, None)) and present:
            best = max(present, key=mean)
            lines.append(f"- {name} minus the strongest baseline of its family ({BASELINE_NAMES.get(best[0], best[0])}): "
                         f"**{_gain(groups, (bsce, None), best)}**; minus the strongest baseline of all "
                         f"({_name_of_all(strongest[0])}): {_gain(groups, (bsce, None), strongest)}.")
    return "\n".join(lines) + "\n"


def epochs_table() -> Optional[str]:
    """RESULTS.md 4d: BSCE's gain against training length (cifar100_cpu_epochs.py)."""
    out = RESULTS_DIR / "cifar100_cpu_epochs"
    runs = [r for r in load_results([out]) if r.get("finished")] if out.is_dir() else []
    if not runs:
        return None
    return _script("cifar100_cpu_epochs").gains_table(summary_rows(runs, out.parent), out.parent)[0]


def settings_table() -> Optional[str]:
    """RESULTS.md 4e: the CIFAR-100 settings (cifar100_cpu_settings.py), the table of its summary."""
    out = RESULTS_DIR / "cifar100_cpu_settings"
    if not out.is_dir() or not any(out.glob("*/*/results.json")):
        return None
    text = _script("cifar100_cpu_settings").summary(out, write=False)
    return "\n".join(line for line in text.splitlines() if line.startswith("|")) + "\n"


def online_reservoir() -> Optional[str]:
    """RESULTS.md 6b: the standard online protocol (cifar100_online.py's summary)."""
    out = RESULTS_DIR / "cifar100_online_reservoir"
    if not out.is_dir():
        return None
    script = _script("cifar100_online")
    rows = script._summary_rows(script.planned_runs(), out)
    if not rows:
        return None
    return (script.markdown_table(rows) + "\n\nBSCE minus the strongest baseline, paired per seed, 95% t-interval:\n\n"
            + script.gains_table(rows) + "\n")


#: (file, marker) -> the function that builds the block.
BLOCKS: dict[tuple[Path, str], Callable[[], Optional[str]]] = {
    (RESULTS_MD, "fair-table"): fair_table, (RESULTS_MD, "epochs-table"): epochs_table,
    (RESULTS_MD, "settings-table"): settings_table, (RESULTS_MD, "online-reservoir"): online_reservoir,
    (README, "readme-table"): readme_table, (README, "readme-gains"): readme_gains,
    (README, "readme-posthoc"): readme_posthoc, (README, "readme-epochs"): epochs_table,
    (README, "readme-settings"): settings_table,
}


def restate(check: bool = False) -> list[str]:
    """Rewrite (or, with ``check``, compare) every block; returns the names of the blocks that differed."""
    differed, texts, built = [], {}, {}
    for (path, marker), build in BLOCKS.items():
        text = texts.setdefault(path, path.read_text())
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"restate.py: {path.name} has no <!-- {marker}:start --> ... <!-- {marker}:end --> block")
        block = built[build] if build in built else built.setdefault(build, build())
        if block is None:  # no results for it here: the block stays
            continue
        new = pattern.sub(lambda m: m.group(1) + block.rstrip("\n") + "\n" + m.group(2), text)
        if new != text:
            differed.append(f"{path.name}:{marker}")
            texts[path] = new
    if not check:
        for path, text in texts.items():
            if text != path.read_text():
                write_text_atomic(path, text)
    return differed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the blocks that differ")
    args = parser.parse_args(argv)
    differed = restate(check=args.check)
    if args.check and differed:
        print(f"out of date with the results: {', '.join(differed)}; run python experiments/restate.py",
              file=sys.stderr)
        return 1
    print(("rewrote " if differed else "up to date: ") + (", ".join(differed) or ", ".join(m for _, m in BLOCKS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
