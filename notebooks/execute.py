#!/usr/bin/env python
"""Re-execute the notebooks and save them with their outputs (so GitHub shows the plots).

Run from anywhere (paths are resolved from this file)::

    python notebooks/execute.py                    # both notebooks, in place
    python notebooks/execute.py quickstart         # one of them
    python notebooks/execute.py analysis --results-dir experiments/results/cifar100_cpu \\
        --output /tmp/analysis_cifar100.ipynb      # another results directory, elsewhere

Each notebook runs in a fresh ``python3`` kernel whose working directory is this
``notebooks/`` folder, as when it is opened in Jupyter from here: the quickstart's W&B
offline runs land in ``notebooks/wandb/`` (git-ignored) and the analysis notebook reads
``../experiments/results/...``. Needs the dev extras (``pip install -e .[dev]``:
nbclient, nbformat, ipykernel).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

NOTEBOOK_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOK_DIR.parent
NOTEBOOKS = ("quickstart", "analysis")

#: Environment variable read by ``analysis.ipynb`` for its results directory.
RESULTS_DIR_ENV = "BSCE_RESULTS_DIR"


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb`` for a short name, or the path itself."""
    path = Path(name)
    if path.suffix != ".ipynb":
        path = NOTEBOOK_DIR / f"{name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"No notebook {path}; choose one of {', '.join(NOTEBOOKS)} or give a path.")
    return path


def execute_notebook(
    path: str | os.PathLike,
    *,
    cwd: Optional[str | os.PathLike] = None,
    env: Optional[Mapping[str, str]] = None,
    extra_cells: Sequence[str] = (),
    timeout: int = 600,
):
    """Execute a notebook in a fresh ``python3`` kernel and return the executed notebook.

    :param cwd: the kernel's working directory (default: the notebook's folder).
    :param env: variables added to this process's environment for the kernel.
    :param extra_cells: code cells appended before execution (tests use them to read
        the notebook's variables).
    Raises ``nbclient.exceptions.CellExecutionError`` if a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for source in extra_cells:
        nb.cells.append(nbformat.v4.new_code_cell(source))
    kernel_env = dict(os.environ)
    # the kernel imports bsce_avalanche even when the package is not installed
    kernel_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), kernel_env.get("PYTHONPATH")) if p
    )
    kernel_env.update(env or {})
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no per-cell timestamps: smaller diffs
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    client.execute(env=kernel_env)
    return nb


def local_paths_in_outputs(nb) -> list[str]:
    """Output lines that show paths of this machine (checkout, home, temp dirs)."""
    needles = {str(REPO_ROOT), str(Path.home()), "/tmp/", "site-packages"}
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")]
            texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
            texts += output.get("traceback", [])
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                found += [line for line in text.splitlines() if any(n in line for n in needles)]
    return found


def strip_volatile_metadata(nb) -> None:
    """Drop metadata that changes on every run without meaning anything."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", default=list(NOTEBOOKS),
                        help=f"short names ({', '.join(NOTEBOOKS)}) or .ipynb paths; default: all")
    parser.add_argument("--results-dir", help=f"results directory for analysis.ipynb (sets {RESULTS_DIR_ENV})")
    parser.add_argument("--output", help="write the executed notebook here instead of in place (one notebook only)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    if args.output and len(args.notebooks) != 1:
        parser.error("--output needs exactly one notebook")

    import nbformat

    env = {}
    if args.results_dir:
        results = Path(args.results_dir).resolve()
        if not results.is_dir():
            parser.error(f"--results-dir {args.results_dir} is not a directory")
        # inside the checkout: relative to the kernel's working directory, so that the
        # saved outputs show no path of this machine
        inside = REPO_ROOT in results.parents
        env[RESULTS_DIR_ENV] = os.path.relpath(results, NOTEBOOK_DIR) if inside else str(results)

    for name in args.notebooks:
        path = notebook_path(name)
        start = time.perf_counter()
        nb = execute_notebook(path, env=env, timeout=args.timeout)
        strip_volatile_metadata(nb)
        out = Path(args.output) if args.output else path
        nbformat.write(nb, out)
        size = out.stat().st_size
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s -> {out} ({size / 1e3:.0f} kB)")
        leaks = local_paths_in_outputs(nb)
        if leaks:
            print(f"  warning: outputs show local paths, e.g. {leaks[0].strip()[:200]!r}", file=sys.stderr)
        if size > 1_000_000:
            print("  warning: over 1 MB; lower the figure DPI or the number of plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
