"""The benchmark scripts run end to end on a tiny setting (CI does not run the real ones)."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from conftest import assert_accuracies_consistent
from naming import read_results, results_in

from bsce_avalanche.runner.labels import POSTHOC_LABEL
from bsce_avalanche.runner.plans import TINY, _config

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 13 runs of the runner (16 s on the loaded 2-core machine)
def test_cifar100_cpu_benchmark_tiny(tmp_path):
    bench = load_script("cifar100_cpu")
    out = tmp_path / "cifar100_cpu"
    rows = bench.main(["--tiny", "--workers", "1", "--output-dir", str(out)])
    planned = bench.planned_runs(seeds=(0,))
    # each iCaRL run reports NME and head: two rows; Replay + CE and LwF + memory + CE a post-hoc row too
    assert len(rows) == len(planned) + 2 + 2
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == json.loads(json.dumps(rows))
    required = {"method", "strategy", "loss", "seed", "average_incremental_accuracy", "last_accuracy", "train_time_s"}
    assert all(required <= set(r) for r in on_disk)
    assert {r["loss"] for r in on_disk} == {"ce", "bsce"}
    # the runner's method labels; each iCaRL run under both of its classifiers
    assert {r["method"] for r in on_disk} == {
        "replay-ce", "replay-bsce", "replay-bsce-prior_dataset", "lwf-ce", "lwf-bsce", "lwf+mem-ce", "lwf+mem-bsce",
        "icarl-ce-nme", "icarl-ce-head", "icarl-bsce-nme", "icarl-bsce-head", "bic-ce", "er_ace-ce",
        "replay-ce" + POSTHOC_LABEL, "lwf+mem-ce" + POSTHOC_LABEL}
    on_disk = [r for r in on_disk if not r["method"].endswith(POSTHOC_LABEL)]  # views of the CE runs
    # every run's accuracies recounted from its confusion matrix; the rows report them (iCaRL: both classifiers)
    runs = list(results_in(out).values())
    assert len(runs) == len(planned)
    for run in runs:
        assert_accuracies_consistent(run)
    reported = [run["average_incremental_accuracy"] for run in runs] + [
        run["icarl_head"]["average_incremental_accuracy"] for run in runs if run["config"]["strategy"] == "icarl"]
    assert sorted(r["average_incremental_accuracy"] for r in on_disk) == sorted(reported)
    assert (out / "comparison.md").is_file()


def test_overhead_benchmark_quick(tmp_path):
    overhead = load_script("overhead")
    result = overhead.main(["--quick", "--output", str(tmp_path / "overhead.json")])
    on_disk = json.loads((tmp_path / "overhead.json").read_text())
    ratios = on_disk["ratios"]  # BSCE / CE median iteration time, one per timed round
    assert result["rounds"] == 2 and len(ratios) == 2 and all(r > 0 for r in ratios)
    assert (on_disk["ratio_min"], on_disk["ratio_median"], on_disk["ratio_max"]) == (
        min(ratios), statistics.median(ratios), max(ratios))
    assert on_disk["prior_time"]["imagenet"]["ms_median"] > 0


@pytest.mark.slow
def test_cifar100_cpu_concat_benchmark_tiny(tmp_path):
    bench = load_script("cifar100_cpu_concat")
    out = tmp_path / "cifar100_cpu_concat"
    rows = bench.main(["--tiny", "--workers", "1", "--output-dir", str(out)])
    planned = {_config(str(bench.CONFIG), {**TINY, **r}).run_name: r for r in bench.planned_runs(seeds=(0,))}
    # iCaRL: NME and head rows; softmax-CE runs with a memory: a post-hoc row too (without weight aligning)
    posthoc = [r for r in rows if r["method"].endswith(POSTHOC_LABEL)]
    assert len(rows) == len(planned) + sum(r["strategy"] == "icarl" for r in planned.values()) + len(posthoc)
    assert {r["method"] for r in posthoc} == {"replay-ce-concat" + POSTHOC_LABEL, "replay-ce" + POSTHOC_LABEL,
                                              "lwf+mem-ce-concat" + POSTHOC_LABEL, "replay-bsce-concat-tau0" + POSTHOC_LABEL,
                                              "icarl-bsce-head-tau0" + POSTHOC_LABEL}
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(rows))
    by_method = {r["method"]: r for r in rows}
    assert {"replay-ce-concat", "replay-bsce-concat", "replay-bsce-concat-prior_dataset", "replay-bsce-concat-tau0",
            "replay-bsce-concat-tau2", "lwf+mem-bsce-concat", "icarl-bsce-nme", "bic-ce-concat", "er_ace-ce", "replay-ce",
            "replay-bsce"} <= set(by_method)
    assert by_method["replay-bsce-concat-tau0.5"]["tau"] == 0.5 and by_method["replay-ce-concat"]["tau"] is None
    assert by_method["replay-bsce"]["replay"] == "half_batch" and by_method["bic-ce-concat"]["replay"] == "concat"
    # under concatenation the dataset prior is the sampling prior; tau 0 is CE: the same runs
    for a, b in (("replay-bsce-concat-prior_dataset", "replay-bsce-concat"), ("replay-bsce-concat-tau0", "replay-ce-concat")):
        assert by_method[a]["average_incremental_accuracy"] == by_method[b]["average_incremental_accuracy"], a
    # one first experience for the plain methods of the seed, trained once
    plain = [r for r in rows if r["strategy"] in ("replay", "lwf", "er_ace") and not r["method"].endswith(("-wa", POSTHOC_LABEL))]
    assert len({r["first_experience"]["key"] for r in plain}) == 1
    assert sum(not r["first_experience"]["cached"] for r in plain) == 1
    assert len({r["step0_accuracy"] for r in plain}) == 1
    text = (out / "comparison.md").read_text()
    assert "## First experience" in text and "## Rehearsal protocols side by side" in text and "## tau sweep" in text
    # iCaRL's three rows and the gain against the stronger baseline
    assert {"icarl-ce-nme", "icarl-bsce-nme-tau0", "icarl-bsce-nme"} <= set(by_method)
    fair = text.split("## Fair comparison")[1]
    for row in ("iCaRL, its own loss and recipe", "iCaRL, softmax CE (BSCE with tau 0)", "iCaRL + BSCE"):
        assert f"| iCaRL (NME) | {row} |" in fair, row
    for family, baseline in (("iCaRL (NME)", "iCaRL, softmax CE (BSCE with tau 0)"), ("Replay", "Replay + WA (aligning alone)"),
                             ("Replay", "Replay + CE + post-hoc LA"), ("LwF + memory", "WA (LwF + memory + aligning, as published)")):
        assert f"| {family} | {baseline} | 1 |" in fair, (family, baseline)  # BSCE minus it, paired (one seed here)
    assert "the strongest baseline of all" in fair
    assert "| Replay | peers: ER-ACE (Replay's memory, updated after the step) | 1 |" in fair
    assert (out / "tau_sweep.png").stat().st_size > 1000


def test_fair_table_pairs_replay_bsce_with_the_peers():
    """The peers family has no BSCE row: Replay + BSCE minus each peer, paired per seed, is in the gains."""
    bench = load_script("cifar100_cpu_concat")

    def row(method, seed, acc, strategy="replay"):
        return {"method": method, "strategy": strategy, "prior": None, "tau": None, "seed": seed,
                "step0_accuracy": 0.5, "average_incremental_accuracy": acc, "last_accuracy": acc, "forgetting": 0.1,
                "new_class_prediction_share_last_step": 0.1}

    rows = [row(m, s, acc + s / 100, strategy) for s in (0, 1, 2) for m, acc, strategy in
            (("replay-ce-concat", 0.20, "replay"), ("replay-bsce-concat", 0.30, "replay"),
             ("er_ace-ce", 0.28, "er_ace"), ("bic-ce-concat", 0.25, "bic"))]
    gains = bench.fair_table(rows).split("\n\n")[1]
    assert "| Replay | peers: ER-ACE (Replay's memory, updated after the step) | 3 | +2.0 [+2.0, +2.0] |" in gains
    assert "| Replay | peers: BiC (fixed), shared schedule | 3 | +5.0 [+5.0, +5.0] |" in gains
    assert "**the strongest baseline of all**, peers: ER-ACE" in gains  # ER-ACE above CE and BiC


@pytest.mark.slow
def test_gpu_paper_script_smoke(tmp_path):
    """experiments/gpu/cifar100_paper.sh --smoke: the same script path on synthetic data (CPU here)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "paper"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu" / "cifar100_paper.sh"), "--smoke",
                           "--output-dir", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list(results_in(out).values())
    assert [(r["config"]["strategy"], r["config"]["loss"]) for r in runs] == \
        [("icarl", "bsce"), ("icarl", "ce"), ("replay", "bsce"), ("replay", "ce")]
    assert all(r["finished"] and r["config"]["replay"] == "concat" and r["config"]["data_path"] == "device"
               and r["config"]["amp"] == "bf16" for r in runs)
    summary = (out / "summary.md").read_text()
    assert summary.count("\n| ") == 5 and "replay + BSCE" in summary  # header + 4 methods
    assert summary.startswith("# Smoke run: synthetic CIFAR-shaped data") and "2 runs sharing it" in summary


@pytest.mark.parametrize("args, message", [
    (["--epochs", "x"], "--epochs must be a positive integer, got x"),
    (["--epochs"], "--epochs needs a value (see --help)"),
    (["--epochs", "--smoke"], "--epochs needs a value (see --help)"),
    (["--data-dir"], "--data-dir needs a value (see --help)"),
    (["--data-dir", "data"], "no CIFAR-100 in {cwd}/data: looked for cifar100.npz"),  # the caller's data, at once
    (["--smok"], "unknown option --smok (see --help)"),
])
def test_gpu_paper_script_bad_arguments_are_one_line(tmp_path, args, message):
    import subprocess

    bad = subprocess.run(["bash", str(ROOT / "experiments" / "gpu" / "cifar100_paper.sh"), *args], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith(f"cifar100_paper.sh: {message.format(cwd=tmp_path)}")


@pytest.mark.slow
def test_gpu_paper_full_script_smoke_interrupted_and_resumed(tmp_path):
    """experiments/gpu/cifar100_paper_full.sh --smoke: SIGINT (as from `timeout -s INT`) stops the runs after some
    finished steps, keeping them; --resume finishes them; the run list is the methods and the peers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "full"
    # --jobs 2: two runs at a time, so the interrupted call has started (and imported) two runs, not eleven
    script = ["bash", str(ROOT / "experiments" / "gpu" / "cifar100_paper_full.sh"), "--smoke", "--output-dir", str(out),
              "--jobs", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # a suite started in the background (`pytest &`) passes SIGINT on ignored, and bash cannot trap an ignored signal
    first = subprocess.Popen(script, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 1500  # minutes on a loaded 2-core machine
    # interrupt once a run is part-way (a finished step, more to go)
    while (all(r["finished"] for r in results_in(out).values()) and first.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 130, (stdout[-2000:], stderr[-2000:])
    assert "interrupted" in stderr and "continue with --resume" in (out / "summary.md").read_text()
    assert not all(r["finished"] for r in results_in(out).values())

    again = subprocess.run(script + ["--resume"], env=env, capture_output=True, text=True, timeout=3000)
    assert again.returncode == 0, again.stderr[-2000:]
    runs = list(results_in(out).values())
    from bsce_avalanche.runner.identity import method_label

    assert sorted(method_label(r["config"]) for r in runs) == sorted([
        "icarl-bsce-nme-tau0", "icarl-bsce-nme", "icarl-ce-nme", "replay-bsce-concat", "replay-ce-concat",
        "lwf+mem-ce-concat", "lwf+mem-bsce-concat", "lwf+mem-ce-concat-wa", "replay-ce-concat-wa", "bic-ce-concat",
        "er_ace-ce"])
    assert all(r["finished"] and r["config"]["data_path"] == "device" and r["config"]["amp"] == "bf16"
               and r["config"]["replay"] == "concat" for r in runs)
    assert [r for r in runs if r["config"]["strategy"] == "bic"][0]["config"]["recipe"] == "bic"
    summary = (out / "summary.md").read_text()
    assert summary.count("\n| ") == len(runs) + 1 and "| 4/4 |" in summary and "of all calls" in summary
    assert len((out / "wall_times_s.txt").read_text().split()) == 2
    assert (out / "comparison.md").exists()
    bad = subprocess.run(script[:2] + ["--jobs", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--jobs must be a positive integer" in bad.stderr


def test_checkpoint_size_script_quick():
    """Replay's checkpoint holds references, smaller than with the datasets pickled; iCaRL's copies either way."""
    sizes = load_script("checkpoint_size").main(["--quick"])
    assert set(sizes) == {"replay (half_batch)", "replay (concat)", "icarl"}
    for label in ("replay (half_batch)", "replay (concat)"):
        assert 0 < sizes[label]["references_mb"] < sizes[label]["pickled_datasets_mb"], sizes
    assert sizes["icarl"]["references_mb"] <= sizes["icarl"]["pickled_datasets_mb"]


def test_cifar100_online_benchmark_tiny(tmp_path):
    """The standard online protocol on digits (reservoir memory per mini-batch): ER, ER + BSCE windows 1 and 5,
    ER-ACE, in two shards of the plan; a re-run skips the finished runs; summary.md and compare's figures."""
    bench = load_script("cifar100_online")
    out = tmp_path / "online"
    planned = [bench.run_id(r) for r in bench.planned_runs(bench.TINY_MEMORIES)[:4]]
    assert planned == ["replay-ce-mem100-seed0", "replay-bsce-prior_window1-mem100-seed0",
                       "replay-bsce-prior_window5-mem100-seed0", "er_ace-ce-mem100-seed0"]
    first = bench.main(["--tiny", "--max-runs", "4", "--output-dir", str(out), "--shard", "1/2"])
    assert [r["run"] for r in first] == planned[0::2]
    rows = bench.main(["--tiny", "--max-runs", "4", "--output-dir", str(out), "--shard", "2/2"])
    assert [r["run"] for r in rows] == planned  # the summary counts the other shard's runs
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(rows))
    by_run = {r["run"]: r for r in rows}
    assert [by_run[f"replay-bsce-prior_window{w}-mem100-seed0"]["window"] for w in (1, 5)] == [1, 5]
    for r in rows:
        assert (r["batch_size"], r["batch_size_mem"]) == (10, 10)
        results = read_results(out / r["run"])
        config = results["config"]
        assert config["epochs"] == 1 and len(results["steps"]) == 2  # one pass, evaluated per task
        assert config["online"] is True and config["memory_selection"] == "reservoir"
        assert "first_experience" not in results
        assert_accuracies_consistent(results)  # recounted from the run's confusion matrix
        assert (r["average_accuracy"], r["final_accuracy"], r["newest_task_prediction_share"], r["train_time_s"]) == (
            results["average_incremental_accuracy"], results["last_accuracy"],
            results["new_class_prediction_share"][-1], results["train_time_s"])
        assert r["train_time_s"] > 0
    er = read_results(out / "replay-ce-mem100-seed0")
    task = (len(er["classes_per_step"][0]) and er["config"]["posthoc_window"])
    assert er["posthoc"]["prior"] == "window" and er["posthoc"]["prior_window"] == task > 10  # a whole task
    assert by_run["replay-ce-mem100-seed0"]["posthoc"]["average_accuracy"] == \
        er["posthoc"]["average_incremental_accuracy"]
    summary = (out / "summary.md").read_text()
    assert "| 100 | ER + post-hoc (window" in summary and "95% t-interval" in summary
    comparison = (out / "comparison-mem100" / "comparison.md").read_text()
    assert "er_ace-ce-reservoir-online" in comparison and list((out / "comparison-mem100").glob("*.png"))
    again = bench.main(["--tiny", "--max-runs", "4", "--output-dir", str(out)])  # resumable: nothing trains
    assert again == rows
    out.with_suffix(".json").unlink()  # --table rebuilds the summary from the run folders alone
    assert bench.main(["--tiny", "--output-dir", str(out), "--table"]) == rows
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(rows))


def test_window_prior_cost_quick(tmp_path):
    cost = load_script("window_prior_cost")
    result = cost.main(["--quick", "--output", str(tmp_path / "cost.json")])
    on_disk = json.loads((tmp_path / "cost.json").read_text())
    assert set(on_disk["ratio_median"]) == {"window1", "window500"} and result["rounds"] == 2
    for method, ratios in on_disk["ratios"].items():  # window / CE median iteration time, one per timed round
        assert len(ratios) == 2 and all(r > 0 for r in ratios)
        assert (on_disk["ratio_min"][method], on_disk["ratio_median"][method], on_disk["ratio_max"][method]) == (
            min(ratios), statistics.median(ratios), max(ratios))


def test_cifar100_online_gains_are_paired_per_seed():
    bench = load_script("cifar100_online")

    def run(strategy, loss, seed, average, final):
        return {"strategy": strategy, "loss": loss, "prior": "window" if loss == "bsce" else None,
                "window": 1 if loss == "bsce" else None, "window_label": 1 if loss == "bsce" else None,
                "memory_size": 100, "seed": seed, "average_accuracy": average, "final_accuracy": final}

    rows = [run("replay", "ce", 0, 0.20, 0.10), run("replay", "ce", 1, 0.30, 0.10), run("replay", "bsce", 0, 0.25, 0.16),
            run("replay", "bsce", 1, 0.31, 0.18), run("replay", "bsce", 2, 0.9, 0.9), run("er_ace", "ce", 0, 0.3, 0.1),
            run("er_ace", "ce", 1, 0.4, 0.1)]
    # ER-ACE is the strongest baseline (mean average accuracy 35.0 against ER's 25.0); seed 2 has no ER-ACE run
    assert bench.gains_table(rows).splitlines()[2:] == [
        "| 100 | ER + BSCE window 1 | ER-ACE | 0, 1 | -7.0 [-32.4, +18.4], level within noise | "
        "+7.0 [-5.7, +19.7], level within noise |"]
    rows[:2] = []  # no ER: ER-ACE still
    assert bench.gains_table(rows).splitlines()[2].startswith("| 100 | ER + BSCE window 1 | ER-ACE | 0, 1 |")


@pytest.mark.slow  # compiles the network (about a minute)
def test_cifar100_online_compile_comparison_tiny(tmp_path):
    """--compile-comparison: the plan's first run trained eager and compiled; the summary is their results."""
    bench = load_script("cifar100_online")
    result = bench.main(["--tiny", "--output-dir", str(tmp_path / "online"), "--compile-comparison"])
    assert json.loads((tmp_path / "compile_end_to_end_cpu.json").read_text()) == json.loads(json.dumps(result))
    for variant in ("eager", "compiled"):
        run = json.loads((tmp_path / "online-compile" / variant / "results.json").read_text())
        assert run["config"]["compile"] is (variant == "compiled") and run["config"]["strategy"] == "replay"
        assert result[variant]["train_time_s"] == round(run["train_time_s"], 1)
        assert result[variant]["average_incremental_accuracy"] == run["average_incremental_accuracy"]
    assert result["train_time_ratio_eager_over_compiled"] == round(
        result["eager"]["train_time_s"] / result["compiled"]["train_time_s"], 3)


def test_cifar100_online_table_refuses_a_truncated_results_file(tmp_path):
    bench = load_script("cifar100_online")
    run = tmp_path / "online" / bench.run_id(bench.planned_runs(bench.TINY_MEMORIES)[0])
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"finished": tr')
    with pytest.raises(SystemExit, match="results.json is not valid JSON .truncated or edited.: delete its run folder"):
        bench.main(["--tiny", "--output-dir", str(tmp_path / "online"), "--table"])


def test_cpu_concat_set_of_a_key_a_recipe_sets_is_refused_naming_both(capsys):
    """issue 25: `cifar100_cpu_concat.py --set lr=0.05` trained every run at 0.05 but iCaRL's own-recipe run."""
    bench = load_script("cifar100_cpu_concat")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--data-dir", "nowhere", "--set", "lr=0.05"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--set sets lr and recipes['icarl-ce'] also sets lr for the icarl-ce runs" in err


def test_cpu_concat_help_gives_run_names_the_plan_has(capsys):
    """issue 25: `--help` gave `--only` names (replay-ce-seed0) that no run has any more."""
    bench = load_script("cifar100_cpu_concat")
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    import re

    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps lines at hyphens
    examples = re.findall(r"[a-z_+-]+-seed\d+-[0-9a-f]{6}", text)
    from bsce_avalanche.runner.plans import _config

    planned = {_config(str(bench.CONFIG), {"data_dir": None, **run}).run_name for run in bench.planned_runs((0,))}
    assert examples and set(examples) <= planned, examples


def test_cpu_concat_interrupted_says_the_same_command_resumes_it(tmp_path, monkeypatch, capsys):
    """issue 25: Ctrl-C of cifar100_cpu_concat.py ended in a traceback; its siblings say the command resumes it."""
    from bsce_avalanche.runner import experiment

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_experiment", interrupted)  # as runner/runs.py's run_each runs it
    bench = load_script("cifar100_cpu_concat")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--tiny", "--workers", "1", "--output-dir", str(tmp_path / "out")])
    assert "interrupted: the same command resumes it" in str(exit_.value.code)


def test_a_plan_runs_through_the_runners_path_and_keeps_going_past_a_failed_run(tmp_path, monkeypatch, capsys):
    """issue 26: the plans' runs go through runner/runs.py (run_each, the path of `bsce-experiment grid`): a run that
    fails is reported with its traceback, the others run, and the command ends saying how many did not finish."""
    from bsce_avalanche.runner import experiment

    real, ran = experiment.run_experiment, []

    def flaky(cfg, out, **kwargs):
        ran.append(cfg.run_name)
        if cfg.loss == "bsce":
            raise RuntimeError("a failing run")
        return real(cfg, out, **kwargs)

    monkeypatch.setattr(experiment, "run_experiment", flaky)
    bench = load_script("cifar100_cpu_settings")
    names = [_config(str(bench.CONFIG), {**TINY, **r}).run_name for r in bench.plan_for("B0-5").runs((0,))]
    with pytest.raises(SystemExit, match=r"^1 run\(s\) did not finish: see the messages above$"):
        bench.main(["--tiny", "--workers", "1", "--settings", "B0-5", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert ran == names  # both runs tried, in the plan's order
    assert f"  {names[1]}: FAILED\nTraceback" in out and "RuntimeError: a failing run" in out
    assert f"  {names[0]}: average incremental accuracy " in out


@pytest.mark.parametrize("item, message", [
    ("epochs", "--set expects KEY=VALUE, got 'epochs'."),
    ("epoch=3", "Unknown config key 'epoch'"),
    ("epochs=[1", "YAML value '[1'"),
])
def test_a_plans_set_is_parsed_as_bsce_experiments(item, message, capsys):
    """issue 26: one --set parser (runner/arguments.py set_overrides): `--set epochs` without a value was taken as
    epochs: null by the evidence scripts; the same item is the same one-line error in both."""
    from bsce_avalanche.runner.arguments import set_overrides
    from bsce_avalanche.runner.cli import main

    with pytest.raises(SystemExit) as exit_:
        load_script("cifar100_cpu_epochs").main(["--data-dir", "nowhere", "--set", item])
    script = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and message in script
    assert main(["run", "--set", item]) == 2
    cli = capsys.readouterr().err.strip().splitlines()[-1]
    assert script.split(": error: ", 1)[1] in cli  # the same message (the CLI names itself and its --help)
    assert set_overrides(["epochs=3", "lr_milestones=[2]", "epochs=4"]) == {"epochs": 4, "lr_milestones": [2]}


def _finished_results(folder: Path, accuracy: float, **config) -> None:
    """A finished run's results.json, of a digits config with ``config`` (the fields summary rows read)."""
    from bsce_avalanche.runner.config import ExperimentConfig

    cfg = ExperimentConfig(**{**TINY, **config})
    run = folder / cfg.run_name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "config": cfg.to_dict(), "finished": True, "steps": [{}], "classes_per_step": [[0, 1]], "class_order": [0, 1],
        "average_incremental_accuracy": accuracy, "last_accuracy": accuracy, "forgetting": 0.0, "train_time_s": 1.0,
        "step_times_s": [1.0], "accuracy_matrix": [[accuracy]], "old_new_accuracy": [{"old": None, "new": accuracy}],
        "new_class_prediction_share": [1.0], "per_class_accuracy": [accuracy, accuracy], "data_digest": "d"}))


def test_summary_rows_of_one_label_at_other_settings_are_not_pooled(tmp_path):
    """issue 26: report.py pooled the summary rows by method label alone (e.g. BiC at its recipe with BiC at the
    shared schedule, or one method at 1 and at 3 epochs); they are pooled as compare pools runs: label and
    settings, the seeds of one setting together."""
    from bsce_avalanche.runner.compare import load_results
    from bsce_avalanche.runner.plans import group_rows, summary_rows

    out = tmp_path / "plan"
    for seed, epochs, accuracy in ((0, 1, 0.5), (1, 1, 0.7), (0, 3, 0.9)):
        _finished_results(out, accuracy, strategy="replay", loss="bsce", seed=seed, epochs=epochs)
    rows = summary_rows(load_results([out]), tmp_path)
    assert {r["method"] for r in rows} == {"replay-bsce"}  # one label
    assert {k: sorted(r["seed"] for r in g) for k, g in group_rows(rows, tmp_path).items()} == {
        "replay-bsce (epochs=1)": [0, 1], "replay-bsce (epochs=3)": [0]}
    table = load_script("report").cifar_table(rows, tmp_path)
    assert "| replay-bsce (epochs=1) | 2 | 60.0 ± 14.1 |" in table and "| replay-bsce (epochs=3) | 1 | 90.0 |" in table
    assert table.count("\n| replay-bsce") == 2


def test_online_max_runs_below_one_is_refused(capsys):
    """issue 25: --max-runs -1 ran all but the last run (a Python slice)."""
    with pytest.raises(SystemExit) as exit_:
        load_script("cifar100_online").main(["--tiny", "--max-runs", "-1"])
    assert exit_.value.code == 2 and "--max-runs must be >= 1" in capsys.readouterr().err


def test_online_table_of_another_plans_folder_keeps_the_summary(tmp_path):
    """issue 25: --table on a folder made with another plan printed empty tables and wrote [] over the summary."""
    out = tmp_path / "online"
    (out / "some-other-run").mkdir(parents=True)
    out.with_suffix(".json").write_text('[{"run": "kept"}]')
    with pytest.raises(SystemExit, match=r"no finished run of this plan in .*left as it is"):
        load_script("cifar100_online").main(["--tiny", "--output-dir", str(out), "--table"])
    assert out.with_suffix(".json").read_text() == '[{"run": "kept"}]'


def test_online_table_over_results_without_a_key_is_one_line(tmp_path):
    """issue 25: a results.json without new_class_prediction_share was a KeyError under --table."""
    bench = load_script("cifar100_online")
    out = tmp_path / "online"
    run = out / bench.run_id(bench.planned_runs(bench.TINY_MEMORIES)[0])
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({
        "finished": True, "config": {}, "steps": [{}], "classes_per_step": [[0]], "class_order": [0],
        "average_incremental_accuracy": 0.5, "last_accuracy": 0.5, "train_time_s": 1.0,
        "old_new_accuracy": [{}], "per_class_accuracy": [0.5]}))
    with pytest.raises(SystemExit, match=r"results.json has no new_class_prediction_share .*delete its run folder"):
        bench.main(["--tiny", "--output-dir", str(out), "--table"])


def test_online_with_a_missing_data_folder_is_one_line(tmp_path):
    """issue 25: cifar100_online.py with a missing data folder ended in a traceback."""
    with pytest.raises(SystemExit, match=r"cifar100_online.py: CIFAR-100 not found: looked for .*nowhere"):
        load_script("cifar100_online").main(["--data-dir", str(tmp_path / "nowhere"), "--output-dir",
                                             str(tmp_path / "out")])


def test_cifar100_cpu_epochs_plan_and_report_tiny(tmp_path):
    """The training-length plan: lr / 10 for the last tenth at every length, the first seed only at 30 epochs; the
    report's table pairs BSCE with CE, CE + post-hoc LA and ER-ACE per length, with the NCM diagnostic."""
    bench = load_script("cifar100_cpu_epochs")
    assert [bench.schedule(e) for e in bench.EPOCHS] == [[], [2], [9], [27]]
    planned = bench.planned_runs((0, 1, 2))
    assert {r["seed"] for r in planned if r["epochs"] == 30} == {0} and len(planned) == 3 * (3 * 3 + 1)
    assert {r.get("compile", False) for r in planned if r["epochs"] == 30} == {True}  # measured faster (RESULTS 4c)
    assert not any(r.get("compile") for r in planned if r["epochs"] < 30)
    names = [_config(str(bench.CONFIG), {**TINY, **r}).run_name for r in planned if r["epochs"] == 1 and r["seed"] == 0]
    out = tmp_path / "epochs"
    bench.main(["--tiny", "--workers", "1", "--output-dir", str(out), "--only", *names])
    text = (out / "comparison.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1 | 1 |"))
    assert row.count("(1 seed)") == 6 and " / " in row.split("|")[-5]  # 3 gains x 2 metrics; NCM of CE / BSCE
    assert (out / "gain_vs_epochs.png").stat().st_size > 1000


def test_cifar100_cpu_settings_tiny(tmp_path):
    """One folder per setting, the imbalance ratio at the last step, BSCE's gains over CE and CE + post-hoc LA."""
    bench = load_script("cifar100_cpu_settings")
    assert {k: bench.imbalance_ratio(*v) for k, v in bench.SETTINGS.items()} == {
        "B0-5": 20.0, "B0-10": 22.5, "B0-20": 23.75, "B0-50": 24.5, "B50-5": 22.5, "B50-10": 23.75, "B50-25": 24.5}
    text = bench.main(["--tiny", "--workers", "1", "--settings", "B0-5", "--output-dir", str(tmp_path)])
    assert (tmp_path / "B0-5" / "comparison.md").exists() and (tmp_path / "gain_vs_steps.png").exists()
    row = next(line for line in text.splitlines() if line.startswith("| B0-5 |"))
    assert "| 5 | 20.0 : 1 | 1 |" in row and row.count("(1 seed)") == 4
