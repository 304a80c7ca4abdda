"""tools/export.py: every agent's evaluation policy as a pt2, AOTInductor or ONNX file that acts as the eager agent
does; the README's flowrl-free example reproduces tools/evaluate.py's return; bad input is one line, nothing written.

The agents are the smoke sizes of gin/agents/ (the diffusion agents with 3 denoising steps, SAC Flow with 2). AOTInductor compiles C++
(tens of seconds), so it runs on FlowRL (the end-to-end test) and DACER only.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest
import torch

from flowrl.config import parse
from flowrl.envs.base import scale_action
from flowrl.errors import UserError
from flowrl.export import load, trace, write

ROOT = Path(__file__).resolve().parents[2]
# SDAC and IDEM export DPMD's action path (Diffv2Agent._act: tests/flowrl/test_compiled_act.py checks it is theirs).
AGENTS = ("flowrl", "qvpo", "dacer", "qsm", "dipo", "dpmd", "sac_flow_g", "sac_flow_t", "sac", "td3")
# Fewer denoising or flow steps trace the same code in less time.
BINDINGS = {"dacer": ["DiffusionPolicy.num_steps = 3"], "qvpo": ["DiffusionPolicy.num_steps = 3"],
            "qsm": ["LangevinPolicy.num_steps = 3"], "dipo": ["DiffusionPolicy.num_steps = 3"],
            "dpmd": ["DiffusionPolicy.num_steps = 3"],
            "sac_flow_g": ["NoisyFlowPolicy.num_steps = 2"],
            "sac_flow_t": ["NoisyFlowPolicy.num_steps = 2", "TransformerVelocity.num_steps = 2"]}
OBS_DIM, LOW, HIGH = 5, np.array([-2.0, 0.0]), np.array([2.0, 0.5])  # bounds that are not [-1, 1]
# A tiny FlowRL run on DMC, stepped by plain dm_control (as the README's example steps it); 1000-step episodes.
RUN = ["--gin", "gin/tasks/dmc/cheetah_run.gin", "--gin", "gin/agents/flowrl.gin", "--gin", "gin/smoke.gin",
       *(a for b in ("Trainer.total_steps = 200", "Trainer.warmup_steps = 100", "Trainer.checkpoint_every = 200",
                     "Trainer.eval_every = 0", "Trainer.eval_episodes = 1", "Trainer.num_threads = 1",
                     "MLPVelocity.hidden = 16", "QEnsemble.hidden = 16", "ValueNetwork.hidden = 16",
                     "make_dmc.backend = @DMControlVecEnv") for a in ("--bind", b)), "--no-display"]
# The example's process: flowrl (and its components) cannot be imported there, torch and dm_control can.
NO_FLOWRL = """import sys
sys.modules.update(flowrl=None, components=None)
try:
    import flowrl
except ImportError:
    pass
else:
    raise SystemExit("flowrl is importable")
"""


def tool(name: str, *args: str, capsys) -> tuple[int, str, str]:
    """``python tools/<name>.py ARGS`` in this process: exit code, stdout, stderr."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [f"tools/{name}.py", *args])
        with pytest.raises(SystemExit) as exit_status:
            runpy.run_path(str(ROOT / "tools" / f"{name}.py"), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_status.value.code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["tools/run.py", *RUN, "--run-dir", str(folder)])
        with pytest.raises(SystemExit) as exit_status:
            runpy.run_path(str(ROOT / "tools" / "run.py"), run_name="__main__")
    assert exit_status.value.code == 0
    gin.clear_config()
    return folder


def agent_of(name: str):
    torch.manual_seed(0)
    parse([f"gin/agents/{name}.gin", "gin/smoke.gin"], BINDINGS.get(name, []))
    return gin.query_parameter("Trainer.agent").scoped_configurable_fn(OBS_DIM, len(LOW), device="cpu", amp_dtype=None)


def noise_for(draws, seed: int) -> list[torch.Tensor]:
    """What the eager policy draws after ``torch.manual_seed(seed)``, as the noise input (none if it draws nothing)."""
    torch.manual_seed(seed)
    return [torch.cat([torch.randn(s).flatten() for s in draws])] if draws else []


def check_acts_as_eager(name: str, fmt: str, deterministic: bool, tmp_path: Path, batch: int = 1) -> None:
    agent = agent_of(name)
    traced = trace(agent, OBS_DIM, deterministic, LOW, HIGH, batch)
    out = tmp_path / f"policy{'.onnx' if fmt == 'onnx' else '.pt2'}"
    write(traced, fmt, out, {})
    act = load(out, fmt)
    for seed in (1, 2):  # fresh observations and noise, twice: the file keeps no state between calls
        obs = np.random.default_rng(seed).standard_normal((batch, OBS_DIM)).astype(np.float32)
        torch.manual_seed(seed)
        eager = scale_action(agent.act(obs, deterministic=deterministic), LOW, HIGH)
        exported = act(obs, *noise_for(traced.draws, seed))
        assert exported.dtype == np.float64 and exported.shape == (batch, len(LOW))
        np.testing.assert_allclose(exported, eager, atol=1e-5, rtol=0, err_msg=f"{name} {fmt} {deterministic}")


# Exploring, every agent (the noise input); evaluating too where the evaluation path differs otherwise than by the
# noise: QVPO's best of more candidates, DACER's chain from zero (FlowRL's zero noise: the --deterministic export below).
@pytest.mark.parametrize("name, deterministic", [*((a, False) for a in AGENTS), ("qvpo", True), ("dacer", True)])
def test_every_agent_exports_to_pt2_and_acts_as_eager(name, deterministic, tmp_path):
    check_acts_as_eager(name, "pt2", deterministic, tmp_path, batch=3 if name == "qvpo" else 1)


@pytest.mark.parametrize("name", AGENTS)
def test_every_agent_exports_to_onnx_and_acts_as_eager(name, tmp_path):
    check_acts_as_eager(name, "onnx", False, tmp_path)


def test_a_diffusion_agent_exports_to_aoti_and_acts_as_eager(tmp_path):
    check_acts_as_eager("dacer", "aoti", False, tmp_path)


def test_export_keeps_only_the_policy_path():
    qvpo = trace(agent_of("qvpo"), OBS_DIM, True, LOW, HIGH)
    assert qvpo.networks == ["critic", "policy"]  # best-of-N with its critic; no targets, no optimisers
    assert all(k.split(".")[1] in ("critic", "policy") for k in qvpo.program.state_dict if k.startswith("networks"))
    flowrl = trace(agent_of("flowrl"), OBS_DIM, True, LOW, HIGH)
    assert flowrl.networks == ["policy"] and flowrl.draws == []  # from zero noise: no noise input


def test_flowrl_free_example_reproduces_evaluate(run_dir, tmp_path, capsys):
    code, out, err = tool("evaluate", str(run_dir), "--episodes", "1", "--device", "cpu", capsys=capsys)
    assert code == 0, err
    evaluated = json.loads(out.strip().splitlines()[-1])
    assert evaluated["deterministic"] is False and evaluated["length_mean"] == 1000  # fresh noise, whole episodes
    for fmt, name in (("pt2", "policy.pt2"), ("aoti", "compiled.pt2"), ("onnx", "policy.onnx")):
        code, out, err = tool("export", str(run_dir), "--format", fmt, "--out", str(tmp_path / name), capsys=capsys)
        assert code == 0, err
    meta = json.loads((tmp_path / "policy.pt2.json").read_text())
    assert meta["task"] == "dmc/cheetah-run" and meta["agent"] == "FlowRLAgent" and meta["env_steps"] == 200
    assert meta["noise"]["draws"] == [[1, 6]] and [i["name"] for i in meta["inputs"]] == ["obs", "noise"]
    readme = (ROOT / "README.md").read_text().split("## Deploying a trained policy", 1)[1]
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    # The three files in one flowrl-free process: the README's example on the pt2, then the same episode's first
    # observations through the compiled and the ONNX file (and onnxruntime) against the pt2's actions.
    check = example + """
import onnxruntime
compiled = torch._inductor.aoti_load_package("compiled.pt2")
session = onnxruntime.InferenceSession("policy.onnx")
obs, noise = torch.randn(1, meta["obs_dim"]), torch.randn(meta["inputs"][1]["shape"])
reference = policy(obs, noise).numpy()
gaps = [abs(compiled(obs, noise).numpy() - reference).max(),
        abs(session.run(None, {"obs": obs.numpy(), "noise": noise.numpy()})[0] - reference).max()]
print(json.dumps({"total": float(total), "gaps": [float(g) for g in gaps]}))
"""
    proc = subprocess.run([sys.executable, "-I", "-c", NO_FLOWRL + check], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MUJOCO_GL": "egl"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["total"] == pytest.approx(evaluated["return_mean"], rel=1e-5, abs=1e-4)
    assert max(result["gaps"]) < 1e-5
    # The ONNX file needs neither flowrl nor torch: ONNX Runtime and numpy alone act as the pt2 file does.
    obs, noise = np.random.default_rng(0).standard_normal((2, 1, 17)).astype(np.float32), np.ones((2, 6), np.float32)
    np.savez(tmp_path / "inputs.npz", obs=obs, noise=noise)
    onnx_only = NO_FLOWRL.replace("components=None", "components=None, torch=None") + """
import numpy as np, onnxruntime
session, inputs = onnxruntime.InferenceSession("policy.onnx"), np.load("inputs.npz")
np.save("actions.npy", np.stack([session.run(None, {"obs": o, "noise": n})[0] for o, n in zip(inputs["obs"], inputs["noise"])]))
"""
    proc = subprocess.run([sys.executable, "-I", "-c", onnx_only], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pt2 = load(tmp_path / "policy.pt2", "pt2")
    np.testing.assert_allclose(np.load(tmp_path / "actions.npy"), [pt2(o, n) for o, n in zip(obs, noise)], atol=1e-5)


# ---------------------------------------------------------------------------------------------------- bad input
def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_a_run_without_checkpoints_or_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("not a run")
    out = tmp_path / "p.pt2"
    code, _, err = tool("export", str(tmp_path / "empty"), "--format", "pt2", "--out", str(out), capsys=capsys)
    one_line_error(code, err, "has no checkpoint yet", "fix:")
    code, _, err = tool("export", str(tmp_path / "file.txt"), "--format", "pt2", "--out", str(out), capsys=capsys)
    one_line_error(code, err, "is a file, not a run folder", "fix:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt"]


def test_a_missing_onnx_package_or_compiler_is_one_line(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    code, _, err = tool("export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "p.onnx"), capsys=capsys)
    one_line_error(code, err, "needs onnxscript", "[export]", "pip install")
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/no/such/g++",))
    code, _, err = tool("export", str(run_dir), "--format", "aoti", "--out", str(tmp_path / "p.pt2"), capsys=capsys)
    one_line_error(code, err, "no compiler was found", "fix: install g++")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_out_is_refused_unless_forced(run_dir, tmp_path, capsys):
    out = tmp_path / "p.pt2"
    out.write_text("keep me")
    code, _, err = tool("export", str(run_dir), "--format", "pt2", "--out", str(out), capsys=capsys)
    one_line_error(code, err, "exists", "--force")
    assert out.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["p.pt2"]
    code, out_line, err = tool("export", str(run_dir), "--format", "pt2", "--out", str(out), "--force",
                               "--deterministic", capsys=capsys)
    assert code == 0, err
    assert json.loads(out_line)["deterministic"] is True and out.stat().st_size > 1000
    assert json.loads((tmp_path / "p.pt2.json").read_text())["inputs"] == [
        {"name": "obs", "shape": [1, 17], "dtype": "float32"}]  # FlowRL from zero noise: no noise input


def test_a_wrong_suffix_is_one_line(run_dir, tmp_path, capsys):
    code, _, err = tool("export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "p.pt2"), capsys=capsys)
    one_line_error(code, err, "does not end in .onnx", "--out")
    code, _, err = tool("export", str(run_dir), "--format", "pt2", "--out", str(tmp_path), capsys=capsys)
    one_line_error(code, err, "fix:")
    assert list(tmp_path.iterdir()) == []


class RandAgent:
    """An agent whose action path draws uniforms (which the noise input cannot feed)."""

    def __init__(self):
        self.policy = torch.nn.Linear(OBS_DIM, 2)

    def modules(self):
        return {"policy": self.policy}

    def _act(self, obs, deterministic):
        return torch.tanh(self.policy(obs) + torch.rand(obs.shape[0], 2))


def test_an_agent_that_cannot_be_exported_is_one_line():
    with pytest.raises(UserError, match=r"RandAgent's action path cannot be exported: it draws with aten\.rand"):
        trace(RandAgent(), OBS_DIM, False, LOW, HIGH)
    with pytest.raises(UserError, match=r"object cannot be exported: it lacks _act\(obs, deterministic\)"):
        trace(object(), OBS_DIM, False, LOW, HIGH)


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from flowrl.export import formats

    def broken(traced, path):
        path.write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(formats.WRITERS, "pt2", broken)
    with pytest.raises(OSError):
        write(trace(agent_of("sac"), OBS_DIM, True, LOW, HIGH), "pt2", tmp_path / "p.pt2", {})
    assert list(tmp_path.iterdir()) == []
