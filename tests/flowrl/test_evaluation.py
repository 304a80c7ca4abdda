"""evaluate(): one episode per env, returns, lengths and the success rate where the task reports it."""

import numpy as np
from test_gym_vec import SuccessEnv, humanoid

from flowrl.envs.gym_vec import GymVecEnv
from flowrl.evaluation import evaluate


def test_success_rate_counts_an_episode_that_ever_reported_success():
    env = GymVecEnv(SuccessEnv, num_envs=2, seed=0, asynchronous=False)  # env 0 succeeds at t=4, env 1 never
    try:
        result = evaluate(lambda obs: np.zeros((2, 1)), env)
    finally:
        env.close()
    assert result == {"return_mean": 4.0, "return_std": 0.0, "length_mean": 4.0, "success_rate": 0.5}


def test_no_success_key_when_the_task_reports_none_and_falls_end_episodes():
    env = GymVecEnv(humanoid(max_episode_steps=1000), num_envs=2, seed=0, asynchronous=False)
    try:
        result = evaluate(lambda obs: np.random.default_rng(0).uniform(-1, 1, (2, 17)), env)
    finally:
        env.close()
    assert "success_rate" not in result
    assert 0 < result["length_mean"] < 1000  # Humanoid-v5 falls under random actions: terminations end episodes
