"""components/ stands alone: it imports torch, einops, gin (and the standard library), never flowrl."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"torch", "einops", "gin", "numpy", "components", "__future__", "copy", "dataclasses", "math", "typing", "contextlib",
           "functools", "inspect", "warnings"}
# Optional libraries a component imports only when called (never at ``import components``): scikit-learn for
# GaussianMixtureEntropy (pip install 'flowrl-kit[dacer]').
OPTIONAL = {"sklearn"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_components_import_only_torch_einops_gin():
    for path in sorted((ROOT / "components").glob("*.py")):
        assert imported_roots(path) <= ALLOWED | OPTIONAL, (path.name, imported_roots(path) - ALLOWED - OPTIONAL)


def test_components_import_without_loading_flowrl_or_the_compiler():
    # torch._dynamo costs seconds at import: a run that never compiles (every tools/run.py start) must not pay it.
    code = ("import sys, components; assert not any(m.split('.')[0] in ('flowrl', 'sklearn') for m in sys.modules), "
            "'flowrl or an optional library loaded'; assert 'torch._dynamo' not in sys.modules, 'torch._dynamo loaded'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
