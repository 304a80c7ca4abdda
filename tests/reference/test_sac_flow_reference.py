"""flowrl's SACFlowAgent against the authors' SAC Flow JAX code (Elessar123/SAC-FLOW), number for number.

``sac_flow_fixture.npz`` was made by ``make_sac_flow_fixture.py`` from Elessar123/SAC-FLOW at 3df8b9d (jax, flax and
optax on the CPU), for Flow-G (``SAC_flow_gru_jax.py``) and Flow-T (``SAC_flow_transformer_jax.py``) at their
defaults, shrunk to obs 5, act 3, batch 8, GRU and log-std width 16, time embedding 8, d_model 16, critic width 32,
and BatchRenorm's warm-up cut to 2 training calls so that renormalisation acts within the fixture's four updates:
the reference's initial weights and statistics, batches (terminated, truncated and ordinary rows), every normal draw
in order, and after every update its losses, parameters and BatchRenorm statistics. Here flowrl starts from the same
weights and statistics, sees the same batches and draws, and must match every loss to 1e-5 relative and every
parameter and statistic to ``PARAM_ATOL``.

Both sides run in float64. In float32 a sampled action near +-1 makes ``log(1 - a^2 + 1e-6)`` amplify the last bit
in which XLA's and torch's ``tanh`` differ (seen with a float32 fixture: Flow-G matched, Flow-T's first critic loss was
5.6e-5 relative off from one action at ``1 - a^2 = 3.9e-5``); in float64 that bit is 1e-16 and the comparison
measures the arithmetic, not the tanh kernels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from components import (AlphaTemperature, BatchRenorm, EnsembleBatchRenormMLP, GRUVelocity, NoisyFlowPolicy,
                        QEnsemble, StateLogStd, Temperature, TransformerVelocity)
from components.buffers import Batch
from flowrl.agents.sac_flow import SACFlowAgent

FIXTURE = Path(__file__).with_name("sac_flow_fixture.npz")
VARIANTS = ("gru", "transformer")
LOSS_RTOL = 1e-5  # seen: within 1.1e-7 relative, the float32 rounding of the metrics update() returns
PARAM_ATOL = 1e-9  # seen: parameters within 6.7e-12, BatchRenorm statistics within 1.6e-12


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def linear(ours: str, ref: str) -> dict[str, tuple[str, str]]:
    return {f"{ours}.weight": (f"params/{ref}/kernel", "t"), f"{ours}.bias": (f"params/{ref}/bias", "")}


def renorm(ours: str, ref: str, members: bool = False) -> dict[str, tuple[str, str]]:
    kind = "m" if members else ""
    return {f"{ours}.weight": (f"params/{ref}/scale", ""), f"{ours}.bias": (f"params/{ref}/bias", ""),
            f"{ours}.running_mean": (f"batch_stats/{ref}/mean", ""),
            f"{ours}.running_var": (f"batch_stats/{ref}/var", ""),
            f"{ours}.steps": (f"batch_stats/{ref}/steps", "steps" + kind)}


def names(variant: str) -> dict[str, tuple[str, str]]:
    """flowrl's state-dict entries -> (the reference's path under ``actor/``, ``qf/``, ``alpha/``; how to convert)."""
    out: dict[str, tuple[str, str]] = {}
    add = lambda prefix, ref_prefix, d: out.update({f"{prefix}/{k}": (f"{ref_prefix}/{r}", how)  # noqa: E731
                                                   for k, (r, how) in d.items()})
    v = "velocity"
    if variant == "gru":
        for ours, ref in (("time.1", "time_mlp/layers_1"), ("time.3", "time_mlp/layers_3"),
                          ("gate.0", "gate_net/layers_0"), ("gate.2", "gate_net/layers_2"),
                          ("candidate.0", "candidate_net/layers_0"),
                          ("candidate.2", "candidate_net/layers_2")):
            add("policy", "actor", linear(f"{v}.{ours}", ref))
        add("policy", "actor", renorm(f"{v}.norm", "bn"))
        for i in (0, 2, 4):
            add("policy", "actor", linear(f"log_std.net.{i}", f"fc_logstd/layers_{i}"))
    else:
        add("policy", "actor", renorm(f"{v}.obs_norm", "BatchRenorm_0"))
        for k in range(4):
            add("policy", "actor", renorm(f"{v}.x_norms.{k}", f"BatchRenorm_{k + 1}"))
        for ours, ref in (("encoder.0", "Dense_0"), ("encoder.2", "Dense_1"), ("action_proj", "action_proj"),
                          ("time.0", "Dense_2"), ("time.2", "Dense_3"), ("time.4", "Dense_4"),
                          ("mean_head", "velocity_mean_head"), ("log_std_head", "velocity_log_std_head")):
            add("policy", "actor", linear(f"{v}.{ours}", ref))
        for i in range(2):
            layer = f"{v}.layers.{i}"
            for attn in ("self_attn", "cross_attn"):
                for p in ("q", "k", "v", "out"):
                    add("policy", "actor", linear(f"{layer}.{attn}.{p}", f"layer_{i}/{attn}/{p}_proj"))
            add("policy", "actor", linear(f"{layer}.ff.0", f"layer_{i}/Dense_0"))
            add("policy", "actor", linear(f"{layer}.ff.2", f"layer_{i}/Dense_1"))
            for j in range(3):
                add("policy", "actor", renorm(f"{layer}.norms.{j}", f"layer_{i}/BatchRenorm_{j}"))
    for j, idx in enumerate((0, 3, 6)):
        add("critic", "qf", renorm(f"body.net.{idx}", f"VmapQNetwork_0/BatchRenorm_{j}", members=True))
    for j, idx in enumerate((1, 4, 7)):
        out[f"critic/body.net.{idx}.weight"] = (f"qf/params/VmapQNetwork_0/Dense_{j}/kernel", "")
        out[f"critic/body.net.{idx}.bias"] = (f"qf/params/VmapQNetwork_0/Dense_{j}/bias", "mbias")
    out["temperature/log_alpha"] = ("alpha/params/log_ent_coef", "")
    return out


def convert(value: np.ndarray, how: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value))
    if how == "t":
        return t.t()
    if how == "mbias":  # (E, out) -> EnsembleLinear's (E, 1, out)
        return t[:, None, :]
    if how == "stepsm":  # the members' counts are equal: flowrl keeps one
        assert len(set(t.tolist())) == 1
        return t[0].long()
    if how == "steps":
        return t.long()
    return t


def expected(fixture: dict, variant: str, snapshot: str) -> dict[str, torch.Tensor]:
    return {ours: convert(fixture[f"{variant}/{snapshot}/{ref}"], how) for ours, (ref, how) in names(variant).items()}


def state(agent: SACFlowAgent) -> dict[str, torch.Tensor]:
    """Every parameter and statistic, less the action bounds (scale 1, bias 0: the fixture's action_scale and bias)."""
    return {f"{n}/{k}": v for n, m in agent.modules().items() for k, v in m.state_dict().items() if "bounds." not in k}


def make_agent(variant: str, fixture: dict, momentum: float | None = None, warmup: int | None = None,
               **overrides) -> SACFlowAgent:
    hidden, critic_hidden = int(fixture["meta/hidden"]), int(fixture["meta/critic_hidden"])
    if variant == "gru":
        policy = functools.partial(NoisyFlowPolicy, velocity=functools.partial(GRUVelocity, hidden=hidden, time_dim=8),
                                   log_std=functools.partial(StateLogStd, hidden=hidden), num_steps=4)
    else:
        velocity = functools.partial(TransformerVelocity, d_model=16, num_heads=4, num_layers=2, num_steps=4)
        policy = functools.partial(NoisyFlowPolicy, velocity=velocity, log_std=None, num_steps=4,
                                   scale_in_log_prob=False)
    settings = dict(
        policy=policy, critic=functools.partial(QEnsemble, num_members=2, hidden=critic_hidden, depth=2,
                                                body=EnsembleBatchRenormMLP),
        temperature=functools.partial(AlphaTemperature, target_entropy=0.0, initial_alpha=0.2), discount=0.99,
        critic_lr=1e-3, policy_lr=3e-4, temperature_lr=1e-3, adam_betas=(0.5, 0.999), policy_delay=3,
    )  # fmt: skip
    settings.update(overrides)
    agent = SACFlowAgent(int(fixture["meta/obs_dim"]), int(fixture["meta/act_dim"]), **settings)
    for module in agent.modules().values():
        module.to(torch.float64 if fixture["meta/float64"] else torch.float32)
        for m in module.modules():
            if isinstance(m, BatchRenorm):
                m.warmup_steps = int(fixture["meta/warmup"]) if warmup is None else warmup
                m.momentum = 0.99 if momentum is None else momentum
    return agent


class FedDraws:
    """``torch.randn`` returns the reference's normal draws in order; a draw of another shape fails."""

    def __init__(self, draws: np.ndarray, monkeypatch):
        self.queue = [torch.as_tensor(d) for d in draws]
        monkeypatch.setattr(torch, "randn", self.draw)

    def draw(self, *size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        assert self.queue, "flowrl drew more normal tensors than the reference"
        value = self.queue.pop(0)
        assert tuple(value.shape) == tuple(shape), f"draw {tuple(shape)}, reference {tuple(value.shape)}"
        return value.clone()


def replay(fixture: dict, variant: str, monkeypatch, agent: SACFlowAgent | None = None, **overrides):
    """flowrl's updates on the fixture: ``[(info, state)]`` per update."""
    agent = agent or make_agent(variant, fixture, **overrides)
    ours = state(agent)
    with torch.no_grad():
        for name, value in expected(fixture, variant, "init").items():
            ours[name].copy_(value)
    results = []
    for k in range(1, int(fixture["meta/updates"]) + 1):
        b = {n: torch.as_tensor(fixture[f"{variant}/u{k}/batch/{n}"]) for n in
             ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        with monkeypatch.context() as patch:
            draws = FedDraws(fixture[f"{variant}/u{k}/draws"], patch)
            info = agent.update(Batch(obs=b["obs"], action=b["action"], reward=b["reward"][:, None],
                                      next_obs=b["next_obs"], terminated=b["terminated"][:, None],
                                      truncated=b["truncated"][:, None]))
            assert not draws.queue, "flowrl drew fewer normal tensors than the reference"
        results.append((info, {k: v.detach().clone() for k, v in state(agent).items()}))
    return results


LOSSES = {"critic/loss": "critic_loss", "critic/q": "critic_q", "actor/loss": "actor_loss", "alpha/loss": "alpha_loss"}


def compare(fixture: dict, variant: str, monkeypatch, agent: SACFlowAgent | None = None, **overrides) -> float:
    """Replay; assert every loss, parameter and statistic matches; return the largest parameter difference seen."""
    worst = 0.0
    for k, (info, params) in enumerate(replay(fixture, variant, monkeypatch, agent, **overrides), start=1):
        for ours, ref in LOSSES.items():
            key = f"{variant}/u{k}/{ref}"
            assert (ours in info) == (key in fixture), f"update {k}: {ours} logged where the reference has none"
            if key in fixture:
                assert info[ours] == pytest.approx(float(fixture[key]), rel=LOSS_RTOL, abs=1e-7), f"update {k}: {ours}"
        for name, value in expected(fixture, variant, f"u{k}").items():
            mine = params[name]
            if value.dtype == torch.long:
                assert mine.item() == value.item(), f"update {k}: {name}"
                continue
            worst = max(worst, (mine - value).abs().max().item())
            torch.testing.assert_close(mine, value, rtol=0, atol=PARAM_ATOL, msg=f"update {k}: {name}")
    return worst


def test_fixture_covers_terminated_truncated_and_ordinary_rows_and_both_batchrenorm_regimes(fixture):
    for variant in VARIANTS:
        for k in range(1, int(fixture["meta/updates"]) + 1):
            term, trunc = fixture[f"{variant}/u{k}/batch/terminated"], fixture[f"{variant}/u{k}/batch/truncated"]
            assert term.any() and trunc.any() and ((term == 0) & (trunc == 0)).any()
        steps = fixture[f"{variant}/u4/qf/batch_stats/VmapQNetwork_0/BatchRenorm_0/steps"]
        assert (steps > fixture["meta/warmup"]).all()  # the last updates renormalise


def test_every_parameter_covered(fixture):
    for variant in VARIANTS:
        agent = make_agent(variant, fixture)
        assert set(state(agent)) == set(names(variant)), set(state(agent)) ^ set(names(variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_loss_parameter_and_statistic_matches_the_reference(fixture, monkeypatch, variant):
    torch.set_num_threads(1)
    worst = compare(fixture, variant, monkeypatch)
    assert worst < PARAM_ATOL


def separate_target_pass(agent: SACFlowAgent) -> SACFlowAgent:
    """The critic's target from its own pass (eval mode) instead of CrossQ's joint pass."""
    def critic_loss(batch):
        agent.policy.eval()
        with torch.no_grad():
            next_action, next_log_prob = agent.policy.sample_with_log_prob(batch.next_obs)
            agent.critic.eval()
            soft = agent.aggregate(agent.critic(batch.next_obs, next_action)) - agent.temperature.alpha * next_log_prob
            target = batch.reward + agent.discount * (1.0 - batch.terminated) * soft
        agent.critic.train()
        q = agent.critic(batch.obs, batch.action)
        loss = 0.5 * (q - target).square().mean(dim=(1, 2)).sum()
        return loss, {"loss": loss.detach(), "q": q.detach().mean()}

    agent.critic_loss = critic_loss
    return agent


CHANGED_TERMS = {
    "discount": dict(discount=0.98),
    "policy delay": dict(policy_delay=2),
    "temperature loss in log alpha": dict(temperature=functools.partial(Temperature, target_entropy=0.0,
                                                                         initial_alpha=0.2)),
    "target entropy -|A|": dict(temperature=functools.partial(AlphaTemperature, initial_alpha=0.2)),
    "Adam beta1 0.9": dict(adam_betas=(0.9, 0.999)),
    "critic lr": dict(critic_lr=3e-4),
    "mean instead of min over the twin critic": dict(aggregate=lambda q: q.mean(dim=0)),
    "BatchRenorm momentum": dict(momentum=0.9),
    "no renormalisation (warm-up never ends)": dict(warmup=100_000),
}


@pytest.mark.parametrize("change", list(CHANGED_TERMS))
def test_a_changed_term_breaks_the_match(fixture, monkeypatch, change):
    with pytest.raises(AssertionError):
        compare(fixture, "gru", monkeypatch, **CHANGED_TERMS[change])


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_log_prob_form_of_each_variant_is_the_reference_s(fixture, monkeypatch, variant):
    # Flow-G's sum holds -log sigma per step, Flow-T's does not: swapping them breaks the match.
    agent = make_agent(variant, fixture)
    agent.policy.scale_in_log_prob = not agent.policy.scale_in_log_prob
    with pytest.raises(AssertionError):
        compare(fixture, variant, monkeypatch, agent=agent)


def test_a_separate_target_pass_breaks_the_match(fixture, monkeypatch):
    with pytest.raises(AssertionError):
        compare(fixture, "gru", monkeypatch, agent=separate_target_pass(make_agent("gru", fixture)))
