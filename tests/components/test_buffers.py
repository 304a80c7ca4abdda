"""ReplayBuffer and samplers against a ground-truth model of the transitions still stored.

Every observation carries a unique id (``obs[0]``) so a sampled transition can be looked up in the model.
"""

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.buffers import Batch, ReplayBuffer
from components.samplers import RecentMixSampler, UniformSampler

OBS, ACT = 2, 2


class Model:
    """What the buffer should hold: step k of env i has id ``k * N + i + 1``; row k's successor is row k + 1."""

    def __init__(self, capacity: int, num_envs: int):
        self.n, self.rows = num_envs, capacity // num_envs
        self.steps: list[tuple[list[bool], list[bool], list[bool]]] = []  # (valid, terminated, truncated) per step

    def ident(self, k: int, i: int) -> int:
        return k * self.n + i + 1

    def step_arrays(self, k: int, valid, term, trunc):
        ids = np.array([self.ident(k, i) for i in range(self.n)], dtype=np.float32)
        obs = np.stack([ids, -0.5 * ids], axis=1)
        action = np.stack([ids + 0.5, 2.0 * ids], axis=1)
        reward = 0.25 * ids
        return obs, action, reward, np.array(term), np.array(trunc), np.array(valid)

    def add(self, buf: ReplayBuffer, valid, term, trunc) -> None:
        k = len(self.steps)
        self.steps.append((list(valid), list(term), list(trunc)))
        buf.add(*self.step_arrays(k, valid, term, trunc))

    def transitions(self) -> dict[int, tuple]:
        """id -> (obs, action, reward, next_obs, terminated, truncated) for every sampleable transition."""
        count = len(self.steps)
        out = {}
        for k in range(max(0, count - self.rows), count - 1):  # stored rows, minus the newest
            valid, term, trunc = self.steps[k]
            for i in range(self.n):
                if valid[i]:
                    a, b = self.ident(k, i), self.ident(k + 1, i)
                    out[a] = ([a, -0.5 * a], [a + 0.5, 2.0 * a], 0.25 * a, [b, -0.5 * b], float(term[i]),
                              float(trunc[i]))
        return out

    def sampleable_slots(self) -> int:
        return max(0, min(len(self.steps), self.rows) - 1) * self.n


def check_batch(batch: Batch, truth: dict, size: int) -> list[int]:
    assert isinstance(batch, Batch)
    assert batch.obs.shape == (size, OBS) and batch.next_obs.shape == (size, OBS)
    assert batch.action.shape == (size, ACT)
    for f in (batch.reward, batch.terminated, batch.truncated):
        assert f.shape == (size, 1) and f.dtype == torch.float32
    ids = []
    for j in range(size):
        a = int(batch.obs[j, 0].item())
        assert a in truth, f"sampled id {a} is not a stored transition; stored: {sorted(truth)}"
        obs, action, reward, next_obs, term, trunc = truth[a]
        assert batch.obs[j].tolist() == obs
        assert batch.action[j].tolist() == action
        assert batch.reward[j, 0].item() == reward
        assert batch.next_obs[j].tolist() == next_obs
        assert batch.terminated[j, 0].item() == term and batch.truncated[j, 0].item() == trunc
        ids.append(a)
    return ids


@st.composite
def scenario(draw):
    n = draw(st.integers(1, 3))
    capacity = draw(st.integers(2 * n, 7 * n + 2))  # not always a multiple of n; small, so it wraps
    ops = draw(st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.lists(st.booleans(), min_size=n, max_size=n),
                      st.lists(st.booleans(), min_size=n, max_size=n),
                      st.lists(st.booleans(), min_size=n, max_size=n)),
            st.tuples(st.just("sample"), st.integers(1, 12)),
        ),
        min_size=1, max_size=40,
    ))
    return n, capacity, ops


@settings(max_examples=50, deadline=None)
@given(scenario(), st.sampled_from(["uniform", "recent"]))
def test_samples_are_stored_transitions(scn, sampler_kind):
    n, capacity, ops = scn
    sampler = UniformSampler() if sampler_kind == "uniform" else RecentMixSampler(recent=3, recent_fraction=0.5)
    buf = ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n, sampler=sampler, seed=1)
    model = Model(capacity, n)
    for op in ops:
        if op[0] == "add":
            model.add(buf, op[1], op[2], op[3])
        truth = model.transitions()
        assert len(buf) == len(truth)
        if op[0] == "sample":
            if not truth:
                with pytest.raises(RuntimeError):
                    buf.sample(op[1])
                continue
            try:
                batch = buf.sample(op[1])
            except RuntimeError as err:
                # Giving up after 100 rejection rounds is only acceptable when valid rows are genuinely rare.
                assert "could not draw" in str(err)
                assert len(truth) / model.sampleable_slots() < 0.2
                continue
            check_batch(batch, truth, op[1])


def autoreset_run(buf: ReplayBuffer, model: Model, steps: int, episode_len: list[int], terminate_env: int = 0):
    """A next-step autoreset vector env: the step after an episode end is a reset row (valid=False)."""
    t = [0] * model.n
    for _ in range(steps):
        flags = []  # (valid, terminated, truncated) per env
        for i in range(model.n):
            if t[i] == episode_len[i]:  # this row holds the final observation; the env resets on this step
                flags.append((False, False, False))
                t[i] = 0
                continue
            t[i] += 1
            end = t[i] == episode_len[i]
            flags.append((True, end and i == terminate_env, end and i != terminate_env))
        valid, term, trunc = (list(f) for f in zip(*flags))
        model.add(buf, valid, term, trunc)


def test_wraparound_overwrites_the_oldest_rows_and_covers_every_transition():
    n, capacity = 2, 12  # 6 rows per env
    buf = ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n, seed=3)
    model = Model(capacity, n)
    autoreset_run(buf, model, steps=17, episode_len=[3, 4])
    assert buf.size == 6 and buf.pos == 17 % 6
    truth = model.transitions()
    assert len(buf) == len(truth)
    # Steps 0..10 were overwritten; the oldest stored step is 11 and the newest, 16, is not a transition yet.
    stored_steps = {(a - 1) // n for a in truth}
    assert min(stored_steps) >= 11 and max(stored_steps) <= 15
    ids = check_batch(buf.sample(2000), truth, 2000)
    assert set(ids) == set(truth)  # uniform reaches every stored transition, the oldest row included
    assert buf.obs[(17 - 1) % 6, 0, 0].item() == model.ident(16, 0)  # the newest write landed on its ring slot


def test_terminal_transitions_point_at_the_final_observation():
    n, capacity = 2, 40
    buf = ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n)
    model = Model(capacity, n)
    autoreset_run(buf, model, steps=15, episode_len=[3, 5], terminate_env=0)
    truth = model.transitions()
    batch = buf.sample(1000)
    check_batch(batch, truth, 1000)
    ends = (batch.terminated + batch.truncated).squeeze(-1) > 0
    assert ends.any()
    # Env 0 terminates, env 1 is truncated: the flags stay separate and are never both set.
    env = ((batch.obs[:, 0] - 1) % n).long()
    assert (batch.terminated.squeeze(-1)[env == 1] == 0).all() and (batch.truncated.squeeze(-1)[env == 0] == 0).all()
    assert batch.terminated.sum() > 0 and batch.truncated.sum() > 0
    assert not ((batch.terminated > 0) & (batch.truncated > 0)).any()
    # A terminal transition's next_obs is the next row of its own stream, i.e. the final observation.
    torch.testing.assert_close(batch.next_obs[ends, 0], batch.obs[ends, 0] + n)
    # Reset rows are never sampled as transitions.
    invalid_ids = {model.ident(k, i) for k, (v, _, _) in enumerate(model.steps) for i in range(n) if not v[i]}
    assert invalid_ids and not invalid_ids & set(batch.obs[:, 0].long().tolist())


def test_terminated_and_truncated_are_separate():
    buf = ReplayBuffer(OBS, ACT, capacity=8, num_envs=2)
    buf.add(np.zeros((2, OBS)), np.zeros((2, ACT)), np.array([1.0, 2.0]), np.array([True, False]),
            np.array([False, True]))
    buf.add(torch.ones(2, OBS), torch.ones(2, ACT), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    assert len(buf) == 2
    batch = buf.sample(200)
    env0 = batch.reward.squeeze(-1) == 1.0
    assert env0.any() and (~env0).any()
    assert (batch.terminated[env0] == 1).all() and (batch.truncated[env0] == 0).all()
    assert (batch.terminated[~env0] == 0).all() and (batch.truncated[~env0] == 1).all()
    assert (batch.next_obs == 1).all()


def test_len_counts_complete_valid_transitions():
    buf = ReplayBuffer(OBS, ACT, capacity=6, num_envs=2)  # 3 rows
    assert len(buf) == 0
    z = dict(obs=np.zeros((2, OBS)), action=np.zeros((2, ACT)), reward=np.zeros(2), terminated=np.zeros(2),
             truncated=np.zeros(2))
    buf.add(**z)
    assert len(buf) == 0  # one row: no successor yet
    with pytest.raises(RuntimeError):
        buf.sample(1)
    buf.add(**z, valid=np.array([True, False]))
    assert len(buf) == 2
    buf.add(**z)
    assert len(buf) == 3  # rows 0 (2 valid) + row 1 (1 valid); row 2 is the newest
    buf.add(**z)  # overwrites row 0
    assert len(buf) == 3  # rows 1 (1 valid) + row 2 (2 valid)
    with pytest.raises(ValueError):
        ReplayBuffer(OBS, ACT, capacity=3, num_envs=2)


def _fill(buf: ReplayBuffer, model: Model, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        model.add(buf, (rng.random(model.n) > 0.2).tolist(), (rng.random(model.n) > 0.8).tolist(),
                  (rng.random(model.n) > 0.8).tolist())


@pytest.mark.parametrize("steps", [3, 9, 23])  # partly filled, just full, wrapped
def test_state_dict_round_trip(steps):
    n, capacity = 3, 27
    make = lambda: ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n, seed=7,  # noqa: E731
                                sampler=RecentMixSampler(recent=6, recent_fraction=0.25))
    buf, model = make(), Model(capacity, n)
    _fill(buf, model, steps, seed=steps)
    buf.sample(5)  # advance the generator so its state matters
    state = buf.state_dict()
    stream = io.BytesIO()
    torch.save(state, stream)
    stream.seek(0)
    restored = make()
    restored.load_state_dict(torch.load(stream, weights_only=True))
    assert (restored.pos, restored.size, len(restored)) == (buf.pos, buf.size, len(buf))
    for k, v in buf._tensors().items():
        assert torch.equal(getattr(restored, k), v), k
    for _ in range(3):
        a, b = buf.sample(16), restored.sample(16)
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    # And they keep agreeing after more writes (ring position restored).
    more = Model(capacity, n)
    more.steps = list(model.steps)
    _fill(buf, model, 5, seed=99)
    _fill(restored, more, 5, seed=99)
    for x, y in zip(buf.sample(32), restored.sample(32)):
        assert torch.equal(x, y)
    check_batch(restored.sample(32), more.transitions(), 32)
    # The saved state is a copy, not a view of the live buffer.
    state2 = restored.state_dict()
    before = state2["obs"].clone()
    _fill(restored, more, 4, seed=5)
    assert torch.equal(state2["obs"], before)


def test_load_into_a_used_buffer_replaces_its_contents():
    n, capacity = 2, 20
    small, small_model = ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n), Model(capacity, n)
    _fill(small, small_model, 3, seed=0)
    used = ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n)
    _fill(used, Model(capacity, n), 10, seed=1)  # full, wrapped: every row holds data
    used.load_state_dict(small.state_dict())
    assert len(used) == len(small) == len(small_model.transitions())
    for k, v in small._tensors().items():
        assert torch.equal(getattr(used, k), v), k
    check_batch(used.sample(64), small_model.transitions(), 64)


def test_load_rejects_a_different_layout():
    buf = ReplayBuffer(OBS, ACT, capacity=12, num_envs=2)
    _fill(buf, Model(12, 2), 4, seed=0)
    with pytest.raises(ValueError):
        ReplayBuffer(OBS, ACT, capacity=12, num_envs=3).load_state_dict(buf.state_dict())
    with pytest.raises(ValueError):
        ReplayBuffer(OBS + 1, ACT, capacity=12, num_envs=2).load_state_dict(buf.state_dict())


# --- samplers ---------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(num_rows=st.integers(1, 50), num_envs=st.integers(1, 5), batch=st.integers(1, 64), seed=st.integers(0, 99))
def test_uniform_sampler_range(num_rows, num_envs, batch, seed):
    rows, envs = UniformSampler()(num_rows, num_envs, batch, torch.Generator().manual_seed(seed))
    assert rows.shape == envs.shape == (batch,)
    assert rows.min() >= 0 and rows.max() < num_rows and envs.min() >= 0 and envs.max() < num_envs


@settings(max_examples=40, deadline=None)
@given(num_rows=st.integers(1, 60), num_envs=st.integers(1, 6), recent=st.integers(1, 100),
       fraction=st.sampled_from([0.0, 0.2, 0.5, 1.0]), batch=st.integers(1, 64), seed=st.integers(0, 99))
def test_recent_mix_sampler_window(num_rows, num_envs, recent, fraction, batch, seed):
    rows, envs = RecentMixSampler(recent, fraction)(num_rows, num_envs, batch, torch.Generator().manual_seed(seed))
    assert rows.shape == envs.shape == (batch,)
    assert rows.min() >= 0 and rows.max() < num_rows and envs.min() >= 0 and envs.max() < num_envs
    window = min(num_rows, max(1, recent // num_envs))  # ``recent`` counts transitions over all envs
    in_window = rows >= num_rows - window
    assert int(in_window.sum()) >= round(batch * fraction)
    if fraction == 1.0:
        assert in_window.all()


def test_recent_mix_sampler_share_is_statistically_right():
    rows, _ = RecentMixSampler(recent=40, recent_fraction=0.2)(1000, 4, 20_000, torch.Generator().manual_seed(0))
    in_window = (rows >= 990).float().mean().item()  # window of 10 rows = 40 transitions over 4 envs
    assert in_window == pytest.approx(0.2 + 0.8 * 10 / 1000, abs=0.01)
    with pytest.raises(ValueError):
        RecentMixSampler(recent_fraction=1.5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), rows=st.integers(3, 10), extra=st.integers(0, 15), recent=st.integers(1, 20))
def test_recent_share_comes_from_the_newest_transitions(n, rows, extra, recent):
    capacity = rows * n
    buf = ReplayBuffer(OBS, ACT, capacity=capacity, num_envs=n, seed=2,
                       sampler=RecentMixSampler(recent=recent, recent_fraction=1.0))
    model = Model(capacity, n)
    steps = rows + extra  # wraps when extra > 0
    for _ in range(steps):
        model.add(buf, [True] * n, [False] * n, [False] * n)
    truth = model.transitions()
    batch = buf.sample(64)
    ids = check_batch(batch, truth, 64)
    window = min(rows - 1, max(1, recent // n))
    newest_transition_step = steps - 2
    sampled_steps = {(a - 1) // n for a in ids}
    assert all(newest_transition_step - window < k <= newest_transition_step for k in sampled_steps), (
        sampled_steps, window, newest_transition_step)


# --- memory -----------------------------------------------------------------------------------------------------


def test_memory_stores_each_observation_once():
    obs_dim, act_dim, n, capacity = 223, 38, 4, 4096  # dog-run sizes, scaled-down capacity
    buf = ReplayBuffer(obs_dim, act_dim, capacity=capacity, num_envs=n)
    per_transition = 4 * (obs_dim + act_dim + 1) + 3  # one float32 obs + action + reward, three 1-byte flags
    stored = buf.rows * n
    assert stored == capacity
    assert buf.nbytes <= 1.15 * stored * per_transition
    # nbytes must account for every tensor the buffer holds (no hidden next_obs copy).
    held = sum(v.numel() * v.element_size() for v in vars(buf).values() if torch.is_tensor(v))
    assert held == buf.nbytes
    # At 1M transitions that is about 1.05 GB, not the ~1.9 GB an obs + next_obs layout would need.
    assert buf.nbytes / stored * 1_000_000 <= 1.15 * 1_000_000 * per_transition


def test_recent_mix_splits_as_the_reference_and_draws_the_window_without_replacement():
    # The reference: int(256 * 0.8) = 204 uniform rows, then 256 - 204 = 52 distinct rows of the newest 2,048.
    rows, _ = RecentMixSampler(recent=2048, recent_fraction=0.2)(100_000, 1, 256, torch.Generator().manual_seed(0))
    recent = rows[204:]
    assert recent.min() >= 100_000 - 2048 and len(set(recent.tolist())) == 52
    # With a window smaller than the recent count, rows repeat rather than fail.
    rows, _ = RecentMixSampler(recent=4, recent_fraction=0.5)(10, 1, 16, torch.Generator().manual_seed(0))
    assert (rows[8:] >= 6).all()
