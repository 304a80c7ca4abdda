"""Ranges are declared once, next to the configurable that takes the parameter (``RANGES``, components/ranges.py):
the config check reads those declarations (no table of its own), and a component built by hand refuses the same
value with the same line a config gets."""

import inspect
from pathlib import Path

import gin
import gin.config
import pytest

import flowrl.config.checks as checks
from components.ranges import Range, ranges_of
from flowrl.config import parse
from flowrl.config.checks import check_config
from flowrl.config.parsing import register_all
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
QVPO = ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/qvpo.gin"]
FLOWRL = ["gin/flowrl_cheetah_run.gin"]
QSM = ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/qsm.gin"]
DIPO = ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/dipo.gin"]
# The names the config check's old name-keyed table ranged, whichever configurable took them: each configurable
# that takes one now declares its range itself.
ONCE_TABLED = {"discount", "target_tau", "expectile", "lr", "critic_lr", "policy_lr", "adam_eps", "max_grad_norm",
               "noise_ratio", "entropy_weight", "entropy_weight_min", "entropy_samples", "entropy_decay_updates",
               "train_candidates", "behaviour_candidates", "eval_candidates", "target_candidates", "num_candidates",
               "num_steps", "num_members", "hidden", "policy_delay", "lam", "coef", "alpha_lr", "alpha_delay",
               "reward_scale", "noise_scale", "initial_alpha", "num_components"}
TRAINER_COUNTS = {"total_steps", "warmup_steps", "num_envs", "batch_size", "eval_every", "eval_episodes",
                  "checkpoint_every", "log_every", "updates_per_step", "num_threads", "video_every"}


def configurables() -> dict[str, object]:
    register_all()
    return {selector.rsplit(".", 1)[-1]: c.wrapped for selector, c in gin.config._REGISTRY.items()}


def parameters(owner) -> set[str]:
    return set(inspect.signature(owner).parameters)


def test_the_config_check_keeps_no_table_of_ranges():
    assert not hasattr(checks, "_RANGES") and not hasattr(checks, "_LOWEST")
    source = inspect.getsource(checks)
    assert "Range(" not in source and "ranges_of(" in source  # it reads the owners' declarations


def test_every_configurable_declares_the_ranges_of_the_parameters_it_takes():
    missing = [f"{name}.{param}" for name, owner in configurables().items()
               for param in parameters(owner) & ONCE_TABLED if param not in ranges_of(owner)]
    assert not missing
    assert ranges_of(configurables()["Trainer"]).keys() == TRAINER_COUNTS
    assert "capacity" in ranges_of(configurables()["ReplayBuffer"])


def test_a_declaration_names_parameters_its_owner_takes():
    # A class's own RANGES (an agents' base may declare what only some agents take: each checks what it takes).
    stale = [f"{name}.{param}" for name, owner in configurables().items()
             for param in (vars(owner).get("RANGES", {}) if isinstance(owner, type) else ranges_of(owner))
             if param not in parameters(owner)]
    assert not stale


def test_the_config_check_reads_the_owners_declaration(monkeypatch):
    from components.velocity import MLPVelocity

    parse([str(ROOT / f) for f in FLOWRL], ["MLPVelocity.hidden = 16"])
    check_config()  # inside [1, inf)
    monkeypatch.setattr(MLPVelocity, "RANGES", {"hidden": Range(1, 8)})
    message = r"^MLPVelocity\.hidden = 16 is outside \[1, 8\]; fix: bind a value in \[1, 8\]$"
    with pytest.raises(UserError, match=message):
        check_config()  # the default 512 is outside the narrowed range: no example


def _built(build):
    with pytest.raises(ValueError) as err:
        build()
    return str(err.value).splitlines()[0]  # gin adds "In call to configurable ..." below; the runner prints the first


def _hand_built_cases():
    from components.buffers import ReplayBuffer
    from components.diffusion import DiffusionPolicy, cosine_beta_schedule
    from components.regularizers import W2Regularizer
    from flowrl.agents.flowrl import FlowRLAgent
    from flowrl.agents.qsm import QSMAgent
    from flowrl.agents.qvpo import QVPOAgent
    from components.action_gradient import ActionGradient
    from flowrl.build.settings import Settings

    return [
        (QVPO, "QVPOAgent.discount = 1.5", lambda: QVPOAgent(3, 2, discount=1.5)),
        (QVPO, "QVPOAgent.train_candidates = 0", lambda: QVPOAgent(3, 2, train_candidates=0)),
        (QVPO, "DiffusionPolicy.num_steps = 0", lambda: DiffusionPolicy(3, 2, num_steps=0)),
        (QVPO, "cosine_beta_schedule.num_steps = 0", lambda: cosine_beta_schedule(0)),
        (QSM, "QSMAgent.policy_lr_end = 0.0", lambda: QSMAgent(3, 2, policy_lr_end=0.0)),
        (FLOWRL, "FlowRLAgent.expectile = 1.0", lambda: FlowRLAgent(3, 2, expectile=1.0)),
        (FLOWRL, "W2Regularizer.lam = -0.1", lambda: W2Regularizer(lam=-0.1)),
        (FLOWRL, "Trainer.batch_size = 0", lambda: Settings(batch_size=0)),
        (FLOWRL, "ReplayBuffer.capacity = 0", lambda: ReplayBuffer(3, 2, capacity=0)),
        (DIPO, "ActionGradient.steps = 0", lambda: ActionGradient(steps=0)),
    ]


@pytest.mark.parametrize("case", range(9))
def test_a_hand_built_component_says_what_the_config_says(case):
    files, binding, build = _hand_built_cases()[case]
    parse([str(ROOT / f) for f in files], [binding])
    with pytest.raises(UserError) as err:
        check_config()
    gin.clear_config()  # the hand-built one gets the value as an argument, not from the config
    assert _built(build) == str(err.value)
