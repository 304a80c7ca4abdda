"""FlowRLAgent's update against hand computation: the TD targets, the regularizer's inputs, the actor step's direction,
the target copies' Polyak updates and which gradients are detached.

The batch mixes terminated, truncated and ordinary rows; every target copy is perturbed away from its online network,
``Q_beta`` differs from ``Q`` and ``V`` varies with the state, so a target read from the wrong network, state or mask
changes a number below. Expected values use plain torch ops on the networks (never the agent's loss code), with the
base noise and the flow-matching time scripted.
"""

import copy
import functools
import warnings

import numpy as np
import pytest
import torch

from components import FlowPolicy, KLRegularizer, MLPVelocity, NoRegularizer, QEnsemble, ValueNetwork, W2Regularizer
from components.buffers import Batch
from components.critics import min_aggregate
from flowrl.agents.base import adam
from flowrl.agents.flowrl import FlowRLAgent
from flowrl.run.migrate import upgrade

OBS, ACT, HIDDEN, B = 3, 2, 8, 6
GAMMA, LR = 0.8, 1e-2
TERMINATED = torch.tensor([[1.0], [1.0], [0.0], [0.0], [0.0], [0.0]])  # rows 0-1 end: no bootstrap
TRUNCATED = torch.tensor([[0.0], [0.0], [1.0], [1.0], [0.0], [0.0]])  # rows 2-3 time out: they bootstrap
NETS = ("policy", "critic", "critic_target", "behaviour_critic", "behaviour_target", "value")


def make_agent(regularizer=None, perturb=True, **kwargs) -> FlowRLAgent:
    torch.manual_seed(0)
    agent = FlowRLAgent(
        OBS, ACT,
        policy=lambda o, a: FlowPolicy(o, a, velocity=functools.partial(MLPVelocity, hidden=HIDDEN)),
        critic=functools.partial(QEnsemble, hidden=HIDDEN),
        value=functools.partial(ValueNetwork, hidden=HIDDEN),
        regularizer=regularizer, discount=GAMMA, lr=LR, **kwargs,
    )  # fmt: skip
    if perturb:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for net in (agent.critic_target, agent.behaviour_critic, agent.behaviour_target, agent.value):
                for p in net.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
            # Q_beta above Q at buffer actions, so the W2 weights relu(Q_beta - Q) differ from row to row.
            agent.behaviour_critic.body.net[-1].bias.add_(1.0)
    return agent


def make_batch() -> Batch:
    g = torch.Generator().manual_seed(2)
    return Batch(
        obs=torch.randn(B, OBS, generator=g),
        action=torch.empty(B, ACT).uniform_(-1, 1, generator=g),
        reward=torch.tensor([[1.0], [-0.5], [0.3], [2.0], [-1.2], [0.7]]),
        next_obs=torch.randn(B, OBS, generator=g),
        terminated=TERMINATED.clone(),
        truncated=TRUNCATED.clone(),
    )


class ScriptedNoise:
    """Replaces ``policy.base_noise``: returns the given draws in order and records what each call was shaped on."""

    def __init__(self, policy: FlowPolicy, *draws: torch.Tensor):
        self.draws, self.likes = list(draws), []
        policy.base_noise = self

    def __call__(self, batch, like, generator=None):
        self.likes.append(like)
        return self.draws.pop(0).clone()


class Capture:
    """Wraps a regularizer and keeps every ``RegularizerInputs`` it is fed."""

    def __init__(self, inner):
        self.inner, self.needs, self.seen = inner, inner.needs, []

    def __call__(self, policy, inputs):
        self.seen.append(inputs)
        return self.inner(policy, inputs)


def noise(seed: int) -> torch.Tensor:
    return (torch.randn(B, ACT, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)


FLOW_T = torch.tensor([[0.1], [0.9], [0.5], [0.3], [0.7], [0.2]])


@pytest.fixture
def fixed_time(monkeypatch):
    """The flow-matching time ``t ~ U(0, 1)`` becomes ``FLOW_T``."""

    def rand(*shape, **kwargs):
        assert tuple(shape) == (B, 1), shape
        return FLOW_T.clone()

    monkeypatch.setattr(torch, "rand", rand)


# ------------------------------------------------------------------------------------- hand-written counterparts
def pi(policy: FlowPolicy, obs, x0):
    """One explicit midpoint step from ``x0`` over [0, 1], then tanh (the reference's sampler)."""
    v, t0 = policy.velocity, torch.zeros(obs.shape[0], 1)
    x_mid = x0 + 0.5 * v(obs, x0, t0)
    return torch.tanh(x0 + v(obs, x_mid, t0 + 0.5))


def qmin(net, obs, action):
    q = net(obs, action)
    return torch.minimum(q[0], q[1])


def twin_mse(net, obs, action, y):
    q = net(obs, action)
    return ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean()


def expected_value_step(pre: dict, batch: Batch, n_next: torch.Tensor) -> dict[str, float]:
    r, done, s, a, s2 = batch.reward, batch.terminated, batch.obs, batch.action, batch.next_obs
    with torch.no_grad():
        y = r + GAMMA * (1 - done) * qmin(pre["critic_target"], s2, pi(pre["policy"], s2, n_next))
        y_beta = r + GAMMA * (1 - done) * pre["value"](s2)
        u = qmin(pre["behaviour_target"], s, a) - pre["value"](s)
        return {
            "critic/loss": twin_mse(pre["critic"], s, a, y).item(),
            "critic/q": pre["critic"](s, a).mean().item(),
            "critic/target": y.mean().item(),
            "behaviour/loss": twin_mse(pre["behaviour_critic"], s, a, y_beta).item(),
            "behaviour/q": pre["behaviour_critic"](s, a).mean().item(),
            "value/loss": (torch.where(u < 0, 0.1, 0.9) * u**2).mean().item(),
            "value/v": pre["value"](s).mean().item(),
        }


def snapshot(agent) -> dict:
    return {name: copy.deepcopy(getattr(agent, name)) for name in NETS}


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


# ------------------------------------------------------------------------------------------------------ the tests
def test_fixture_is_not_degenerate():
    """The checks below are only as sharp as the set-up: every pair that a mutant could confuse must differ."""
    agent, batch = make_agent(), make_batch()
    with torch.no_grad():
        s, a, s2 = batch.obs, batch.action, batch.next_obs
        assert not torch.allclose(agent.critic(s, a), agent.critic_target(s, a), atol=0.1)
        assert not torch.allclose(agent.behaviour_critic(s, a), agent.critic(s, a), atol=0.1)
        assert not torch.allclose(agent.behaviour_target(s, a), agent.behaviour_critic(s, a), atol=0.1)
        assert not torch.allclose(agent.value(s), agent.value(s2), atol=0.1)
        assert agent.value(s).std() > 0.1


def test_td_targets_and_losses_of_the_value_step(fixed_time):
    agent, batch = make_agent(), make_batch()
    pre = snapshot(agent)
    n_next = noise(10)
    scripted = ScriptedNoise(agent.policy, n_next, noise(11), noise(12))
    info = agent.update(batch)
    assert scripted.likes[0] is batch.next_obs  # the bootstrap action is a fresh sample at s'
    expected = expected_value_step(pre, batch, n_next)
    assert {k: info[k] for k in expected} == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_td_target_row_by_row():
    """Terminated rows stop at the reward; truncated and ordinary rows bootstrap with the discount, from the target."""
    agent, batch = make_agent(), make_batch()
    n_next = noise(10)
    ScriptedNoise(agent.policy, n_next)
    # A critic whose prediction is 0 makes the loss's gradient w.r.t. each row's prediction -2 y / B per member.
    q = torch.zeros(2, B, 1, requires_grad=True)
    agent.critic = lambda obs, action: q
    loss, info = agent.critic_loss(batch)
    loss.backward()
    y = -q.grad[0] * B / 2
    with torch.no_grad():
        boot = qmin(agent.critic_target, batch.next_obs, pi(agent.policy, batch.next_obs, n_next))
    torch.testing.assert_close(y[:2], batch.reward[:2])
    torch.testing.assert_close(y[2:], batch.reward[2:] + GAMMA * boot[2:])
    assert not info["target"].requires_grad


def test_each_loss_alone_matches_hand_computation():
    agent, batch = make_agent(), make_batch()
    pre = snapshot(agent)
    n_next = noise(10)
    ScriptedNoise(agent.policy, n_next)
    expected = expected_value_step(pre, batch, n_next)
    assert agent.critic_loss(batch)[0].item() == pytest.approx(expected["critic/loss"], rel=1e-5)
    assert agent.behaviour_critic_loss(batch)[0].item() == pytest.approx(expected["behaviour/loss"], rel=1e-5)
    assert agent.value_loss(batch)[0].item() == pytest.approx(expected["value/loss"], rel=1e-5)


def test_actor_loss_and_w2_weights_of_the_first_update(fixed_time):
    """W2: ``r = relu(min Q_beta(s, a) before the value step - min Q(s, pi(s)) after it)``,
    ``w = clamp(0.1 exp(r - mean r), 1e-3, 1)``, loss ``= -mean min Q(s, pi(s)) + mean(w) mean(FM)``."""
    agent, batch = make_agent(), make_batch()
    pre = snapshot(agent)
    n_pi, n_fm = noise(11), noise(12)
    scripted = ScriptedNoise(agent.policy, noise(10), n_pi, n_fm)
    info = agent.update(batch)
    assert scripted.likes[1] is batch.obs and scripted.likes[2] is batch.obs
    s, a = batch.obs, batch.action
    with torch.no_grad():
        q_pi = qmin(agent.critic, s, pi(pre["policy"], s, n_pi))  # Q after this update's critic step
        r = torch.relu(qmin(pre["behaviour_critic"], s, a) - q_pi)
        w = (0.1 * torch.exp(r - r.mean())).clamp(1e-3, 1.0)
        x_t = (1 - FLOW_T) * n_fm + FLOW_T * a
        fm = ((pre["policy"].velocity(s, x_t, FLOW_T) - (a - n_fm)) ** 2).mean(-1)
    assert (r > 0).sum() >= 3 and r.std() > 0.1  # the weights vary: a wrong Q_beta or Q changes them
    assert ((w > 1e-3) & (w < 1.0)).any()
    expected = {
        "actor/loss": (-q_pi.mean() + w.mean() * fm.mean()).item(),
        "actor/q": q_pi.mean().item(),
        "reg/loss": (w.mean() * fm.mean()).item(),
        "reg/fm": fm.mean().item(),
        "reg/weight_mean": w.mean().item(),
        "reg/weight_max": w.max().item(),
    }
    assert {k: info[k] for k in expected} == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_w2_regularizer_is_fed_pre_step_q_beta_and_post_step_q():
    capture = Capture(W2Regularizer())
    agent, batch = make_agent(regularizer=capture), make_batch()
    pre = snapshot(agent)
    n_pi = noise(11)
    ScriptedNoise(agent.policy, noise(10), n_pi, noise(12))
    agent.update(batch)
    (seen,) = capture.seen
    with torch.no_grad():
        q_beta_before = qmin(pre["behaviour_critic"], batch.obs, batch.action)
        q_beta_after = qmin(agent.behaviour_critic, batch.obs, batch.action)
        q_pi = qmin(agent.critic, batch.obs, pi(pre["policy"], batch.obs, n_pi))
    assert (q_beta_after - q_beta_before).abs().max() > 1e-2  # the step moved Q_beta: the two are distinguishable
    torch.testing.assert_close(seen.q_behaviour, q_beta_before)
    torch.testing.assert_close(seen.q_policy, q_pi)
    assert seen.obs is batch.obs and seen.action is batch.action
    assert seen.value is None  # W2 does not list it in `needs`
    assert not any(x.requires_grad for x in (seen.q_behaviour, seen.q_policy))


def test_kl_regularizer_is_fed_pre_step_value():
    capture = Capture(KLRegularizer())
    agent, batch = make_agent(regularizer=capture), make_batch()
    pre = snapshot(agent)
    agent.update(batch)
    (seen,) = capture.seen
    with torch.no_grad():
        v_before, v_after = pre["value"](batch.obs), agent.value(batch.obs)
        q_beta_before = qmin(pre["behaviour_critic"], batch.obs, batch.action)
    assert (v_after - v_before).abs().max() > 1e-2
    torch.testing.assert_close(seen.value, v_before)
    torch.testing.assert_close(seen.q_behaviour, q_beta_before)
    assert not seen.value.requires_grad


def test_policy_step_alone_reads_current_behaviour_values():
    capture = Capture(KLRegularizer())
    agent, batch = make_agent(regularizer=capture), make_batch()
    agent.policy_step(batch)
    (seen,) = capture.seen
    with torch.no_grad():
        torch.testing.assert_close(seen.q_behaviour, qmin(agent.behaviour_critic, batch.obs, batch.action))
        torch.testing.assert_close(seen.value, agent.value(batch.obs))


def test_actor_step_raises_q_of_the_policy_action():
    agent, batch = make_agent(regularizer=NoRegularizer()), make_batch()
    agent.policy_optimizer.param_groups[0]["lr"] = 1e-3
    n = noise(11)
    with torch.no_grad():
        before = qmin(agent.critic, batch.obs, pi(agent.policy, batch.obs, n)).mean()
    ScriptedNoise(agent.policy, n)
    info = agent.policy_step(batch)
    with torch.no_grad():
        after = qmin(agent.critic, batch.obs, pi(agent.policy, batch.obs, n)).mean()
    assert info["actor/q"] == pytest.approx(before.item(), rel=1e-5)
    assert info["actor/loss"] == pytest.approx(-before.item(), rel=1e-5)
    assert after > before + 1e-4


def test_polyak_update_of_each_target_from_its_own_online_network():
    agent, batch = make_agent(), make_batch()
    pre = snapshot(agent)
    agent.update(batch)  # update 1: value step, policy step, then both targets
    for target, online in (("critic_target", "critic"), ("behaviour_target", "behaviour_critic")):
        for t0, t1, o in zip(pre[target].parameters(), getattr(agent, target).parameters(),
                             getattr(agent, online).parameters()):
            torch.testing.assert_close(t1, 0.05 * t0 + 0.95 * o)


def test_targets_and_policy_move_on_updates_1_3_5_only():
    agent, batch = make_agent(), make_batch()
    moved = []
    for _ in range(5):
        before = {n: params(getattr(agent, n)) for n in ("policy", "critic_target", "behaviour_target")}
        agent.update(batch)
        moved.append({n for n, ps in before.items()
                      if any(not torch.equal(p, q) for p, q in zip(ps, getattr(agent, n).parameters()))})
    full = {"policy", "critic_target", "behaviour_target"}
    assert moved == [full, set(), full, set(), full]
    assert agent.num_updates == 5


def test_actor_loss_sends_no_gradient_into_any_critic():
    agent, batch = make_agent(), make_batch()
    loss, _ = agent.actor_loss(batch)
    loss.backward()
    for name in ("critic", "critic_target", "behaviour_critic", "behaviour_target", "value"):
        assert all(p.grad is None for p in getattr(agent, name).parameters()), name
    assert all(p.grad is not None for p in agent.policy.velocity.parameters())
    assert all(p.requires_grad for p in agent.critic.parameters())  # switched back on for the critic step


def test_critic_losses_send_gradient_only_into_their_own_network():
    agent, batch = make_agent(), make_batch()
    for loss_fn, own in ((agent.critic_loss, "critic"), (agent.behaviour_critic_loss, "behaviour_critic"),
                         (agent.value_loss, "value")):
        loss, info = loss_fn(batch)
        loss.backward()
        for name in NETS:
            grads = [p.grad is not None for p in getattr(agent, name).parameters()]
            assert all(grads) if name == own else not any(grads), (own, name)
            getattr(agent, name).zero_grad(set_to_none=True)
        assert not any(v.requires_grad for v in info.values())
    assert not any(p.requires_grad for p in (*agent.critic_target.parameters(), *agent.behaviour_target.parameters()))


def test_value_step_leaves_policy_and_targets_untouched_and_without_gradient():
    agent, batch = make_agent(), make_batch()
    pre = snapshot(agent)
    info, seen = agent.value_step(batch)
    for name in ("policy", "critic_target", "behaviour_target"):
        assert all(p.grad is None for p in getattr(agent, name).parameters()), name
        assert all(torch.equal(p, q) for p, q in zip(pre[name].parameters(), getattr(agent, name).parameters()))
    assert not seen.q_behaviour.requires_grad


@pytest.mark.parametrize("from_critic", [True, False])
def test_behaviour_critic_is_born_as_a_copy_of_the_critic_or_independent(from_critic):
    agent = make_agent(perturb=False, behaviour_from_critic=from_critic)
    pairs = [("critic", "critic_target"), ("behaviour_critic", "behaviour_target")]
    if from_critic:
        pairs.append(("critic", "behaviour_critic"))
    for a, b in pairs:
        for p, q in zip(getattr(agent, a).parameters(), getattr(agent, b).parameters()):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), (a, b)
    if not from_critic:
        weights = [(p, q) for p, q in zip(agent.critic.parameters(), agent.behaviour_critic.parameters())
                   if p.dim() == 3 and p.shape[1] > 1]  # the linear layers' weights (E, in, out)
        assert weights and not any(torch.equal(p, q) for p, q in weights)


# ---------------------------------------------------------------------------- defaults, acting, compile, checkpoint
def test_defaults_follow_the_reference():
    agent = FlowRLAgent(OBS, ACT)  # the reference's 512-wide networks
    assert (agent.discount, agent.expectile, agent.policy_delay, agent.target_tau) == (0.99, 0.9, 2, 0.95)
    for opt in (agent.value_optimizer, agent.policy_optimizer):
        assert [g["lr"] for g in opt.param_groups] == [3e-4]
    assert isinstance(agent.regularizer, W2Regularizer) and agent.regularizer.lam == 0.1
    assert agent.aggregate is min_aggregate
    assert agent.amp_dtype is None and agent.device == torch.device("cpu") and agent.num_updates == 0
    assert all(torch.equal(p, q) for p, q in zip(agent.critic.parameters(), agent.behaviour_critic.parameters()))
    ids = lambda *nets: {id(p) for n in nets for p in n.parameters()}  # noqa: E731
    assert {id(p) for g in agent.value_optimizer.param_groups for p in g["params"]} == ids(
        agent.critic, agent.behaviour_critic, agent.value)
    assert {id(p) for g in agent.policy_optimizer.param_groups for p in g["params"]} == ids(agent.policy)


def test_act_samples_unless_deterministic_and_takes_float64():
    agent = make_agent()
    obs = torch.randn(4, OBS, generator=torch.Generator().manual_seed(0)).double().numpy()  # numpy's default dtype
    a, b = agent.act(obs), agent.act(obs)
    assert a.dtype == np.float32 and a.shape == (4, ACT) and not np.array_equal(a, b)
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    with torch.no_grad():
        greedy = pi(agent.policy, torch.as_tensor(obs, dtype=torch.float32), torch.zeros(4, ACT))
    np.testing.assert_allclose(agent.act(obs, deterministic=True), greedy.numpy(), rtol=1e-6, atol=1e-6)


def test_compile_wraps_every_network(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    agent = make_agent()
    agent.compile()
    expected = [agent.policy.velocity, agent.critic, agent.critic_target, agent.behaviour_critic,
                agent.behaviour_target, agent.value]
    assert len(compiled) == len(expected) and all(any(c is e for c in compiled) for e in expected)


def test_loaded_agent_continues_identically_and_shares_no_optimiser_state():
    batch = make_batch()
    a = make_agent()
    for _ in range(3):
        a.update(batch)
    b = make_agent(perturb=False)
    b.load_state_dict(a.state_dict())
    assert b.num_updates == 3
    for _ in range(2):  # a's step must not move b's Adam moments: compare the weights after, not only the losses
        torch.manual_seed(5)
        ia = a.update(batch)
        torch.manual_seed(5)
        assert b.update(batch) == ia
    for name in NETS:
        for p, q in zip(getattr(a, name).parameters(), getattr(b, name).parameters()):
            assert torch.equal(p, q), name


def test_checkpoint_names_every_network_as_its_attribute():
    agent = make_agent()
    assert set(agent.modules()) == set(NETS) and all(agent.modules()[n] is getattr(agent, n) for n in NETS)
    state = agent.state_dict()
    assert set(state) == {"networks", "optimizers", "num_updates"}  # ActorCritic's layout, as SAC and TD3
    assert set(state["networks"]) == set(NETS)
    assert agent.optimizers() == {"value": agent.value_optimizer, "policy": agent.policy_optimizer}


def test_a_checkpoint_in_the_layout_before_actor_critic_loads_and_continues_identically():
    """Checkpoints written before FlowRLAgent shared ActorCritic's layout held ``value_optimizer`` and
    ``policy_optimizer`` at the top level; they are format 1, and the format 1 -> 2 migration (run by
    ``flowrl-convert``) gives them the shared layout."""
    batch = make_batch()
    a = make_agent()
    a.update(batch)
    a.update(batch)
    state = a.state_dict()
    old = {"networks": state["networks"], "value_optimizer": state["optimizers"]["value"],
           "policy_optimizer": state["optimizers"]["policy"], "num_updates": state["num_updates"]}
    b = make_agent(perturb=False)
    b.load_state_dict(upgrade({"format": 1, "agent": old})["agent"])
    assert b.num_updates == 2
    assert b.value_optimizer.state_dict()["state"][0]["exp_avg"].equal(state["optimizers"]["value"]["state"][0]["exp_avg"])
    torch.manual_seed(5)
    ia = a.update(batch)
    torch.manual_seed(5)
    assert b.update(batch) == ia


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])
def test_autocast_runs_the_update_in_amp_dtype_or_not_at_all(amp_dtype):
    agent = make_agent(amp_dtype=amp_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 must not ask CPU autocast for float32 (it warns, then disables)
        with agent.autocast():
            assert torch.is_autocast_enabled("cpu") == (amp_dtype is not None)
            if amp_dtype is not None:
                assert torch.get_autocast_dtype("cpu") == amp_dtype


@pytest.mark.parametrize("needs", [None, frozenset()])
def test_regularizer_gets_only_the_values_it_lists_in_needs(needs):
    """A regularizer without ``needs`` (a plain function) or with an empty one gets no behaviour values."""
    seen = []

    def regularizer(policy, inputs):
        seen.append(inputs)
        return inputs.obs.new_zeros(()), {}

    if needs is not None:
        regularizer.needs = needs
    agent, batch = make_agent(regularizer=regularizer), make_batch()
    _, from_value_step = agent.value_step(batch)
    assert from_value_step.obs is batch.obs and from_value_step.action is batch.action
    agent.policy_step(batch, from_value_step)
    for inputs in (from_value_step, *seen):
        assert inputs.q_behaviour is None and inputs.value is None
    assert seen[0].obs is batch.obs and seen[0].q_policy.shape == (B, 1)


@pytest.mark.parametrize("from_critic", [True, False])
def test_networks_live_on_the_given_device_and_adam_is_fused_where_it_can_be(from_critic):
    # "meta" stands in for an accelerator on a CPU-only machine: every tensor must follow the runner's choice.
    meta = make_agent(perturb=False, device="meta", behaviour_from_critic=from_critic)
    for name, module in meta.modules().items():
        assert {t.device.type for t in (*module.parameters(), *module.buffers())} == {"meta"}, name
    assert meta.value_optimizer.defaults["foreach"] and meta.policy_optimizer.defaults["foreach"]
    cpu = make_agent(perturb=False)  # fused Adam: one kernel per parameter group on CPU and CUDA
    assert cpu.value_optimizer.defaults["fused"] and cpu.policy_optimizer.defaults["fused"]
    assert adam([torch.nn.Parameter(torch.zeros(1))], 1e-3, torch.device("cuda")).defaults["fused"]
