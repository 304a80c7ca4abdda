"""Values a config may not hold: outside their mathematical range, or a string where a component is expected. Each is
one line naming the binding and the fix, before anything is built; a component that refuses its arguments anyway is
one line too."""

import subprocess
import sys
from pathlib import Path

import pytest

from flowrl.config.checks import check_config
from flowrl.config import parse
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
QVPO = ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/qvpo.gin"]
FLOWRL = ["gin/flowrl_cheetah_run.gin"]
QSM = ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/qsm.gin"]
DIPO = ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/dipo.gin"]


@pytest.mark.parametrize("files, binding, message", [
    (QVPO, "QVPOAgent.discount = 1.5", r"QVPOAgent.discount = 1.5 is outside \[0.0, 1.0\]; fix: .*= 0.99"),
    (QVPO, "QVPOAgent.target_tau = 0.0", r"outside \(0.0, 1.0\]"),
    (QVPO, "QVPOAgent.train_candidates = 0", r"outside \[1, inf\)"),
    (QVPO, "QVPOAgent.max_grad_norm = -1.0", r"outside \(0.0, inf\)"),
    (QVPO, "DiffusionPolicy.noise_ratio = -0.5", r"outside \[0.0, inf\)"),
    (QVPO, "DiffusionPolicy.num_steps = 0", r"DiffusionPolicy.num_steps = 0 is outside"),
    (QSM, "QSMAgent.num_particles = 0", r"QSMAgent.num_particles = 0 is outside \[1, inf\); fix: .*= 32"),
    (QSM, "QSMAgent.policy_lr_decay_updates = 0", r"outside \[1, inf\); fix: .*= 50000"),
    (QSM, "LangevinPolicy.num_steps = 0", r"LangevinPolicy.num_steps = 0 is outside \[1, inf\); fix: .*= 20"),
    (DIPO, "ActionGradient.max_grad_norm = -0.1", r"ActionGradient.max_grad_norm = -0.1 is outside \[0.0, inf\); "
                                                   r"fix: .*= 0.2"),
    (DIPO, "DIPOAgent.policy_target_delay = 0", r"outside \[1, inf\)"),
    (DIPO, "DiffusionBuffer.capacity = 0", r"outside \[1, inf\)"),
    (FLOWRL, "FlowRLAgent.expectile = 1.0", r"outside \(0.0, 1.0\)"),
    (FLOWRL, "FlowRLAgent.lr = 0.0", r"outside \(0.0, inf\)"),
    (FLOWRL, "W2Regularizer.lam = -0.1", r"outside \[0.0, inf\)"),
])  # fmt: skip
def test_out_of_range_values_are_one_line(files, binding, message):
    parse([str(ROOT / f) for f in files], [binding])
    with pytest.raises(UserError, match=message):
        check_config()


@pytest.mark.parametrize("binding, fix", [
    ("QVPOAgent.policy = 'DiffusionPolicy'", "@DiffusionPolicy"),
    ("DiffusionPolicy.schedule = 'cosine'", "@cosine_beta_schedule"),
    ("QVPOAgent.weights = 'qadv'", "@q_advantage_weights"),
    ("QEnsemble.body = 'EnsembleFeedForward'", "@EnsembleMLP"),
])  # fmt: skip
def test_a_string_where_a_component_is_expected_is_one_line(binding, fix):
    parse([str(ROOT / f) for f in QVPO], [binding])
    with pytest.raises(UserError, match=rf"is a string where a component is expected; fix: .*{fix}"):
        check_config()


def test_edge_values_inside_the_range_pass():
    parse([str(ROOT / f) for f in QVPO], ["QVPOAgent.discount = 1.0", "QVPOAgent.target_tau = 1.0",
                                          "QVPOAgent.entropy_weight = 0.0", "DiffusionPolicy.noise_ratio = 0.0"])
    check_config()


def test_every_shipped_agent_and_overlay_is_inside_the_ranges():
    for agent in sorted((ROOT / "gin/agents").glob("*.gin")):
        for overlay in [None, *sorted((ROOT / "gin/ablations").glob("*.gin")), ROOT / "gin/smoke.gin"]:
            parse([str(ROOT / "gin/tasks/dmc/cheetah_run.gin"), str(agent), *([str(overlay)] if overlay else [])])
            check_config()


def test_a_component_refusing_its_arguments_is_one_line_in_the_runner(tmp_path):
    # No range rule covers action bounds; the policy's own ValueError is what the user sees, as one line.
    cmd = [sys.executable, str(ROOT / "tools/run.py"), "--gin", str(ROOT / "gin/tasks/dmc/cheetah_run.gin"),
           "--gin", str(ROOT / "gin/agents/qvpo.gin"), "--gin", str(ROOT / "gin/smoke.gin"),
           "--bind", "Trainer.total_steps = 10", "--bind", "DiffusionPolicy.action_low = 1.0",
           "--run-dir", str(tmp_path / "run"), "--no-display"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and "action_high > action_low" in errors[0] and "fix:" in errors[0]
