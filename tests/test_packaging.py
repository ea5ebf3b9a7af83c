"""Installed as from a checkout (issue 27): --config finds a shipped config by name or takes a path, the run's
default is the shipped default from any folder, the wheel carries the configs, one version number."""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import bsce_avalanche
from bsce_avalanche.runner.cli import build_parser, config_from_args, main
from bsce_avalanche.runner.config import ConfigError
from bsce_avalanche.runner.config_files import DEFAULT_CONFIG, load_config, resolve_config, shipped_configs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs"
PAPER = ("cifar100_b0_5steps", "cifar100_b0_10steps", "cifar100_b0_20steps", "cifar100_b0_50steps",
         "cifar100_b50_5steps", "cifar100_b50_10steps", "cifar100_b50_25steps", "imagenet_subset_b0_10steps")


def test_shipped_configs_are_the_checkouts_configs_by_name():
    shipped = shipped_configs()
    assert list(shipped)[0] == DEFAULT_CONFIG
    assert set(shipped) >= {DEFAULT_CONFIG, *PAPER}
    assert {p.resolve() for p in shipped.values()} == {p.resolve() for p in CONFIGS.glob("*.yaml")}  # one copy


@pytest.mark.parametrize("given", ["cifar100_b0_10steps", "cifar100_b0_10steps.yaml"])
def test_config_by_name_from_any_folder(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config(given).resolve() == (CONFIGS / "cifar100_b0_10steps.yaml").resolve()
    cfg = config_from_args(build_parser().parse_args(["run", "--config", given]))
    assert cfg == load_config(CONFIGS / "cifar100_b0_10steps.yaml")
    assert cfg.name == "cifar100-b0-10steps"


def test_config_by_path(tmp_path, monkeypatch):
    own = tmp_path / "cifar100_b0_10steps.yaml"  # a file of a shipped name: the path wins
    own.write_text("name: mine\nepochs: 2\n")
    assert config_from_args(build_parser().parse_args(["run", "--config", str(own)])).name == "mine"
    monkeypatch.chdir(tmp_path)
    assert load_config("cifar100_b0_10steps.yaml").name == "mine"
    assert load_config(CONFIGS / "cifar100_b0_20steps.yaml").n_steps == 20
    assert load_config("cifar100_b0_20steps").n_steps == 20


def test_default_is_the_shipped_default_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (["run"], ["grid"]):
        cfg = config_from_args(build_parser().parse_args(command))
        assert (cfg.name, cfg.grid) == ("digits-replay", {"loss": ["ce", "bsce"]})  # the README's demo


@pytest.mark.parametrize("given, message", [
    ("cifar100_b0_10step", "Unknown config 'cifar100_b0_10step' (did you mean 'cifar100_b0_10steps'?)"),
    ("nope", "Unknown config 'nope':"),
    ("nope.yaml", "Config file nope.yaml does not exist"),
    ("configs/cifar100_b0_10steps.yaml", "Config file configs/cifar100_b0_10steps.yaml does not exist"),
])
def test_unknown_config_is_one_line_listing_the_shipped_names(given, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="default, "):
        resolve_config(given)
    assert main(["run", "--config", given]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"bsce-experiment: error: {message}")
    assert all(name in line for name in shipped_configs())


def test_help_lists_the_shipped_names():
    parser = build_parser()
    for command in ("run", "grid", "sweep-run"):
        text = " ".join(parser._subparsers._group_actions[0].choices[command].format_help().split())
        assert "shipped config's name: " + ", ".join(shipped_configs()) in text
        assert "(default: default, the offline demo" in text


def test_one_version_number():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: bsce_avalanche.__version__"  # the one source
    citation = (REPO / "CITATION.cff").read_text()
    assert "\nversion:" not in citation and "cff-version: 1.2.0" in citation
    assert (REPO / "CHANGELOG.md").read_text().count(f"\n## {bsce_avalanche.__version__}\n") == 1


def test_version_is_the_installed_metadata_version():
    assert bsce_avalanche.__version__ == importlib.metadata.version("bsce-avalanche")


def _sources(tmp_path: Path) -> Path:
    """The files a build reads, copied (an in-tree build would leave build/ and *.egg-info in the checkout,
    and setuptools reuses a stale build/lib)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "bsce_avalanche", src / "bsce_avalanche", ignore=ignore)
    shutil.copytree(CONFIGS, src / "experiments" / "configs", ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    return src


def test_the_wheel_carries_the_configs_and_runs_installed(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(_sources(tmp_path))], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"bsce_avalanche/configs/{p.name}" for p in CONFIGS.glob("*.yaml")} <= set(names)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "bsce_avalanche").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))  # every subpackage listed in setup.cfg

    site, empty = tmp_path / "site", tmp_path / "empty"
    zipfile.ZipFile(wheel).extractall(site)
    empty.mkdir()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import importlib.metadata, sys
        from pathlib import Path
        import bsce_avalanche
        from bsce_avalanche.runner.cli import build_parser, config_from_args
        from bsce_avalanche.runner.config_files import resolve_config, shipped_configs
        package = Path(bsce_avalanche.__file__).parent
        assert package == Path(sys.argv[1]) / "bsce_avalanche", package
        assert all(p.parent == package / "configs" for p in shipped_configs().values())
        assert resolve_config("cifar100_b0_10steps") == package / "configs" / "cifar100_b0_10steps.yaml"
        cfg = config_from_args(build_parser().parse_args(["run"]))
        assert (cfg.name, cfg.grid) == ("digits-replay", {"loss": ["ce", "bsce"]}), cfg
        assert bsce_avalanche.__version__ == importlib.metadata.version("bsce-avalanche")
        print(len(shipped_configs()), "torch" in sys.modules)
    """), str(site)], cwd=empty, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(list(CONFIGS.glob("*.yaml")))), "False"]


#: The tracked top level of the repository (issue 25: a stray run_logged.pid had been committed there).
TOP_LEVEL = {".ci", ".gitignore", "CHANGELOG.md", "CITATION.cff", "LICENSE", "MANIFEST.in", "README.md", "bsce_avalanche",
             "experiments", "notebooks", "pyproject.toml", "setup.cfg", "tests"}


def test_the_tracked_top_level_holds_only_the_declared_layout():
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split("\n")
    top = {f.split("/")[0] for f in files if f}
    assert top == TOP_LEVEL, f"not declared: {sorted(top - TOP_LEVEL)}; missing: {sorted(TOP_LEVEL - top)}"
