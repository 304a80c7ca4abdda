"""Weights & Biases for a run, optional and offline-safe (``--wandb``, or ``Trainer.wandb = True``).

Logs every metric the run logs (at its env step), the run's config (``bindings.json``, with ``config.gin`` saved as
a file), its provenance, and evaluation videos. Without a login (no ``WANDB_API_KEY``, no ``wandb login``), or with
``WANDB_MODE=offline``, W&B records into ``RUN/wandb/`` for a later ``wandb sync``. ``RUN/wandb.json`` keeps the W&B
run id and the last env step sent, so ``--resume`` continues the same W&B run and sends no step twice (the steps an
interrupted run had sent past its checkpoint are not sent again; on the CPU the resumed run repeats them exactly).
Project, group, job type and tags come from ``WANDB_PROJECT`` (default ``flowrl``), ``WANDB_RUN_GROUP``,
``WANDB_JOB_TYPE`` and ``WANDB_TAGS`` (comma-separated); ``tools/sweep.py --wandb`` sets the last three per trial.
A missing ``wandb`` package or a failing W&B service never stops a run: one ``note:`` line, and training goes on.
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from flowrl.run import bindings, provenance
from flowrl.run import files

STATE_FILE = files.WANDB_STATE


def _note(text: str) -> None:
    print(f"note: {text}; training goes on without W&B", file=sys.stderr)


def logged_in() -> bool:
    """Whether W&B has credentials here (an API key in the environment or ``~/.netrc``), without the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbSink:
    """One W&B run for a run folder; :meth:`open` returns None (after one note) where W&B cannot be used."""

    def __init__(self, run: Any, run_dir: Path, state: dict, sent_through: int):
        self.run, self.run_dir, self.state, self.sent_through = run, Path(run_dir), state, sent_through

    @classmethod
    def open(cls, run_dir: Path, resume_step: int) -> WandbSink | None:
        """Start (``resume_step`` 0) or continue the folder's W&B run."""
        run_dir = Path(run_dir)
        try:
            import wandb
        except ImportError as e:
            _note(f"--wandb asked for but wandb is not installed ({e}); fix: pip install wandb")
            return None
        state = _read_state(run_dir) if resume_step else {}
        run_id = state.get("id") or secrets.token_hex(4)  # a fresh start (history dropped) is a new W&B run
        mode = None if os.environ.get("WANDB_MODE") or logged_in() else "offline"
        tags = [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
        config = {**bindings.read(run_dir), "provenance": (provenance.read(run_dir) or [{}])[-1]}
        try:
            run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "flowrl", id=run_id, resume="allow", dir=str(run_dir),
                name=run_dir.name, group=os.environ.get("WANDB_RUN_GROUP"), job_type=os.environ.get("WANDB_JOB_TYPE"),
                tags=tags or None, config=config, mode=mode, settings=wandb.Settings(console="off", silent=True),
            )  # fmt: skip
            run.config.update(config, allow_val_change=True)  # a resume's --bind changes (e.g. total_steps)
            if (run_dir / files.CONFIG).is_file():
                run.save(str(run_dir / files.CONFIG), base_path=str(run_dir), policy="now")
        except Exception as e:  # the service, the network, a bad setting: never a reason to stop training
            _note(f"W&B did not start ({_short(e)}); fix: check WANDB_MODE and 'wandb login', or run without --wandb")
            return None
        sink = cls(run, run_dir, {"id": run_id, "step": state.get("step", -1)}, state.get("step", -1))
        sink._save_state()
        print(f"W&B run {run_id} ({'offline, in ' + str(run_dir / 'wandb') if mode == 'offline' else run.url})",
              file=sys.stderr)
        return sink

    def log(self, step: int, data: dict[str, Any]) -> None:
        """Send ``data`` at env step ``step`` unless an earlier process of this run already sent that step."""
        if self.run is None or step <= self.sent_through or not data:
            return
        try:
            self.run.log(data, step=int(step))
        except Exception as e:
            self._fail(e)
            return
        if step > self.state["step"]:
            self.state["step"] = int(step)
            self._save_state()

    def video(self, step: int, path: Path, fps: float) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.log(step, {"eval/video": wandb.Video(str(path), format="mp4", fps=int(round(fps)))})
        except Exception as e:
            self._fail(e)

    def close(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:
                self._fail(e)
            self.run = None

    def _fail(self, e: Exception) -> None:
        _note(f"W&B stopped working ({_short(e)})")
        self.run = None

    def _save_state(self) -> None:
        tmp = self.run_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.state) + "\n")
        tmp.replace(self.run_dir / STATE_FILE)


def _read_state(run_dir: Path) -> dict:
    try:
        state = json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(state, dict) and isinstance(state.get("id"), str) and isinstance(state.get("step"), int)
    return state if ok else {}


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__
