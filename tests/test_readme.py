"""The README's promises: its code example runs, and CI runs its test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs():
    # The deployment example needs an exported policy: tests/tools/test_export.py runs it.
    others = re.sub(r"## Deploying a trained policy.*?(?=\n## )", "", README, flags=re.S)
    blocks = re.findall(r"```python\n(.*?)```", others, re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)
        policy = namespace["policy"]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.velocity.parameters())


def test_ci_runs_the_readme_test_command():
    section = README.split("## Set up and test", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()


def test_readme_commands_name_files_that_exist():
    for path in re.findall(r"(gin/[\w/]+\.gin|tools/\w+\.py)", README):
        assert (ROOT / path).exists(), path
