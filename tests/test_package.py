"""Issue 19: a built wheel, installed (not editable) in a fresh virtual environment, carries the configs and the
console commands, and runs a short smoke config from a folder outside the repository."""

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

import flowrl
from flowrl.config import find_gin

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CHANGELOG.md", "flowrl", "components", "gin"]
SHORT = ["--bind", "Trainer.total_steps = 300", "--bind", "Trainer.warmup_steps = 100", "--bind",
         "Trainer.eval_every = 300", "--bind", "Trainer.eval_episodes = 1", "--bind", "Trainer.log_every = 100",
         "--bind", "Trainer.checkpoint_every = 300", "--bind", "Trainer.num_threads = 1", "--no-display"]


def sh(*args, cwd, timeout=300):
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A wheel built from a copy of the sources (the checkout gets no build/ folder), installed into a new venv that
    sees the packages of the interpreter running the suite but takes flowrl only from the wheel.

    ``--system-site-packages`` would not do: from inside a virtual environment it points at the base interpreter's
    site-packages, not this one's. A ``.pth`` file in the new venv adds this interpreter's site folders (their own
    ``.pth`` files included) after the venv's own, so the wheel's flowrl comes first."""
    base = tmp_path_factory.mktemp("package")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                                         else {}))
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist", ".",
       cwd=src)
    wheel = next((base / "dist").glob("flowrl_kit-*.whl"))
    assert wheel.name.startswith(f"flowrl_kit-{flowrl.__version__}-")
    sh(sys.executable, "-m", "venv", "--without-pip", base / "venv", cwd=base)
    purelib = sh(base / "venv" / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                 cwd=base).stdout.strip()
    ours = [p for p in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]) if Path(p).is_dir()]
    (Path(purelib) / "suite_packages.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours))
    sh(sys.executable, "-m", "pip", "--python", base / "venv" / "bin" / "python", "install", "--no-deps", "-q", wheel,
       cwd=base)
    return base / "venv"


@pytest.mark.slow
def test_the_installed_wheel_runs_the_smoke_config_from_any_folder(venv, tmp_path):
    bin_ = venv / "bin"
    where = sh(bin_ / "python", "-c", "import flowrl, flowrl.config as c; print(flowrl.__file__, c.gin_home())",
               cwd=tmp_path).stdout.split()
    assert all(str(venv) in w for w in where), where  # the wheel's flowrl, not the checkout's
    assert (Path(where[1]) / "gin" / "smoke.gin").is_file()
    # By name (found in the shipped tree) and by the checkout's relative path, from a folder outside the repository.
    proc = sh(bin_ / "flowrl-run", "--gin", "flowrl_cheetah_run.gin", "--gin", "gin/smoke.gin", *SHORT,
              "--run-dir", "smoke", cwd=tmp_path)
    assert "done: 300 env steps" in proc.stderr
    run_dir = tmp_path / "smoke"
    assert json.loads((run_dir / "bindings.json").read_text())["make_env.task"] == "dmc/cheetah-run"
    assert (run_dir / "metrics.csv").is_file() and list((run_dir / "checkpoints").glob("*.pt"))
    result = json.loads(sh(bin_ / "flowrl-evaluate", "smoke", "--episodes", "1", "--device", "cpu",
                           cwd=tmp_path).stdout.splitlines()[-1])
    assert result["env_steps"] == 300 and result["length_mean"] == 1000.0
    sh(bin_ / "flowrl-plot", "smoke", "--out", "curve.png", cwd=tmp_path)
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    sh(bin_ / "flowrl-export", "smoke", "--format", "pt2", "--out", "policy.pt2", cwd=tmp_path)
    assert json.loads((tmp_path / "policy.pt2.json").read_text())["env_steps"] == 300
    for command in ("flowrl-sweep", "flowrl-report", "flowrl-bench", "flowrl-convert"):
        assert "usage: " + command in sh(bin_ / command, "--help", cwd=tmp_path).stdout


def test_a_bad_flag_of_an_installed_command_names_the_command(venv, tmp_path):
    proc = subprocess.run([venv / "bin" / "flowrl-run", "--gin", "no_such_config.gin"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "gin file 'no_such_config.gin' not found" in proc.stderr
    proc = subprocess.run([venv / "bin" / "flowrl-run", "--bogus"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "see flowrl-run --help" in proc.stderr


def test_gin_files_are_found_by_name_or_path_in_the_shipped_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    smoke = (ROOT / "gin" / "smoke.gin").resolve()
    assert find_gin("smoke.gin").resolve() == smoke and find_gin("gin/smoke.gin").resolve() == smoke
    assert find_gin("no_such.gin") is None
    (tmp_path / "smoke.gin").write_text("# a local file wins over the shipped one\n")
    assert find_gin("smoke.gin") == Path("smoke.gin")
    nested = sorted((ROOT / "gin").glob("*/*.gin"))[0]  # a file in a subfolder: found by its path or its name
    relative = nested.relative_to(ROOT / "gin")
    assert find_gin(str(relative)).resolve() == nested.resolve()
    if len(list((ROOT / "gin").rglob(nested.name))) == 1:
        assert find_gin(nested.name).resolve() == nested.resolve()
