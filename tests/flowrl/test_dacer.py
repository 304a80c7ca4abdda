"""DACERAgent: its critic target and loss, policy loss, update schedule (policy, target, entropy and alpha steps) and
acting against hand-computed values; a checkpoint continues exactly; it solves a contextual bandit.

The hand tests use small real modules with closed-form outputs: a "policy" ``a = offset + 0.5 s`` and twin Gaussian
critics ``mean_i = w_i a + s + c_i``, ``std_i = softplus(d_i)`` (1-d observation and action). The target critic
differs from the online one, so a target computed with the wrong network fails.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from components import DACERNoiseMLP, DiffusionPolicy, DistributionalQEnsemble, vp_beta_schedule
from components.buffers import Batch
from flowrl.agents.dacer import DACERAgent
from tests.flowrl.hand_rows import TERMINATED_TRUNCATED_ORDINARY as BATCH

GAMMA, TAU, SCALE, EPS = 0.99, 0.005, 0.2, 0.1


class LinearPolicy(nn.Module):
    """``a = offset + 0.5 s``; records the action noise of each call."""

    def __init__(self, offset: float = 0.2):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset))
        self.noise_net = nn.Identity()
        self.calls: list[tuple[int, float]] = []

    def sample(self, obs: torch.Tensor, action_noise=0.0) -> torch.Tensor:
        meta = isinstance(action_noise, torch.Tensor) and action_noise.is_meta
        self.calls.append((obs.shape[0], None if meta else float(action_noise)))
        return self.offset + 0.5 * obs


class TwinGaussian(nn.Module):
    """``mean_i = w_i a + s + c_i``, ``std_i = softplus(d_i)``: ``(2, B, 1)`` each."""

    def __init__(self, w, c, d):
        super().__init__()
        self.w, self.c, self.d = (nn.Parameter(torch.tensor(v)) for v in (w, c, d))
        self.num_members = 2

    def forward(self, obs, action):
        mean = self.w[:, None, None] * action + obs + self.c[:, None, None]
        return mean, nn.functional.softplus(self.d)[:, None, None].expand_as(mean)


class FixedEntropy:
    """The entropy estimate ``value``; records the shape of the samples it is given."""

    def __init__(self, value: float):
        self.value, self.shapes = value, []

    def __call__(self, actions):
        self.shapes.append(tuple(actions.shape))
        return torch.tensor(self.value)


def hand_agent(entropy: float = 5.0, **overrides) -> DACERAgent:
    settings = dict(policy=lambda o, a: LinearPolicy(), critic=lambda o, a: TwinGaussian((-1.0, -2.0), (0.0, 0.0),
                    (0.0, 1.0)), entropy=FixedEntropy(entropy), entropy_samples=4)  # fmt: skip
    settings.update(overrides)
    agent = DACERAgent(1, 1, **settings)
    agent.critic_target = TwinGaussian((2.0, 1.0), (0.0, 0.1), (0.5, -0.5)).requires_grad_(False)
    return agent


Z = torch.tensor([[0.5, -4.0, 1.0], [2.0, 0.3, -1.0]])[:, :, None]  # member 0, row 1 clipped at -3


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def hand_targets() -> tuple[list[float], list[float]]:
    """``(y, y_s)`` per row: next action ``0.2 + 0.5 s'``; target means ``2a + s'`` and ``a + s' + 0.1``."""
    y, ys = [], []
    for row, s2 in enumerate((0.5, 1.0, -0.5)):
        a2 = 0.2 + 0.5 * s2
        means = (2 * a2 + s2, a2 + s2 + 0.1)
        stds = (softplus(0.5), softplus(-0.5))
        m = 0 if means[0] < means[1] else 1
        z = max(-3.0, min(3.0, Z[m, row, 0].item()))
        r, boot = SCALE * BATCH.reward[row].item(), GAMMA * (1 - BATCH.terminated[row].item())
        y.append(r + boot * means[m])
        ys.append(r + boot * (means[m] + stds[m] * z))
    return y, ys


def test_critic_loss_by_hand_on_terminated_truncated_and_ordinary_rows(monkeypatch):
    agent = hand_agent()
    monkeypatch.setattr(torch, "randn", lambda *a, **k: Z.clone())
    loss, info = agent.critic_loss(BATCH)
    y, ys = hand_targets()
    assert info["target"].item() == pytest.approx(sum(y) / 3, rel=1e-6)
    expected = 0.0
    for w, c, d in ((-1.0, 0.0, 0.0), (-2.0, 0.0, 1.0)):
        s = softplus(d)
        m = s  # the first call: the batch's mean std (constant here)
        terms = []
        for (obs, act), t, ts in zip(((0.0, 0.2), (0.5, -0.4), (1.0, 0.6)), y, ys):
            mu = w * act + obs + c
            yb = mu + min(max(ts - mu, -3 * m), 3 * m)
            terms.append(mu * (t - mu) / (s**2 + EPS) + s * ((mu - yb) ** 2 - s**2) / (s**3 + EPS))
        expected += -(m**2 + EPS) * sum(terms) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    alpha_noise = 3.0 * 0.15
    assert agent.policy.calls == [(3, pytest.approx(alpha_noise))]  # the online policy, with alpha's noise


def test_actor_loss_and_its_gradient_by_hand():
    agent = hand_agent()
    loss, info = agent.actor_loss(BATCH)
    # a = 0.2 + 0.5 s; min(-a + s, -2a + s) is the second member where a > 0 (all rows here)
    actions = [0.2 + 0.5 * s for s in (0.0, 0.5, 1.0)]
    q = [min(-a + s, -2 * a + s) for a, s in zip(actions, (0.0, 0.5, 1.0))]
    assert loss.item() == pytest.approx(-sum(q) / 3, rel=1e-6)
    assert set(info) == {"loss", "q"} and info["q"].item() == pytest.approx(sum(q) / 3, rel=1e-6)
    loss.backward()
    assert agent.policy.offset.grad.item() == pytest.approx(2.0, rel=1e-6)  # -mean(dq/da) = -(-2)
    assert agent.critic.w.grad is None  # the critic is frozen in the actor's loss


def test_the_update_schedule_policy_targets_entropy_and_alpha(monkeypatch):
    agent = hand_agent(entropy=5.0, alpha_delay=3, policy_delay=2, alpha_lr=0.03)
    seen = []
    real = agent.actor_loss

    def actor_loss(batch):  # the policy's step goes through the critic as it was before this update's step
        seen.append(agent.critic.w.detach().clone())
        return real(batch)

    monkeypatch.setattr(agent, "actor_loss", actor_loss)
    log_alpha = [agent.temperature.log_alpha.item()]
    offsets, targets = [agent.policy.offset.item()], [copy.deepcopy(agent.critic_target)]
    critic_w = [agent.critic.w.detach().clone()]
    infos = []
    for _ in range(4):
        infos.append(agent.update(BATCH))
        log_alpha.append(agent.temperature.log_alpha.item())
        offsets.append(agent.policy.offset.item())
        targets.append(copy.deepcopy(agent.critic_target))
        critic_w.append(agent.critic.w.detach().clone())
    assert agent.num_updates == 4 and len(seen) == 2
    torch.testing.assert_close(seen[0], critic_w[0])
    torch.testing.assert_close(seen[1], critic_w[2])
    assert all(not torch.equal(critic_w[u], critic_w[u + 1]) for u in range(4))  # the critic every update
    moved = [offsets[u] != offsets[u + 1] for u in range(4)]
    assert moved == [True, False, True, False]  # the policy at updates 0 and 2
    for u in range(4):  # the target at updates 0 and 2, toward the critic after its step
        before, after = targets[u], targets[u + 1]
        expected = (1 - TAU) * before.w + TAU * critic_w[u + 1] if u % 2 == 0 else before.w
        torch.testing.assert_close(after.w, expected)
    # Entropy 5 above the target -0.9: alpha falls, by Adam's first step lr * sign, at updates 0 and 3 only.
    assert agent.entropy_fn.shapes == [(3, 4, 1), (3, 4, 1)]
    assert log_alpha[1] == pytest.approx(math.log(3.0) - 0.03, rel=1e-4)
    assert log_alpha[1] == log_alpha[2] == log_alpha[3] and log_alpha[4] < log_alpha[3]
    assert {"actor/loss", "alpha/loss"} <= infos[0].keys() and not {"actor/loss", "alpha/loss"} & infos[1].keys()
    assert infos[1]["alpha/entropy"] == pytest.approx(5.0) and infos[1]["alpha/value"] == pytest.approx(
        math.exp(log_alpha[1]), rel=1e-6)
    # The entropy's samples: entropy_samples noisy actions per state.
    assert (12, pytest.approx(3.0 * 0.15)) in agent.policy.calls


def test_an_entropy_below_the_target_raises_alpha():
    agent = hand_agent(entropy=-5.0, target_entropy=-0.5)
    agent.update(BATCH)
    assert agent.temperature.log_alpha.item() == pytest.approx(math.log(3.0) + 0.03, rel=1e-4)
    assert agent.temperature.target_entropy == -0.5 and hand_agent().temperature.target_entropy == -0.9


def test_act_adds_alpha_noise_while_training_and_none_when_evaluating():
    agent = hand_agent(noise_scale=0.1, initial_alpha=2.0)
    obs = np.array([[0.0], [1.0]], np.float32)
    np.testing.assert_allclose(agent.act(obs), [[0.2], [0.7]], rtol=1e-6)
    agent.act(obs, deterministic=True)
    assert agent.policy.calls == [(2, pytest.approx(0.2)), (2, 0.0)]


def test_checkpoint_names_are_stable():
    state = hand_agent().state_dict()  # run folders written by this version must load in later ones
    assert set(state["networks"]) == {"policy", "critic", "critic_target", "critic_loss", "temperature"}
    assert set(state["optimizers"]) == {"critic", "policy", "alpha"}
    assert "mean_std" in state["networks"]["critic_loss"] and "entropy" in state


@pytest.mark.parametrize("bad", [dict(policy_delay=0), dict(alpha_delay=0), dict(entropy_samples=0)])
def test_bad_settings_are_refused(bad):
    (name, value), = bad.items()
    with pytest.raises(ValueError, match=rf"^DACERAgent\.{name} = {value} is outside \[1, inf\)"):
        hand_agent(**bad)


def test_delays_and_samples_of_one_are_allowed():
    agent = hand_agent(policy_delay=1, alpha_delay=1, entropy_samples=1)
    assert (agent.policy_delay, agent.alpha_delay, agent.entropy_samples) == (1, 1, 1)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # loading into meta: shapes only
def test_networks_and_state_live_on_the_given_device_and_the_target_takes_no_gradient():
    agent = DACERAgent(1, 1, policy=lambda o, a: LinearPolicy(), entropy=FixedEntropy(0.0), device="meta",
                       critic=lambda o, a: TwinGaussian((-1.0, -2.0), (0.0, 0.0), (0.0, 1.0)))
    tensors = [t for m in agent.modules().values() for t in (*m.parameters(), *m.buffers())]
    assert all(t.device.type == "meta" for t in [*tensors, agent.entropy])
    assert not any(p.requires_grad for p in agent.critic_target.parameters())
    _, info = agent.critic_loss(Batch(*(t.to("meta") for t in BATCH)))
    assert info["target"].device.type == "meta"  # the target's draws z were made on the critic's device
    agent.load_state_dict(hand_agent().state_dict())  # a CPU checkpoint continues on the agent's device
    assert agent.entropy.device.type == "meta"


def real_agent(seed: int = 0, obs_dim: int = 5, **overrides) -> DACERAgent:
    torch.manual_seed(seed)
    noise_net = functools.partial(DACERNoiseMLP, hidden=32, depth=2)
    settings = dict(
        policy=lambda o, a: DiffusionPolicy(o, a, noise_net=noise_net, num_steps=5, schedule=vp_beta_schedule),
        critic=functools.partial(DistributionalQEnsemble, hidden=32, depth=2), entropy_samples=10,
    )  # fmt: skip
    settings.update(overrides)
    return DACERAgent(obs_dim, 2, **settings)


def random_batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(8, 5, generator=g), torch.rand(8, 2, generator=g) * 2 - 1, torch.randn(8, 1, generator=g),
                 torch.randn(8, 5, generator=g), torch.zeros(8, 1), torch.zeros(8, 1))


def test_checkpoint_round_trip_continues_exactly():
    pytest.importorskip("sklearn", reason="the entropy estimate needs scikit-learn: pip install 'flowrl-kit[dacer]'")
    agent = real_agent(alpha_delay=2)
    agent.update(random_batch(0))
    state = copy.deepcopy(agent.state_dict())
    other = real_agent(seed=1, alpha_delay=2)
    other.load_state_dict(state)
    assert other.entropy.item() == agent.entropy.item() != 0.0
    torch.testing.assert_close(other.critic_loss_fn.mean_std, agent.critic_loss_fn.mean_std)
    for _ in range(2):  # the second update re-estimates the entropy: the same samples, the same fit
        seed = int(torch.randint(0, 1000, ()))
        torch.manual_seed(seed)
        a = agent.update(random_batch(seed))
        torch.manual_seed(seed)
        b = other.update(random_batch(seed))
        assert a == b
    assert other.num_updates == agent.num_updates == 3


def test_real_agent_trains_under_bf16_autocast():
    pytest.importorskip("sklearn", reason="the entropy estimate needs scikit-learn: pip install 'flowrl-kit[dacer]'")
    agent = real_agent()
    agent.amp_dtype = torch.bfloat16
    info = agent.update(random_batch(0))
    assert all(np.isfinite(v) for v in info.values())
    assert agent.act(np.zeros((3, 5), np.float32)).shape == (3, 2)


def test_contextual_bandit_policy_moves_to_the_best_action():
    """One-step episodes, ``r = -||a - 0.6 s||^2``: the critic must learn the reward and the chain must climb it.
    Half of each batch is the policy's own noisy actions, half uniform. Observed after 150 updates (seeds 0-2): error
    0.024-0.037; acting with a = 0 scores 0.24, and the actor's loss with its sign flipped 2.1."""
    pytest.importorskip("sklearn", reason="the entropy estimate needs scikit-learn: pip install 'flowrl-kit[dacer]'")
    agent = real_agent(obs_dim=2, lr=3e-3, policy_delay=1)
    g = torch.Generator().manual_seed(0)
    best = lambda s: 0.6 * s  # noqa: E731
    uniform = lambda *shape: torch.empty(*shape).uniform_(-1, 1, generator=g)  # noqa: E731
    for _ in range(150):
        s, a = uniform(64, 2), uniform(64, 2)
        with torch.no_grad():
            a[:32] = agent.policy.sample(s[:32], agent.action_noise())
        r = -(a - best(s)).square().sum(-1, keepdim=True)
        agent.update(Batch(s, a, r, uniform(64, 2), torch.ones(64, 1), torch.zeros(64, 1)))
    test = torch.Generator().manual_seed(9)
    s = torch.empty(256, 2).uniform_(-1, 1, generator=test)
    with torch.no_grad():
        error = (agent.policy.sample(s) - best(s)).square().sum(-1).mean().item()
    assert error < 0.08


def test_a_missing_scikit_learn_is_one_line_before_any_run(monkeypatch):
    from flowrl.errors import MissingDependencyError

    monkeypatch.setitem(__import__("sys").modules, "sklearn.mixture", None)
    with pytest.raises(MissingDependencyError, match=r"needs scikit-learn, not installed; fix: pip install") as err:
        DACERAgent(1, 1, policy=lambda o, a: LinearPolicy(),
                   critic=lambda o, a: TwinGaussian((-1.0, -2.0), (0.0, 0.0), (0.0, 1.0)))
    assert "fix: pip install 'flowrl-kit[dacer]'" in str(err.value).splitlines()[0]  # the line the runner prints
    hand_agent()  # an estimate of one's own needs no scikit-learn


@pytest.mark.parametrize("binding, message", [
    ("DACERAgent.alpha_lr = 0.0", r"DACERAgent.alpha_lr = 0.0 is outside \(0.0, inf\); fix: .*= 0.03"),
    ("DACERAgent.alpha_delay = 0", r"outside \[1, inf\)"),
    ("DACERAgent.reward_scale = -0.2", r"outside \(0.0, inf\)"),
    ("DACERAgent.noise_scale = -0.1", r"outside \[0.0, inf\)"),
    ("DACERAgent.initial_alpha = 0.0", r"outside \(0.0, inf\)"),
    ("GaussianMixtureEntropy.num_components = 0", r"outside \[1, inf\)"),
    ("DACERAgent.entropy = 'gmm'", r"is a string where a component is expected"),
])  # fmt: skip
def test_out_of_range_settings_in_a_config_are_one_line(binding, message):
    from flowrl.config.checks import check_config
    from flowrl.config import REPO_ROOT, parse
    from flowrl.errors import UserError

    parse([str(REPO_ROOT / "gin/tasks/dmc/cheetah_run.gin"), str(REPO_ROOT / "gin/agents/dacer.gin")], [binding])
    with pytest.raises(UserError, match=message) as err:
        check_config()
    assert "\n" not in str(err.value)


def test_defaults_follow_the_reference():
    """relax/algorithm/dacer.py:35-42 and relax/network/dacer.py:42,81,88 (gin/agents/dacer.gin cites each)."""
    agent = DACERAgent(1, 4, policy=lambda o, a: LinearPolicy(),
                       critic=lambda o, a: TwinGaussian((-1.0, -2.0), (0.0, 0.0), (0.0, 1.0)), entropy=FixedEntropy(0.0))
    assert (agent.discount, agent.reward_scale, agent.target_tau) == (0.99, 0.2, 0.005)
    assert (agent.policy_delay, agent.alpha_delay, agent.entropy_samples, agent.noise_scale) == (2, 10_000, 200, 0.15)
    assert agent.temperature.alpha.item() == pytest.approx(3.0) and agent.temperature.target_entropy == -0.9 * 4
    for name, lr in (("critic", 1e-4), ("policy", 1e-4), ("alpha", 3e-2)):
        group = agent.optimizers()[name].param_groups[0]
        assert (group["lr"], group["eps"]) == (lr, 1e-8), name
    loss = agent.critic_loss_fn
    assert (loss.tau, loss.bound, loss.epsilon) == (0.005, 3.0, 0.1) and loss.mean_std.tolist() == [-1.0, -1.0]
    assert agent.entropy.item() == 0.0 and agent.num_updates == 0
