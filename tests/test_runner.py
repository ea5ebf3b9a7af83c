"""The experiment runner, its config, the comparison and the CLI (offline, on digits)."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from bsce_avalanche import PRIOR_MODES
from bsce_avalanche.benchmarks import BENCHMARKS, CLASS_ORDER_NAMES
from bsce_avalanche.models import MODELS
from bsce_avalanche.runner.cli import build_parser, config_from_args, main
from bsce_avalanche.runner.compare import comparison_table
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.config_files import load_config
from bsce_avalanche.runner.experiment import build_benchmark, build_model, run_experiment
from bsce_avalanche.runner.fileio import write_json_atomic
from bsce_avalanche.runner.grid import expand_grid
from bsce_avalanche.runner.labels import run_label
from bsce_avalanche.runner.metrics import evaluate_step, per_experience_accuracy, summarise
from bsce_avalanche.runner.schema import CHOICES, RUNNER_SET
from bsce_avalanche.runner.strategies import STRATEGIES
from conftest import assert_accuracies_consistent
from naming import run_dir

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"accuracy_matrix", "average_incremental_accuracy", "last_accuracy", "forgetting", "old_new_accuracy",
                "new_class_prediction_share"}  # runner.metrics.summarise: a run's, and iCaRL's other classifier's
FAST = dict(benchmark="digits", protocol="B0", n_steps=2, class_order="natural", model="small_cnn",
            epochs=1, batch_size=32, memory_size=30, progress=False)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


# ---------------------------------------------------------------- config
def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("strategy: replay\nmemroy_size: 20\n")
    with pytest.raises(ConfigError, match="Unknown config key 'memroy_size'.*did you mean 'memory_size'"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"strategy": "replya"}, "Unknown strategy 'replya' \\(did you mean 'replay'\\?\\)"),
        ({"benchmark": "cifar10"}, "did you mean 'cifar100'"),
        ({"loss": "bcse"}, "did you mean 'bsce'"),
        ({"epochs": "ten"}, "epochs must be of type int"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": True}, "lr"),
        ({"grid": {"los": ["ce"]}}, "grid key 'los'.*did you mean 'loss'"),
        ({"grid": {"loss": "ce"}}, "must be a non-empty list"),
        ({"strategy": "replay", "memory_size": 0}, "needs a memory"),
    ],
)
def test_bad_config_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_grid_expands_to_every_combination():
    cfg = ExperimentConfig(grid={"loss": ["ce", "bsce"], "seed": [0, 1, 2]})
    runs = expand_grid(cfg)
    assert len(runs) == 6
    assert {(r.loss, r.seed) for r in runs} == {(l, s) for l in ("ce", "bsce") for s in (0, 1, 2)}
    assert all(r.grid == {} for r in runs)


def test_shipped_configs_are_valid():
    configs = sorted((REPO / "experiments" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert expand_grid(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"protocol": "B3", "n_steps": 3}, "benchmark 'digits': .*remaining 7 classes cannot be split"),
        ({"benchmark": "cifar100", "protocol": "B50", "n_steps": 7}, "must be one of \\[1, 2, 5, 10, 25, 50\\]"),
        ({"protocol": "C50"}, "look like 'B0'"),
        ({"class_order": "icarl-original"}, "only for CIFAR-100"),
        ({"class_order": "natrual"}, "did you mean 'natural'"),
        ({"fast_augment": True}, "fast_augment does not apply to benchmark 'digits'"),
        ({"benchmark": "imagenet", "download": True}, "download does not apply to benchmark 'imagenet'"),
        ({"data_dir": "/data"}, "data_dir does not apply to benchmark 'digits'"),
        ({"width": 8}, "width applies to the CIFAR ResNets \\(resnet32, resnet20, resnet8\\), not small_cnn"),
        ({"model": "resnet34"}, "did you mean 'resnet32'"),
        ({"prior": "sampeling"}, "did you mean 'sampling'"),
        ({"wandb_mode": "ofline"}, "did you mean 'offline'"),
    ],
)
def test_names_are_checked_against_the_registries(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_any_b_protocol_that_splits_the_classes():
    assert ExperimentConfig(protocol="B4", n_steps=3).protocol == "B4"  # 4 + 3 x 2 digits
    assert ExperimentConfig(benchmark="cifar100", protocol="B40", n_steps=6, model="resnet8").n_steps == 6


def test_benchmark_facts_reach_the_run(tmp_path):
    """The registry's normalisation and fast-augment default; fast_augment: true on
    Tiny-ImageNet is applied (uint8 batches, ImageNet normalisation in the model)."""
    assert ExperimentConfig(benchmark="cifar100").use_fast_augment
    assert not ExperimentConfig(benchmark="tiny_imagenet").use_fast_augment
    from test_benchmarks import _fake_tiny_imagenet

    _fake_tiny_imagenet(tmp_path, ["n01443537", "n01629819", "n02124075", "n04067472"], n_train=1, n_val=1)
    cfg = ExperimentConfig(benchmark="tiny_imagenet", data_dir=str(tmp_path), fast_augment=True, n_steps=2,
                           class_order="natural")
    x, _, _ = build_benchmark(cfg).train_stream[0].dataset[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 64, 64)
    model = build_model(cfg, 4)
    assert isinstance(model.feature_extractor.backbone.conv1, torch.nn.Conv2d)  # resnet18, the default
    torch.testing.assert_close(model.feature_extractor.normalize.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    assert not hasattr(build_model(ExperimentConfig(), 10).feature_extractor, "normalize")  # digits: floats


def test_method_label_of_results_from_other_versions():
    """Old results.json configs (missing keys, keys that no longer exist) still get labels."""
    assert run_label({"config": {"strategy": "lwf", "loss": "ce", "lwf_memory": True, "gone": 1}}) == "lwf+mem-ce"
    assert run_label({"config": {"strategy": "icarl", "loss": "bsce", "prior": "dataset", "tau": 0.5}}) == \
        "icarl-bsce-nme-prior_dataset-tau0.5"
    assert re.fullmatch(r"replay-bsce-seed0-[0-9a-f]{6}", ExperimentConfig(strategy="replay", loss="bsce").run_name)


def test_a_key_set_on_the_command_line_leaves_the_config_grid():
    parse = build_parser().parse_args
    assert load_config(REPO / "experiments/configs/default.yaml").grid == {"loss": ["ce", "bsce"]}
    cfg = config_from_args(parse(["run", "--loss", "ce", "--memory-size", "30"]))
    assert (cfg.loss, cfg.grid, cfg.memory_size) == ("ce", {}, 30)
    assert config_from_args(parse(["run"])).grid == {"loss": ["ce", "bsce"]}
    cfg = config_from_args(parse(["grid", "--strategies", "lwf", "icarl", "--seeds", "0", "1", "--no-wandb"]))
    assert cfg.grid == {"loss": ["ce", "bsce"], "strategy": ["lwf", "icarl"], "seed": [0, 1]} and not cfg.wandb


def _subcommand_parsers():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["run", "grid", "sweep-run", "sweep-validate", "compare"])
def test_help_gives_every_option_meaning_choices_and_default(command, capsys):
    parser = _subcommand_parsers()[command]
    for action in parser._actions:
        if action.dest == "help" or action.help == argparse.SUPPRESS:  # --recipe: refused (the runner sets it)
            continue
        assert action.help and len(action.help) > 10, action.dest
        if action.option_strings:  # positionals have no default
            assert "(default: " in action.help or "; default: " in action.help, action.help
        if action.dest in CHOICES:
            assert all(name in action.help for name in CHOICES[action.dest]), action.help
    if command in ("run", "grid", "sweep-run"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for f in fields(ExperimentConfig):
            if f.name in RUNNER_SET:  # set by the runner: no option
                assert not re.search(rf"--{f.name.replace('_', '-')}\b", text), f.name
                continue
            default = f.default_factory() if callable(f.default_factory) else f.default
            shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
            assert f"--{f.name.replace('_', '-')}" in text and f"(default: {shown})" in text, f.name
            assert f.metadata["help"].split()[0] in text, f.name
        for name in (*BENCHMARKS, *STRATEGIES, *MODELS, *PRIOR_MODES, *CLASS_ORDER_NAMES):
            assert name in text, name


def _readme_names_tables() -> str:
    """The README's tables of names, rendered from the registries."""
    code = lambda names: ", ".join(f"`{n}`" for n in names)
    lines = ["| `benchmark:` | classes | default `model:` | usual protocols (`n_steps`) | options | what |",
             "|---|---|---|---|---|---|"]
    for name, b in BENCHMARKS.items():
        protocols = ", ".join(f"{p} ({', '.join(map(str, steps))})" for p, steps in b.protocols.items())
        options = ", ".join(f"`{o}`" + (f" (default {str(b.fast_augment).lower()})" if o == "fast_augment" else "")
                            for o in sorted(b.options)) or "–"
        lines.append(f"| `{name}` | {b.n_classes} | `{b.default_model}` | {protocols} | {options} | {b.description} |")
    lines += ["", "| `strategy:` | memory | what |", "|---|---|---|"]
    for name, s in STRATEGIES.items():
        note = f" (not with `loss: bsce`: {s.without_bsce})" if s.without_bsce else ""
        lines.append(f"| `{name}` | {'yes' if s.memory else 'no'} | {s.description}{note} |")
    lines += ["", "| `model:` | `make_model` default `input_norm` | what |", "|---|---|---|"]
    for name, m in MODELS.items():
        lines.append(f"| `{name}` | {m.input_norm or '–'} | {m.description} |")
    lines += ["", "| key | choices |", "|---|---|"]
    for key in ("loss", "prior", "icarl_eval", "replay", "memory_selection", "device", "wandb_mode"):
        lines.append(f"| `{key}:` | {code(CHOICES[key])} |")
    lines.append(f"| `class_order:` | {code(CLASS_ORDER_NAMES)}, an int seed, or a list of class ids |")
    return "\n".join(lines) + "\n"


def test_readme_lists_exactly_the_registries_names():
    guide = (REPO / "experiments" / "GUIDE.md").read_text()
    tables = _readme_names_tables()
    assert tables in guide, "experiments/GUIDE.md's tables of names are out of date; they should read:\n" + tables
    readme = (REPO / "README.md").read_text()
    prior_rows = re.findall(r'^\| `"(\w+)"` \|', readme.split("Prior modes:")[1].split("\n\n")[1], re.M)
    assert tuple(prior_rows) == PRIOR_MODES


# ---------------------------------------------------------------- metrics
def test_metrics_from_predictions():
    classes = [[0, 1], [2, 3]]
    y_true = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    after0 = evaluate_step(y_true, np.array([0, 1, 0, 0, 0, 0, 1, 1]), classes, 0, 4)
    after1 = evaluate_step(y_true, np.array([2, 1, 2, 3, 0, 3, 2, 3]), classes, 1, 4)
    assert after0["accuracy_per_experience"] == [0.75, 0.0]
    assert after0["accuracy_seen"] == 0.75 and after0["old_accuracy"] is None
    assert after1["accuracy_per_experience"] == [0.5, 1.0]
    assert after1["old_accuracy"] == 0.5 and after1["new_accuracy"] == 1.0
    assert after1["new_class_prediction_share"] == 0.75
    summary = summarise([after0, after1])
    assert summary["average_incremental_accuracy"] == pytest.approx((0.75 + 0.75) / 2)
    assert summary["last_accuracy"] == 0.75
    assert summary["forgetting"] == pytest.approx(0.25)
    assert np.array(after1["confusion_matrix"]).sum() == 8


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ---------------------------------------------------------------- runs
def test_run_writes_results_and_an_offline_wandb_run(wandb_env, fake_wandb):
    out = wandb_env / "run"
    cfg = ExperimentConfig(**FAST, strategy="replay", loss="bsce", output_dir=str(out))
    results = run_experiment(cfg)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["finished"] is True
    for key in ("config", "accuracy_matrix", "average_incremental_accuracy", "last_accuracy", "forgetting",
                "old_new_accuracy", "new_class_prediction_share", "priors", "step_times_s"):
        assert key in on_disk, key
    matrix = on_disk["accuracy_matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert matrix[0][1] is None, "experiences not seen yet are not evaluated"
    # every accuracy recounted from the confusion matrix (and average_incremental_accuracy = mean accuracy_seen)
    assert_accuracies_consistent(on_disk)
    assert np.sum(on_disk["confusion_matrix"]) == 540  # digits' 30 % test split: all 10 classes seen at the end
    assert len(on_disk["priors"]) == 2 and sum(on_disk["priors"][-1]) == pytest.approx(1)
    assert results["last_accuracy"] == on_disk["last_accuracy"]

    [run] = fake_wandb.runs  # what the run handed to wandb (tests/fake_wandb.py)
    assert (run.mode, run.id, run.exit_code) == ("offline", on_disk["wandb"]["run_id"], 0)
    assert on_disk["wandb"]["run_dir"] == str(out / "wandb" / f"offline-run-fake-{run.id}")
    assert on_disk["wandb"]["sync_command"] == f"wandb sync {on_disk['wandb']['run_dir']}"
    assert (run.group, run.job_type) == (f"{cfg.name}/replay", "bsce")  # CE and BSCE side by side
    assert run.config["strategy"] == "replay" and run.config["loss"] == "bsce"
    logged = run.logged("step/accuracy_seen")
    assert logged == pytest.approx([s["accuracy_seen"] for s in on_disk["steps"]])
    assert run.summary["last_accuracy"] == pytest.approx(on_disk["last_accuracy"])
    assert run.summary["first_experience"] == on_disk["first_experience"]  # key, training, cached, file
    assert len(run.logged("class_prior")) == 2
    prior = run.logged("class_prior")[-1].table.data
    assert [p for _, p in prior] == pytest.approx(on_disk["priors"][-1])
    cm = run.logged("confusion_matrix")[-1].table.data
    assert sum(n for _, _, n in cm) == np.sum(on_disk["confusion_matrix"])
    per_experience = run.logged("per_class_accuracy_per_experience")[-1].table.data
    assert [a for _, a in per_experience] == pytest.approx(per_experience_accuracy(on_disk))
    assert len(run.logged("Top1_Acc_Stream/eval_phase/test_stream/Task000")) == 2  # Avalanche's metrics


def test_icarl_run_reports_nme_and_head(wandb_env):
    """Both classifiers on the same weights: a run evaluated with NME reports under icarl_head exactly what
    the run evaluated with the head reports as its own accuracies, and the other way round."""
    runs = {}
    for evaluation in ("nme", "head"):
        cfg = ExperimentConfig(**FAST, strategy="icarl", loss="bsce", icarl_eval=evaluation, wandb=False,
                               output_dir=str(wandb_env / evaluation))
        runs[evaluation] = run_experiment(cfg)
        assert runs[evaluation]["finished"]
        assert_accuracies_consistent(runs[evaluation])
    nme, head = runs["nme"], runs["head"]
    assert nme["priors"] == head["priors"]  # the same training
    assert set(nme["icarl_head"]) == set(head["icarl_nme"]) == SUMMARY_KEYS
    for key in SUMMARY_KEYS:
        assert nme["icarl_head"][key] == head[key], key
        assert head["icarl_nme"][key] == nme[key], key
    assert nme["accuracy_matrix"] != head["accuracy_matrix"]  # two classifiers, not one reported twice


def test_er_ace_with_bsce_is_refused():
    with pytest.raises(ConfigError, match="er_ace cannot be combined with loss: bsce"):
        run_experiment(ExperimentConfig(**FAST, strategy="er_ace", loss="bsce", wandb=False))


@pytest.mark.slow  # a grid of runs through the CLI (13 s on the loaded 2-core machine)
def test_cli_run_grid_and_compare(wandb_env, capsys):
    out = wandb_env / "grid"
    code = main(["run", "--output-dir", str(out), "--epochs", "1", "--n-steps", "2", "--no-wandb",
                 "--no-progress", "--set", "memory_size=20"])
    assert code == 0
    assert (run_dir(out, "replay-ce-seed0") / "results.json").is_file()
    assert (run_dir(out, "replay-bsce-seed0") / "results.json").is_file()
    table = (out / "comparison.md").read_text()
    assert "| replay-bsce |" in table and "| replay-ce |" in table
    for png in ("accuracy_per_step", "old_new_accuracy", "new_class_prediction_share", "per_class_accuracy"):
        assert (out / f"{png}.png").stat().st_size > 1000
    code = main(["grid", "--output-dir", str(wandb_env / "g2"), "--strategies", "lwf", "--losses", "bsce",
                 "--seeds", "0", "1", "--epochs", "1", "--n-steps", "2", "--no-wandb", "--no-progress"])
    assert code == 0
    runs = [json.loads((run_dir(wandb_env / "g2", f"lwf-bsce-seed{s}") / "results.json").read_text()) for s in (0, 1)]
    assert "| lwf-bsce | – | 2 |" in comparison_table(runs)
    assert main(["compare", str(out)]) == 0
    assert "| replay-bsce |" in capsys.readouterr().out


@pytest.mark.slow  # four spawned processes (80 s on the loaded 2-core machine)
def test_run_each_in_processes_keeps_going_past_a_failed_run_when_asked(tmp_path, capsys, monkeypatch):
    """issue 26: one process pool for `grid --jobs` and the evidence scripts' plans (runner/runs.py run_each): a
    plan reports a failed run and goes on (keep_going); grid stops at it."""
    import functools

    from bsce_avalanche.runner import runs
    from conftest import fail_bsce_runs

    monkeypatch.setattr(runs, "_run_in_processes", functools.partial(runs._run_in_processes, worker=fail_bsce_runs))
    configs = [ExperimentConfig(**FAST, loss=loss) for loss in ("ce", "bsce")]
    assert runs.run_each(configs, tmp_path, jobs=2, keep_going=True) == [configs[1].run_name]
    out = capsys.readouterr().out
    assert f"  {configs[0].run_name}: average incremental accuracy 50.00%, last 25.00%, 1 s\n" in out
    assert f"  {configs[1].run_name}: FAILED\n" in out and f"RuntimeError: {configs[1].run_name} failed" in out
    with pytest.raises(RuntimeError, match=f"{configs[1].run_name} failed"):
        runs.run_each(configs, tmp_path, jobs=2)


def test_run_each_hands_a_pool_only_the_runs_not_finished_before(tmp_path, capsys, monkeypatch):
    """issue 26: a re-run of a plan with --workers 2 started a fresh process (minutes of imports) for every run
    finished before; those are now read here and reported as before, only the others go to the pool."""
    import shutil

    from bsce_avalanche.runner import runs

    finished = []
    for name in ("bic-ce-concat-seed0-7eb0fd", "er_ace-ce-seed0-18da67"):  # two: one run alone runs in-process
        committed = REPO / "experiments/results/cifar100_cpu_concat" / name
        shutil.copytree(committed, tmp_path / name)
        finished.append(ExperimentConfig(**json.loads((committed / "results.json").read_text())["config"]))
        assert finished[-1].run_name == name
    todo, handed = finished[0].replace(seed=1), []

    def pool(configs, out, resume, jobs, overwrite=False, **kwargs):
        handed.extend(c.run_name for c in configs)
        for cfg in configs:
            yield cfg, {"average_incremental_accuracy": 0.5, "last_accuracy": 0.25, "train_time_s": 1.0}

    monkeypatch.setattr(runs, "_run_in_processes", pool)
    assert runs.run_each(finished, tmp_path, resume=True, jobs=2) == [] and handed == []  # a re-run: no process
    assert f"  {finished[0].run_name}: average incremental accuracy 20.31%, last 10.50%, 604 s\n" \
        in capsys.readouterr().out  # as the run's process said it
    assert runs.run_each([todo, *finished], tmp_path, resume=True, jobs=2) == [] and handed == [todo.run_name]
    runs.run_each(finished, tmp_path, jobs=2, overwrite=True)  # not resuming: the pool runs them again
    assert handed == [todo.run_name, *(c.run_name for c in finished)]


def test_cli_reports_config_errors(capsys):
    assert main(["run", "--strategy", "icral", "--no-wandb"]) == 2
    assert "did you mean 'icarl'" in capsys.readouterr().err


def test_same_seed_same_results(wandb_env):
    cfg = ExperimentConfig(**FAST, strategy="replay", loss="bsce", wandb=False)
    a = run_experiment(cfg, wandb_env / "a")
    b = run_experiment(cfg, wandb_env / "b")
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert a["priors"] == b["priors"]
