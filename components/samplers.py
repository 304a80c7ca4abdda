"""Index samplers for the replay buffer: which stored rows a batch draws from.

A sampler maps ``(num_rows, num_envs, batch_size, generator)`` to ``(row, env)`` index tensors of shape ``(B,)``,
with ``row`` counted from the oldest sampleable row (0) to the newest (``num_rows - 1``).
"""

from __future__ import annotations

import gin
import torch

from components.ranges import UNIT, check_arguments


@gin.configurable
class UniformSampler:
    """Uniform over every sampleable transition."""

    def __call__(self, num_rows: int, num_envs: int, batch_size: int, generator: torch.Generator):
        rows = torch.randint(num_rows, (batch_size,), generator=generator)
        envs = torch.randint(num_envs, (batch_size,), generator=generator)
        return rows, envs


@gin.configurable
class RecentMixSampler:
    """The reference's mix: ``int(B * (1 - recent_fraction))`` uniform over the buffer (with replacement), the rest
    over the newest ``recent`` (without replacement while the window holds enough rows).

    ``recent`` counts transitions over all parallel envs (2,048 in the reference).
    """

    RANGES = {"recent_fraction": UNIT}

    def __init__(self, recent: int = 2048, recent_fraction: float = 0.2):
        check_arguments(type(self), locals())
        self.recent, self.recent_fraction = recent, recent_fraction

    def __call__(self, num_rows: int, num_envs: int, batch_size: int, generator: torch.Generator):
        # The reference's split: int(B * 0.8) uniform, the rest recent (52 of 256, not round(0.2 * 256) = 51).
        num_recent = batch_size - int(batch_size * (1.0 - self.recent_fraction))
        window = min(num_rows, max(1, self.recent // num_envs))
        old = torch.randint(num_rows, (batch_size - num_recent,), generator=generator)
        if num_recent <= window:  # without replacement inside the window, as the reference's random.sample
            recent = torch.randperm(window, generator=generator)[:num_recent]
        else:
            recent = torch.randint(window, (num_recent,), generator=generator)
        new = num_rows - 1 - recent
        envs = torch.randint(num_envs, (batch_size,), generator=generator)
        return torch.cat([old, new]), envs
