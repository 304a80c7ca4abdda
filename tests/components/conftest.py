"""Shared settings for the components tests."""

import torch

# The tests use tiny tensors: intra-op threads only add contention (10x slower on a busy 2-core machine).
torch.set_num_threads(1)
