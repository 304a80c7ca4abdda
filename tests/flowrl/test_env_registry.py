"""The task registry and the small pieces of the env adapters that need no simulator: family registration, the
gymnasium factory's arguments, and HumanoidBench's import fixes (the jax stub, the stale size table)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from flowrl.envs import families, gym_vec
from flowrl.envs import humanoidbench as hb
from flowrl.envs import registry
from flowrl.errors import UserError


def test_a_registered_family_builds_its_tasks_and_lists_them(monkeypatch):
    monkeypatch.setitem(families.FAMILIES, "demo", None)  # removed again after the test
    built = []
    registry.register_family("demo", lambda name, n, seed: built.append((name, n, seed)) or "env", lambda: ["a", "b"])
    assert registry.make_env("demo/b", num_envs=3, seed=7) == "env" and built == [("b", 3, 7)]
    assert {"demo/a", "demo/b", "dmc/cheetah-run", "gym/Humanoid-v5"} <= set(registry.known_tasks())
    with pytest.raises(UserError, match=r"unknown task 'demo/c'; fix: use one of demo/a, demo/b"):
        registry.make_env("demo/c")


def test_gym_factory_passes_count_and_seed():
    a, b, c = (gym_vec.make_gym("Hopper-v5", 2, s) for s in (5, 5, 6))
    try:
        assert a.num_envs == 2
        obs_a, obs_b, obs_c = a.reset(), b.reset(), c.reset()
        np.testing.assert_array_equal(obs_a, obs_b)
        assert not np.allclose(obs_a, obs_c) and not np.allclose(obs_a[0], obs_a[1])
    finally:
        for env in (a, b, c):
            env.close()


def test_gym_known_lists_only_mujoco_v5_tasks():
    names = gym_vec.known()
    assert "Hopper-v5" in names and all(n.endswith("-v5") for n in names)
    assert "Hopper-v4" not in names and "CartPole-v1" not in names  # an older version, not MuJoCo
    assert not any(n.startswith("CarRacing") or n.startswith("LunarLander") for n in names)


def test_jax_stub_names_the_missing_package_and_the_fix():
    stub = hb._jax_stub("jax.numpy")
    with pytest.raises(ModuleNotFoundError) as err:
        stub.zeros
    assert err.value.name == "jax"
    assert str(err.value) == ("jax.numpy.zeros: jax is not installed; HumanoidBench's hierarchical policies need it: "
                              "pip install 'jax[cpu]'")
    with pytest.raises(AttributeError, match="^__wrapped__$"):  # dunder probes (inspect, pickle) see a plain module
        stub.__wrapped__
    assert stub.__name__ == "jax.numpy" and stub.__flowrl_stub__


def test_jax_missing_reads_sys_modules_first(monkeypatch):
    monkeypatch.setattr(hb.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    assert hb.jax_missing()
    monkeypatch.setitem(sys.modules, "jax", hb._jax_stub("jax"))
    assert not hb.jax_missing()


def test_stale_size_table_checks_model_and_data_fields():
    assert not hb.stale_size_table({"mjmodel": {"nq": 1}, "mjdata": {"qpos": 1}})
    assert hb.stale_size_table({"mjmodel": {"flex_evpair": 1}})  # a MuJoCo 3.1 field that 3.17 dropped
    assert hb.stale_size_table({"mjdata": {"no_such_field": 1}})
    assert not hb.stale_size_table({"other": {"no_such_field": 1}})


def test_import_with_the_stub_leaves_no_jax_behind(monkeypatch):
    if not hb.jax_missing():
        pytest.skip("jax is installed: the stub is not used")
    seen = {}

    def fake_import(name, *args, **kwargs):
        if name == "humanoid_bench":
            seen.update({k: sys.modules.get(k) for k in ("jax", "jax.numpy")})
            return "hb"
        return real_import(name, *args, **kwargs)

    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__
    monkeypatch.setattr("builtins.__import__", fake_import)
    assert hb._import_humanoid_bench() == "hb"
    assert seen["jax"].__name__ == "jax" and seen["jax.numpy"].__name__ == "jax.numpy"
    assert seen["jax"].numpy is seen["jax.numpy"]
    assert "jax" not in sys.modules and "jax.numpy" not in sys.modules
