"""ActionBounds: the affine map to the bounds, its inverse, the exact clamp, and FlowPolicy checkpoints from before
the bounds became a submodule."""

import pytest
import torch

from components.bounds import ActionBounds
from components.policy import FlowPolicy


def test_maps_the_unit_box_onto_the_bounds_and_back():
    bounds = ActionBounds(3, low=torch.tensor([-2.0, 0.0, 1.0]), high=torch.tensor([2.0, 1.0, 5.0]))
    unit = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.5, -0.5]])
    expected = torch.tensor([[-2.0, 0.0, 1.0], [2.0, 1.0, 5.0], [0.0, 0.75, 2.0]])
    torch.testing.assert_close(bounds(unit), expected)
    torch.testing.assert_close(bounds.to_unit(expected), unit)
    assert bounds.action_scale.tolist() == [2.0, 0.5, 2.0] and bounds.action_bias.tolist() == [0.0, 0.5, 3.0]


def test_scalar_bounds_broadcast_and_rounding_never_leaves_the_box():
    bounds = ActionBounds(2, low=-0.3, high=0.7)
    out = bounds(torch.tensor([[1.0, -1.0], [1.0 + 1e-6, -1.0 - 1e-6]]))
    low, high = torch.tensor(-0.3), torch.tensor(0.7)  # the float32 bounds
    assert torch.all(out <= high) and torch.all(out >= low)
    assert out[1].tolist() == [high.item(), low.item()]  # past the box: clamped onto the exact bounds
    torch.testing.assert_close(out[0], torch.stack([high, low]))


def test_only_scale_and_bias_are_saved_and_bad_bounds_raise():
    assert set(ActionBounds(2, -1.0, 1.0).state_dict()) == {"action_scale", "action_bias"}
    with pytest.raises(ValueError, match="action_high > action_low"):
        ActionBounds(2, low=[0.0, 1.0], high=[1.0, 1.0])


def test_flow_policy_loads_a_checkpoint_with_top_level_bounds():
    """Checkpoints written before the bounds moved into ``policy.bounds`` held ``action_scale`` / ``action_bias``."""
    saved = FlowPolicy(4, 2, action_low=[0.0, -3.0], action_high=[2.0, 3.0])
    old = saved.state_dict()
    for name in ("action_scale", "action_bias"):
        old[name] = old.pop(f"bounds.{name}")
    fresh = FlowPolicy(4, 2, action_low=[0.0, -3.0], action_high=[2.0, 3.0])  # the config's bounds; other weights
    fresh.load_state_dict(old)  # strict: no missing or unexpected keys
    obs, noise = torch.randn(5, 4), torch.randn(5, 2)
    torch.testing.assert_close(fresh.sample(obs, noise), saved.sample(obs, noise))
