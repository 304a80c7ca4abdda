"""Every shipped gin file parses strictly, alone and with each ablation and agent overlay, and builds an agent."""

from pathlib import Path

import gin
import pytest

from flowrl.agents.flowrl import FlowRLAgent
from flowrl.agents.sac import SACAgent
from flowrl.agents.td3 import TD3Agent
from flowrl.config import REPO_ROOT, parse
from flowrl.errors import UserError

TASK_CONFIGS = sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "gin").rglob("*.gin")
                      if p.parent.name not in {"ablations", "bench", "agents"} and p.name != "smoke.gin")
OVERLAYS = sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "gin" / "ablations").glob("*.gin"))
OTHER_OVERLAYS = sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "gin" / "bench").glob("*.gin"))
AGENT_OVERLAYS = sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "gin" / "agents").glob("*.gin"))


def build_agent() -> FlowRLAgent:
    agent_fn = gin.query_parameter("Trainer.agent").scoped_configurable_fn
    return agent_fn(obs_dim=24, act_dim=6)


def test_shipped_configs_exist():
    names = {p.name for p in TASK_CONFIGS}
    assert {"flowrl_base.gin", "flowrl_humanoid.gin", "flowrl_dog_run.gin", "flowrl_cheetah_run.gin"} <= names
    assert {p.stem for p in OVERLAYS} == {
        "integrator_euler", "integrator_rk4", "flow_steps_5", "reg_kl", "reg_bc", "reg_none", "reg_w2_per_sample",
        "critic_ensemble_10", "velocity_residual",
    }  # fmt: skip


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=str)
def test_task_config_parses_and_builds(config):
    parse([str(config)])
    agent = build_agent()
    assert agent.discount == 0.99 and agent.target_tau == 0.95 and agent.policy_delay == 2
    assert agent.critic.num_members == 2


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.stem)
def test_overlay_composes_with_task_config(overlay):
    parse(["gin/flowrl_humanoid.gin", str(overlay), "gin/smoke.gin"])
    agent = build_agent()
    stem = overlay.stem
    if stem == "critic_ensemble_10":
        assert agent.critic.num_members == 10
    elif stem == "reg_w2_per_sample":
        assert type(agent.regularizer).__name__ == "W2Regularizer" and agent.regularizer.per_sample is True
    elif stem.startswith("reg_"):
        expected = {"reg_kl": "KLRegularizer", "reg_bc": "BCRegularizer", "reg_none": "NoRegularizer"}[stem]
        assert type(agent.regularizer).__name__ == expected
    elif stem.startswith("integrator_"):
        assert agent.policy.solver.step.__name__ == f"{stem.split('_')[1]}_step"
    elif stem == "flow_steps_5":
        assert agent.policy.solver.num_steps == 5
    elif stem == "velocity_residual":
        assert type(agent.policy.velocity).__name__ == "ResidualVelocity"
    else:
        raise AssertionError(f"no check for the overlay {overlay}: add one here")


def test_base_config_holds_paper_hyperparameters():
    parse(["gin/flowrl_humanoid.gin"])
    q = gin.query_parameter
    assert q("make_env.task") == "dmc/humanoid-run"
    assert q("Trainer.total_steps") == 1_000_000 and q("Trainer.warmup_steps") == 5000
    assert q("Trainer.batch_size") == 256 and q("ReplayBuffer.capacity") == 1_000_000
    assert q("FlowRLAgent.lr") == 3e-4 and q("FlowRLAgent.expectile") == 0.9 and q("W2Regularizer.lam") == 0.1
    agent = build_agent()
    assert agent.policy.solver.num_steps == 1 and agent.policy.solver.step.__name__ == "midpoint_step"


@pytest.mark.parametrize(
    "binding, needle",
    [
        ("Trainer.nope = 3", "doesn't have a parameter named 'nope'"),
        ("Nope.x = 1", "No configurable matching 'Nope'"),
        ("Trainer.total_steps = = 3", "malformed gin"),
    ],
)
def test_bad_bindings_are_one_line_user_errors(binding, needle):
    with pytest.raises(UserError) as err:
        parse(["gin/flowrl_humanoid.gin"], [binding])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_gin_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        parse([str(tmp_path / "absent.gin")])


@pytest.mark.parametrize("overlay", OTHER_OVERLAYS + OVERLAYS, ids=str)
def test_every_overlay_composes_with_every_family(overlay):
    for task in ("gin/flowrl_cheetah_run.gin", "gin/humanoidbench/h1_walk.gin"):
        parse([task, str(overlay)])
        assert build_agent() is not None


def test_agent_overlays_hold_the_papers_hyperparameters():
    assert {p.stem for p in AGENT_OVERLAYS} == {"sac", "td3"}
    q = gin.query_parameter
    parse(["gin/flowrl_cheetah_run.gin", "gin/agents/sac.gin"])
    assert q("SACAgent.lr") == 3e-4 and q("SACAgent.discount") == 0.99 and q("SACAgent.target_tau") == 0.005
    assert q("Trainer.batch_size") == 256 and q("Trainer.updates_per_step") == 1.0 and q("Trainer.eval_deterministic")
    sac = build_agent()
    assert isinstance(sac, SACAgent) and sac.temperature.target_entropy == -6.0 and sac.temperature.alpha == 1.0
    assert [m.out_features for m in sac.policy.net if hasattr(m, "out_features")] == [256, 256, 12]
    parse(["gin/flowrl_cheetah_run.gin", "gin/agents/td3.gin"])
    assert q("TD3Agent.lr") == 3e-4 and q("Trainer.eval_deterministic") and q("Trainer.batch_size") == 256
    td3 = build_agent()
    assert isinstance(td3, TD3Agent) and td3.policy_delay == 2 and td3.target_tau == 0.005
    assert (td3.target_noise, td3.target_noise_clip, td3.exploration_noise) == (0.2, 0.5, 0.1)
    assert [m.out_features for m in td3.policy.net if hasattr(m, "out_features")] == [256, 256, 6]


@pytest.mark.parametrize("agent", AGENT_OVERLAYS, ids=lambda p: p.stem)
@pytest.mark.parametrize("task", TASK_CONFIGS, ids=str)
def test_every_agent_overlay_composes_with_every_task_config(task, agent):
    expected = {"sac": SACAgent, "td3": TD3Agent}[agent.stem]
    for extra in ([], ["gin/smoke.gin"], ["gin/bench/cpu_learning.gin"]):
        parse([str(task), str(agent), *extra])
        built = build_agent()
        assert type(built) is expected and built.critic.num_members == 2
        width = {"gin/smoke.gin": 64}.get(extra[0] if extra else None, 256)
        assert built.policy.net[0].out_features == width and built.critic.body.net[0].weight.shape[-1] == width
