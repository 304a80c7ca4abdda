"""Issue 9: progress rates and ETA over a recent window (rich.progress), and one thread per run on shared cores."""

import functools
import io

from rich.console import Console

import torch

from components.buffers import ReplayBuffer
from flowrl.display import Progress
from flowrl.envs.registry import make_env
from flowrl.trainer import build_trainer
from flowrl.build.machine import threads_for_shared_cores


def _warmup_then_updates(progress, clock):
    step = updates = 0
    for _ in range(100):  # warm-up: 5,000 random steps in 10 s
        clock[0] += 0.1
        step += 50
        progress.tick(step, updates)
    for _ in range(1200):  # then 120 s at 100 steps/s with updates
        clock[0] += 0.1
        step += 10
        updates += 10
        progress.tick(step, updates)
    return step, updates


def test_rate_and_eta_come_from_the_recent_window_not_the_start():
    clock = [0.0]
    out = io.StringIO()
    progress = Progress(50_000, live=False, clock=lambda: clock[0], window=60.0,
                        console=Console(file=out, force_terminal=False, width=200))
    step, updates = _warmup_then_updates(progress, clock)
    progress.update(step, updates)
    progress.close()
    assert abs(progress.steps_per_second - 100.0) < 1.0  # since the start it would read 131
    assert abs(progress.eta - (50_000 - step) / 100.0) < 5.0
    assert "step 17,000/50,000  100.0 steps/s  100.0 updates/s  eval -  ETA 0:05:30" in out.getvalue()


def test_a_terminal_gets_a_rich_bar():
    clock = [0.0]
    out = io.StringIO()
    progress = Progress(50_000, live=True, clock=lambda: clock[0],
                        console=Console(file=out, force_terminal=True, width=160))
    step, updates = _warmup_then_updates(progress, clock)
    progress.last_eval = 12.5
    progress.update(step, updates)
    progress.bar.refresh()
    progress.close()
    text = out.getvalue()
    assert "17,000/50,000" in text and "100.0 steps/s" in text and "0:05:30" in text and "eval 12.5" in text


def test_threads_for_shared_cores():
    assert threads_for_shared_cores(cpus=2, load=0.1, threads=2) == 2  # idle: torch's default
    assert threads_for_shared_cores(cpus=2, load=1.0, threads=2) == 1  # one of two cores busy
    assert threads_for_shared_cores(cpus=2, load=5.0, threads=2) == 1  # never fewer than one
    assert threads_for_shared_cores(cpus=16, load=4.0, threads=16) == 12


def test_the_trainer_takes_one_thread_when_the_cores_are_busy(tmp_path, monkeypatch):
    monkeypatch.setattr("os.getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    trainer = build_trainer(tmp_path, env_fn=functools.partial(make_env, task="dmc/cheetah-run"), num_threads=0,
                      buffer=functools.partial(ReplayBuffer, capacity=100), display=False)  # 0 wins over gin
    trainer._close_env()
    assert chosen == [1] and "cores shared" in trainer.thread_note and "Trainer.num_threads" in trainer.thread_note
    chosen.clear()
    build_trainer(tmp_path, env_fn=functools.partial(make_env, task="dmc/cheetah-run"), num_threads=3,
            buffer=functools.partial(ReplayBuffer, capacity=100), display=False)._close_env()
    assert chosen == [3]  # a bound Trainer.num_threads is kept as it is


def test_the_bar_shows_the_update_rate_as_soon_as_updates_run():
    # Issue 19: it read "? updates/s" from the end of the warm-up until the next log line, minutes on humanoid-run.
    clock = [0.0]
    out = io.StringIO()
    progress = Progress(50_000, live=True, clock=lambda: clock[0],
                        console=Console(file=out, force_terminal=True, width=160))
    step, updates = _warmup_then_updates(progress, clock)  # ticks only: no report (log line) since the start
    progress.bar.refresh()
    progress.close()
    assert "100.0 updates/s" in out.getvalue()
