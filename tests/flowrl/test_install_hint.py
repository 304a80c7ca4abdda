"""Issue 27: a missing optional package is named with the install command that fits how flowrl was installed."""

import shutil
import subprocess
import sys
from pathlib import Path

import flowrl.errors
from flowrl.errors import install_hint

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_is_told_its_editable_command(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert install_hint("sweep") == "pip install -e '.[sweep]'"
    monkeypatch.chdir(tmp_path)  # elsewhere: the checkout's path, so the command works from where the user is
    assert install_hint("search") == f"pip install -e '{ROOT}[search]'"


def test_a_wheel_install_is_told_the_package_extra(tmp_path):
    # flowrl's errors module as a wheel lays it out: site-packages/flowrl/errors.py, no pyproject.toml beside it.
    site = tmp_path / "lib" / "site-packages"
    (site / "flowrl").mkdir(parents=True)
    shutil.copy(flowrl.errors.__file__, site / "flowrl" / "errors.py")
    (site / "flowrl" / "__init__.py").write_text("")
    code = "from flowrl.errors import install_hint; print(install_hint('sweep'))"
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "pip install 'flowrl-kit[sweep]'", out.stderr


def test_the_missing_rliable_message_uses_the_hint(monkeypatch):
    import pytest

    from flowrl.errors import MissingDependencyError
    from flowrl.report import stats

    monkeypatch.setitem(sys.modules, "rliable", None)
    monkeypatch.chdir(ROOT)
    with pytest.raises(MissingDependencyError, match=r"fix: pip install -e '\.\[sweep\]'$"):
        stats._rliable()
