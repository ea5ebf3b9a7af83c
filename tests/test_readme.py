"""The README's quickstart snippet runs as written (with one epoch, to stay fast)."""

import re
from pathlib import Path

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
    assert 'pip install torch==2.14.1 torchvision==0.29.1 -e ".[dev]" && bsce-experiment run' in README.read_text()
    assert "python -m pytest -q" in README.read_text()
    assert "torch==2.14.1 torchvision==0.29.1 -e \".[dev]\"" in ci
    assert ci.strip().endswith("python -m pytest -q")
