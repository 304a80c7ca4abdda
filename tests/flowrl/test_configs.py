"""Every shipped gin file parses strictly; tasks and agents stay apart, so any agent composes with any task; the old
entry files keep their meaning; a run folder written before the split still resumes."""

import importlib.util
import json
import re
import runpy
import shutil
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

from flowrl.agents.flowrl import FlowRLAgent
from flowrl.agents.sac import SACAgent
from flowrl.agents.td3 import TD3Agent
from flowrl.config.checks import bound_values, check_config
from flowrl.config import REPO_ROOT, parse
from flowrl.errors import UserError
from flowrl.run.metrics import read_metrics

GIN = REPO_ROOT / "gin"


def _rel(paths) -> list[Path]:
    return sorted(p.relative_to(REPO_ROOT) for p in paths)


ALL_CONFIGS = _rel(GIN.rglob("*.gin"))
TASKS = _rel((GIN / "tasks").rglob("*.gin"))  # gin/tasks/<family>/<task>.gin: env and run schedule only
AGENTS = _rel((GIN / "agents").glob("*.gin"))  # gin/agents/<agent>.gin: complete agents (any file added is tested)
TUNINGS = _rel((GIN / "agents").glob("*/*.gin"))  # gin/agents/<agent>/<family>.gin: an agent's tuning for a family
# The entry files from before the split (each now a task + gin/agents/flowrl.gin), and the compatibility base.
ENTRIES = _rel([*(p for p in GIN.glob("flowrl_*.gin") if p.name != "flowrl_base.gin"),
                *(GIN / "humanoidbench").glob("*.gin")])
OVERLAYS = _rel((GIN / "ablations").glob("*.gin"))
OTHER_OVERLAYS = _rel((GIN / "bench").glob("*.gin"))
ONE_TASK_PER_FAMILY = {"dmc": "gin/tasks/dmc/humanoid_run.gin", "humanoidbench": "gin/tasks/humanoidbench/h1_walk.gin"}
# What a task file may bind: the env and the run schedule, nothing an agent reads.
TASK_NAMES = {"make_env.task", "Trainer.env_fn", "Trainer.num_envs", "Trainer.total_steps", "Trainer.warmup_steps",
              "Trainer.eval_every", "Trainer.eval_episodes", "Trainer.checkpoint_every", "Trainer.log_every"}
HAVE_HB = importlib.util.find_spec("humanoid_bench") is not None


def build_agent(obs_dim: int = 24, act_dim: int = 6):
    agent_fn = gin.query_parameter("Trainer.agent").scoped_configurable_fn
    return agent_fn(obs_dim=obs_dim, act_dim=act_dim)


def agent_class(agent_file: Path) -> str:
    """The class an agent file names in ``Trainer.agent = @Class``."""
    return re.search(r"^Trainer\.agent\s*=\s*@(\w+)", (REPO_ROOT / agent_file).read_text(), re.M).group(1)


def num_parameters(agent) -> int:
    return sum(p.numel() for m in agent.modules().values() for p in m.parameters())


def widths() -> dict[str, int]:
    return {k: v for k, v in bound_values().items() if k.rsplit(".", 1)[-1] in ("hidden", "width")}


# ------------------------------------------------------------------------------------------------ the layout
def test_shipped_configs_exist():
    names = {str(p) for p in ALL_CONFIGS}
    assert {f"gin/tasks/dmc/{t}.gin" for t in ("humanoid_run", "humanoid_walk", "dog_run", "dog_trot", "walker_run",
                                               "cheetah_run")} <= names
    assert {f"gin/tasks/{p}" for p in ("humanoidbench/h1_walk.gin", "humanoidbench/h1_reach.gin")} <= names
    assert {p.stem for p in AGENTS} >= {"flowrl", "sac", "td3"}
    assert {"gin/flowrl_base.gin", "gin/flowrl_humanoid.gin", "gin/flowrl_dog_run.gin", "gin/flowrl_cheetah_run.gin",
            "gin/agents/flowrl/humanoidbench.gin"} <= names
    assert {p.stem for p in OVERLAYS} == {
        "integrator_euler", "integrator_rk4", "flow_steps_5", "reg_kl", "reg_bc", "reg_none", "reg_w2_per_sample",
        "critic_ensemble_10", "velocity_residual",
    }  # fmt: skip


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=str)
def test_every_shipped_config_parses_strictly_and_says_where_it_comes_from(config):
    parse([str(config)])
    assert (REPO_ROOT / config).read_text().startswith("#")


@pytest.mark.parametrize("task", TASKS, ids=str)
def test_a_task_file_binds_only_its_env_and_schedule(task):
    parse([str(task)])
    bound = bound_values()
    assert set(bound) <= TASK_NAMES and "make_env.task" in bound
    family, name = task.parts[-2], task.stem
    assert bound["make_env.task"].startswith(f"{family}/") and bound["make_env.task"].replace("-", "_").endswith(name)
    if family == "toy":  # toy tasks learn in minutes: their files give their own schedules (tests/flowrl/test_toy.py)
        return
    assert (bound["Trainer.total_steps"], bound["Trainer.warmup_steps"], bound["Trainer.eval_every"]) == (
        1_000_000, 5000, 10_000)


@pytest.mark.parametrize("agent", AGENTS, ids=lambda p: p.stem)
def test_an_agent_file_binds_no_task_or_schedule_and_names_its_agent(agent):
    parse([str(agent)])
    bound = bound_values()
    assert not set(bound) & TASK_NAMES
    # gin/agents/sac.gin builds SACAgent; a variant's file adds _<letter>: gin/agents/sac_flow_g.gin builds SACFlowAgent
    assert agent_class(agent).lower().startswith(re.sub(r"_[a-z]$", "", agent.stem).replace("_", ""))
    with pytest.raises(UserError, match="names no task.*gin/tasks/") as err:
        check_config()  # an agent alone is a one-line error that names the fix
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("tuning", TUNINGS, ids=str)
def test_an_agents_tuning_binds_only_that_agent(tuning):
    parse([str(tuning)])
    agent = tuning.parent.name
    assert (REPO_ROOT / "gin" / "agents" / f"{agent}.gin").exists() and tuning.stem in ONE_TASK_PER_FAMILY
    assert all(name.lower().startswith(agent) for name in bound_values()), bound_values()


# --------------------------------------------------------------------------------- any agent on any task family
@pytest.mark.parametrize("family", sorted(ONE_TASK_PER_FAMILY))
@pytest.mark.parametrize("agent", AGENTS, ids=lambda p: p.stem)
def test_every_agent_on_each_task_family_parses_strictly_and_builds_that_agent(agent, family):
    task = ONE_TASK_PER_FAMILY[family]
    parse([task, str(agent)])
    check_config()
    full = build_agent()
    assert type(full).__name__ == agent_class(agent)
    assert gin.query_parameter("make_env.task").startswith(f"{family}/")
    # The overlays shrink whatever agent is in use: smoke to a laptop-sized agent, bench to a CPU width of 256.
    parse([task, str(agent), "gin/smoke.gin"])
    check_config()
    wide = {k: v for k, v in widths().items() if v > 64}
    assert not wide, f"gin/smoke.gin leaves {wide} of {agent}: bind them to 64 there"
    assert gin.query_parameter("ReplayBuffer.capacity") <= 10_000
    small = build_agent()
    assert type(small) is type(full)
    assert num_parameters(small) <= min(num_parameters(full) / 5, 250_000), f"gin/smoke.gin does not shrink {agent}"
    parse([task, str(agent), "gin/bench/cpu_learning.gin"])
    check_config()
    wide = {k: v for k, v in widths().items() if v > 256}
    assert not wide, f"gin/bench/cpu_learning.gin leaves {wide} of {agent}: bind them to 256 there"
    assert num_parameters(build_agent()) <= num_parameters(full)


@pytest.mark.parametrize("agent", AGENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("task", TASKS, ids=str)
def test_every_agent_composes_with_every_task(task, agent):
    parse([str(task), str(agent), "gin/smoke.gin"])
    check_config()
    assert gin.query_parameter("Trainer.agent").selector.endswith(agent_class(agent))


def test_the_task_does_not_leak_into_the_agent_or_the_agent_into_the_task():
    parse(["gin/tasks/dmc/humanoid_run.gin", "gin/agents/sac.gin"])
    assert not any(name.startswith(("FlowRLAgent.", "FlowPolicy.", "MLPVelocity.", "W2Regularizer."))
                   for name in bound_values())  # no unused FlowRL bindings when SAC runs
    parse(["gin/tasks/humanoidbench/h1_walk.gin", "gin/agents/sac.gin"])
    assert "FlowRLAgent.expectile" not in bound_values()  # FlowRL's HumanoidBench tuning stays FlowRL's
    parse(["gin/tasks/humanoidbench/h1_walk.gin", "gin/agents/flowrl.gin"])
    assert gin.query_parameter("FlowRLAgent.expectile") == 0.9
    parse(["gin/tasks/humanoidbench/h1_walk.gin", "gin/agents/flowrl.gin", "gin/agents/flowrl/humanoidbench.gin"])
    assert gin.query_parameter("FlowRLAgent.expectile") == 0.8


# ------------------------------------------------------------------------------- the old entry files, unchanged
@pytest.mark.parametrize("config", ENTRIES, ids=str)
def test_entry_file_is_a_task_plus_flowrl(config):
    text = (REPO_ROOT / config).read_text()
    family = "humanoidbench" if config.parent.name == "humanoidbench" else "dmc"
    includes = re.findall(r"^include '([^']+)'$", text, re.M)
    assert includes[0].startswith(f"gin/tasks/{family}/") and includes[1] == "gin/agents/flowrl.gin"
    assert includes[2:] == (["gin/agents/flowrl/humanoidbench.gin"] if family == "humanoidbench" else [])
    assert not re.search(r"^\w[\w.]*\s*=", text, re.M)  # nothing but includes: the parts hold every value
    parse([str(config)])
    agent = build_agent()
    assert isinstance(agent, FlowRLAgent)
    assert agent.discount == 0.99 and agent.target_tau == 0.95 and agent.policy_delay == 2
    assert agent.critic.num_members == 2 and agent.expectile == (0.8 if family == "humanoidbench" else 0.9)


def test_base_config_holds_paper_hyperparameters():
    parse(["gin/flowrl_humanoid.gin"])
    q = gin.query_parameter
    assert q("make_env.task") == "dmc/humanoid-run"
    assert q("Trainer.total_steps") == 1_000_000 and q("Trainer.warmup_steps") == 5000
    assert q("Trainer.batch_size") == 256 and q("ReplayBuffer.capacity") == 1_000_000
    assert q("FlowRLAgent.lr") == 3e-4 and q("FlowRLAgent.expectile") == 0.9 and q("W2Regularizer.lam") == 0.1
    agent = build_agent()
    assert agent.policy.solver.num_steps == 1 and agent.policy.solver.step.__name__ == "midpoint_step"


def test_the_compatibility_base_binds_flowrl_and_the_schedule_without_a_task():
    parse(["gin/flowrl_base.gin"], ["make_env.task = 'dmc/humanoid-run'"])
    with_base = {k: repr(v) for k, v in bound_values().items()}
    parse(["gin/flowrl_humanoid.gin"])
    assert with_base == {k: repr(v) for k, v in bound_values().items()}


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


@pytest.mark.parametrize("overlay", OTHER_OVERLAYS + OVERLAYS, ids=str)
def test_every_overlay_composes_with_every_family(overlay):
    for task in ONE_TASK_PER_FAMILY.values():
        parse([task, "gin/agents/flowrl.gin", str(overlay)])
        assert build_agent() is not None


def test_agent_files_hold_the_papers_hyperparameters():
    q = gin.query_parameter
    parse(["gin/tasks/dmc/cheetah_run.gin", "gin/agents/sac.gin"])
    assert q("SACAgent.lr") == 3e-4 and q("SACAgent.discount") == 0.99 and q("SACAgent.target_tau") == 0.005
    assert q("Trainer.batch_size") == 256 and q("Trainer.updates_per_step") == 1.0 and q("Trainer.eval_deterministic")
    assert q("ReplayBuffer.capacity") == 1_000_000
    sac = build_agent()
    assert isinstance(sac, SACAgent) and sac.temperature.target_entropy == -6.0 and sac.temperature.alpha == 1.0
    assert [m.out_features for m in sac.policy.net if hasattr(m, "out_features")] == [256, 256, 12]
    parse(["gin/tasks/dmc/cheetah_run.gin", "gin/agents/td3.gin"])
    assert q("TD3Agent.lr") == 3e-4 and q("Trainer.eval_deterministic") and q("Trainer.batch_size") == 256
    assert q("ReplayBuffer.capacity") == 1_000_000
    td3 = build_agent()
    assert isinstance(td3, TD3Agent) and td3.policy_delay == 2 and td3.target_tau == 0.005
    assert (td3.target_noise, td3.target_noise_clip, td3.exploration_noise) == (0.2, 0.5, 0.1)
    assert [m.out_features for m in td3.policy.net if hasattr(m, "out_features")] == [256, 256, 6]


@pytest.mark.parametrize("agent", ["gin/agents/sac.gin", "gin/agents/td3.gin"])
def test_an_agent_replaces_the_one_an_old_entry_file_names_in_its_place(agent):
    # --agent over a file that includes FlowRL: FlowRL's bindings stay, unused; the agent file wins where both bind,
    # and the overlay after the entry file (smoke.gin's batch 64) still wins over the agent's batch size.
    parse(["gin/flowrl_cheetah_run.gin", "gin/smoke.gin"], agent=agent)
    assert type(build_agent()).__name__ == agent_class(Path(agent)) and gin.query_parameter("Trainer.batch_size") == 64
    # Two agent files without --agent: which agent trains would depend on the order, so it is one line instead.
    with pytest.raises(UserError, match=rf"two agent files in one config \(gin/agents/flowrl.gin and {agent}\); "
                                        rf"fix: .* --agent {agent}$"):
        parse(["gin/flowrl_cheetah_run.gin", agent, "gin/smoke.gin"])


# ----------------------------------------------------------------------------------------------- user errors
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
    with pytest.raises(UserError, match="'gin/tasks/dmc/absent.gin' not found"):
        parse(["gin/tasks/dmc/absent.gin", "gin/agents/sac.gin"])
    with pytest.raises(UserError, match=r"is a directory; fix: name a \.gin file, e.g. --gin gin/tasks/dmc/\w+\.gin"):
        parse(["gin/tasks"])
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'gin/tasks/dmc/absent.gin'\ninclude 'gin/agents/sac.gin'\n")
    with pytest.raises(UserError, match="Unable to open file: gin/tasks/dmc/absent.gin") as err:
        parse([str(mine)])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ real runs, every agent
# 300 env steps, 100 updates of batch 16 (QVPO's update, 64 candidates x 20 denoising steps, sets the pace).
TINY = ["Trainer.total_steps = 300", "Trainer.warmup_steps = 200", "Trainer.eval_every = 300",
        "Trainer.eval_episodes = 1", "Trainer.checkpoint_every = 300", "Trainer.log_every = 100",
        "Trainer.batch_size = 16", "ReplayBuffer.capacity = 1000", "Trainer.num_threads = 1"]  # fmt: skip
# The iterative samplers' chains cut to a few steps (DIPO's 100-step chain and 30 action steps, QVPO's and DACER's
# 20 steps, QSM's 20 Langevin steps): the same code path from config to run, a fraction of the time (DIPO 78 s ->
# ~15 s); the chains' lengths are the agent tests' and fixtures' business.
AGENT_TINY = {"dipo": ["DiffusionPolicy.num_steps = 5", "ActionGradient.steps = 5"],
              "dpmd": ["DiffusionPolicy.num_steps = 3"], "qvpo": ["DiffusionPolicy.num_steps = 5"],
              "dacer": ["DiffusionPolicy.num_steps = 5"], "qsm": ["LangevinPolicy.num_steps = 5"],
              "sdac": ["DiffusionPolicy.num_steps = 3", "SDACAgent.num_samples = 4"],
              "idem": ["DiffusionPolicy.num_steps = 3", "IDEMAgent.num_mc_samples = 4"]}
RUN_TASKS = {"dmc": "gin/tasks/dmc/cheetah_run.gin", "humanoidbench": "gin/tasks/humanoidbench/h1_walk.gin"}
# DMC episodes are 1,000 steps: 100 makes the final evaluation, evaluate.py's and its video (and an iterative
# policy's acting) cheap.
SHORT_EPISODES = {"dmc": ["EnvpoolDMC.max_episode_steps = 100", "DMControlVecEnv.max_episode_steps = 100"],
                  "humanoidbench": []}


def run_py(capsys, monkeypatch, *args: str) -> str:
    """``python tools/run.py ARGS --no-display`` run in this process (a new interpreter's imports would cost more than
    the tiny run itself); returns its stderr."""
    monkeypatch.setattr(sys, "argv", ["tools/run.py", *args, "--no-display"])
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path(str(REPO_ROOT / "tools" / "run.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_status.value.code == 0, err[-3000:]
    return err


@pytest.mark.parametrize("family", sorted(RUN_TASKS))
@pytest.mark.parametrize("agent", AGENTS, ids=lambda p: p.stem)
def test_every_agent_trains_on_each_task_family_through_run_py(agent, family, tmp_path, capsys, monkeypatch):
    if family == "humanoidbench" and not HAVE_HB:
        from flowrl.envs.humanoidbench import INSTALL

        pytest.skip(f"HumanoidBench is not installed; to run this: {INSTALL}")
    files = [RUN_TASKS[family], str(agent), "gin/smoke.gin"]
    parse(files)
    tiny = [*TINY, *SHORT_EPISODES[family], *(f"{name} = 32" for name in widths()),  # every width, any agent
            "Video.width = 64", "Video.height = 48", *AGENT_TINY.get(agent.stem, [])]
    err = run_py(capsys, monkeypatch, *(a for f in files for a in ("--gin", f)),
                 *(a for b in tiny for a in ("--bind", b)), "--run-dir", str(tmp_path))
    assert "done: 300 env steps" in err
    config = (tmp_path / "config.gin").read_text()
    assert f"Trainer.agent = @{agent_class(agent)}" in config and "Trainer.total_steps = 300" in config
    assert any("eval/return_mean" in r for r in read_metrics(tmp_path))
    # Every tool agrees on the run (issue 28): tools/evaluate.py rebuilds it through the same builder, and on DMC,
    # whose renderer works here, renders its video too.
    video = ["--video"] if family == "dmc" else []
    result = evaluate_py(capsys, monkeypatch, str(tmp_path), "--episodes", "1", "--device", "cpu", *video)
    assert result["env_steps"] == 300 and result["episodes"] == 1 and np.isfinite(result["return_mean"])
    if video:
        assert Path(result["video"]).stat().st_size > 500 and Path(result["video"]).parent == tmp_path / "videos"


def evaluate_py(capsys, monkeypatch, *args: str) -> dict:
    """``python tools/evaluate.py ARGS`` run in this process; returns its JSON line."""
    monkeypatch.setattr(sys, "argv", ["tools/evaluate.py", *args])
    with pytest.raises(SystemExit) as exit_status:
        runpy.run_path(str(REPO_ROOT / "tools" / "evaluate.py"), run_name="__main__")
    out, err = capsys.readouterr()
    assert exit_status.value.code == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- run folders from before the split
# config.gin of a run that tools/run.py wrote before the split (commit 3ea6978: gin/flowrl_cheetah_run.gin, which
# included gin/flowrl_base.gin, with gin/smoke.gin and tiny --bind sizes): the names and values old runs hold.
OLD_RUN_CONFIG = Path(__file__).parent / "data" / "config_before_task_agent_split.gin"
OLD_INCLUDE_CONFIG = """include 'gin/flowrl_base.gin'
make_env.task = 'dmc/cheetah-run'
MLPVelocity.hidden = 32
QEnsemble.hidden = 32
ValueNetwork.hidden = 32
ReplayBuffer.capacity = 1000
Trainer.total_steps = 200
Trainer.warmup_steps = 100
Trainer.eval_every = 200
Trainer.eval_episodes = 1
Trainer.checkpoint_every = 200
Trainer.log_every = 100
Trainer.batch_size = 32
Trainer.num_threads = 1
"""


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A run folder as flowrl left it before the split: that config.gin, and a checkpoint at env step 200."""
    from flowrl.trainer import build_trainer

    run_dir = tmp_path_factory.mktemp("old") / "run"
    run_dir.mkdir()
    parse([str(OLD_RUN_CONFIG)])
    build_trainer(run_dir=run_dir, display=False).train()
    (run_dir / "config.gin").write_text(OLD_RUN_CONFIG.read_text())
    gin.clear_config()
    return run_dir


@pytest.mark.parametrize("config", ["operative", "include"])
def test_a_run_folder_from_before_the_split_resumes(old_run, tmp_path, capsys, monkeypatch, config):
    # 'operative': what tools/run.py wrote; 'include': a hand-kept config.gin naming the old gin/flowrl_base.gin.
    run_dir = Path(shutil.copytree(old_run, tmp_path / "run"))
    if config == "include":
        (run_dir / "config.gin").write_text(OLD_INCLUDE_CONFIG)
        parse([str(run_dir / "config.gin")])
        included = {k: repr(v) for k, v in bound_values().items()}
        parse([str(OLD_RUN_CONFIG)])
        assert {k: repr(v) for k, v in bound_values().items() if k in included} == included  # the same, by old names
    err = run_py(capsys, monkeypatch, "--resume", str(run_dir), "--bind", "Trainer.total_steps = 300")
    assert "resuming" in err and "done: 300 env steps" in err
    saved = (run_dir / "config.gin").read_text()
    assert "Trainer.agent = @FlowRLAgent" in saved and "MLPVelocity.hidden = 32" in saved
    assert "make_env.task = 'dmc/cheetah-run'" in saved and "FlowRLAgent.expectile = 0.9" in saved
