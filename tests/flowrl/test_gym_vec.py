"""GymVecEnv on gymnasium's real Humanoid-v5 (terminates on falls) and on tiny envs defined here."""

import functools
import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from components.buffers import ReplayBuffer
from flowrl.envs import gym_vec
from flowrl.envs.base import scale_action
from flowrl.envs.gym_vec import GymVecEnv
from flowrl.errors import UserError

N, LIMIT = 3, 25  # Humanoid-v5 falls within a few dozen random steps, so a 25-step limit gives both kinds of end


def humanoid(max_episode_steps=LIMIT):
    return functools.partial(gym.make, "Humanoid-v5", max_episode_steps=max_episode_steps)


def random_actions(steps, num_envs, act_dim, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (steps, num_envs, act_dim))


class EchoEnv(gym.Env):
    """Dict observation {"action": the env-space action it received, "t": step count}; asymmetric bounds."""

    observation_space = gym.spaces.Dict(
        {"action": gym.spaces.Box(-100, 100, (2,)), "t": gym.spaces.Box(0, 100, (1,))}
    )
    action_space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"action": np.zeros(2, np.float32), "t": np.zeros(1, np.float32)}, {}

    def step(self, action):
        self.t += 1
        obs = {"action": np.asarray(action, np.float32), "t": np.full(1, self.t, np.float32)}
        return obs, 0.0, False, False, {}


class SuccessEnv(gym.Env):
    """Episodes of 4 steps; reports info["success"] (True on the last step) only on steps where t + seed is even."""

    observation_space = gym.spaces.Box(-10, 10, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.parity = seed % 2
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        info = {"success": self.t == 4} if (self.t + self.parity) % 2 == 0 else {}
        return np.full(1, self.t, np.float32), 1.0, self.t == 4, False, info


class UnboundedEnv(SuccessEnv):
    action_space = gym.spaces.Box(-np.inf, np.inf, (1,))


def test_shapes_and_dtypes():
    env = GymVecEnv(humanoid(), num_envs=2, seed=0)
    try:
        assert (env.num_envs, env.obs_dim, env.act_dim) == (2, 348, 17)
        obs = env.reset()
        assert obs.shape == (2, 348) and obs.dtype == np.float32
        step = env.step(np.zeros((2, 17)))
        assert step.obs.shape == (2, 348) and step.obs.dtype == np.float32
        assert step.reward.shape == (2,) and step.reward.dtype == np.float32
        for flags in (step.terminated, step.truncated, step.valid):
            assert flags.shape == (2,) and flags.dtype == bool
        assert step.valid.all() and step.info == {}  # Humanoid-v5 reports no success
    finally:
        env.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_actions_scaled_to_bounds_and_dict_obs_flattened(asynchronous):
    env = GymVecEnv(EchoEnv, num_envs=2, seed=0, asynchronous=asynchronous)
    try:
        assert (env.obs_dim, env.act_dim) == (3, 2)
        env.reset()
        step = env.step(np.array([[-1.0, 1.0], [0.0, 5.0]]))  # 5 is out of range: clipped to 1
        np.testing.assert_allclose(step.obs[:, :2], [[-2.0, 10.0], [0.0, 10.0]])
        np.testing.assert_allclose(step.obs[:, 2], [1.0, 1.0])
    finally:
        env.close()


def test_unbounded_action_space_is_a_user_error():
    with pytest.raises(UserError, match="bounded Box"):
        GymVecEnv(UnboundedEnv, num_envs=1)


def run_with_reference(env, steps, seed, buffer=None):
    """Step ``env`` with random actions next to one plain gymnasium Humanoid per slot, reset the way next-step
    autoreset resets (``seed + i`` first, then unseeded), checking every step against them. Feeds ``buffer`` the
    runner's way when given. Returns the steps and the true transitions ``(obs, next_obs, reward, terminated)``."""
    refs = [humanoid()() for _ in range(env.num_envs)]
    ref_obs = [r.reset(seed=seed + i)[0].astype(np.float32) for i, r in enumerate(refs)]
    low, high = refs[0].action_space.low, refs[0].action_space.high
    obs = env.reset()
    np.testing.assert_array_equal(obs, np.stack(ref_obs))
    ended = np.zeros(env.num_envs, bool)
    out, true = [], set()
    for action in random_actions(steps, env.num_envs, env.act_dim, seed):
        step = env.step(action)
        for i, ref in enumerate(refs):
            if ended[i]:  # the autoreset step: the reset obs, not a transition
                ref_obs[i] = ref.reset()[0].astype(np.float32)
                assert not step.valid[i] and step.reward[i] == 0
                assert not step.terminated[i] and not step.truncated[i]
            else:
                o, r, term, trunc, _ = ref.step(scale_action(action[i], low, high).astype(np.float32))
                o = o.astype(np.float32)
                true.add((ref_obs[i].tobytes(), o.tobytes(), np.float32(r), bool(term)))
                ref_obs[i] = o
                assert step.valid[i] and (step.terminated[i], step.truncated[i]) == (term, trunc)
                assert step.reward[i] == np.float32(r)
            np.testing.assert_array_equal(step.obs[i], ref_obs[i])
        if buffer is not None:
            buffer.add(obs, action, step.reward, step.terminated, step.truncated, step.valid)
        obs, ended = step.obs, step.terminated | step.truncated
        out.append(step)
    for ref in refs:
        ref.close()
    return out, true


@pytest.mark.parametrize("asynchronous", [False, True])
def test_matches_plain_envs_with_next_step_autoreset(asynchronous):
    env = GymVecEnv(humanoid(), num_envs=N, seed=7, asynchronous=asynchronous)
    try:
        steps, _ = run_with_reference(env, 150, seed=7)
    finally:
        env.close()
    terminated = np.stack([s.terminated for s in steps])
    truncated = np.stack([s.truncated for s in steps])
    valid = np.stack([s.valid for s in steps])
    assert terminated.any() and truncated.any()  # both kinds of end happen, and are told apart
    # Episode lengths: a truncation comes exactly at the limit, a termination (fall) no later.
    for i in range(N):
        length = 0
        for t in range(len(steps)):
            length += int(valid[t, i])
            if terminated[t, i] or truncated[t, i]:
                assert length == LIMIT if truncated[t, i] else length <= LIMIT
                length = 0


def test_replay_buffer_never_samples_across_an_autoreset():
    env = GymVecEnv(humanoid(), num_envs=N, seed=3)
    buffer = ReplayBuffer(obs_dim=env.obs_dim, act_dim=env.act_dim, capacity=N * 100, num_envs=N, seed=0)
    try:
        steps, true = run_with_reference(env, 300, seed=3, buffer=buffer)  # 300 steps > 100 rows: the ring wraps
    finally:
        env.close()
    assert sum(int((s.terminated | s.truncated).sum()) for s in steps) > 10
    sampled_ends = 0
    for _ in range(10):
        batch = buffer.sample(256)
        sampled_ends += int(batch.terminated.sum() + batch.truncated.sum())
        for b in range(256):
            key = (batch.obs[b].numpy().tobytes(), batch.next_obs[b].numpy().tobytes(),
                   np.float32(batch.reward[b, 0]), bool(batch.terminated[b, 0]))
            assert key in true, "sampled a pair that is not a transition of one episode"
    assert sampled_ends > 0  # episode ends were sampled: their next_obs is the final obs, not the reset one


@pytest.mark.parametrize("asynchronous", [False, True])
def test_success_info_with_nan_where_not_reported(asynchronous):
    env = GymVecEnv(SuccessEnv, num_envs=2, seed=0, asynchronous=asynchronous)  # env 0 parity 0, env 1 parity 1
    try:
        env.reset()
        got = [env.step(np.zeros((2, 1))).info.get("success") for _ in range(5)]
    finally:
        env.close()
    nan = np.nan
    expected = [[nan, 0.0], [0.0, nan], [nan, 0.0], [1.0, nan], [nan, nan]]  # step 5: both autoreset
    for g, e in zip(got[:4], expected[:4]):
        assert g.dtype == np.float32 and g.shape == (2,)
        np.testing.assert_array_equal(g, e)
    assert got[4] is None or np.isnan(got[4]).all()


def test_deterministic_from_seed():
    def rollout(seed, asynchronous):
        env = GymVecEnv(humanoid(), num_envs=2, seed=seed, asynchronous=asynchronous)
        try:
            out = [env.reset()]
            for action in random_actions(60, 2, env.act_dim):
                s = env.step(action)
                out += [s.obs, s.reward, s.terminated, s.truncated, s.valid]
            out.append(env.reset())  # a later reset continues each env's generator; it does not reseed
        finally:
            env.close()
        return out

    a, b, c = rollout(11, True), rollout(11, False), rollout(12, True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[-1])


def test_gym_family():
    assert "Humanoid-v5" in gym_vec.known() and "Walker2d-v5" in gym_vec.known()
    env = gym_vec.make_gym("Humanoid-v5", 1, 0)
    try:
        assert (env.obs_dim, env.act_dim) == (348, 17)
        assert env.reset().shape == (1, 348)
    finally:
        env.close()


@pytest.mark.skipif(importlib.util.find_spec("flowrl.envs.dmc") is None, reason="flowrl.envs.dmc not written yet")
def test_make_env_gym_task():
    from flowrl.envs.registry import make_env

    env = make_env("gym/Humanoid-v5", num_envs=1, seed=0)
    try:
        assert env.reset().shape == (1, 348)
    finally:
        env.close()
    with pytest.raises(UserError, match="unknown task"):
        make_env("gym/NoSuchEnv-v5")
