"""Precision follows the hardware: ``Trainer.bf16_autocast = None`` picks bf16 on CUDA and on a CPU that computes it
natively, float32 elsewhere; forcing bf16 where it is emulated says what it costs. The CPU is a fake /proc/cpuinfo."""

from __future__ import annotations

import functools

import pytest
import torch

from components.buffers import ReplayBuffer
from flowrl.build import hardware
from flowrl.trainer import build_trainer
from tests.flowrl.test_trainer_state import N, RecordingAgent, ScriptedVecEnv

AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """``cpu(text)``: the path of a fake /proc/cpuinfo holding ``text``, read by the real flag parser."""
    monkeypatch.delenv("FLOWRL_NATIVE_BF16", raising=False)  # the suite's float32 default (tests/conftest.py)

    def make(text: str) -> str:
        path = tmp_path / f"cpuinfo{len(list(tmp_path.iterdir()))}"
        path.write_text(text)
        return str(path)

    return make


def test_native_bf16_flags_are_read_from_cpuinfo(cpu):
    assert hardware.cpu_bf16_flags(cpu(AVX2_ONLY)) == ()
    assert hardware.cpu_bf16_flags(cpu(SAPPHIRE_RAPIDS)) == ("avx512_bf16", "amx_bf16")
    assert hardware.cpu_bf16_flags(cpu(COOPER_LAKE)) == ("avx512_bf16",)
    assert hardware.cpu_bf16_flags(cpu("") + "-missing") == ()  # unreadable: as if emulated


@pytest.mark.parametrize("text, native", [(AVX2_ONLY, False), (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True)])
def test_none_follows_the_hardware(cpu, text, native):
    path = cpu(text)
    assert hardware.choose_bf16(None, torch.device("cpu"), path) == (native, "")
    assert hardware.choose_bf16(None, torch.device("cuda"), path) == (True, "")  # the reference's CUDA precision
    assert hardware.choose_bf16(False, torch.device("cpu"), path) == (False, "")


def test_forcing_emulated_bf16_says_what_it_costs(cpu):
    bf16, note = hardware.choose_bf16(True, torch.device("cpu"), cpu(AVX2_ONLY))
    assert bf16 and note.startswith("note: ") and "\n" not in note
    assert "13x slower than float32" in note and "Trainer.bf16_autocast = None" in note
    assert hardware.choose_bf16(True, torch.device("cpu"), cpu(SAPPHIRE_RAPIDS)) == (True, "")


def test_the_trainer_prints_the_note_once_and_builds_the_agent_in_the_chosen_precision(tmp_path, monkeypatch,
                                                                                       capsys):
    made = []

    def agent(obs_dim, act_dim, **kwargs):
        made.append(kwargs["amp_dtype"])
        return RecordingAgent(obs_dim, act_dim, **kwargs)

    build = functools.partial(build_trainer, tmp_path, agent=agent, env_fn=ScriptedVecEnv, num_envs=N, device="cpu",
                              buffer=functools.partial(ReplayBuffer, capacity=100), display=False, num_threads=1)
    monkeypatch.setattr(hardware, "cpu_bf16_flags", lambda cpuinfo="": ("amx_bf16",))
    for native in (False, True):
        monkeypatch.setenv("FLOWRL_NATIVE_BF16", "1" if native else "0")
        build(bf16_autocast=None)
        build(bf16_autocast=True)
    assert made == [None, torch.bfloat16, torch.bfloat16, torch.bfloat16]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: bf16")]
    assert len(notes) == 1  # only where bf16 was forced on the emulating CPU
