"""The hand-computed update tests' batches: one terminated, one truncated and one ordinary row of a 1-d task.

Their values are what the tests' hand targets are worked from: a change here is a change to every such test.
"""

import torch

from components.buffers import Batch

# QVPO, DACER and SAC Flow (tests/flowrl/test_{qvpo,dacer,sac_flow}.py).
TERMINATED_TRUNCATED_ORDINARY = Batch(
    obs=torch.tensor([[0.0], [0.5], [1.0]]), action=torch.tensor([[0.2], [-0.4], [0.6]]),
    reward=torch.tensor([[1.0], [2.0], [-1.0]]), next_obs=torch.tensor([[0.5], [1.0], [-0.5]]),
    terminated=torch.tensor([[1.0], [0.0], [0.0]]), truncated=torch.tensor([[0.0], [1.0], [0.0]]),
)  # fmt: skip

# SAC and TD3 (tests/flowrl/test_{sac,td3}.py).
ORDINARY_TERMINATED_TRUNCATED = Batch(
    obs=torch.tensor([[0.0], [1.0], [-1.0]]), action=torch.tensor([[0.2], [-0.4], [1.0]]),
    reward=torch.tensor([[1.0], [2.0], [-1.0]]), next_obs=torch.tensor([[1.0], [2.0], [3.0]]),
    terminated=torch.tensor([[0.0], [1.0], [0.0]]), truncated=torch.tensor([[0.0], [0.0], [1.0]]),
)  # fmt: skip
