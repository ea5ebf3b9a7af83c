"""What a run is: one table of config-field metadata (EFFECT), from which the run name, the first-experience
key, the resume check and compare's grouping derive; per-method recipes resolved per run."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest

from bsce_avalanche.runner.cli import main
from bsce_avalanche.runner.compare import comparison_table
from bsce_avalanche.runner.config import ConfigError, ExperimentConfig
from bsce_avalanche.runner.config_files import load_config
from bsce_avalanche.runner.experiment import _differing_keys, run_experiment
from bsce_avalanche.runner.grid import expand_grid
from bsce_avalanche.runner.identity import (RESULT_KEYS, first_experience_settings, resolved_first_experience_keys,
                                            run_name, settings_digest)
from bsce_avalanche.runner.results import group_runs
from bsce_avalanche.runner.schema import EFFECT, EFFECTS, RANGES, RESOLVED_ENTRIES

TINY = dict(benchmark="digits", model="small_cnn", n_steps=2, epochs=1, memory_size=20, progress=False, wandb=False)
ICARL_RECIPE = {"icarl-ce": {"lr": 2.0, "weight_decay": 1.0e-5, "lr_gamma": 0.2}}


def test_every_key_has_an_effect_and_the_derived_lists_agree():
    assert {f.name for f in fields(ExperimentConfig)} == set(EFFECT)
    assert set(EFFECT.values()) <= set(EFFECTS)
    assert set(RESULT_KEYS) == {k for k, e in EFFECT.items() if e != "run"}
    # every resolved key names the first-experience key entries it enters as, and only entries that exist
    assert set(resolved_first_experience_keys()) == {k for k, e in EFFECT.items() if e == "resolved"}
    assert all(v and set(v) <= set(RESOLVED_ENTRIES) for v in resolved_first_experience_keys().values())
    assert "lr" in first_experience_settings({}) and "memory_size" not in first_experience_settings({})
    assert first_experience_settings({"strategy": "bic", "loss": "ce"})["memory_size"] == 200
    # the keys that obviously change results are result keys, the bookkeeping ones are not
    assert {"lr", "weight_decay", "epochs", "seed", "tau", "strategy", "memory_size"} <= set(RESULT_KEYS)
    assert not {"output_dir", "progress", "wandb", "threads", "name", "recipes"} & set(RESULT_KEYS)
    assert RANGES["lr"] == "(0, inf)" and RANGES["seed"].startswith("[0, ")


def test_run_name_is_label_seed_and_a_digest_of_every_other_result_setting():
    base = ExperimentConfig(**TINY)
    name = base.run_name
    assert re.fullmatch(r"replay-bsce-seed0-[0-9a-f]{6}", name)
    assert base.replace(seed=3).run_name == name.replace("seed0", "seed3")  # the seed is readable, not hashed
    assert base.replace(threads=1, output_dir="elsewhere", progress=True).run_name == name  # run settings
    for key, value in (("lr", 0.2), ("weight_decay", 1e-4), ("epochs", 2), ("memory_size", 30), ("amp", "bf16")):
        assert base.replace(**{key: value}).run_name != name, key
    # readable: the method label; the ce run of the same protocol shares the digest
    assert base.replace(loss="ce").run_name == name.replace("-bsce-", "-ce-")
    # results from another version: unknown keys dropped, missing keys at their default, same name
    config = {**base.to_dict(), "key_of_an_old_version": 1}
    del config["icarl_distillation_weight"]
    assert run_name(config) == name


def test_grid_over_lr_gives_one_name_per_run_and_a_run_setting_grid_is_refused():
    runs = expand_grid(ExperimentConfig(**TINY, grid={"lr": [0.05, 0.1]}))
    assert len({r.run_name for r in runs}) == 2
    with pytest.raises(ConfigError, match=r"two runs are the same run .*differ only in .*threads"):
        ExperimentConfig(**TINY, grid={"threads": [1, 2]})


def test_recipes_apply_per_method_and_are_recorded():
    cfg = ExperimentConfig(**TINY, lr=0.1, recipes=ICARL_RECIPE,
                           grid={"strategy": ["icarl", "replay"], "loss": ["ce", "bsce"]})
    runs = {(r.strategy, r.loss): r for r in expand_grid(cfg)}
    own = runs[("icarl", "ce")]
    assert (own.lr, own.weight_decay, own.lr_gamma, own.recipe, own.recipes) == (2.0, 1e-5, 0.2, "icarl-ce", {})
    for key in (("icarl", "bsce"), ("replay", "ce"), ("replay", "bsce")):
        assert (runs[key].lr, runs[key].recipe) == (0.1, None), key
    assert len({r.run_name for r in runs.values()}) == 4
    # the more specific selector wins, both are named
    both = ExperimentConfig(**TINY, strategy="icarl", loss="ce",
                            recipes={"icarl": {"lr": 1.0, "momentum": 0.5}, "icarl-ce": {"lr": 2.0}})
    (run,) = expand_grid(both)
    assert (run.lr, run.momentum, run.recipe) == (2.0, 0.5, "icarl, icarl-ce")


@pytest.mark.parametrize("recipes, message", [
    ({"icral-ce": {"lr": 1.0}}, r"recipes key 'icral-ce' is not a strategy or strategy-loss.*did you mean 'icarl-ce'"),
    ({"icarl-sce": {"lr": 1.0}}, r"recipes key 'icarl-sce'"),
    ({"icarl": {}}, r"recipes\['icarl'\] must be a non-empty mapping"),
    ({"icarl": {"lrr": 1.0}}, r"recipes\['icarl'\] sets 'lrr': not a config key.*did you mean 'lr'"),
    ({"icarl": {"seed": 1}}, r"recipes\['icarl'\] sets 'seed': not a training setting a recipe may set"),
    ({"icarl": {"output_dir": "x"}}, r"sets 'output_dir': not a training setting"),
    ({"icarl-ce": {"lr": -1.0}}, r"recipes\['icarl-ce'\] applied to icarl-ce: lr must be > 0"),
])
def test_bad_recipes_are_refused_with_one_line(recipes, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**TINY, strategy="icarl", loss="ce", recipes=recipes)


def test_a_grid_key_set_by_a_recipe_and_a_cli_override_of_a_recipe_key_are_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"grid.lr and recipes\['icarl-ce'\] both set lr"):
        ExperimentConfig(**TINY, recipes=ICARL_RECIPE, grid={"strategy": ["icarl"], "loss": ["ce"],
                                                              "lr": [0.1, 0.2]})
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({**TINY, "recipes": ICARL_RECIPE}))
    assert main(["run", "--config", str(path), "--set", "lr=0.3", "--strategy", "icarl", "--loss", "ce",
                 "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "--set/option sets lr and recipes['icarl-ce'] also sets lr" in err and len(err.strip().splitlines()) == 1


def test_a_cli_value_and_a_cli_recipe_for_one_key_are_refused_naming_both(capsys):
    """issue 25: `run --set 'recipes={replay: {lr: 0.1}}' --lr 0.2` trained at lr 0.1 without a word."""
    assert main(["run", "--set", "grid={}", "--epochs", "1", "--loss", "bsce", "--set", "recipes={replay: {lr: 0.1}}",
                 "--lr", "0.2", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "sets lr and recipes['replay'] also sets lr for the replay-bsce runs" in err
    assert len(err.strip().splitlines()) == 1


def test_the_rule_applies_to_the_runs_a_recipe_reaches_only(tmp_path):
    from bsce_avalanche.runner.arguments import build_parser, config_from_args

    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({**TINY, "recipes": ICARL_RECIPE, "grid": {"strategy": ["replay", "icarl"]}}))
    args = lambda *extra: build_parser().parse_args(["grid", "--config", str(path), *extra])
    with pytest.raises(ConfigError, match=r"recipes\['icarl-ce'\] also sets lr for the icarl-ce runs"):
        config_from_args(args("--lr", "0.3", "--losses", "ce"))
    assert config_from_args(args("--lr", "0.3", "--strategies", "replay")).lr == 0.3  # no recipe run: fine
    assert config_from_args(args("--lr", "0.3", "--losses", "bsce")).lr == 0.3  # icarl-bsce has no recipe


def test_a_protocol_shortens_with_its_recipes_dropped(capsys):
    """GUIDE.md's quick try of a protocol config: --set recipes={} --epochs 1 --set lr_milestones=[]."""
    from bsce_avalanche.runner.arguments import build_parser, config_from_args

    args = ["grid", "--config", "cifar100_b0_10steps", "--strategies", "replay", "icarl", "bic"]
    with pytest.raises(ConfigError, match=r"lr_milestones.*--set recipes=\{\} --epochs 1 --set lr_milestones=\[\]"):
        config_from_args(build_parser().parse_args([*args, "--epochs", "1"]))
    with pytest.raises(ConfigError, match=r"recipes\['(icarl-ce|bic)'\].*--set recipes=\{\} --epochs 1"):
        config_from_args(build_parser().parse_args([*args, "--epochs", "1", "--set", "lr_milestones=[]"]))
    with pytest.raises(ConfigError, match=r"sets lr_milestones and recipes\['icarl-ce'\] also sets"):
        config_from_args(build_parser().parse_args([*args, "--set", "lr_milestones=[10]"]))
    cfg = config_from_args(build_parser().parse_args([*args, "--set", "recipes={}", "--epochs", "1",
                                                      "--set", "lr_milestones=[]"]))
    assert {(r.epochs, r.lr, tuple(r.lr_milestones)) for r in expand_grid(cfg)} == {(1, 0.1, ())}


def test_a_recipe_run_records_the_values_it_trained_with(tmp_path):
    cfg = load_config(None, {**TINY, "strategy": "icarl", "loss": "ce", "recipes": ICARL_RECIPE})
    (run,) = expand_grid(cfg)
    results = run_experiment(run, tmp_path / run.run_name)
    saved = json.loads((tmp_path / run.run_name / "results.json").read_text())["config"]
    assert saved["lr"] == 2.0 and saved["weight_decay"] == 1e-5 and saved["recipe"] == "icarl-ce"
    assert results["config"]["lr"] == 2.0


def test_recipe_is_the_runners_to_set_not_a_users(tmp_path, capsys):
    """issue 26: `run --recipe made-up` ran and recorded "made-up": recipe is set by the runner from recipes. An
    option, --set, a config file or a grid that sets it is a one-line error naming the fix; a config read back
    from a committed results.json (recipe "bic") still builds, resumes, keeps its name and compares."""
    from pathlib import Path

    from bsce_avalanche.runner.arguments import build_parser
    from bsce_avalanche.runner.compare import compare

    fix = r"recipe.* is set by the runner from recipes .*: set recipes instead"
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "--recipe", "made-up"])  # not taken as --recipes either
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and re.search("--recipe: " + fix, err), err
    run_help = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "--recipes" in run_help and not re.search(r"--recipe\b", run_help)  # no option of its own
    assert main(["run", "--set", "recipe=made-up", "--no-wandb", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(fix, err), err
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({**TINY, "recipe": "bic"}))
    with pytest.raises(ConfigError, match=rf"recipe \(in {re.escape(str(path))}\) is set by the runner"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"recipe \(in grid\) is set by the runner from recipes"):
        load_config(None, {**TINY, "grid": {"recipe": ["a", "b"]}})
    assert not (tmp_path / "x").exists()
    committed = Path(__file__).resolve().parents[1] / "experiments/results/cifar100_cpu_concat/bic-ce-concat-seed0-7eb0fd"
    saved = json.loads((committed / "results.json").read_text())["config"]
    cfg = ExperimentConfig(**saved)
    assert (cfg.recipe, cfg.run_name, cfg.replace(seed=1).recipe) == ("bic", committed.name, "bic")
    assert _differing_keys(saved, cfg) == [] and expand_grid(cfg) == [cfg]
    assert "| bic-ce-concat | bic | 1 |" in compare([committed / "results.json"], tmp_path / "cmp").read_text()


def test_resume_check_uses_result_settings_only():
    saved = ExperimentConfig(**TINY).to_dict()
    assert _differing_keys(saved, ExperimentConfig(**TINY, threads=1, checkpoint=False, name="other")) == []
    assert _differing_keys(saved, ExperimentConfig(**TINY, lr=0.2)) == ["lr"]
    assert _differing_keys(saved, ExperimentConfig(**TINY, seed=1)) == ["seed"]


def _fake_result(seed=0, accuracy=0.5, **config):
    cfg = ExperimentConfig(**TINY, seed=seed, **config).to_dict()
    return {"config": cfg, "average_incremental_accuracy": accuracy, "last_accuracy": accuracy, "forgetting": 0.0,
            "old_new_accuracy": [{"old": accuracy, "new": accuracy}], "new_class_prediction_share": [0.2],
            "train_time_s": 1.0}


def test_compare_refuses_one_run_twice_and_keeps_runs_on_other_data_apart():
    """issue 25: the same run (seed 0) in two folders became `seeds 2, ± 0.0`; runs on two data files `seeds 2`."""
    run = {**_fake_result(), "data_digest": "aaaa"}
    with pytest.raises(ConfigError, match=r"a/run and b/run are the same run \(replay-bsce, seed 0, same data\).*"
                                          r"leave one of the folders out"):
        group_runs([{**run, "_path": "a/run/results.json"}, {**run, "_path": "b/run/results.json"}])
    other_data = {**_fake_result(seed=1), "data_digest": "bbbb"}
    groups = group_runs([run, other_data, {**_fake_result(seed=1), "data_digest": "aaaa"}])
    assert {k: len(v) for k, v in groups.items()} == {"replay-bsce (data=aaaa)": 2, "replay-bsce (data=bbbb)": 1}
    assert {k: len(v) for k, v in group_runs([_fake_result(), _fake_result(seed=1)]).items()} == {"replay-bsce": 2}


def test_resume_on_other_data_is_refused_and_results_record_the_data(tmp_path):
    """issue 25: --resume on another data file continued the interrupted run on it without a word."""
    from conftest import Crash, crash_during_eval_of_step

    cfg = ExperimentConfig(**{**TINY, "benchmark": "digits"})
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:
        crash_during_eval_of_step(m, step=1)
        with pytest.raises(Crash):
            run_experiment(cfg, out)
    assert len(json.loads((out / "results.json").read_text())["data_digest"]) == 16
    with pytest.MonkeyPatch.context() as m:  # other data (e.g. another data_dir): another digest
        from bsce_avalanche.runner import experiment

        m.setattr(experiment, "benchmark_digest", lambda benchmark: "0123456789abcdef")
        with pytest.raises(ConfigError, match=r"checkpoint.pt was trained on other data \(digest \w+, now "
                                              r"0123456789abcdef.*resume with the data it started on"):
            run_experiment(cfg, out, resume=True)
    assert run_experiment(cfg, out, resume=True)["finished"]  # the same data: resumes


def test_resume_that_finds_nothing_says_so_and_names_the_nearest_run(tmp_path, capsys):
    """issue 25: --resume after changing a setting silently started a new run under a new name."""
    from bsce_avalanche.runner.runs import nothing_to_resume

    cfg = ExperimentConfig(**TINY, output_dir=str(tmp_path))
    (tmp_path / cfg.run_name).mkdir()
    (tmp_path / cfg.run_name / "results.json").write_text(json.dumps({"config": cfg.to_dict(), "steps": []}))
    assert nothing_to_resume(cfg, tmp_path) is None
    note = nothing_to_resume(cfg.replace(lr=0.2), tmp_path)
    assert note.startswith(f"--resume: nothing to resume for {cfg.replace(lr=0.2).run_name}: the nearest run, "
                           f"{cfg.run_name}, differs in lr 0.05 -> 0.2; starting it afresh")
    assert "no run in" in nothing_to_resume(cfg, tmp_path / "empty")


def test_compare_pools_only_runs_that_differ_in_their_seed_and_names_the_differing_key():
    runs = [_fake_result(seed=s, lr=lr, accuracy=acc) for s in (0, 1) for lr, acc in ((0.05, 0.5), (0.1, 0.7))]
    runs.append(_fake_result(loss="ce", accuracy=0.3))
    groups = group_runs(runs)
    assert {k: len(v) for k, v in groups.items()} == {"replay-bsce (lr=0.05)": 2, "replay-bsce (lr=0.1)": 2,
                                                      "replay-ce": 1}
    table = comparison_table(runs)
    assert "| replay-bsce (lr=0.1) | – | 2 | 70.0 ± 0.0 |" in table and "| replay-bsce (lr=0.05) | – | 2 | 50.0 ± 0.0 |" in table
    # the same settings: pooled as seeds, whatever the run settings
    same = [_fake_result(seed=0), _fake_result(seed=1, threads=1, output_dir="x")]
    assert list(group_runs(same)) == ["replay-bsce"]
    assert settings_digest(same[0]["config"]) == settings_digest(same[1]["config"])


def test_settings_of_other_strategies_are_no_part_of_a_run():
    """bic_* changes nothing in a Replay run: same name, pooled, resumable; in a BiC run it does."""
    replay, bic = ExperimentConfig(**TINY), ExperimentConfig(**TINY, strategy="bic", loss="ce")
    assert replay.replace(bic_stage2_epochs=30).run_name == replay.run_name
    assert bic.replace(bic_stage2_epochs=30).run_name != bic.run_name
    assert _differing_keys(replay.to_dict(), replay.replace(bic_stage2_epochs=30, lwf_alpha=2.0)) == []
    assert _differing_keys(bic.to_dict(), bic.replace(bic_stage2_epochs=30)) == ["bic_stage2_epochs"]


def test_exponent_floats_without_a_dot_are_numbers():
    """YAML 1.1 reads 1e-5 as a string; configs and --set take it as the number (weight_decay: 1e-5)."""
    from bsce_avalanche.runner.config_files import parse_value

    assert parse_value("1e-5") == 1e-5 and parse_value("{weight_decay: 2E-4}") == {"weight_decay": 2e-4}
    assert parse_value("1e5x") == "1e5x"
    assert load_config(None, {"weight_decay": parse_value("1e-5")}).weight_decay == 1e-5


#: For each result key but the seed: a run it acts on (the base) and another valid value. Written by hand: a key
#: added later fails the test until it is given here, and then must change the run name.
_BASES = {"only_lwf": dict(strategy="lwf"), "icarl": dict(strategy="icarl"), "bic": dict(strategy="bic", loss="ce")}
OTHER_VALUE = {
    "benchmark": ({}, "cifar100"), "protocol": ({"n_steps": 1}, "B5"), "n_steps": ({}, 5), "class_order": ({}, "random"),
    "fast_augment": ({"benchmark": "cifar100", "model": "auto"}, False), "data_path": ({"benchmark": "cifar100", "model": "auto"}, "device"),
    "model": ({}, "resnet8"), "width": ({"model": "resnet8"}, 8), "incremental_head": ({}, False),
    "strategy": ({}, "naive"), "loss": ({}, "ce"), "tau": ({}, 0.5), "prior": ({}, "dataset"),
    "memory_size": ({}, 30), "memory_per_class": ({}, 3), "prior_window": ({"prior": "window", "prior_window": 1}, 2),
    "replay": ({}, "concat"), "memory_selection": ({}, "herding"), "online": ({"epochs": 1}, True),
    "posthoc_window": ({"loss": "ce"}, 5), "weight_aligning": ({}, True), "lwf_alpha": (_BASES["only_lwf"], 2.0),
    "lwf_temperature": (_BASES["only_lwf"], 3.0), "lwf_memory": (_BASES["only_lwf"], True),
    "icarl_eval": (_BASES["icarl"], "head"), "icarl_distillation_weight": (_BASES["icarl"], 0.5),
    "bic_stage2_epochs": (_BASES["bic"], 3), "bic_stage2_lr": (_BASES["bic"], 0.2), "bic_val_fraction": (_BASES["bic"], 0.2),
    "epochs": ({}, 2), "batch_size": ({}, 16), "batch_size_mem": ({}, 8), "amp": ({}, "bf16"), "compile": ({}, True),
    "lr": ({}, 0.1), "momentum": ({}, 0.5), "weight_decay": ({}, 1e-4), "lr_milestones": ({"epochs": 2}, [1]),
    "lr_gamma": ({"lr_milestones": [1], "epochs": 2}, 0.5), "num_workers": ({}, 1),
}


def test_two_configs_differing_in_any_result_key_get_different_names():
    assert set(OTHER_VALUE) == set(RESULT_KEYS) - {"seed"}
    for key, (base, value) in OTHER_VALUE.items():
        config = ExperimentConfig(**{**TINY, **base})
        other = config.replace(**{key: value})
        assert other.run_name != config.run_name, key
        # and by exact value: a float key a hair away (tau's label prints 6 digits)
        if isinstance(value, float):
            assert config.replace(**{key: value + 1e-7}).run_name not in (other.run_name, config.run_name), key


def test_tau_values_the_label_cannot_tell_apart_get_different_names_and_their_grid_runs():
    """issue 26: tau 0.1234567 and 0.1234568 shared a name, and a grid over them was refused "differ only in tau"."""
    a, b = (ExperimentConfig(**TINY, tau=t) for t in (0.1234567, 0.1234568))
    assert a.run_name != b.run_name and a.run_name.startswith("replay-bsce-tau0.123457-seed0-")
    assert len({r.run_name for r in expand_grid(ExperimentConfig(**TINY, grid={"tau": [0.1234567, 0.1234568]}))}) == 2
    # a value the label shows exactly stays out of the digest: the names of the committed runs are unchanged
    assert ExperimentConfig(**TINY, tau=0.5).run_name.endswith(ExperimentConfig(**TINY).run_name[-7:])
    # keys that do not act on a run change nothing: tau with loss ce, replay's protocol for iCaRL
    ce = ExperimentConfig(**TINY, loss="ce")
    assert ce.replace(tau=0.1234567).run_name == ce.run_name
    icarl = ExperimentConfig(**TINY, strategy="icarl")
    assert icarl.replace(replay="concat").run_name == icarl.run_name


#: Result folders whose names were not made by run_name from their config, by results set, with the reason.
#: Every other folder holding a results.json must be named run_name(config): the names of committed runs
#: never change under them.
NOT_NAMED_BY_RUN_NAME = {
    "cifar100_cpu": "written before run names held a settings digest (<label>-seed<N>)",
    "cifar100_cpu_longer": "written before run names held a settings digest",
    "cifar100_cpu_timing": "written before run names held a settings digest",
    "prior_modes_digits": "written before run names held a settings digest",
    "gpu_h100_cifar100_paper": "written before run names held a settings digest",
    "cifar100_online": "named by experiments/cifar100_online.py (prior mode and memory size in the folder name)",
    "cifar100_online_reservoir": "named by experiments/cifar100_online.py (method, prior and memory size in the folder name)",
    "cifar100_online-compile": "one run per folder, named for the comparison: eager, compiled",
    "compile_end_to_end_concat": "one run per folder, named for the comparison: eager, compiled",
    "compile_end_to_end_10epochs": "one run per folder, named for the comparison: eager, compiled, compiled_previous",
    "compile_end_to_end_30epochs": "the eager run of the comparison (its compiled twin is in cifar100_cpu_epochs)",
}


def test_committed_results_keep_their_names():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments" / "results"
    checked, sets = 0, set()
    for path in sorted(root.glob("**/results.json")):
        folder = path.parent
        results_set = folder.relative_to(root).parts[0]
        sets.add(results_set)
        if results_set in NOT_NAMED_BY_RUN_NAME:
            continue
        assert run_name(json.loads(path.read_text())["config"]) == folder.name, folder
        checked += 1
    assert checked >= 26 and set(NOT_NAMED_BY_RUN_NAME) <= sets  # no stale entry in the list
    for name in ("replay-bsce-concat-tau0.5-seed0-18da67", "icarl-ce-nme-seed0-88fea9", "replay-ce-concat-wa-seed0-18da67"):
        assert (root / "cifar100_cpu_concat" / name / "results.json").is_file(), name


def test_the_data_digest_is_the_same_for_every_seed():
    """A seed draws its own split of digits from the same data: compare must still pool the seeds (the slow CLI
    test's lwf-bsce seeds 0 and 1 were shown apart as other data)."""
    from bsce_avalanche.runner.checkpoint import benchmark_digest
    from bsce_avalanche.runner.experiment import _data_digest, build_benchmark

    configs = [ExperimentConfig(**{**TINY, "benchmark": "digits", "seed": s}) for s in (0, 1)]
    benchmarks = [build_benchmark(c) for c in configs]
    assert benchmark_digest(benchmarks[0]) != benchmark_digest(benchmarks[1])  # the seeds' own splits differ
    assert _data_digest(configs[0], benchmarks[0]) == _data_digest(configs[1], benchmarks[1])
