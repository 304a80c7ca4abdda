"""EnvpoolDMC pinned from outside: observations equal dm_control's value for value (humanoid, dog, walker), ``valid`` is
False exactly on the step after each episode end per env with staggered ends (also for the dm_control fallback, which
runs without envpool), and env ``i`` is envpool's env ``i``.

envpool and dm_control draw different initial states for the same seed, so dm_control's physics is set to envpool's
initial state, recovered from envpool's raw (float64, per-key) reset observation: every observation key is then
computed by dm_control itself and flattened in dm_control's own key order, independently of the adapter.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from flowrl.envs.dmc import DMControlVecEnv, EnvpoolDMC  # first: it keeps dm_control's GL probe quiet when headless

from dm_control import suite  # noqa: I001

try:
    import envpool  # noqa: F401
except ImportError:
    envpool = None
needs_envpool = pytest.mark.skipif(envpool is None, reason="envpool is not installed (pip install envpool==1.2.5)")


class Tap:
    """Wraps the adapter's envpool handle and keeps every raw observation dict it returned."""

    def __init__(self, env):
        self.env, self.seen = env, []

    def reset(self, *args, **kwargs):
        out = self.env.reset(*args, **kwargs)
        self.seen.append({k: np.array(v[0]) for k, v in out[0].items()})
        return out

    def step(self, *args, **kwargs):
        out = self.env.step(*args, **kwargs)
        self.seen.append({k: np.array(v[0]) for k, v in out[0].items()})
        return out

    def __getattr__(self, name):
        return getattr(self.env, name)


# ----------------------------------------------------------- dm_control physics set to envpool's initial state
# Each setter gets dm_control's env and envpool's raw reset observation of one env. All three tasks start at rest
# apart from the dog's root velocities, and every observation is invariant to the root's x, y (and, except for world-
# frame velocities, to its heading), so these observations determine the state up to those symmetries.
def set_walker(env, raw: dict, yaw: float = 0.0) -> None:
    """Planar walker: body angles are integer combinations of (rooty, 6 joints), read off by unit perturbations."""
    physics = env.physics

    def angles(q: np.ndarray) -> np.ndarray:
        with physics.reset_context():
            physics.data.qpos[2:] = q
        m = physics.named.data.xmat[1:, ["xx", "xz"]]
        return np.arctan2(m[:, 1], m[:, 0])

    base = angles(np.zeros(7))
    lin = np.round(np.stack([angles(e) - base for e in 0.1 * np.eye(7)], 1) / 0.1)
    m = raw["orientations"].reshape(7, 2)
    q = np.linalg.solve(lin, np.arctan2(m[:, 1], m[:, 0]) - base)
    q = (q + np.pi) % (2 * np.pi) - np.pi  # every joint's range lies inside (-pi, pi)
    with physics.reset_context():
        physics.data.qpos[2:] = q
    z0 = physics.named.data.xpos["torso", "z"]
    with physics.reset_context():  # reset_context zeroes the state on entry, so set it all again
        physics.data.qpos[2:] = q
        physics.data.qpos[0] = float(raw["height"]) - z0
        physics.data.qvel[:] = raw["velocity"]


def set_humanoid(env, raw: dict, yaw: float = 0.0) -> None:
    """Joint angles and velocities are observed; the torso's tilt is its z-row; the height comes from the head's."""
    physics = env.physics
    r2 = np.asarray(raw["torso_vertical"], float)
    e = np.array([1.0, 0.0, 0.0]) if abs(r2[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    r0 = e - e.dot(r2) * r2
    r0 /= np.linalg.norm(r0)
    tilt = np.zeros(4)
    mujoco.mju_mat2Quat(tilt, np.stack([r0, np.cross(r2, r0), r2]).ravel())
    quat = np.zeros(4)
    mujoco.mju_mulQuat(quat, np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]), tilt)

    def put(z: float) -> None:
        with physics.reset_context():
            physics.data.qpos[2], physics.data.qpos[3:7], physics.data.qpos[7:] = z, quat, raw["joint_angles"]
            physics.data.qvel[:] = raw["velocity"]

    put(0.0)
    put(float(raw["head_height"]) - physics.named.data.xpos["head", "z"])


def set_dog(env, raw: dict, yaw: float = 0.0) -> None:
    """Default pose, observed joints and actuator states; the root's horizontal and yaw velocities (random in
    dm_control's dog) solved from the torso-frame centre-of-mass velocity, velocimeter and gyro (linear in them)."""
    physics, task = env.physics, env.task
    hinge = physics.model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE

    def put(root_vel: np.ndarray) -> np.ndarray:
        with physics.reset_context():
            physics.data.qpos[physics.model.jnt_qposadr[hinge]] = raw["joint_angles"]
            physics.data.qvel[physics.model.jnt_dofadr[hinge]] = raw["joint_velocites"]
            physics.data.qvel[[0, 1, 5]] = root_vel
            physics.data.act[:] = raw["actuator_state"]
        obs = task.get_observation(physics)
        return np.concatenate([obs["torso_com_velocity"], obs["inertial_sensors"][3:]])

    target = np.concatenate([raw["torso_com_velocity"], raw["inertial_sensors"][3:]])
    base = put(np.zeros(3))
    lin = np.stack([put(e) - base for e in np.eye(3)], 1)
    put(np.linalg.lstsq(lin, target - base, rcond=None)[0])


def flat(obs: dict) -> np.ndarray:
    """dm_control's observation flattened in dm_control's own key order."""
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in obs.values()]).astype(np.float32)


# steps compared, tolerance: see the test's docstring
CASES = {"walker-run": (set_walker, 10, 1e-6), "humanoid-run": (set_humanoid, 10, 1e-6), "dog-run": (set_dog, 4, 1e-3)}


@needs_envpool
@pytest.mark.parametrize("task", list(CASES))
def test_observations_equal_dm_controls_value_for_value(task):
    """Reset and a few identical random actions, every observation entry and reward compared.

    Tolerances, from what was observed: walker and humanoid agree with dm_control to ~1e-13 in float64 and bit for
    bit after the cast to float32 (same MuJoCo dynamics, no contact at the start); 1e-6 leaves room for a last-ulp
    difference on another CPU. The dog starts standing on the floor: MuJoCo's iterative contact solver lands within
    ~7e-5 of dm_control over the first 4 steps (velocities, forces up to ~80) and the trajectories drift apart
    chaotically after ~15 steps, so the dog is compared for 4 steps at 1e-3. A wrong key order or slice is off by
    O(0.1-10).
    """
    setter, steps, tol = CASES[task]
    domain, name = task.split("-")
    fast = EnvpoolDMC(task, num_envs=1, seed=5)
    tap = fast.env = Tap(fast.env)
    plain = suite.load(domain, name, task_kwargs={"random": 0})
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, (steps, 1, fast.act_dim))
        got, rewards = [fast.reset()[0]], []
        for a in actions:
            step = fast.step(a)
            assert step.valid.all() and not (step.terminated | step.truncated).any()
            got.append(step.obs[0])
            rewards.append(step.reward[0])
        plain.reset()
        yaw = 0.0
        if domain == "humanoid":  # its heading is unobservable at rest: read it off the first step's world velocity
            setter(plain, tap.seen[0])
            probe = plain.step(actions[0, 0]).observation["com_velocity"]
            seen = tap.seen[1]["com_velocity"]
            yaw = np.arctan2(seen[1], seen[0]) - np.arctan2(probe[1], probe[0])
        setter(plain, tap.seen[0], yaw=yaw)
        expected, expected_rewards = [flat(plain.task.get_observation(plain.physics))], []
        for a in actions:
            ts = plain.step(a[0])
            expected.append(flat(ts.observation))
            expected_rewards.append(ts.reward)
        assert got[0].shape == expected[0].shape
        for t, (a, b) in enumerate(zip(got, expected)):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{task}, step {t}")
        np.testing.assert_allclose(rewards, expected_rewards, rtol=tol, atol=tol)
        assert np.abs(np.diff(expected, axis=0)).max() > 1e-2  # the steps moved the state: not a trivial comparison
    finally:
        fast.close()
        plain.close()


# ------------------------------------------------------------------------------------------------- autoreset
def restart_envpool(env: EnvpoolDMC, i: int) -> None:
    env.env.reset(np.array([i]))  # envpool restarts a subset of its envs in place, even in synchronous mode


def restart_dm_control(env: DMControlVecEnv, i: int) -> None:
    env.envs[i].reset()


@pytest.mark.parametrize(
    "backend, restart",
    [pytest.param(EnvpoolDMC, restart_envpool, marks=needs_envpool, id="envpool"),
     pytest.param(DMControlVecEnv, restart_dm_control, id="dm_control")],
)  # fmt: skip
def test_valid_is_false_exactly_on_the_step_after_each_end_per_env(backend, restart):
    n, horizon, steps = 3, 5, 24
    env = backend("cheetah-run", num_envs=n, seed=2, max_episode_steps=horizon)
    env.reset()
    # Stagger the episodes by restarting some envs mid-episode (their time limit then counts from there): the adapter
    # sees nothing unusual, since those envs had not ended.
    restart_after = {1: [1], 3: [2]}  # step -> envs restarted after it
    elapsed, pending = np.zeros(n, int), np.zeros(n, bool)  # our own count, independent of the adapter's flags
    rng = np.random.default_rng(0)
    ends = [[] for _ in range(n)]
    try:
        for t in range(1, steps + 1):
            step = env.step(rng.uniform(-1, 1, (n, env.act_dim)))
            for i in range(n):
                if pending[i]:  # the step after an end
                    assert not step.valid[i] and step.reward[i] == 0, (t, i)
                    assert not step.truncated[i] and not step.terminated[i]
                    pending[i], elapsed[i] = False, 0
                    continue
                elapsed[i] += 1
                assert step.valid[i], (t, i)
                assert not step.terminated[i]
                assert step.truncated[i] == (elapsed[i] == horizon), (t, i)
                if elapsed[i] == horizon:
                    pending[i] = True
                    ends[i].append(t)
            for i in restart_after.get(t, []):
                restart(env, i)
                elapsed[i] = 0
    finally:
        env.close()
    assert ends == [[5, 11, 17, 23], [6, 12, 18, 24], [8, 14, 20]]  # staggered: no two envs end together


@pytest.mark.parametrize("backend", [pytest.param(EnvpoolDMC, marks=needs_envpool, id="envpool"),
                                     pytest.param(DMControlVecEnv, id="dm_control")])  # fmt: skip
def test_reset_right_after_an_end_starts_clean_episodes(backend):
    env = backend("cheetah-run", num_envs=2, seed=0, max_episode_steps=3)
    try:
        env.reset()
        for _ in range(3):
            step = env.step(np.zeros((2, env.act_dim)))
        assert step.truncated.all()
        env.reset()  # no autoreset step is owed after an explicit reset
        for _ in range(3):
            step = env.step(np.zeros((2, env.act_dim)))
            assert step.valid.all()
        assert step.truncated.all()
    finally:
        env.close()


@needs_envpool
def test_env_order_is_envpools():
    """Env ``i`` of a batch seeded ``s`` is envpool's env seeded ``s + i``: same reset, same response to its action."""
    n, seed = 3, 11
    batch = EnvpoolDMC("cheetah-run", num_envs=n, seed=seed)
    singles = [EnvpoolDMC("cheetah-run", num_envs=1, seed=seed + i) for i in range(n)]
    try:
        obs = batch.reset()
        for i, single in enumerate(singles):
            np.testing.assert_array_equal(obs[i], single.reset()[0])
        assert not np.allclose(obs[0], obs[1])
        rng = np.random.default_rng(1)
        for _ in range(5):
            action = rng.uniform(-1, 1, (n, batch.act_dim))  # a different action per env
            step = batch.step(action)
            for i, single in enumerate(singles):
                own = single.step(action[i:i + 1])
                np.testing.assert_array_equal(step.obs[i], own.obs[0])
                assert step.reward[i] == own.reward[0]
    finally:
        for env in [batch, *singles]:
            env.close()
