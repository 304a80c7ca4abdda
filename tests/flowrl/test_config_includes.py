"""An include loop in a config is bad input: every tool that reads configs ends with one line naming the loop."""

import subprocess
import sys
from pathlib import Path

import pytest

from flowrl.config import parse
from flowrl.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loop(tmp_path: Path) -> Path:
    (tmp_path / "a.gin").write_text(f"include '{tmp_path / 'b.gin'}'\n")
    (tmp_path / "b.gin").write_text("Trainer.total_steps = 10\ninclude 'c.gin'\n")  # c.gin: relative to the folder
    (tmp_path / "c.gin").write_text(f"include '{tmp_path / 'a.gin'}'\n")
    return tmp_path / "a.gin"


def test_parse_names_the_loop(loop, monkeypatch):
    monkeypatch.chdir(loop.parent)
    with pytest.raises(UserError, match=r"gin include loop: a.gin -> b.gin -> c.gin -> a.gin; fix: remove"):
        parse([str(loop)])


def test_a_file_that_includes_itself(tmp_path):
    (tmp_path / "self.gin").write_text(f"include '{tmp_path / 'self.gin'}'\n")
    with pytest.raises(UserError, match=r"self.gin -> self.gin"):
        parse([str(tmp_path / "self.gin")])


def test_a_diamond_is_not_a_loop(tmp_path):
    (tmp_path / "leaf.gin").write_text("Trainer.total_steps = 10\n")
    for name in ("left", "right"):
        (tmp_path / f"{name}.gin").write_text(f"include '{tmp_path / 'leaf.gin'}'\n")
    (tmp_path / "top.gin").write_text(f"include '{tmp_path / 'left.gin'}'\ninclude '{tmp_path / 'right.gin'}'\n")
    parse([str(tmp_path / "top.gin")])


@pytest.mark.parametrize("tool", [["tools/run.py", "--gin"], ["tools/sweep.py", "--out", "OUT", "--dry-run", "--gin"],
                                  ["tools/bench.py", "agents", "--quick", "--agent"]])
def test_every_tool_reports_the_loop_in_one_line(loop, tool, tmp_path):
    cmd = [sys.executable, str(ROOT / tool[0]), *[str(tmp_path / "sweep") if a == "OUT" else a for a in tool[1:]], str(loop)]
    proc = subprocess.run(cmd, cwd=loop.parent, capture_output=True, text=True, timeout=120, env=None)
    lines = proc.stderr.strip().splitlines() + proc.stdout.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert errors == [errors[0]] and "include loop" in errors[0] and "fix:" in errors[0]


def test_a_run_folder_is_named_after_its_task_and_agent():
    from flowrl.commands.run import default_name

    assert default_name(["gin/tasks/dmc/cheetah_run.gin", "gin/agents/qvpo.gin", "gin/smoke.gin"]) == "cheetah_run-qvpo"
    assert default_name(["gin/flowrl_humanoid.gin", "gin/ablations/reg_kl.gin"]) == "flowrl_humanoid"
    assert default_name(["gin/flowrl_cheetah_run.gin", "gin/agents/sac.gin"]) == "flowrl_cheetah_run-sac"  # --agent


@pytest.mark.parametrize("tool", [["tools/evaluate.py"], ["tools/run.py", "--resume"], ["tools/plot.py"],
                                  ["tools/report.py"]])
def test_a_file_where_a_run_folder_is_expected_is_one_line(tool, tmp_path):
    a_file = tmp_path / "metrics.jsonl"
    a_file.write_text("{}\n")
    proc = subprocess.run([sys.executable, str(ROOT / tool[0]), *tool[1:], str(a_file)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and "not a" in errors[0] and "fix:" in errors[0]


# ------------------------------------------------------------------------------------ one agent per run (issue 28)
@pytest.mark.parametrize("args, needle", [
    (["--gin", "gin/tasks/dmc/cheetah_run.gin", "--gin", "gin/smoke.gin"],
     "the config names no agent (a task file alone); fix: add an agent file, e.g. --gin gin/agents/flowrl.gin"),
    (["--gin", "gin/tasks/dmc/cheetah_run.gin", "--gin", "gin/agents/qvpo.gin", "--gin", "gin/agents/sac.gin"],
     "two agent files in one config (gin/agents/qvpo.gin and gin/agents/sac.gin); fix: pass one, or replace the agent "
     "an entry file names with --agent, e.g. --agent gin/agents/sac.gin"),
    (["--gin", "gin/flowrl_cheetah_run.gin", "--agent", "gin/tasks/dmc/cheetah_run.gin"],
     "--agent 'gin/tasks/dmc/cheetah_run.gin' is not an agent file; fix: name a file of gin/agents/"),
])  # fmt: skip
def test_a_run_trains_one_named_agent_or_ends_in_one_line(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "tools/run.py", *args, "--run-dir", str(tmp_path / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {needle}")
    assert not (tmp_path / "run").exists()  # nothing written


def test_agent_replaces_the_entry_files_agent_in_its_place_and_names_the_folder():
    from flowrl import config
    from flowrl.build import Settings
    from flowrl.commands.run import default_name

    config.parse(["gin/flowrl_cheetah_run.gin", "gin/smoke.gin"], agent="gin/agents/td3.gin")
    settings = Settings()
    assert settings.agent.__name__ == "TD3Agent" and settings.batch_size == 64  # smoke.gin, after it, still applies
    assert config.parsing.agent_file().name == "td3.gin"
    assert default_name(["gin/flowrl_cheetah_run.gin", "gin/smoke.gin", "gin/agents/td3.gin"]) == "flowrl_cheetah_run-td3"
    assert config.split_agent(["gin/flowrl_cheetah_run.gin", "gin/bench/cpu_learning.gin", "gin/agents/sac.gin"]) == (
        ["gin/flowrl_cheetah_run.gin", "gin/bench/cpu_learning.gin"], "gin/agents/sac.gin")  # a sweep's agent variant
    assert config.split_agent(["gin/tasks/dmc/cheetah_run.gin", "gin/agents/sac.gin"]) == (
        ["gin/tasks/dmc/cheetah_run.gin", "gin/agents/sac.gin"], None)  # nothing to replace


def test_old_entry_files_hold_no_values_of_their_own():
    # gin/flowrl_*.gin and gin/humanoidbench/*.gin keep old commands working: includes and comments only.
    legacy = [p for p in (ROOT / "gin").glob("flowrl_*.gin")] + list((ROOT / "gin" / "humanoidbench").glob("*.gin"))
    assert len(legacy) >= 17
    for path in legacy:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert lines and all(ln.startswith("include ") for ln in lines), path
