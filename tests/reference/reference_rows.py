"""The batches every reference fixture replays: terminated, truncated and ordinary rows (never both flags).

``make_batches`` runs in the fixture scripts (numpy only: they run under a scratch environment with the authors'
framework); ``assert_every_row_kind`` in the tests, on the fixture's torch tensors.
"""

from __future__ import annotations

import numpy as np


def make_batches(num: int, batch: int, obs_dim: int, act_dim: int, seed: int, reward_std: float = 10.0,
                 dtype=np.float32) -> list[dict]:
    """Rows 0-3 of each batch: terminated, truncated, truncated, ordinary; the rest random (15% terminated, 15% of
    the others truncated). Actions ``tanh(1.5 z)``; rewards ``~ N(0, reward_std^2)`` (large TD errors make a bound or
    a clip act)."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        terminated = (g.random(batch) < 0.15).astype(dtype)
        truncated = ((g.random(batch) < 0.15) & (terminated == 0)).astype(dtype)
        terminated[:4] = [1, 0, 0, 0]
        truncated[:4] = [0, 1, 1, 0]
        out.append({
            "obs": g.standard_normal((batch, obs_dim)).astype(dtype),
            "action": np.tanh(1.5 * g.standard_normal((batch, act_dim))).astype(dtype),
            "reward": (reward_std * g.standard_normal(batch)).astype(dtype),
            "next_obs": g.standard_normal((batch, obs_dim)).astype(dtype),
            "terminated": terminated, "truncated": truncated,
        })  # fmt: skip
    return out


def assert_every_row_kind(batches: list[dict]) -> None:
    for batch in batches:
        term, trunc = batch["terminated"].bool(), batch["truncated"].bool()
        assert term.any() and trunc.any() and (~term & ~trunc).any() and not (term & trunc).any()
