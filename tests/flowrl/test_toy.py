"""The toy family (flowrl/envs/toy.py): rewards, ends and mode labels worked by hand; eval/modes_covered; every agent
on every toy task through tools/run.py."""

import numpy as np
import pytest
from test_configs import AGENTS, TINY, agent_class, run_py, widths

from flowrl.config import parse
from flowrl.envs import toy
from flowrl.envs.registry import known_tasks, make_env
from flowrl.errors import UserError
from flowrl.evaluation import evaluate
from flowrl.run.metrics import read_metrics

R = 0.7 / np.sqrt(2)  # a diagonal bump's coordinates on the ring of radius 0.7


def steps(env, actions):
    """Step a one-env task through ``actions`` (each ``(2,)``); returns the Steps."""
    return [env.step(np.asarray(a, np.float64)[None]) for a in actions]


# ------------------------------------------------------------------------------------------------------ multigoal
def test_multigoal_rewards_and_the_end_at_a_goal_by_hand():
    env = toy.MultiGoal(init_sigma=0.0)  # start exactly at the origin
    np.testing.assert_array_equal(env.reset(), [[0.0, 0.0]])
    # Right at full speed: x = 1, 2, 3, 4; nearest goal (5, 0), d^2 = 16, 9, 4, 1; |a|^2 = 1 costs 30.
    # x = 4 is at distance 1, not inside the radius (strictly less than 1): no bonus, no end.
    # Then half speed: x = 4.5, d^2 = 0.25 < 1: -30 * 0.25 - 0.25 + 10 = 2.25, terminated, goal 0.
    # The action (3, 0) is clipped to (1, 0).
    out = steps(env, [(3, 0), (1, 0), (1, 0), (1, 0), (0.5, 0)])
    np.testing.assert_allclose([s.reward[0] for s in out], [-46, -39, -34, -31, 2.25], rtol=1e-6)
    assert [bool(s.terminated[0]) for s in out] == [False] * 4 + [True]
    assert not any(s.truncated[0] for s in out) and all(s.valid[0] for s in out)
    assert [int(s.info["mode"][0]) for s in out] == [-1, -1, -1, -1, 0]
    np.testing.assert_allclose(out[-1].obs, [[4.5, 0.0]])  # the final observation on the step that ends
    # The next step is the autoreset row: the action is ignored, reward 0, not valid, back at the origin.
    after = env.step(np.array([[1.0, 1.0]]))
    assert (after.reward[0], after.valid[0], after.terminated[0], after.info["mode"][0]) == (0.0, False, False, -1)
    np.testing.assert_array_equal(after.obs, [[0.0, 0.0]])
    # Up-right from the origin: (1, 1) is 4^2 + 1^2 = 17 from both (5, 0) and (0, 5); |a|^2 = 2 costs 60.
    assert env.step(np.array([[1.0, 1.0]])).reward[0] == pytest.approx(-77)


@pytest.mark.parametrize("direction, goal", [((1, 0), 0), ((-1, 0), 1), ((0, 1), 2), ((0, -1), 3)])
def test_multigoal_labels_each_goal(direction, goal):
    env = toy.MultiGoal(init_sigma=0.0)
    env.reset()
    out = steps(env, [direction] * 5)  # at 4 (distance 1, not inside), then at 5 on the goal: d^2 = 0, +10 - 30
    assert [int(s.info["mode"][0]) for s in out] == [-1] * 4 + [goal]
    assert out[-1].terminated[0] and out[-1].reward[0] == pytest.approx(-20)


def test_multigoal_truncates_at_the_time_limit_and_stays_in_bounds():
    env = toy.MultiGoal(init_sigma=0.0, max_episode_steps=3)
    env.reset()
    out = steps(env, [(0, 0)] * 3)  # standing at the origin: 25 from every goal, no action cost
    np.testing.assert_allclose([s.reward[0] for s in out], [-25, -25, -25])
    assert [bool(s.truncated[0]) for s in out] == [False, False, True] and not any(s.terminated[0] for s in out)
    assert out[-1].info["mode"][0] == -1 and not env.step(np.zeros((1, 2))).valid[0]
    env = toy.MultiGoal(init_sigma=0.0)
    env.reset()
    out = steps(env, [(1, 1)] * 9)  # (1, 1), ..., (7, 7), then clipped at the bound: still (7, 7)
    np.testing.assert_allclose(out[-1].obs, [[7.0, 7.0]])
    assert out[-1].reward[0] == pytest.approx(-60 - (2**2 + 7**2))  # d^2 = 53 to (5, 0) and to (0, 5)


def test_multigoal_starts_near_the_origin_from_its_seed_and_many_envs_step_apart():
    a, b, c = (toy.MultiGoal(num_envs=3, seed=s) for s in (1, 1, 2))
    start = a.reset()
    np.testing.assert_array_equal(start, b.reset())
    assert not np.allclose(start, c.reset()) and np.abs(start).max() < 0.5  # init_sigma 0.1
    out = a.step(np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]))
    np.testing.assert_allclose(out.obs, start + [[1, 0], [0, 0], [-1, 0]], atol=1e-6)
    np.testing.assert_allclose(a.position_reward(np.array([[0.0, 0.0], [5.0, 0.5]])), [-25, 10 - 0.25])


# -------------------------------------------------------------------------------------------------------- bandits
def test_ring_bandit_rewards_modes_and_one_step_episodes_by_hand():
    env = make_env("toy/ring-bandit", num_envs=6, seed=0)
    assert (env.obs_dim, env.act_dim) == (1, 2)
    np.testing.assert_array_equal(env.reset(), np.zeros((6, 1)))
    actions = np.array([
        [0.7, 0.0],    # on bump 0: 1 (each neighbour, 0.536 away, adds exp(-14.3) = 6e-7)
        [0.0, 0.7],    # on bump 2 (90 degrees): 1
        [0.85, 0.0],   # 0.15 from bump 0, inside two widths (0.2): exp(-0.15^2 / 0.02) = exp(-1.125) = 0.3247
        [0.95, 0.0],   # 0.25 from bump 0, outside: exp(-3.125) = 0.0439, no mode
        [5.0, 0.0],    # clipped to (1, 0): 0.3 from bump 0, exp(-4.5) = 0.0111, no mode
        [0.0, 0.0],    # the centre, 0.7 from all eight: 8 exp(-24.5), no mode
    ])  # fmt: skip
    first = env.step(actions)
    np.testing.assert_allclose(first.reward, [1, 1, 0.3247, 0.0439, 0.0111, 0], atol=2e-4)
    np.testing.assert_array_equal(first.info["mode"], [0, 2, 0, -1, -1, -1])
    assert first.terminated.all() and not first.truncated.any() and first.valid.all()
    autoreset = env.step(actions)  # the row after a one-step episode: ignored
    assert not autoreset.valid.any() and not autoreset.terminated.any() and (autoreset.reward == 0).all()
    assert (autoreset.info["mode"] == -1).all()
    again = env.step(actions)
    np.testing.assert_array_equal(again.reward, first.reward)
    assert again.valid.all() and again.terminated.all()


def test_uneven_bandit_has_one_higher_mode():
    env = make_env("toy/uneven-bandit", num_envs=4, seed=0)
    env.reset()
    out = env.step(np.array([[R, R], [-R, R], [-R, -R], [R, -R]]))  # the diagonals, counter-clockwise from 45 deg
    np.testing.assert_allclose(out.reward, [1.0, 0.9, 0.9, 0.9], atol=1e-6)
    np.testing.assert_array_equal(out.info["mode"], [0, 1, 2, 3])
    assert max(toy.uneven_bandit().action_reward(np.random.default_rng(0).uniform(-1, 1, (5000, 2)))) <= 1 + 1e-6


def test_the_toy_family_is_registered_and_refuses_unknown_names():
    assert {"toy/multigoal", "toy/ring-bandit", "toy/uneven-bandit"} <= set(known_tasks())
    with pytest.raises(UserError, match="unknown task 'toy/nope'; fix: use one of toy/multigoal"):
        make_env("toy/nope")


# ---------------------------------------------------------------------------------------------- modes_covered
def test_modes_covered_counts_distinct_modes_over_episodes():
    bandit = make_env("toy/ring-bandit", num_envs=5, seed=0)
    at = np.array([[0.7, 0.0], [0.7, 0.0], [0.0, -0.7], [0.0, 0.0], [0.0, 0.7]])  # modes 0, 0, 6, none, 2
    assert evaluate(lambda obs: at, bandit)["modes_covered"] == 3.0
    goals = toy.MultiGoal(num_envs=3, seed=0, init_sigma=0.0)
    heading = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # two to goal 0, one standing until the time limit
    result = evaluate(lambda obs: heading, goals)
    assert result["modes_covered"] == 1.0 and result["length_mean"] == pytest.approx((5 + 5 + 30) / 3)


def test_a_task_that_reports_no_modes_has_no_modes_covered():
    class Plain(toy.MultiGoal):
        def step(self, action):
            out = super().step(action)
            out.info = {}
            return out

    assert "modes_covered" not in evaluate(lambda obs: np.zeros((2, 2)), Plain(num_envs=2))


# ------------------------------------------------------------------------------- every agent on every toy task
TOY_TASKS = ["gin/tasks/toy/multigoal.gin", "gin/tasks/toy/ring_bandit.gin", "gin/tasks/toy/uneven_bandit.gin"]
# tests/flowrl/test_configs.py's tiny run, shorter: 200 env steps, 50 updates of batch 16, 4 evaluation episodes.
TOY_TINY = [*TINY, "Trainer.total_steps = 200", "Trainer.warmup_steps = 150", "Trainer.eval_every = 200",
            "Trainer.checkpoint_every = 200", "Trainer.eval_episodes = 4"]  # fmt: skip


@pytest.mark.parametrize("task", TOY_TASKS, ids=lambda p: p.split("/")[-1][:-4])
@pytest.mark.parametrize("agent", AGENTS, ids=lambda p: p.stem)
def test_every_agent_trains_on_every_toy_task_through_run_py(agent, task, tmp_path, capsys, monkeypatch):
    files = [task, str(agent), "gin/smoke.gin"]
    parse(files)
    tiny = [*TOY_TINY, *(f"{name} = 32" for name in widths())]
    err = run_py(capsys, monkeypatch, *(a for f in files for a in ("--gin", f)),
                 *(a for b in tiny for a in ("--bind", b)), "--run-dir", str(tmp_path))
    assert "done: 200 env steps" in err
    assert f"Trainer.agent = @{agent_class(agent)}" in (tmp_path / "config.gin").read_text()
    final = [r for r in read_metrics(tmp_path) if "eval/modes_covered" in r]
    assert final and final[-1]["step"] == 200 and 0 <= final[-1]["eval/modes_covered"] <= 4
