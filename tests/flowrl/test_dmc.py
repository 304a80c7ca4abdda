"""DMC through envpool and through plain dm_control: same layout, same dynamics and rewards, no bogus transitions.

The dm_control fallback's tests run everywhere; only the tests that step envpool skip where it is not installed.
"""

import sys

import numpy as np
import pytest

from components import ReplayBuffer
from flowrl.envs.dmc import DMControlVecEnv, EnvpoolDMC, dm_control_spec, envpool_id, make_dmc
from flowrl.envs.registry import known_tasks, make_env
from flowrl.errors import MissingDependencyError, UserError

try:
    import envpool  # noqa: F401
except ImportError:
    envpool = None
needs_envpool = pytest.mark.skipif(envpool is None, reason="envpool is not installed (pip install envpool==1.2.5)")


def test_envpool_ids():
    assert envpool_id("humanoid-run") == "HumanoidRun-v1"
    assert envpool_id("ball_in_cup-catch") == "BallInCupCatch-v1"


LAYOUTS = [("humanoid-run", 67, 21), ("dog-run", 223, 38), ("cheetah-run", 17, 6)]


@pytest.mark.parametrize("task, obs_dim, act_dim", LAYOUTS)
def test_dm_control_fallback_layout(task, obs_dim, act_dim):
    env = DMControlVecEnv(task, num_envs=2, seed=0)
    try:
        assert (env.obs_dim, env.act_dim) == (obs_dim, act_dim)
        obs = env.reset()
        assert obs.shape == (2, obs_dim) and obs.dtype == np.float32 and not np.array_equal(obs[0], obs[1])
        step = env.step(np.zeros((2, act_dim)))
        assert step.obs.shape == (2, obs_dim) and step.reward.shape == (2,) and step.valid.all()
    finally:
        env.close()


def test_without_envpool_make_dmc_falls_back_to_dm_control(monkeypatch):
    monkeypatch.setitem(sys.modules, "envpool", None)  # what `import envpool` meets where it is not installed
    with pytest.warns(UserWarning, match="envpool is not installed"):
        env = make_dmc("cheetah-run", num_envs=2, seed=0)
    try:
        assert isinstance(env, DMControlVecEnv) and env.reset().shape == (2, 17)
    finally:
        env.close()
    with pytest.raises(MissingDependencyError, match="pip install envpool"):
        EnvpoolDMC("cheetah-run")


@needs_envpool
def test_make_dmc_steps_envpool_where_installed():
    env = make_dmc("cheetah-run", num_envs=1, seed=0)
    try:
        assert isinstance(env, EnvpoolDMC)
    finally:
        env.close()


@needs_envpool
@pytest.mark.parametrize("task, obs_dim, act_dim", LAYOUTS)
def test_layouts_match_dm_control(task, obs_dim, act_dim):
    fast, plain = EnvpoolDMC(task, num_envs=2, seed=0), DMControlVecEnv(task, num_envs=1, seed=0)
    try:
        assert (fast.obs_dim, fast.act_dim) == (plain.obs_dim, plain.act_dim) == (obs_dim, act_dim)
        o_fast, o_plain = fast.reset(), plain.reset()
        assert o_fast.shape == (2, obs_dim) and o_plain.shape == (1, obs_dim)
        assert o_fast.dtype == o_plain.dtype == np.float32
        step = fast.step(np.zeros((2, act_dim)))
        assert step.obs.shape == (2, obs_dim) and step.reward.shape == (2,) and step.valid.all()
    finally:
        fast.close()
        plain.close()


@needs_envpool
def test_same_state_same_actions_give_same_rewards_and_observations():
    # cheetah's observation is qpos[1:] and qvel; its reward ignores the root x, so the envpool state can be copied.
    fast, plain = EnvpoolDMC("cheetah-run", 1, seed=3), DMControlVecEnv("cheetah-run", 1, seed=7)
    obs = fast.reset()
    plain.reset()
    physics = plain.envs[0].physics
    with physics.reset_context():
        physics.data.qpos[1:] = obs[0, :8]
        physics.data.qvel[:] = obs[0, 8:]
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(40):
        action = rng.uniform(-1, 1, (1, 6))
        a, b = fast.step(action), plain.step(action)
        np.testing.assert_allclose(a.obs, b.obs, atol=1e-4)
        np.testing.assert_allclose(a.reward, b.reward, atol=1e-5)
        rewards.append(a.reward[0])
    assert max(rewards) > 0  # the comparison saw non-trivial rewards


@pytest.mark.parametrize("backend", [pytest.param(EnvpoolDMC, marks=needs_envpool, id="envpool"), DMControlVecEnv])
def test_time_limit_truncates_and_autoreset_never_reaches_the_buffer(backend):
    n, horizon = 3, 15
    env = backend("cheetah-run", num_envs=n, seed=1, max_episode_steps=horizon)
    buf = ReplayBuffer(env.obs_dim, env.act_dim, capacity=3000, num_envs=n, seed=0)
    real = set()
    obs = env.reset()
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(4 * (horizon + 1)):
        action = rng.uniform(-1, 1, (n, env.act_dim))
        step = env.step(action)
        assert not step.terminated.any()  # DMC never terminates early
        if t < horizon - 1:
            assert step.valid.all() and not step.truncated.any()
        for i in range(n):
            if step.valid[i]:
                real.add((obs[i].tobytes(), step.obs[i].tobytes()))
            else:
                assert step.reward[i] == 0.0
        ends += int((step.truncated & step.valid).sum())
        buf.add(obs, action, step.reward, step.terminated, step.truncated, step.valid)
        obs = step.obs
    env.close()
    assert ends == 4 * n  # four full episodes per env, each followed by one autoreset step
    batch = buf.sample(2000)
    for o, o2 in zip(batch.obs.numpy(), batch.next_obs.numpy()):
        assert (o.tobytes(), o2.tobytes()) in real


def test_task_names_and_unknown_task_error():
    assert "dmc/humanoid-run" in known_tasks() and "dmc/dog-run" in known_tasks()
    with pytest.raises(UserError) as err:
        make_env("dmc/humanoid-fly", num_envs=1, seed=0)
    message = str(err.value).splitlines()[0]  # gin may append context lines; the CLI prints the first
    assert "unknown task 'dmc/humanoid-fly'" in message and "dmc/humanoid-run" in message
    with pytest.raises(UserError, match="known families: .*dmc"):
        make_env("atari/pong", num_envs=1, seed=0)
    with pytest.raises(UserError):
        make_dmc("walker-fly", 1, 0)


def test_dm_control_spec_order_is_dm_controls():
    keys, low, high = dm_control_spec("humanoid-run")
    assert keys[0] == "joint_angles" and "position" not in keys
    assert low.shape == (21,) and np.all(low == -1) and np.all(high == 1)


def test_dm_control_fallback_defaults_and_per_env_seeds():
    """One env, seed 0 and dm_control's 1,000-step limit by default; env i is seeded ``seed + i``."""
    one = DMControlVecEnv("cheetah-run")
    try:
        assert one.num_envs == 1
        first = one.reset()
        two = DMControlVecEnv("cheetah-run", num_envs=2, seed=0)
        again = DMControlVecEnv("cheetah-run", num_envs=2, seed=1)
        both, shifted = two.reset(), again.reset()
        np.testing.assert_array_equal(both[0], first[0])  # env 0 of seed 0 is the default env
        np.testing.assert_array_equal(shifted[0], both[1])  # env 0 of seed 1 is env 1 of seed 0
        assert not np.array_equal(both[0], both[1])
        steps, step = 0, None
        while step is None or not (step.truncated[0] or step.terminated[0]):
            step = one.step(np.zeros((1, one.act_dim)))
            steps += 1
        assert steps == 1000 and step.truncated[0] and not step.terminated[0]
    finally:
        one.close()


@pytest.mark.parametrize("backend", [DMControlVecEnv, EnvpoolDMC])
def test_step_fields_have_the_contract_dtypes(backend):
    if backend is EnvpoolDMC:
        pytest.importorskip("envpool", reason="envpool is not installed")
    env = backend("walker-run", num_envs=2, seed=0)
    try:
        env.reset()
        step = env.step(np.zeros((2, env.act_dim)))
        assert step.reward.dtype == np.float32 and step.obs.dtype == np.float32
        assert step.terminated.dtype == bool and step.truncated.dtype == bool and step.valid.dtype == bool
    finally:
        env.close()
