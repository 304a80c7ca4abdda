"""The Trainer's wiring, on a scripted vector env whose every observation names its env, episode and step.

What reaches the replay buffer on ordinary, terminating, truncating and autoreset steps; the row that closes each
stream at a checkpoint; the envs' seeds per segment; resume during warm-up and with a fractional update ratio. The
agent is a recording stub: these tests pin the runner, not learning (real envs and agents are tested elsewhere).
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from components import ReplayBuffer
from flowrl.run.checkpoints import list_checkpoints
from flowrl.envs.base import Step
from flowrl.errors import UserError
from flowrl.trainer import build_trainer

N, ACT = 2, 2  # training envs; eval uses 1 env, which tells the two kinds of env apart


def episode_length(env: int, episode: int) -> int:
    return 2 + (env + 2 * episode) % 4


def ends_terminated(env: int, episode: int) -> bool:
    return (env + episode) % 2 == 0  # otherwise the episode is truncated


class ScriptedVecEnv:
    """Observation row ``(seed, env, episode, t)``; reward ``1 + t + 10 * episode + 100 * env`` on real steps.

    Episode ``k`` of env ``i`` lasts ``episode_length(i, k)`` steps and ends terminated or truncated as
    ``ends_terminated`` says (so the envs' ends are staggered). Next-step autoreset like the real adapters: the step
    after an end ignores its action and returns the reset observation, reward 0, no flags, ``valid=False``.
    ``transitions[i]`` logs env ``i``'s real transitions ``(obs, action, reward, next_obs, terminated, truncated)``.
    """

    obs_dim, act_dim = 4, ACT

    def __init__(self, num_envs: int, seed: int, sigterm_after: int = 0):
        self.num_envs, self.seed, self.sigterm_after = num_envs, seed, sigterm_after
        self.episode = np.full(num_envs, -1)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.ended = np.zeros(num_envs, dtype=bool)
        self.transitions: list[list[tuple]] = [[] for _ in range(num_envs)]
        self.resets: list[np.ndarray] = []  # every observation that starts an episode, per step: (num_envs, 4) rows
        self.last_obs: np.ndarray | None = None
        self.steps, self.closed = 0, False

    def _obs(self) -> np.ndarray:
        i = np.arange(self.num_envs)
        return np.stack([np.full(self.num_envs, self.seed), i, self.episode, self.t], axis=1).astype(np.float32)

    def reset(self) -> np.ndarray:
        assert not self.closed
        self.episode += 1
        self.t[:] = 0
        self.ended[:] = False
        self.last_obs = self._obs()
        self.resets.extend(self.last_obs)
        return self.last_obs.copy()

    def step(self, action: np.ndarray) -> Step:
        assert not self.closed and self.last_obs is not None, "step before reset or after close"
        action = np.asarray(action, dtype=np.float64)
        assert action.shape == (self.num_envs, ACT) and np.all(np.abs(action) <= 1)
        valid = ~self.ended
        reward = np.zeros(self.num_envs, np.float32)
        terminated, truncated = np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool)
        for i in range(self.num_envs):
            if not valid[i]:  # autoreset: the action is ignored
                self.episode[i] += 1
                self.t[i] = 0
                continue
            self.t[i] += 1
            reward[i] = 1 + self.t[i] + 10 * self.episode[i] + 100 * i
            if self.t[i] == episode_length(i, self.episode[i]):
                terminated[i] = ends_terminated(i, self.episode[i])
                truncated[i] = not terminated[i]
        obs = self._obs()
        for i in range(self.num_envs):
            if valid[i]:
                self.transitions[i].append(
                    (*self.last_obs[i], *action[i].astype(np.float32), reward[i], *obs[i], terminated[i], truncated[i])
                )
            else:
                self.resets.append(obs[i])
        self.ended = terminated | truncated
        self.last_obs = obs
        self.steps += 1
        if self.steps == self.sigterm_after:  # as if the job were cancelled here
            os.kill(os.getpid(), signal.SIGTERM)
        return Step(obs.copy(), reward, terminated, truncated, valid.copy())

    def close(self) -> None:
        self.closed = True


def policy(obs: np.ndarray) -> np.ndarray:
    """The stub agent's action: a deterministic function of the observation, never a uniform draw."""
    obs = np.asarray(obs, dtype=np.float64)
    return np.tanh(np.stack([0.1 * obs[:, 3] + 0.3 * obs[:, 1] + 0.05, 0.2 * obs[:, 2] - 0.5 * obs[:, 1] - 0.05], 1))


class RecordingAgent:
    """Acts with ``policy``; ``update`` records the batch it was given (into ``log``) and returns one finite metric."""

    def __init__(self, obs_dim: int, act_dim: int, device=None, amp_dtype=None, log: dict | None = None):
        self.log = log if log is not None else {}
        self.log.setdefault("batches", [])
        self.log.setdefault("acted_on", [])
        self.num_updates = 0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        if len(obs) == N:  # training acts on N envs, evaluation on 1
            self.log["acted_on"].append(np.array(obs))
        return policy(obs)

    def update(self, batch) -> dict[str, float]:
        self.log["batches"].append({k: v.clone() for k, v in batch._asdict().items()})
        self.num_updates += 1
        return {"critic/loss": float(batch.reward.mean())}

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = state["num_updates"]

    def compile(self) -> None:
        pass


class Run:
    """One Trainer on the scripted env, with everything it built kept for inspection."""

    def __init__(self, run_dir: Path, sigterm_after: int = 0, **kwargs):
        self.envs: list[ScriptedVecEnv] = []
        self.sigterm_after = sigterm_after
        self.log: dict = {}
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # tools/run.py makes the run folder before the Trainer
        settings = dict(
            seed=3, device="cpu", num_envs=N, total_steps=40, warmup_steps=8, batch_size=4, eval_every=0,
            eval_episodes=1, checkpoint_every=0, log_every=0, display=False, updates_per_step=1.0, num_threads=1,
        )
        settings.update(kwargs)
        self.trainer = build_trainer(
            run_dir, agent=functools.partial(RecordingAgent, log=self.log),
            buffer=functools.partial(ReplayBuffer, capacity=1000), env_fn=self._make_env, **settings,
        )

    def _make_env(self, num_envs: int, seed: int) -> ScriptedVecEnv:
        env = ScriptedVecEnv(num_envs, seed, self.sigterm_after if num_envs == N else 0)
        self.envs.append(env)
        return env

    @property
    def training_envs(self) -> list[ScriptedVecEnv]:
        """The envs that were stepped as training envs, in order (not evaluation envs, not the unused ones)."""
        return [e for e in self.envs if e.num_envs == N and e.steps > 0]

    def expected(self, env: int) -> list[tuple]:
        """Env ``env``'s real transitions over every segment, in order."""
        return [t for e in self.training_envs for t in e.transitions[env]]


def stored(buffer: ReplayBuffer, env: int) -> list[tuple]:
    """The transitions the buffer holds for stream ``env``, in order: valid rows and their successor's obs."""
    assert buffer.size < buffer.rows, "the test buffer must not wrap"
    out = []
    for r in range(buffer.size - 1):
        if buffer.valid[r, env]:
            out.append((*buffer.obs[r, env].tolist(), *buffer.action[r, env].tolist(), buffer.reward[r, env].item(),
                        *buffer.obs[r + 1, env].tolist(), bool(buffer.terminated[r, env]),
                        bool(buffer.truncated[r, env])))
    return out


def as_floats(transitions: list[tuple]) -> list[tuple]:
    return [tuple(float(x) if not isinstance(x, (bool, np.bool_)) else bool(x) for x in t) for t in transitions]


def rows(buffer: ReplayBuffer, env: int, start: int, stop: int) -> dict[str, list]:
    """Raw rows ``start:stop`` of stream ``env``: the obs as (seed, env, episode, t) tuples and the flags."""
    sl = slice(start, stop)
    return {
        "obs": [tuple(int(x) for x in o) for o in buffer.obs[sl, env].tolist()],
        "reward": buffer.reward[sl, env].tolist(),
        "terminated": buffer.terminated[sl, env].tolist(),
        "truncated": buffer.truncated[sl, env].tolist(),
        "valid": buffer.valid[sl, env].tolist(),
    }


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Run:
    run = Run(tmp_path_factory.mktemp("plain"))
    run.trainer.train()
    return run


# ------------------------------------------------------------------------------------------ what reaches the buffer
def test_first_rows_by_hand(plain_run):
    # env 0: episode 0 lasts 2 steps and terminates; env 1: episode 0 lasts 3 steps and is truncated.
    buf, s = plain_run.trainer.buffer, 3
    assert rows(buf, 0, 0, 5) == {
        "obs": [(s, 0, 0, 0), (s, 0, 0, 1), (s, 0, 0, 2), (s, 0, 1, 0), (s, 0, 1, 1)],
        "reward": [2.0, 3.0, 0.0, 12.0, 13.0],  # the autoreset row carries reward 0
        "terminated": [False, True, False, False, False],
        "truncated": [False, False, False, False, False],
        "valid": [True, True, False, True, True],
    }
    assert rows(buf, 1, 0, 5) == {
        "obs": [(s, 1, 0, 0), (s, 1, 0, 1), (s, 1, 0, 2), (s, 1, 0, 3), (s, 1, 1, 0)],
        "reward": [102.0, 103.0, 104.0, 0.0, 112.0],
        "terminated": [False, False, False, False, False],
        "truncated": [False, False, True, False, False],
        "valid": [True, True, True, False, True],
    }


def test_buffer_holds_exactly_the_real_transitions_in_order(plain_run):
    buf = plain_run.trainer.buffer
    for i in range(N):
        expected = plain_run.expected(i)
        assert stored(buf, i) == as_floats(expected)
        flags = {(t[-2], t[-1]) for t in expected}
        assert flags == {(False, False), (True, False), (False, True)}  # ordinary, terminating, truncating rows seen
        for t in expected:
            assert t[:4] != t[7:11]  # obs is never next_obs (the scripted t always advances on a real step)


def test_autoreset_steps_are_never_sampled(plain_run):
    buf = plain_run.trainer.buffer
    real = {t for i in range(N) for t in as_floats(plain_run.expected(i))}
    batch = buf.sample(2000)
    drawn = {
        tuple(float(x) for x in (*o, *a, r, *o2)) + (bool(te), bool(tr))
        for o, a, r, o2, te, tr in zip(batch.obs.tolist(), batch.action.tolist(), batch.reward[:, 0].tolist(),
                                       batch.next_obs.tolist(), batch.terminated[:, 0].tolist(),
                                       batch.truncated[:, 0].tolist())
    }  # fmt: skip
    assert drawn <= real
    assert len(drawn) > 0.9 * len(real)  # 2000 draws of ~40 transitions reach nearly all of them
    # No sampled transition starts from an episode's final observation (that is the autoreset step's row).
    finals = {t[7:11] for t in real if t[-2] or t[-1]}
    assert not any(d[:4] in finals for d in drawn)


def test_warmup_acts_at_random_then_the_agent_acts_on_the_current_obs(plain_run):
    buf, warmup = plain_run.trainer.buffer, 8
    warm_rows = warmup // N
    acted = np.concatenate(plain_run.log["acted_on"])
    np.testing.assert_array_equal(acted, buf.obs[warm_rows:buf.size - 1].reshape(-1, 4).numpy())
    for r in range(buf.size - 1):
        obs, action = buf.obs[r].numpy(), buf.action[r].numpy()
        if r < warm_rows:
            assert not np.allclose(action, policy(obs), atol=1e-3)
        else:
            np.testing.assert_allclose(action, policy(obs), rtol=1e-6)


def test_updates_start_after_warmup_and_sample_the_buffer(plain_run):
    trainer, log = plain_run.trainer, plain_run.log
    assert len(log["batches"]) == trainer.agent.num_updates == 40 - 8  # one per env step after warm-up
    real = {t[:4] for i in range(N) for t in as_floats(plain_run.expected(i))}
    for batch in log["batches"]:
        assert batch["obs"].shape == (4, 4)
        assert {tuple(o) for o in batch["obs"].tolist()} <= real


# ---------------------------------------------------------------------------------------- checkpoints and segments
@pytest.fixture(scope="module")
def segmented_run(tmp_path_factory) -> Run:
    run = Run(tmp_path_factory.mktemp("segments"), checkpoint_every=10, total_steps=30)
    run.trainer.train()
    return run


def test_each_checkpoint_closes_every_stream_with_the_true_final_observation(segmented_run):
    buf, envs = segmented_run.trainer.buffer, segmented_run.training_envs
    assert len(envs) == 3 and all(e.steps == 5 for e in envs) and all(e.closed for e in envs)
    for i in range(N):
        assert stored(buf, i) == as_floats(segmented_run.expected(i))
    for k, env in enumerate(envs):
        closing = 6 * k + 5  # each segment: 5 step rows, then its closing row
        for i in range(N):
            assert buf.obs[closing, i].tolist() == env.last_obs[i].tolist()  # the obs the last step returned
            assert not buf.valid[closing, i]
            assert buf.reward[closing, i] == 0 and not buf.terminated[closing, i] and not buf.truncated[closing, i]
            if k + 1 < len(envs):  # the next row is the next segment's first reset observation
                assert buf.obs[closing + 1, i].tolist() == envs[k + 1].resets[i].tolist()
    assert buf.size == 18


def test_every_segment_has_its_own_env_seed(tmp_path, segmented_run):
    seeds = [e.seed for e in segmented_run.training_envs]
    assert seeds[0] == 3 and len(set(seeds)) == 3
    evals = [e.seed for e in segmented_run.envs if e.num_envs == 1]
    assert evals and not set(evals) & set(seeds)
    other = Run(tmp_path, seed=4, checkpoint_every=10, total_steps=30)
    other.trainer.train()
    assert not {e.seed for e in other.training_envs} & set(seeds)  # another run seed never reuses these streams


# -------------------------------------------------------------------------------------------------------- resume
def resumed(root: Path, stop_at: int, **kwargs) -> tuple[Run, Run, Run]:
    """An uninterrupted run, and the same run stopped at ``stop_at`` then resumed from its checkpoint."""
    full = Run(root / "full", **kwargs)
    full.trainer.train()
    first = Run(root / "part", **{**kwargs, "total_steps": stop_at})
    first.trainer.train()
    second = Run(root / "part", **kwargs)
    second.trainer.load(list_checkpoints(root / "part")[-1])
    second.trainer.train()
    return full, first, second


def assert_same_history(full: Run, first: Run, second: Run) -> None:
    for k in ("obs", "action", "reward", "terminated", "truncated", "valid"):
        assert getattr(second.trainer.buffer, k).equal(getattr(full.trainer.buffer, k)), k
    assert [e.seed for e in first.training_envs + second.training_envs] == [e.seed for e in full.training_envs]
    batches = first.log["batches"] + second.log["batches"]
    assert len(batches) == len(full.log["batches"]) == second.trainer.agent.num_updates
    for a, b in zip(batches, full.log["batches"]):
        assert all(a[k].equal(b[k]) for k in a)


def test_resume_during_warmup_reproduces_the_run(tmp_path):
    full, first, second = resumed(tmp_path, stop_at=6, checkpoint_every=6, warmup_steps=12, total_steps=24)
    assert_same_history(full, first, second)
    assert len(full.log["batches"]) == 24 - 12
    assert first.log["batches"] == [] and first.log["acted_on"] == []  # no update, no policy action in warm-up
    buf = full.trainer.buffer
    # rows 0-2: segment 1 (3 random steps) and its closing row 3; rows 4-6: segment 2, still warm-up (env steps 6-12)
    for r in range(7):
        assert not np.allclose(buf.action[r].numpy(), policy(buf.obs[r].numpy()), atol=1e-3)
    np.testing.assert_allclose(buf.action[8].numpy(), policy(buf.obs[8].numpy()), rtol=1e-6)  # segment 3


def test_resume_with_a_fractional_update_ratio_owes_the_same_updates(tmp_path):
    # 0.25 updates per env step x 2 envs = half an update per vector step: the checkpoint at 10 holds half an update.
    full, first, second = resumed(tmp_path, stop_at=10, checkpoint_every=10, warmup_steps=4, total_steps=40,
                                  updates_per_step=0.25)
    assert_same_history(full, first, second)
    assert len(full.log["batches"]) == (40 - 4) * 0.25 == 9
    assert len(first.log["batches"]) == 1  # env steps 6 and 8 after warm-up: one update, half a one owed


def test_sigterm_closes_every_stream_and_the_run_resumes(tmp_path):
    first = Run(tmp_path, sigterm_after=5, total_steps=30)
    first.trainer.train()
    assert first.trainer.stopped and first.trainer.env_steps == 10
    assert len(list_checkpoints(tmp_path)) == 1
    second = Run(tmp_path, total_steps=30)
    second.trainer.load(list_checkpoints(tmp_path)[-1])
    assert second.trainer.env_steps == 10
    second.trainer.train()
    buf, envs = second.trainer.buffer, first.training_envs + second.training_envs
    assert [e.steps for e in envs] == [5, 10] and envs[0].seed != envs[1].seed
    for i in range(N):
        assert stored(buf, i) == as_floats([t for e in envs for t in e.transitions[i]])
        assert buf.obs[5, i].tolist() == envs[0].last_obs[i].tolist() and not buf.valid[5, i]  # the closing row
    assert len(first.log["batches"]) + len(second.log["batches"]) == 30 - 8


def test_an_agent_without_the_interface_is_refused_in_one_line(tmp_path):
    class Lacking:
        def __init__(self, *args, **kwargs):
            self.num_updates = 0

        def act(self, obs, deterministic=False):
            return policy(obs)

    with pytest.raises(UserError, match=r"Lacking, which lacks update, compile, state_dict, load_state_dict .*fix: "):
        build_trainer(tmp_path, agent=Lacking, buffer=functools.partial(ReplayBuffer, capacity=1000),
                env_fn=lambda num_envs, seed: ScriptedVecEnv(num_envs, seed, 0), seed=0, device="cpu", num_envs=N,
                total_steps=10, warmup_steps=2, batch_size=2, eval_every=0, checkpoint_every=0, log_every=0,
                display=False)
