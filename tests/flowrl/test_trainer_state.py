"""The Trainer's state, in process: what ``load`` restores and refuses, the optimiser settings a resume keeps, the
segment seeds, and the logged metric windows. The scripted env and recording agent come from
``test_trainer_wiring.py``; ``test_run.py`` covers the same paths through ``tools/run.py`` in a subprocess.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from components import ReplayBuffer
from flowrl.run.checkpoints import list_checkpoints, load_checkpoint
from flowrl.errors import UserError
from flowrl.run.metrics import read_metrics
from flowrl.trainer import Trainer, build_trainer
from test_trainer_wiring import N, RecordingAgent, Run, ScriptedVecEnv


def finished(tmp_path, **kwargs) -> tuple[Run, dict]:
    """A short run with one checkpoint at its end, and that checkpoint's contents."""
    run = Run(tmp_path / "done", **{"total_steps": 20, **kwargs})
    run.trainer.train()
    return run, load_checkpoint(list_checkpoints(tmp_path / "done")[-1])


def test_load_restores_counters_window_and_both_rngs(tmp_path):
    run, state = finished(tmp_path)
    other = Run(tmp_path / "other", total_steps=20)
    other.trainer.load(list_checkpoints(tmp_path / "done")[-1])
    t = other.trainer
    assert (t.env_steps, t.segment, t.update_debt) == (20, 1, run.trainer.update_debt) and t.env is None
    assert t.window == state["window"] and t.agent.num_updates == 20 - 8
    assert t.rng.bit_generator.state == state["rng"]["trainer"]
    twin = np.random.default_rng()
    twin.bit_generator.state = run.trainer.rng.bit_generator.state
    assert t.rng.uniform() == twin.uniform()
    assert torch.get_rng_state().equal(state["rng"]["global"]["torch"])
    assert np.random.get_state()[1].tolist() == state["rng"]["global"]["numpy"]["state"]["key"].tolist()
    for k in ("obs", "action", "reward", "valid"):
        assert getattr(t.buffer, k).equal(getattr(run.trainer.buffer, k)), k


def test_load_uses_the_given_state_not_the_file(tmp_path):
    _, state = finished(tmp_path)
    state = {**state, "env_steps": 14, "segment": 5}
    other = Run(tmp_path / "other", total_steps=20)
    other.trainer.load(tmp_path / "unread.pt", state=state)  # the path only names the file in messages
    assert (other.trainer.env_steps, other.trainer.segment) == (14, 5)


def test_a_checkpoint_for_other_shapes_names_each_difference(tmp_path):
    _, state = finished(tmp_path)
    path = list_checkpoints(tmp_path / "done")[-1]
    other = Run(tmp_path / "other")
    bad = {**state, "shapes": {"obs_dim": 5, "act_dim": 2, "num_envs": 3}}
    with pytest.raises(UserError) as err:
        other.trainer.load(path, state=bad)
    message = str(err.value)
    assert message.startswith(f"checkpoint '{path}' was written for another task or env count: ")
    assert "obs_dim 5 (now 4), num_envs 3 (now 2); fix: resume with the run's own config.gin" in message
    assert str(path) in message and "act_dim" not in message
    # A checkpoint from before shapes were saved loads (the keys it has are checked elsewhere).
    old = {k: v for k, v in state.items() if k != "shapes"}
    other.trainer.load(path, state=old)
    assert other.trainer.env_steps == 20


def test_a_checkpoint_missing_state_names_the_file_and_the_keys(tmp_path):
    _, state = finished(tmp_path)
    path = list_checkpoints(tmp_path / "done")[-1]
    with pytest.raises(UserError, match=rf"checkpoint '{path}' holds only part of the state \(no buffer, rng\)"):
        Run(tmp_path / "other").trainer.load(path, state={k: v for k, v in state.items() if k not in ("buffer", "rng")})


def test_an_agent_that_rejects_the_state_gives_its_first_line_cut_to_160_characters(tmp_path):
    _, state = finished(tmp_path)
    path = list_checkpoints(tmp_path / "done")[-1]
    other = Run(tmp_path / "other")

    def reject(_state):
        raise RuntimeError("  " + "x" * 170 + "\nsecond line  ")

    other.trainer.agent.load_state_dict = reject
    with pytest.raises(UserError) as err:
        other.trainer.load(path, state=state)
    assert str(err.value) == (
        f"checkpoint '{path}' does not fit this config ({'x' * 160}); fix: resume with the run's own config.gin, "
        f"without --bind of network sizes or ReplayBuffer.capacity"
    )


class AdamAgent:
    """A linear agent with two Adam optimisers (as FlowRL has), to see which settings a resume keeps."""

    def __init__(self, obs_dim, act_dim, device=None, amp_dtype=None, lr=1e-3, betas=(0.9, 0.999)):
        self.net = torch.nn.Linear(obs_dim, act_dim)
        self.other = torch.nn.Linear(obs_dim, 1)
        self.net_optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, betas=betas)
        self.other_optimizer = torch.optim.Adam(self.other.parameters(), lr=lr / 2, betas=betas)
        self.num_updates = 0

    def act(self, obs, deterministic=False):
        with torch.no_grad():
            return torch.tanh(self.net(torch.as_tensor(obs, dtype=torch.float32))).numpy()

    def update(self, batch):
        for optimizer, out in ((self.net_optimizer, self.net(batch.obs)), (self.other_optimizer, self.other(batch.obs))):
            optimizer.zero_grad()
            out.square().mean().backward()
            optimizer.step()
        self.num_updates += 1
        return {"loss": 0.0}

    def state_dict(self):
        return {"net": self.net.state_dict(), "other": self.other.state_dict(), "num_updates": self.num_updates,
                "opt": self.net_optimizer.state_dict(), "opt2": self.other_optimizer.state_dict()}

    def optimizers(self):  # the optional member a resume reads to keep the config's optimiser settings
        return {"net": self.net_optimizer, "other": self.other_optimizer}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.other.load_state_dict(state["other"])
        self.net_optimizer.load_state_dict(state["opt"])
        self.other_optimizer.load_state_dict(state["opt2"])
        self.num_updates = state["num_updates"]

    def compile(self):
        pass


def adam_trainer(run_dir, **agent_kwargs) -> Trainer:
    run = Run(run_dir, total_steps=20)
    run.trainer.agent = AdamAgent(4, 2, **agent_kwargs)
    return run.trainer


def test_a_resume_takes_learning_rate_and_betas_from_its_config_and_adam_moments_from_the_checkpoint(tmp_path):
    first = adam_trainer(tmp_path / "a")
    first.train()
    path = list_checkpoints(tmp_path / "a")[-1]
    saved = load_checkpoint(path)["agent"]["opt"]
    second = adam_trainer(tmp_path / "b", lr=5e-4, betas=(0.5, 0.9))
    second.load(path)
    for optimizer, lr in ((second.agent.net_optimizer, 5e-4), (second.agent.other_optimizer, 2.5e-4)):
        group = optimizer.param_groups[0]
        assert group["lr"] == lr and group["betas"] == (0.5, 0.9)  # the new config's, not the checkpoint's 1e-3
        assert len(group["params"]) == 2
    state = second.agent.net_optimizer.state[second.agent.net.weight]
    assert state["exp_avg"].equal(saved["state"][0]["exp_avg"]) and int(state["step"]) == 12


def test_each_segment_seeds_its_envs_with_seed_plus_10007_per_segment(tmp_path):
    run = Run(tmp_path, seed=11, checkpoint_every=10, total_steps=30)
    run.trainer.train()
    assert [e.seed for e in run.training_envs] == [11, 11 + 10_007, 11 + 2 * 10_007]


def test_each_log_line_holds_the_means_of_its_window_only(tmp_path):
    run = Run(tmp_path, log_every=8, total_steps=24, warmup_steps=8)
    run.trainer.train()
    losses = [float(b["reward"].mean()) for b in run.log["batches"]]  # the stub's critic/loss, update by update
    lines = [r for r in read_metrics(tmp_path) if "critic/loss" in r]
    # one update per env step after warm-up: env steps 9-16 log at 16, 17-24 at 24 (8 updates each)
    assert [r["step"] for r in lines] == [16, 24]
    assert lines[0]["critic/loss"] == pytest.approx(np.mean(losses[:8]))
    assert lines[1]["critic/loss"] == pytest.approx(np.mean(losses[8:]))
    episodes = [r for r in read_metrics(tmp_path) if "train/episode_return" in r]
    assert episodes and all(r["step"] in (8, 16, 24) for r in episodes)
    assert run.trainer.window == {}  # the last log line flushed it; nothing accumulates after


def test_a_checkpoint_holds_the_shapes_and_the_operative_config(tmp_path):
    import gin

    run, state = finished(tmp_path)
    assert state["shapes"] == {"obs_dim": 4, "act_dim": 2, "num_envs": N}
    assert state["config"] == gin.operative_config_str() and state["format"] == 2
    assert set(state) == {"format", "env_steps", "segment", "update_debt", "window", "agent", "buffer", "rng",
                          "shapes", "config"}


def test_training_a_finished_run_again_steps_nothing_and_a_stopped_one_returns_no_evaluation(tmp_path):
    run, _ = finished(tmp_path)
    again = Run(tmp_path / "again", total_steps=20)
    again.trainer.load(list_checkpoints(tmp_path / "done")[-1])
    assert again.trainer.train() == {}
    assert again.trainer.env_steps == 20 and not again.training_envs and again.log["batches"] == []
    stopped = Run(tmp_path / "stopped", sigterm_after=3, total_steps=20)
    assert stopped.trainer.train() == {}  # stopped before any evaluation


def test_a_resumed_run_appends_to_its_metrics_and_holds_each_step_once(tmp_path):
    first = Run(tmp_path, log_every=4, total_steps=12, checkpoint_every=12)
    first.trainer.train()
    second = Run(tmp_path, log_every=4, total_steps=24, checkpoint_every=12)
    second.trainer.load(list_checkpoints(tmp_path)[-1])
    second.trainer.train()
    steps = [r["step"] for r in read_metrics(tmp_path) if "critic/loss" in r]
    assert steps == [12, 16, 20, 24]  # the first run's line at 12 is kept, nothing before it is repeated


def test_episode_returns_and_lengths_are_the_scripted_episodes(tmp_path, monkeypatch):
    """Each episode that ends inside a segment is logged once with its true return and length; an episode cut by a
    checkpoint is not, and the next segment counts from zero."""
    run = Run(tmp_path, checkpoint_every=20, total_steps=40)  # 10 vector steps a segment: episodes after autoresets
    seen: list[tuple[float, float]] = []
    accumulate = run.trainer._accumulate

    def record(metrics):
        if "train/episode_return" in metrics or "train/episode_length" in metrics:
            seen.append((metrics["train/episode_return"], metrics["train/episode_length"]))
        accumulate(metrics)

    monkeypatch.setattr(run.trainer, "_accumulate", record)
    run.trainer.train()
    expected = []
    for env in run.training_envs:
        for transitions in env.transitions:
            total, length = 0.0, 0
            for t in transitions:
                total, length = total + float(t[6]), length + 1
                if t[-2] or t[-1]:  # terminated or truncated
                    expected.append((total, float(length)))
                    total, length = 0.0, 0
    assert len(expected) >= 8 and sorted(seen) == sorted(expected)
    assert {(54.0, 4.0), (45.0, 2.0)} <= set(expected)  # env 0: episodes 1 and 2, each after an autoreset


def test_warmup_actions_are_uniform_on_the_box(tmp_path):
    run = Run(tmp_path, warmup_steps=400, total_steps=400)
    run.trainer.train()
    actions = run.trainer.buffer.action[: 400 // N].reshape(-1, 2).numpy()
    assert actions.min() >= -1 and actions.max() <= 1
    assert abs(actions.mean()) < 0.1 and actions.min() < -0.95 and actions.max() > 0.95
    assert np.mean(actions < 0) == pytest.approx(0.5, abs=0.08)


class RecordingProgress:
    """Stands in for the live display: records what the loop tells it."""

    made: list["RecordingProgress"] = []

    def __init__(self, total_steps, start_step=0, live=True):
        self.args, self.ticks, self.updates, self.last_eval = (total_steps, start_step, live), [], [], None
        RecordingProgress.made.append(self)

    def tick(self, step, updates, force=False):
        self.ticks.append((step, updates))

    def update(self, step, updates):
        self.updates.append((step, updates, self.last_eval))

    def close(self):
        pass


def test_the_display_is_told_the_steps_the_updates_so_far_and_the_last_evaluation(tmp_path, monkeypatch):
    monkeypatch.setattr("flowrl.trainer.Progress", RecordingProgress)
    RecordingProgress.made = []
    first = Run(tmp_path, total_steps=12, checkpoint_every=12, log_every=4, eval_every=8)
    first.trainer.train()
    second = Run(tmp_path, total_steps=20, checkpoint_every=12, log_every=4, eval_every=8)
    second.trainer.load(list_checkpoints(tmp_path)[-1])
    second.trainer.train()
    one, two = RecordingProgress.made
    assert one.args == (12, 0, False) and two.args == (20, 12, False)
    # one tick per vector step (2 env steps); updates counted from this train() call, one per env step after 8
    assert one.ticks == [(2, 0), (4, 0), (6, 0), (8, 0), (10, 2), (12, 4)]
    assert two.ticks == [(14, 2), (16, 4), (18, 6), (20, 8)]
    evals = [r["eval/return_mean"] for r in read_metrics(tmp_path) if "eval/return_mean" in r]
    assert [u[:2] for u in one.updates] == [(4, 0), (8, 0), (8, 0), (12, 4), (12, 4)]
    assert one.updates[-1][2] == evals[1] and two.updates[-1][2] == evals[-1]


def test_a_trainer_built_from_its_parts_alone_has_the_documented_defaults(tmp_path, monkeypatch):
    """Built with nothing but its parts (the defaults read off the object, not the signature)."""
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chosen, compiled = [], []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    monkeypatch.setattr(RecordingAgent, "compile", lambda self: compiled.append(self), raising=False)
    t = build_trainer(tmp_path, agent=RecordingAgent, env_fn=ScriptedVecEnv, buffer=functools.partial(ReplayBuffer,
                                                                                                 capacity=10))
    assert (t.seed, t.num_envs, t.total_steps, t.warmup_steps, t.updates_per_step, t.batch_size) == (
        0, 1, 1_000_000, 5_000, 1.0, 256)
    assert (t.eval_every, t.eval_episodes, t.eval_deterministic, t.checkpoint_every, t.log_every, t.display) == (
        10_000, 5, False, 50_000, 1_000, True)
    assert t.device == torch.device("cuda" if torch.cuda.is_available() else "cpu") and t.env.seed == 0
    assert chosen == [2] and compiled == [] and t.thread_note == ""  # idle cores: torch's own thread count


@pytest.mark.parametrize("load, threads, note", [
    ((3.0, 0.0, 0.0), 1, "cores shared (load 3.0 on 2 cores): torch uses 1 thread; bind Trainer.num_threads to choose"),
    ((0.0, 9.0, 9.0), 2, ""),  # the last minute's load decides: idle now
])  # fmt: skip
def test_the_thread_note_names_the_load_the_cores_and_the_choice(tmp_path, monkeypatch, load, threads, note):
    monkeypatch.setattr("os.getloadavg", lambda: load)
    monkeypatch.setattr("flowrl.build.machine._cpus", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    run = Run(tmp_path, num_threads=0)
    assert run.trainer.thread_note == note and chosen == [threads]


def test_the_agent_gets_the_device_and_the_precision_the_trainer_chose(tmp_path):
    made = []

    def agent(obs_dim, act_dim, **kwargs):
        made.append((obs_dim, act_dim, kwargs))
        return RecordingAgent(obs_dim, act_dim, **kwargs)

    for bf16 in (None, False, True):
        build_trainer(tmp_path, agent=agent, env_fn=ScriptedVecEnv, num_envs=N, bf16_autocast=bf16, device="cpu",
                buffer=functools.partial(ReplayBuffer, capacity=100), display=False, num_threads=1)
    assert made == [(4, 2, {"device": torch.device("cpu"), "amp_dtype": d}) for d in (None, None, torch.bfloat16)]


def test_the_seed_seeds_numpy_and_torch_globally(tmp_path):
    Run(tmp_path, seed=9)
    a, b = np.random.rand(), torch.rand(1)
    np.random.seed(9)
    torch.manual_seed(9)
    assert a == np.random.rand() and torch.equal(b, torch.rand(1))


def test_evaluation_envs_have_their_own_seeds_and_the_configured_policy(tmp_path):
    run = Run(tmp_path, seed=3, eval_every=8, total_steps=16, eval_deterministic=True)
    flags = []
    act = run.trainer.agent.act
    run.trainer.agent.act = lambda obs, deterministic=False: (flags.append((len(obs), deterministic)), act(obs))[1]
    result = run.trainer.train()
    assert [e.seed for e in run.envs if e.num_envs == 1] == [3 + 1_000_003 + 8, 3 + 1_000_003 + 16]
    assert {d for n, d in flags if n == 1} == {True} and {d for n, d in flags if n == N} == {False}
    last = [r for r in read_metrics(tmp_path) if "eval/return_mean" in r][-1]
    assert result == {k[len("eval/"):]: v for k, v in last.items() if k.startswith("eval/")}


def test_a_non_finite_metric_stops_with_its_name_value_step_and_the_checkpoint_folder(tmp_path):
    from flowrl.errors import NonFiniteLossError

    run = Run(tmp_path)
    run.trainer.agent.update = lambda batch: {"critic/loss": 1.0, "actor/loss": float("nan")}
    with pytest.raises(NonFiniteLossError) as err:
        run.trainer.train()
    assert str(err.value) == (
        f"non-finite actor/loss = nan at env step 10; the last good checkpoint in {tmp_path / 'checkpoints'} is kept; "
        f"fix: lower the learning rate or check the rewards"
    )


def test_cpus_counts_the_cores_this_process_may_use(monkeypatch):
    import os

    from flowrl.build import machine as trainer

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})  # pinned to one core of many
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert trainer._cpus() == 1
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert trainer._cpus() == 7
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert trainer._cpus() == 1


def test_auto_device_is_cuda_where_there_is_one(monkeypatch):
    from flowrl.build.machine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_an_act_dim_mismatch_is_named_too(tmp_path):
    _, state = finished(tmp_path)
    with pytest.raises(UserError, match=r"for another task or env count: act_dim 3 \(now 2\);"):
        Run(tmp_path / "other").trainer.load(tmp_path / "x.pt", state={**state, "shapes": {**state["shapes"],
                                                                                         "act_dim": 3}})


def test_log_every_one_logs_every_vector_step_and_the_last_segment_opens_no_env(tmp_path):
    run = Run(tmp_path, log_every=1, total_steps=16, warmup_steps=8, checkpoint_every=8)
    run.trainer.train()
    assert [r["step"] for r in read_metrics(tmp_path) if "critic/loss" in r] == [10, 12, 14, 16]
    assert all(e.steps > 0 for e in run.envs if e.num_envs == N)  # no env opened after the final checkpoint
