"""The package's import structure: ``bsce-experiment --help``, argument and config errors and
``sweep-validate`` import neither torch nor Avalanche; the torch-free catalogs and the modules that
build what they name agree; the lazy exports resolve; no module imports itself through others."""

from __future__ import annotations

import ast
import importlib
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import bsce_avalanche
from bsce_avalanche import benchmarks
from bsce_avalanche.catalog import AMP_MODES
from bsce_avalanche.models import AMP_DTYPES
from bsce_avalanche.runner.catalog import STRATEGIES
from bsce_avalanche.runner.strategies import BUILDERS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "avalanche", "wandb", "matplotlib")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """``python -c code args`` on this checkout, from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_parsing_and_checking_configs_import_neither_torch_nor_avalanche():
    done = _python(f"""
        import sys
        from pathlib import Path
        from bsce_avalanche.runner.cli import build_parser, config_from_args, main
        from bsce_avalanche.runner.config_files import load_config
        from bsce_avalanche.runner.sweep import sweep_validate

        parser = build_parser()
        parser.format_help()
        for command in parser._subparsers._group_actions[0].choices.values():
            command.format_help()
        for path in sorted(Path("experiments/configs").glob("*.yaml")):
            load_config(path)
        config_from_args(parser.parse_args(["grid", "--strategies", "icarl", "bic", "--seeds", "0", "1"]))
        assert main(["run", "--strategy", "icral"]) == 2  # a config error: one line, exit code 2
        assert sweep_validate(sorted(Path("experiments/sweeps").glob("*.yaml"))) == 0
        print("heavy:", sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})))
    """)
    assert done.returncode == 0, done.stderr
    assert "Unknown strategy 'icral' (did you mean 'icarl'?)" in done.stderr
    assert done.stdout.splitlines()[-1] == "heavy: []"


@pytest.mark.slow  # a fresh interpreter importing torch and Avalanche (14 s on the loaded 2-core machine)
def test_importing_the_package_is_light_and_its_exports_load_on_first_use():
    done = _python("""
        import sys
        import bsce_avalanche
        light = "torch" not in sys.modules and "avalanche" not in sys.modules
        from bsce_avalanche import BalancedSoftmaxPlugin
        print(light, BalancedSoftmaxPlugin.__module__, "avalanche" in sys.modules)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "bsce_avalanche.plugin", "True"]


@pytest.mark.parametrize("package", [bsce_avalanche, benchmarks], ids=lambda p: p.__name__)
def test_every_export_resolves(package):
    """Each lazy name is the very object of the module ``_LAZY`` names, kept in the package once looked up;
    every other exported name is imported eagerly."""
    module_of = {name: module for module, names in package._LAZY.items() for name in names}
    for name in package.__all__:
        value = getattr(package, name)
        if name in module_of:
            assert value is getattr(importlib.import_module(f"{package.__name__}.{module_of[name]}"), name), name
        assert vars(package)[name] is value, name
        assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        package.nothing  # noqa: B018


def test_the_catalogs_and_the_builders_name_the_same_things():
    assert list(BUILDERS) == list(STRATEGIES)
    assert list(AMP_DTYPES) == list(AMP_MODES)
    for name, info in benchmarks.BENCHMARKS.items():
        assert info.build is getattr(benchmarks, info.builder.rpartition(".")[2]), name


def test_help_answers_without_the_training_machinery():
    """Measured in CPU time (user + sys of the child): wall time on a shared machine measures the other
    processes (here, with a training grid running, even ``python -c pass`` takes seconds). Before the
    lazy imports, ``--help`` imported Avalanche: about 9 s of CPU."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bsce_avalanche", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert done.returncode == 0 and "bsce-experiment" in done.stdout, done.stderr
    assert cpu < 2.5, f"bsce-experiment --help took {cpu:.1f} s of CPU ({wall:.1f} s wall)"


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere (in functions too), from the source."""
    files = {".".join(f.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): f
             for f in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                    base = f"{parent}.{base}" if base else parent
                for alias in node.names:  # `from . import distributed` imports a module
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    if target in files and target != name:
                        imported.add(target)
        graph[name] = imported
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others():
    graph = _import_graph(REPO / "bsce_avalanche")
    runner = {f"bsce_avalanche.runner.{m}" for m in ("cli", "schema", "config", "identity", "config_files", "grid",
                                                     "results", "labels", "compare", "figures")}
    assert runner <= set(graph)
    tables_and_figures = {"bsce_avalanche.runner.compare", "bsce_avalanche.runner.figures"}
    for name in ("experiment", "wandb_logger"):  # the training loop imports neither
        assert not tables_and_figures & graph[f"bsce_avalanche.runner.{name}"], name
    assert "bsce_avalanche.runner.experiment" in graph["bsce_avalanche.runner.runs"]  # imports in functions count
    assert _cycles(graph) == []


def test_the_library_never_imports_the_runner():
    """bsce_avalanche outside bsce_avalanche/runner (the plugin library) stands alone: no import of the runner,
    at module level or inside a function, relative or absolute."""
    graph = _import_graph(REPO / "bsce_avalanche")
    # bsce_avalanche.__main__ is `python -m bsce_avalanche`, the runner's command line: an entry point, not library
    library = {name for name in graph if not name.startswith("bsce_avalanche.runner") and name != "bsce_avalanche.__main__"}
    assert {"bsce_avalanche.plugin", "bsce_avalanche.priors", "bsce_avalanche.compat"} <= library
    offending = {name: sorted(t for t in graph[name] if t.startswith("bsce_avalanche.runner")) for name in library}
    assert {k: v for k, v in offending.items() if v} == {}
    # and the names imported: `import bsce_avalanche.runner.x`, `from bsce_avalanche import runner`
    for name in library:
        path = REPO / (name.replace(".", "/") + ".py")
        path = path if path.is_file() else path.with_suffix("") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("bsce_avalanche.runner") for a in node.names), (name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith(("bsce_avalanche.runner", "runner")), (name, node.lineno)
                if node.module in ("bsce_avalanche", None) or (node.level == 1 and node.module is None):
                    assert "runner" not in {a.name for a in node.names}, (name, node.lineno)


#: The modules whose use of Avalanche's private names went behind compat (issue 26): none may read one again.
_THROUGH_COMPAT = ("priors.py", "runner/checkpoint.py", "runner/first_experience.py", "runner/distributed.py")


def test_avalanche_private_names_the_package_relies_on_exist():
    """Fails when an Avalanche version drops or renames a private name that compat reads for the package."""
    from bsce_avalanche import compat

    assert compat.missing_private_names() == []
    assert len(compat.AVALANCHE_PRIVATE_NAMES) >= 17


def test_the_private_names_check_catches_a_name_that_disappears(monkeypatch):
    from avalanche.benchmarks.utils import flat_data
    from bsce_avalanche import compat

    monkeypatch.delattr(flat_data.LazyIndices, "_to_eager")
    assert compat.missing_private_names() == ["avalanche.benchmarks.utils.flat_data.LazyIndices._to_eager"]


@pytest.mark.parametrize("module", _THROUGH_COMPAT)
def test_private_avalanche_names_are_read_in_compat_only(module):
    """No `obj._name` (but self's and cls's) and no `from avalanche... import _Name` outside compat."""
    tree = ast.parse((REPO / "bsce_avalanche" / module).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and ast.unparse(node.value) not in ("self", "cls", "owner"):  # owner: torch's nn.Module._buffers
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avalanche"):
            found += [f"{node.lineno}: {a.name}" for a in node.names if a.name.startswith("_") and
                      not a.name.startswith("__")]
    assert found == []


#: A function longer than this needs its reason in a comment on its first line (``# long: ...``).
MAX_FUNCTION_LINES = 60


def _long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and "# long:" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_the_rule_without_a_reason(tmp_path):
    assert _long_functions(REPO / "bsce_avalanche") == []
    # the check itself: a 61-line function is found, the same with its reason is not
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"def f():\n{body}\n\n\ndef g():  # long: a table\n{body}\n")
    assert _long_functions(tmp_path / "pkg") == ["pkg/m.py:1 f (61 lines)"]
