"""The HumanoidBench adapter: compatibility-fix detection and the missing-dependency message run everywhere; the real
tasks run where HumanoidBench is installed (see flowrl.envs.humanoidbench.INSTALL)."""

import functools
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flowrl.envs import humanoidbench as hb
from flowrl.envs.gym_vec import GymVecEnv
from flowrl.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[2]
GIN_FILES = sorted((ROOT / "gin" / "tasks" / "humanoidbench").glob("*.gin"))  # the tasks, for any agent
ENTRY_FILES = sorted((ROOT / "gin" / "humanoidbench").glob("*.gin"))  # each task with FlowRL tuned for HumanoidBench
HAVE_HB = importlib.util.find_spec("humanoid_bench") is not None
needs_hb = pytest.mark.skipif(not HAVE_HB, reason=f"HumanoidBench is not installed; to run these: {hb.INSTALL}")


def gin_task(path: Path) -> str:
    return re.search(r"^make_env\.task = '([^']+)'$", path.read_text(), re.M).group(1)


@pytest.fixture
def fresh_prepare():
    """prepare() caches its result per process; clear it around a test that changes what it sees."""
    hb.prepare.cache_clear()
    yield
    hb.prepare.cache_clear()


@pytest.fixture
def restore_modules():
    """Put back the sys.modules entries a test replaces with fakes."""
    names = ("humanoid_bench", "jax", "jax.numpy")
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    yield
    for n in names:
        sys.modules.pop(n, None)
    sys.modules.update(saved)


# --- everywhere (CI has no HumanoidBench) -------------------------------------------------------------------------


def test_known_lists_tasks_without_importing_anything_heavy():
    code = (
        "import sys; from flowrl.envs import humanoidbench as hb; names = hb.known(); "
        "print(len(names), 'humanoid_bench' in sys.modules, 'gymnasium' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    count, hb_imported, gym_imported = out.split()
    assert int(count) > 50 and hb_imported == "False" and gym_imported == "False"
    names = set(hb.known())
    for task in ("walk", "stand", "run", "reach", "hurdle", "crawl", "maze", "sit_simple", "sit_hard",
                 "balance_simple", "balance_hard", "stair", "slide", "pole"):
        assert f"h1-{task}" in names and f"h1hand-{task}" in names


def test_gin_files_name_known_tasks():
    assert {p.stem for p in GIN_FILES} >= {f"h1_{t}" for t in ("balance_hard", "balance_simple", "crawl", "maze",
                                                                 "reach", "sit_hard", "walk", "run", "stand",
                                                                 "sit_simple")}
    for path in GIN_FILES:
        text = path.read_text()
        assert text.startswith("#") and "FlowRLAgent" not in text  # a task file binds no agent
        family, _, name = gin_task(path).partition("/")
        assert family == "humanoidbench" and name in hb.known() and path.stem == name.replace("-", "_")
    assert [p.name for p in ENTRY_FILES] == [p.name for p in GIN_FILES]
    for path in ENTRY_FILES:
        text = path.read_text()
        assert text.startswith("#") and f"include 'gin/tasks/humanoidbench/{path.name}'" in text
        assert "include 'gin/agents/flowrl.gin'" in text and "include 'gin/agents/flowrl/humanoidbench.gin'" in text
    assert "FlowRLAgent.expectile = 0.8" in (ROOT / "gin" / "agents" / "flowrl" / "humanoidbench.gin").read_text()


def test_missing_humanoid_bench_is_one_line_with_the_install_commands(monkeypatch, fresh_prepare, restore_modules):
    monkeypatch.setitem(sys.modules, "humanoid_bench", None)  # makes `import humanoid_bench` fail
    with pytest.raises(MissingDependencyError) as err:
        hb.make("h1-walk", 1, 0)
    message = str(err.value)
    assert "\n" not in message and hb.INSTALL in message
    assert "git clone" in message and "github.com/carlosferrazza/humanoid-bench" in message
    assert "pip install --no-deps -e" in message
    assert "jax" not in sys.modules or not getattr(sys.modules["jax"], "__flowrl_stub__", False)


def test_missing_transitive_module_names_it(monkeypatch, fresh_prepare):
    def fail():
        raise ModuleNotFoundError("No module named 'cv2'", name="cv2")

    monkeypatch.setattr(hb, "_import_humanoid_bench", fail)
    with pytest.raises(MissingDependencyError, match="'cv2'") as err:
        hb.prepare()
    assert "\n" not in str(err.value)


def test_jax_missing_detection(monkeypatch, restore_modules):
    real = importlib.util.find_spec
    sys.modules.pop("jax", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "jax" else real(n, *a))
    assert hb.jax_missing()
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "jax" else real(n, *a))
    assert not hb.jax_missing()


@pytest.fixture
def fake_packages(tmp_path, monkeypatch, restore_modules):
    """A fake `humanoid_bench` that imports jax.numpy at import, like the real one, and a fake real `jax`."""
    (tmp_path / "humanoid_bench").mkdir()
    (tmp_path / "humanoid_bench" / "__init__.py").write_text("import jax.numpy as jnp\nJNP = jnp\n")
    (tmp_path / "jax").mkdir()
    (tmp_path / "jax" / "__init__.py").write_text("")
    (tmp_path / "jax" / "numpy.py").write_text("REAL = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("humanoid_bench", "jax", "jax.numpy"):
        sys.modules.pop(name, None)
    return tmp_path


def test_jax_stub_only_when_jax_is_missing(monkeypatch, fake_packages):
    monkeypatch.setattr(hb, "jax_missing", lambda: True)
    module = hb._import_humanoid_bench()
    assert module.JNP.__flowrl_stub__
    assert "jax" not in sys.modules and "jax.numpy" not in sys.modules  # only present during the import
    with pytest.raises(ModuleNotFoundError, match="jax"):
        module.JNP.transpose  # noqa: B018  (used only by HumanoidBench's hierarchical policies)

    sys.modules.pop("humanoid_bench")
    monkeypatch.setattr(hb, "jax_missing", lambda: False)
    module = hb._import_humanoid_bench()
    assert module.JNP.REAL and not hasattr(module.JNP, "__flowrl_stub__")


def test_stale_size_table_detection():
    from dm_control.mujoco.wrapper.mjbindings import sizes

    assert not hb.stale_size_table(sizes.array_sizes)
    stale = {key: dict(fields) for key, fields in sizes.array_sizes.items()}
    stale["mjmodel"]["flex_evpair"] = ("nflexevpair", 2)  # in MuJoCo 3.1.6's table, gone from the installed one
    assert hb.stale_size_table(stale)


def test_render_mode_none_only_when_the_env_renders_by_default():
    class Renders:
        def __init__(self, render_mode="rgb_array"): ...

    class Quiet:
        def __init__(self, render_mode=None): ...

    assert hb.render_kwargs(Renders) == {"render_mode": None}
    assert hb.render_kwargs(Quiet) == {}


# --- with HumanoidBench installed ---------------------------------------------------------------------------------


@needs_hb
@pytest.mark.parametrize("stale", [True, False])
def test_size_table_replaced_only_when_stale(monkeypatch, fresh_prepare, stale):
    from dm_control.mujoco.wrapper.mjbindings import sizes

    hb.prepare()  # imports HumanoidBench the adapter's way (it needs the jax stub where jax is missing)
    hb.prepare.cache_clear()
    from humanoid_bench.dmc_deps import dmc_sizes

    vendored = {"mjmodel": {}, "mjdata": {}}
    monkeypatch.setattr(dmc_sizes, "array_sizes", vendored)
    monkeypatch.setattr(hb, "stale_size_table", lambda table: stale)
    assert hb.prepare() == {"render_mode": None}  # HumanoidBench renders rgb_array by default
    assert dmc_sizes.array_sizes is (sizes.array_sizes if stale else vendored)


@needs_hb
@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: p.stem)
def test_configured_task_steps(path):
    env = hb.make(gin_task(path).partition("/")[2], num_envs=1, seed=0)
    try:
        assert env.act_dim == 19
        obs = env.reset()
        assert obs.shape == (1, env.obs_dim) and obs.dtype == np.float32
        ends, ended = 0, False
        for action in np.random.default_rng(0).uniform(-1, 1, (200, 1, 19)):
            step = env.step(action)
            assert step.valid[0] == (not ended) and np.isfinite(step.obs).all() and np.isfinite(step.reward).all()
            ended = bool(step.terminated[0] or step.truncated[0])
            ends += ended
    finally:
        env.close()
    if gin_task(path).endswith(("walk", "run", "stand", "balance_hard")):
        assert ends > 0  # random actions fall over quickly: the termination path runs


@needs_hb
def test_worker_processes_apply_the_fixes_themselves():
    # spawn: fresh interpreters that have not imported HumanoidBench, so each worker runs prepare() itself.
    env = GymVecEnv(functools.partial(hb.make_humanoidbench, "h1-walk-v0"), num_envs=2, seed=0, context="spawn")
    try:
        assert env.reset().shape == (2, 51)
        for action in np.random.default_rng(0).uniform(-1, 1, (100, 2, 19)):
            step = env.step(action)
        assert step.obs.shape == (2, 51)
    finally:
        env.close()


@needs_hb
def test_deterministic_from_seed():
    def rollout():
        env = hb.make("h1-walk", num_envs=2, seed=3)
        try:
            out = [env.reset()]
            for action in np.random.default_rng(0).uniform(-1, 1, (50, 2, 19)):
                out.append(env.step(action).obs)
        finally:
            env.close()
        return np.stack(out)

    np.testing.assert_array_equal(rollout(), rollout())


@pytest.mark.slow
@needs_hb
@pytest.mark.skipif(not (ROOT / "tools" / "run.py").exists(), reason="tools/run.py not written yet")
@pytest.mark.skipif(not (ROOT / "gin" / "smoke.gin").exists(), reason="gin/smoke.gin not written yet")
def test_smoke_training_on_h1_walk(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "tools/run.py", "--gin", "gin/humanoidbench/h1_walk.gin", "--gin", "gin/smoke.gin",
           "--run-dir", str(run_dir), "--no-display", "--bind", "Trainer.num_threads = 1",
           "--bind", "Trainer.total_steps = 1000", "--bind", "Trainer.eval_every = 500"]  # half the smoke budget
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, textwrap.shorten(proc.stderr[-3000:], 3000)
    metrics = run_dir / "metrics.jsonl"
    assert metrics.exists() and metrics.read_text().strip()
    from flowrl.run.metrics import read_metrics

    records = read_metrics(run_dir)
    assert [r["step"] for r in records if "eval/return_mean" in r] == [500, 1000]
    assert any("train/episode_return" in r for r in records) and any("critic/loss" in r for r in records)
