"""What the replays of the relax fork's ``Diffv2Net`` agents (DPMD, SDAC, IDEM) share: their fixtures' loading and the
map from the reference's haiku parameters (``DACERPolicyNet`` noise network, ``QNet`` twin critic, ``log_alpha``) to
flowrl's names (``DACERNoiseMLP``, a 2-member ``QEnsemble``)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

POLICY_LAYERS = {"linear": "time_mlp.1", "linear_1": "time_mlp.3", "linear_2": "net.0", "linear_3": "net.2",
                 "linear_4": "net.4", "linear_5": "net.6"}
CRITIC_LAYERS = {"linear": 0, "linear_1": 2, "linear_2": 4, "linear_3": 6}


def load_fixture(path: Path) -> dict:
    """The fixture's arrays as tensors, and its ``meta`` as a dict."""
    with np.load(path) as data:
        out = {k: torch.from_numpy(np.array(v)) for k, v in data.items() if k != "meta"}
        out["meta"] = ast.literal_eval(str(data["meta"]))
    return out


def mapped(fx: dict, prefix: str) -> dict[str, torch.Tensor]:
    """The reference's parameters under ``prefix`` (``init``, ``params0``, ...) in flowrl's layout."""
    out = {}
    for ours, theirs in (("policy", "policy"), ("policy_target", "target_policy")):
        for hk_name, idx in POLICY_LAYERS.items():
            out[f"{ours}/noise_net.{idx}.weight"] = fx[f"{prefix}/{theirs}/dacer_policy_net/{hk_name}/w"].t()
            out[f"{ours}/noise_net.{idx}.bias"] = fx[f"{prefix}/{theirs}/dacer_policy_net/{hk_name}/b"]
    for ours, theirs in (("critic", ""), ("critic_target", "target_")):
        for hk_name, idx in CRITIC_LAYERS.items():
            w, b = ([fx[f"{prefix}/{theirs}q{m}/q_net/{hk_name}/{p}"] for m in (1, 2)] for p in "wb")
            out[f"{ours}/body.net.{idx}.weight"] = torch.stack(w)
            out[f"{ours}/body.net.{idx}.bias"] = torch.stack(b)[:, None, :]
    out["temperature/log_alpha"] = fx[f"{prefix}/log_alpha"]
    return out


def ours(agent) -> dict[str, torch.Tensor]:
    return {f"{n}/{k}": p for n, m in agent.modules().items() for k, p in m.named_parameters()}
