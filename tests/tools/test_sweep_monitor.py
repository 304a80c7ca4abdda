"""The sweep's plain-text summary: trial states, env steps of the grid, and an ETA over a sliding window."""

import json
from pathlib import Path

from rich.console import Console

from flowrl.sweep import monitor as monitor_module
from flowrl.sweep.monitor import SweepMonitor
from flowrl.sweep.plan import Trial


def set_steps(run_dir: Path, step: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "critic/loss": 0.5}) + "\n")


def test_summary_counts_states_and_gives_an_eta_at_the_recent_rate(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(monitor_module.time, "monotonic", lambda: clock[0])
    a, b = (Trial("dmc/cheetah-run", v, 0, str(tmp_path / v), [], [], 1000) for v in ("base", "reg_kl"))
    m = SweepMonitor([a, b], console=Console(file=open(tmp_path / "out.txt", "w"), force_terminal=False))
    set_steps(Path(a.run_dir), 100)
    assert m.summary() == "sweep: 2 queued; 100/2,000 env steps"  # one point: no rate yet

    clock[0] = 100.0
    set_steps(Path(a.run_dir), 300)
    set_steps(Path(b.run_dir), 100)
    m.outcome(b.id, "failed")
    m.poll()
    # 300 steps in 100 s: the 1,600 left take 533 s
    assert m.summary() == "sweep: 1 queued, 1 failed; 400/2,000 env steps, ETA 0:08:53"

    clock[0] = 1100.0
    set_steps(Path(a.run_dir), 900)
    set_steps(Path(b.run_dir), 5000)  # counted up to its total only
    # the point at 0 s fell out of the 900 s window: 1,500 steps in 1,000 s, 100 left (since the start: 0:01:01)
    assert m.summary() == "sweep: 1 queued, 1 failed; 1,900/2,000 env steps, ETA 0:01:06"
    set_steps(Path(a.run_dir), 1000)
    assert m.summary().endswith("2,000/2,000 env steps")  # nothing left: no ETA
