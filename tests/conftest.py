"""Shared test set-up: the repository root on sys.path and small helpers."""

import os
import sys
from pathlib import Path

import gin
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _module_group(item) -> str | None:
    """The module's name where ``item`` uses a module-scoped fixture (a real run made once for its tests), else None."""
    info = getattr(item, "_fixtureinfo", None)
    if info and any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
        return item.module.__name__
    return None


def pytest_itemcollected(item):
    """The tests that share a module-scoped fixture form one ``xdist_group``: with ``--dist loadgroup`` (pyproject's
    addopts) they go to one worker, which makes the run once, where plain ``load`` scheduling would make it on both.
    Marked as each item is collected: xdist's worker reads the marks in its ``pytest_collection_modifyitems``, which
    ran before a ``tryfirst`` conftest hook there (the groups were silently ignored, each run made twice)."""
    group = _module_group(item)
    if group:
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The ``slow`` tests (end-to-end runs of tens of seconds) first, the rest in their order: with ``-n 2`` a slow
    test left to the end keeps one worker busy while the other idles. A module group moves as a whole, so that no
    reordering splits it (a module fixture is made again when its tests are apart)."""
    groups = {item: g for item in items if (g := _module_group(item))}
    slow_groups = {groups[item] for item in groups if item.get_closest_marker("slow")}
    items.sort(key=lambda item: not (item.get_closest_marker("slow") or groups.get(item) in slow_groups))


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores are shared with envpool's threads and other tests: one intra-op thread keeps timings sane.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _fresh_gin_config():
    # A test that parses a config (e.g. a HumanoidBench one, expectile 0.8) must not change the defaults that a later
    # test's hand-built agent or trainer sees: every test parses what it needs itself.
    yield
    gin.clear_config()

# Weights & Biases never reaches the network from a test (tests that need another mode set it themselves).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Trainer.bf16_autocast = None follows the CPU (bf16 where AVX512-BF16 or AMX is native): every machine's test run,
# subprocesses included, sees float32 unless a test chooses (tests/flowrl/test_hardware.py reads fake cpuinfo files).
os.environ.setdefault("FLOWRL_NATIVE_BF16", "0")
