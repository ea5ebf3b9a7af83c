"""The README's quickstart snippet runs as written (with one epoch, to stay fast)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_snippet_runs(capsys):
    text = README.read_text()
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "BalancedSoftmaxPlugin()" in code
    code = code.replace("train_epochs=8", "train_epochs=1")
    namespace: dict = {}
    exec(compile(code, "README.md:quickstart", "exec"), namespace)
    assert len(namespace["bsce"].prior_history) == 5
    assert all(abs(sum(p) - 1) < 1e-9 for p in namespace["bsce"].prior_history)


def test_readme_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    text = README.read_text()
    assert 'pip install torch==2.14.1 torchvision==0.29.1 -e ".[dev]" && bsce-experiment run' in text
    assert "torch==2.14.1 torchvision==0.29.1 -e \".[dev]\"" in ci
    # the README's test command (the bash block after "Run the tests") is the one CI runs
    readme_tests = re.search(r"Run the tests.*?```bash\n(.*?)\n```", text, re.S).group(1)
    assert readme_tests.startswith("python -m pytest")
    lines = ci.strip().splitlines()
    assert lines[-2:] == [readme_tests, "bash .ci/wheel_check"]  # the tests, then the wheel's install


DOCS = (README, README.parent / "experiments" / "GUIDE.md")


def _documented_commands() -> list[tuple[str, str]]:
    """Every ``bsce-experiment ...`` command of the README and the guide: in bash blocks (continued lines
    joined, comments dropped) and in inline code."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for command in block.replace("\\\n", " ").splitlines():
                command = re.split(r"\s+#", command)[0].strip()
                if command.startswith("bsce-experiment") or "&& bsce-experiment" in command:
                    found.append((doc.name, command[command.index("bsce-experiment"):]))
        found += [(doc.name, c) for c in re.findall(r"`(bsce-experiment [^`]*)`", text)]
    return found


def test_every_documented_command_parses():
    """Flags that do not exist for a command (e.g. --strategies on run) fail here, not for a reader."""
    import shlex

    from bsce_avalanche.runner.cli import build_parser

    commands = _documented_commands()
    assert len(commands) >= 15, commands
    parser = build_parser()
    for doc, command in commands:
        argv = ["VALUE" if a == "..." else a for a in shlex.split(command)[1:]]  # "...": a placeholder value
        try:
            parser.parse_args(argv)
        except SystemExit as err:
            if not (err.code == 0 and ("--help" in argv or "-h" in argv)):
                raise AssertionError(f"{doc}: `{command}` does not parse") from None


@pytest.mark.parametrize("head", ["incremental, access_task_boundaries", "fixed"])
def test_readme_online_composition_trains(head):
    """README's online row: `split_online_stream` with an IncrementalClassifier needs access_task_boundaries=True
    (without it Avalanche fails: OnlineCLExperience has no classes_in_this_experience), or a fixed head; the memory a
    ReservoirSamplingBuffer."""
    import warnings

    import torch
    from avalanche.benchmarks.scenarios.online import split_online_stream
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
    from avalanche.training.storage_policy import ReservoirSamplingBuffer

    from bsce_avalanche import BalancedSoftmaxPlugin
    from conftest import make_blobs_benchmark

    warnings.simplefilter("ignore", DeprecationWarning)
    torch.manual_seed(0)
    benchmark = make_blobs_benchmark(train=20)
    incremental = head != "fixed"
    model = _blobs_model(incremental)
    replay = ReplayPlugin(mem_size=30, batch_size=10, batch_size_mem=10, storage_policy=ReservoirSamplingBuffer(30))
    bsce = BalancedSoftmaxPlugin(prior="window", window=1)
    strategy = Naive(model, torch.optim.SGD(model.parameters(), lr=0.05), torch.nn.CrossEntropyLoss(),
                     train_mb_size=10, train_epochs=1, evaluator=EvaluationPlugin(loggers=[]), plugins=[bsce, replay])
    online = split_online_stream(benchmark.train_stream, experience_size=10, access_task_boundaries=incremental)
    for n, experience in enumerate(online, 1):
        strategy.train(experience)
    assert n == 12 and len(replay.storage_policy.buffer) == 30 and len(bsce.prior_history) == 12


def _blobs_model(incremental: bool):
    import torch
    from avalanche.models import IncrementalClassifier

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_extractor = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU())
            self.classifier = IncrementalClassifier(32, initial_out_features=2) if incremental else \
                torch.nn.Linear(32, 6)

        def forward(self, x):
            return self.classifier(self.feature_extractor(x))

    return Net()


def test_the_measured_blocks_are_restated_from_the_committed_results(tmp_path, monkeypatch):
    """Every table between <!-- NAME:start/end --> markers in README.md and RESULTS.md is what
    experiments/restate.py builds from the results (no number written by hand), and a hand edit is caught."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("restate", README.parent / "experiments" / "restate.py")
    restate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(restate)
    assert restate.restate(check=True) == []
    # a number edited by hand in a copy is found, and restating the copy repairs it
    copy = tmp_path / "README.md"
    shutil.copy(README, copy)
    block = re.search(r"<!-- readme-table:start -->\n(.*?)<!-- readme-table:end -->", copy.read_text(), re.S).group(1)
    edited = re.sub(r"\| (\d+)\.(\d) ±", lambda m: f"| {int(m.group(1)) + 1}.{m.group(2)} ±", block, count=1)
    assert edited != block
    copy.write_text(copy.read_text().replace(block, edited))
    monkeypatch.setattr(restate, "BLOCKS", {(copy, m): f for (p, m), f in restate.BLOCKS.items() if p == restate.README})
    assert "README.md:readme-table" in restate.restate(check=True)
    restate.restate()
    assert copy.read_text() == README.read_text()
