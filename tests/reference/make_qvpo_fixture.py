"""Make ``tests/reference/qvpo_fixture.pt`` from the authors' QVPO code (wadx2019/qvpo), run on the CPU.

The fixture records what the reference's ``QVPO.train`` computes under its README configuration (``--weighted
--aug``: Q-weighted loss on the best of ``train_sample`` candidates, ``qadv`` weights, entropy term on uniform
actions): its initial weights (diffusion model and twin critic, online and target), three batches with terminated,
truncated and ordinary rows, every random draw in call order (``torch.randn``, ``torch.randn_like``,
``torch.randint``, ``Tensor.uniform_``), and after every update its critic loss and mean TD target, its actor loss with the inputs of
that loss (the best actions, the states and the weights) and every parameter. ``test_qvpo_reference.py`` replays
the batches and draws through flowrl's ``QVPOAgent`` and compares. Only numbers are stored; none of the reference's
code is.

Sizes are shrunk so the fixture stays small: hidden 32 (``Model``'s and ``Critic``'s width, bound by wrapping their
constructors, the files are not edited), batch 16, 8 training candidates; the rest are the README command's values.

Usage (from the project root, with a checkout of wadx2019/qvpo at commit 40a1974, e.g. in /tmp/qvpo)::

    python tests/reference/make_qvpo_fixture.py --ref /tmp/qvpo
"""

from __future__ import annotations

import argparse
import functools
import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

DEFAULT_OUT = Path(__file__).with_name("qvpo_fixture.pt")
NETWORKS = ("actor", "actor_target", "critic", "critic_target")


def reference_args(train_sample: int) -> SimpleNamespace:
    """``main.py``'s argument defaults with ``--weighted --aug`` (main.py lines 23-97)."""
    return SimpleNamespace(
        policy_type="Diffusion", beta_schedule="cosine", n_timesteps=20, diffusion_lr=1e-4, critic_lr=3e-4,
        action_lr=0.03, noise_ratio=1.0, action_gradient_steps=20, ratio=0.1, ac_grad_norm=2.0, alpha_mean=0.001,
        alpha_std=0.001, beta=1.0, weighted=True, aug=True, train_sample=train_sample, chosen=1, q_neg=0.0,
        behavior_sample=4, target_sample=4, eval_sample=32, deterministic=False, q_transform="qadv", gradient=False,
        policy_freq=1, cut=1.0, epsilon=0.0, entropy_alpha=0.02, tau=0.005, update_actor_target_every=1,
        gamma=0.99,
    )  # fmt: skip


def build_reference(ref: Path, obs_dim: int, act_dim: int, hidden: int, train_sample: int):
    sys.path.insert(0, str(ref))
    qvpo = importlib.import_module("agent.qvpo")
    diffusion = importlib.import_module("agent.diffusion")
    diffusion.Model = functools.partial(diffusion.Model, hidden_size=hidden)
    qvpo.Critic = functools.partial(qvpo.Critic, hidden_dim=hidden)
    space = SimpleNamespace(shape=(act_dim,), high=np.ones(act_dim, np.float32), low=-np.ones(act_dim, np.float32))
    return qvpo, qvpo.QVPO(reference_args(train_sample), obs_dim, space, None, None, torch.device("cpu"))


class RecordedDraws:
    """Wraps torch's random functions; records each result, tagged with the function, in call order."""

    FUNCTIONS = ("randn", "randn_like", "randint")

    def __init__(self):
        self.draws: list[tuple[str, torch.Tensor]] = []
        self.saved = {}

    def __enter__(self):
        for fn in self.FUNCTIONS:
            real = self.saved[fn] = getattr(torch, fn)
            setattr(torch, fn, self._recording(fn, real))
        real_uniform = self.saved["uniform_"] = torch.Tensor.uniform_

        def uniform_(tensor, *args, **kwargs):
            out = real_uniform(tensor, *args, **kwargs)
            self.draws.append(("uniform_", out.detach().clone()))
            return out

        torch.Tensor.uniform_ = uniform_
        return self

    def _recording(self, fn, real):
        def draw(*args, **kwargs):
            out = real(*args, **kwargs)
            self.draws.append((fn, out.detach().clone()))
            return out

        return draw

    def __exit__(self, *exc):
        torch.Tensor.uniform_ = self.saved.pop("uniform_")
        for fn, real in self.saved.items():
            setattr(torch, fn, real)


def make_batches(num: int, batch: int, obs_dim: int, act_dim: int, seed: int) -> list[dict]:
    """Rows 0-3 of each batch: terminated, truncated, truncated, ordinary; the rest random. Rewards ~ N(0, 10^2)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        terminated = (torch.rand(batch, generator=g) < 0.15).float()
        truncated = ((torch.rand(batch, generator=g) < 0.15) & (terminated == 0)).float()
        terminated[:4] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        truncated[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0])
        out.append({
            "obs": torch.randn(batch, obs_dim, generator=g),
            "action": torch.tanh(1.5 * torch.randn(batch, act_dim, generator=g)),
            "reward": 10.0 * torch.randn(batch, generator=g),  # large TD errors: the critic's gradient clip acts
            "next_obs": torch.randn(batch, obs_dim, generator=g),
            "terminated": terminated, "truncated": truncated,
        })  # fmt: skip
    return out


def params(agent) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.detach().clone() for k, v in getattr(agent, n).state_dict().items()} for n in NETWORKS}


def run_update(qvpo, agent, batch: dict, gamma: float) -> dict:
    """One ``train(t, 1, B)`` call on ``batch`` (both of its ``memory.sample`` calls get it); its losses and draws."""
    # The reference's main loop stores mask = 0 for any done, time limits included; flowrl bootstraps truncated rows.
    # The fixture gives the reference flowrl's masks so that the update's own math is compared.
    mask = (gamma * (1.0 - batch["terminated"]))[:, None]
    rows = (batch["obs"], batch["action"], batch["reward"][:, None], batch["next_obs"], mask)
    agent.memory = SimpleNamespace(sample=lambda batch_size: tuple(x.clone() for x in rows))
    mse, targets, actor = [], [], {}
    real_mse = qvpo.F.mse_loss

    def mse_loss(prediction, target, *args, **kwargs):
        targets.append(target.detach().clone())
        out = real_mse(prediction, target, *args, **kwargs)
        mse.append(out.detach().clone())
        return out

    qvpo.F.mse_loss = mse_loss
    real_loss = agent.actor.loss

    def loss(x, state, weights=1.0):
        out = real_loss(x, state, weights)
        actor.update({"actions": x.clone(), "states": state.clone(), "weights": weights.clone(),
                      "actor/loss": out.detach().clone()})
        return out

    agent.actor.loss = loss
    norms = []
    real_clip = qvpo.nn.utils.clip_grad_norm_
    qvpo.nn.utils.clip_grad_norm_ = lambda *a, **k: (lambda n: (norms.append(float(n)), n)[1])(real_clip(*a, **k))
    try:
        with RecordedDraws() as recorded:
            agent.train(1, 1, batch_size=batch["obs"].shape[0])
    finally:
        qvpo.F.mse_loss = real_mse
        qvpo.nn.utils.clip_grad_norm_ = real_clip
        del agent.actor.loss
    return {"critic/loss": mse[0] + mse[1], "critic/target": targets[0].mean(), **actor, "draws": recorded.draws, "critic_grad_norm": norms[0],
            "actor_grad_norm": norms[1]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True, help="a checkout of wadx2019/qvpo (holds agent/qvpo.py)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--obs", type=int, default=5)
    p.add_argument("--act", type=int, default=3)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train-sample", type=int, default=8)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.ref / "agent" / "qvpo.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no agent/qvpo.py; fix: --ref a checkout of wadx2019/qvpo")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    qvpo, agent = build_reference(args.ref, args.obs, args.act, args.hidden, args.train_sample)
    init = params(agent)
    batches = make_batches(args.updates, args.batch, args.obs, args.act, args.seed + 1)
    updates = []
    for k, batch in enumerate(batches):
        record = run_update(qvpo, agent, batch, gamma=0.99)
        record["params"] = params(agent)
        updates.append(record)
        print(f"update {k + 1}: critic/loss {record['critic/loss'].item():.6f}  actor/loss "
              f"{record['actor/loss'].item():.6f}  critic grad norm {record['critic_grad_norm']:.2f}  "
              f"draws {len(record['draws'])}")
    commit = subprocess.run(["git", "-C", str(args.ref), "rev-parse", "HEAD"], capture_output=True, text=True)
    meta = {"obs_dim": args.obs, "act_dim": args.act, "hidden": args.hidden, "batch": args.batch,
            "train_sample": args.train_sample, "seed": args.seed, "torch": str(torch.__version__),
            "reference_commit": commit.stdout.strip() or "unknown"}
    torch.save({"meta": meta, "init": init, "batches": batches, "updates": updates}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
