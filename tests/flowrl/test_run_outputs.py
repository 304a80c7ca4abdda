"""Issue 19: what a run folder holds besides the JSON lines, on one real run interrupted past its checkpoint and
resumed: ``metrics.csv`` (the same history as a table, nothing twice), ``bindings.json`` (the config as data, read by
plot and report; old folders still work), evaluation videos, and a Weights & Biases run (the real ``wandb`` package,
offline) that survives the resume without a step sent twice."""

import csv
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

from flowrl.run import bindings
from flowrl.run.checkpoints import list_checkpoints
from flowrl.run.metrics import read_metrics
from flowrl.report.runs import load_run

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "flowrl"))
sys.path.insert(0, str(ROOT / "tools"))
from test_run import TINY, run  # noqa: E402
from test_video import frames_of  # noqa: E402

SHORT = ["--bind", "Trainer.eval_every = 300", "--bind", "Trainer.checkpoint_every = 300"]
VIDEO = ["--bind", "Trainer.video_every = 1", "--bind", "Video.width = 64", "--bind", "Video.height = 48",
         "--bind", "Video.max_frames = 4"]
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}  # never the network


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A tiny run with W&B and videos to 600 env steps, its last checkpoint lost (as if killed after logging 600
    but before checkpointing it), resumed from 300 to 900."""
    base = tmp_path_factory.mktemp("outputs")
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**OFFLINE, "WANDB_CONFIG_DIR": str(base / "wandb-config")}.items():
            mp.setenv(k, v)
        run(*TINY, *SHORT, *VIDEO, "--bind", "Trainer.total_steps = 600", "--wandb", "--run-dir", str(run_dir))
        list_checkpoints(run_dir)[-1].unlink()
        run("--resume", str(run_dir), "--bind", "Trainer.total_steps = 900", "--no-display")
    return run_dir


@pytest.mark.slow
def test_metrics_csv_matches_metrics_jsonl_after_a_resume(resumed):
    records = read_metrics(resumed)
    with open(resumed / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in records] == [int(r["step"]) for r in rows]  # one row per line
    logs = [r["step"] for r in records if "eval/return_mean" not in r]
    assert logs == [200, 400, 600, 800]  # nothing twice: the lines logged after 300 were replaced
    assert [r["step"] for r in records if "eval/return_mean" in r] == [300, 600, 900]
    columns = list(rows[0])
    assert columns[0] == "step" and set(columns) == {k for r in records for k in r}
    assert "eval/return_mean" in columns and "critic/loss" in columns
    for record, row in zip(records, rows):
        for key in columns:
            value = record.get(key)
            assert row[key] == ("" if value is None else str(value))
            if value is not None:
                assert float(row[key]) == value


def test_bindings_json_is_the_config_as_data(resumed):
    data = json.loads((resumed / "bindings.json").read_text())
    assert data == bindings.parse((resumed / "config.gin").read_text())
    assert data["make_env.task"] == "dmc/cheetah-run" and data["Trainer.total_steps"] == 900  # the resume's value
    assert data["MLPVelocity.hidden"] == 16 and data["Trainer.agent"].startswith("@")
    assert load_run(resumed).task == "dmc/cheetah-run"


def test_plot_and_report_read_bindings_json_and_fall_back_to_config_gin(resumed, tmp_path):
    from flowrl.report import curves as plot  # tools/plot.py's grouping and labels

    copy = tmp_path / "copy"
    shutil.copytree(resumed, copy)
    data = json.loads((copy / "bindings.json").read_text())
    data.update({"make_env.task": "dmc/walker-run", "Trainer.seed": 7, "FlowRLAgent.lr": 1e-05})
    (copy / "bindings.json").write_text(json.dumps(data))
    assert plot.run_config(copy)["FlowRLAgent.lr"] == "1e-05"  # read from bindings.json, not config.gin
    assert plot.label([copy]) == "dmc/walker-run (1 seed)"
    run_ = load_run(copy)
    assert (run_.task, run_.seed) == ("dmc/walker-run", 7)
    (copy / "bindings.json").unlink()  # a folder written before flowrl kept it
    assert plot.run_config(copy)["FlowRLAgent.lr"] == plot.run_config(resumed)["FlowRLAgent.lr"]
    assert (load_run(copy).task, load_run(copy).seed) == ("dmc/cheetah-run", 0)


def test_bindings_parse_keeps_references_macros_scopes_and_containers():
    text = """
# a comment
include 'gin/somewhere.gin'
HIDDEN = 32
Agent.net = @Net
Agent.reg = @W2()
Net.hidden = %HIDDEN
train/Agent.lr = 3e-4
Agent.sizes = (1, 2)
Agent.names = {'a': [True, None]}
"""
    assert bindings.parse(text) == {
        "HIDDEN": 32, "Agent.net": "@Net", "Agent.reg": "@W2()", "Net.hidden": "%HIDDEN", "train/Agent.lr": 3e-4,
        "Agent.sizes": [1, 2], "Agent.names": {"a": [True, None]},
    }  # fmt: skip
    assert [bindings.text(v) for v in ("@W2()", "x", 1e-05, [1, "a"])] == ["@W2()", "'x'", "1e-05", "[1, 'a']"]


def test_videos_are_written_at_each_evaluation(resumed):
    names = sorted(p.name for p in (resumed / "videos").iterdir())
    assert names == ["step_000000300.mp4", "step_000000600.mp4", "step_000000900.mp4"]
    assert all(frames_of(resumed / "videos" / n) == (4, 64, 48) for n in names)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(resumed / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "eval/video" in events.Tags()["images"]
    assert {e.step for e in events.Images("eval/video")} >= {300, 900}


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``: a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, pos, pending = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # full, or last of several
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_wandb_offline_run_survives_the_resume_without_a_step_twice(resumed):
    run_id = json.loads((resumed / "wandb.json").read_text())["id"]
    folders = sorted((resumed / "wandb").glob("offline-run-*"), key=lambda p: p.name)
    assert len(folders) == 2 and all(f.name.endswith(run_id) for f in folders)  # one W&B run, two processes
    steps, configs, media = [], [], []
    for folder in folders:
        history, config = [], {}
        for record in wandb_records(folder / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                row = {(i.key or i.nested_key[0]): i.value_json for i in record.history.item}
                history.append(int(row["_step"]))
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "run":
                assert record.run.run_id == run_id and record.run.project == "flowrl"
        steps.append(history)
        configs.append(config)
        media += [p.name for p in (folder / "files").rglob("*.mp4")]
        assert (folder / "files" / "config.gin").is_file()
    every = steps[0] + steps[1]
    assert every == sorted(set(every))  # monotone across the resume, no step twice
    assert steps[0] == [300, 400, 600] and steps[1] == [800, 900]  # 400 and 600 were sent by the first process
    assert configs[0]["make_env.task"] == "dmc/cheetah-run" and configs[1]["Trainer.total_steps"] == 900
    assert configs[1]["provenance"]["packages"]["torch"] and configs[1]["Trainer.wandb"] is True
    assert configs[1]["provenance"]["compiled_act"] is False  # a 900-step run acts eagerly under "auto"
    assert len(media) == 3  # the videos at 300 and 600 (first process) and 900 (second)


def test_missing_wandb_or_a_failing_service_is_one_note_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    from flowrl.run.metrics import MetricsLogger

    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: importing it raises ImportError
    (tmp_path / "a").mkdir()
    logger = MetricsLogger(tmp_path / "a", wandb=True)
    logger.log(10, {"critic/loss": 1.0})
    logger.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: --wandb asked for but wandb is not installed")
    assert "training goes on without W&B" in err and read_metrics(tmp_path / "a") == [{"step": 10, "critic/loss": 1.0}]
    monkeypatch.delitem(sys.modules, "wandb")
    # No login and no WANDB_MODE: W&B records offline into the run folder.
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    (tmp_path / "c").mkdir()
    logger = MetricsLogger(tmp_path / "c", wandb=True)
    logger.log(10, {"critic/loss": 1.0})
    logger.close()
    assert "offline" in capsys.readouterr().err and list((tmp_path / "c" / "wandb").glob("offline-run-*/run-*.wandb"))
    # A service that refuses: W&B online with no credentials (and a server that is not there).
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    (tmp_path / "b").mkdir()
    logger = MetricsLogger(tmp_path / "b", wandb=True)
    logger.log(10, {"critic/loss": 1.0})
    logger.close()
    err = capsys.readouterr().err
    assert [line.split(" (")[0] for line in err.splitlines() if line.startswith("note:")] == ["note: W&B did not start"]
    assert read_metrics(tmp_path / "b") == [{"step": 10, "critic/loss": 1.0}]


@pytest.mark.parametrize("binding, needle", [
    ("Video.width = 65", "Video size 65x240 is not two even numbers"),
    ("Trainer.video_every = -1", "Trainer.video_every = -1 is outside [0, inf)"),
])  # fmt: skip
def test_bad_video_values_are_one_line_and_leave_no_folder(tmp_path, binding, needle):
    proc = run(*TINY, "--bind", binding, "--run-dir", str(tmp_path / "r"), check=False, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr and "fix: " in proc.stderr
    assert not (tmp_path / "r").exists()
