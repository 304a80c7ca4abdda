"""Make ``tests/reference/fixture_h32.pt`` from the authors' FlowRL code (bytedance/FlowRL), run on the CPU.

The fixture records what the reference computes: its initial weights (all six networks), four batches with
terminated, truncated and ordinary rows, the random draws of each update (target-action noise, policy noise,
flow-matching noise and time), and after every update its four losses, the actor's parts and every parameter.
``tests/reference/test_reference_equivalence.py`` replays the same batches and draws through flowrl's
``FlowRLAgent`` and compares. Only numbers are stored; none of the reference's code is.

Usage (from the project root, with a checkout of bytedance/FlowRL at commit e26279b, e.g. in /tmp/FlowRL)::

    python tests/reference/make_fixture.py --ref /tmp/FlowRL

The reference's own files are not edited: ``flowrl.reference`` loads it eagerly on the CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from flowrl.errors import UserError
from flowrl.reference import build_reference

NETWORKS = ("critic", "critic_target", "critic_buffer", "critic_target_buffer", "V_critic_buffer", "policy")
DEFAULT_OUT = Path(__file__).with_name("fixture_h32.pt")


class ScriptedDraws:
    """Replaces ``torch.randn_like``, ``torch.normal`` and ``torch.rand`` with prepared tensors, in call order."""

    def __init__(self, queue: list[tuple[str, torch.Tensor]]):
        self.queue, self.used, self.saved = list(queue), [], {}

    def _fake(self, fn: str):
        def draw(*args, **kwargs):
            name, value = self.queue.pop(0)
            self.used.append((fn, name))
            return value.clone()

        return draw

    def __enter__(self):
        for fn in ("randn_like", "normal", "rand"):
            self.saved[fn] = getattr(torch, fn)
            setattr(torch, fn, self._fake(fn))
        return self

    def __exit__(self, *exc):
        for fn, real in self.saved.items():
            setattr(torch, fn, real)
        if exc[0] is None and self.queue:
            raise RuntimeError(f"draws left unused: {[n for n, _ in self.queue]}")


def make_data(num_updates: int, batch: int, obs_dim: int, act_dim: int, seed: int):
    """Batches (rows 0-3 of each: terminated, truncated, truncated, ordinary; the rest random) and raw draws."""
    g = torch.Generator().manual_seed(seed)
    batches, draws = [], []
    for _ in range(num_updates):
        terminated = (torch.rand(batch, generator=g) < 0.15).float()
        truncated = ((torch.rand(batch, generator=g) < 0.15) & (terminated == 0)).float()
        terminated[:4] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        truncated[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0])
        batches.append({
            "obs": torch.randn(batch, obs_dim, generator=g),
            "action": torch.tanh(1.5 * torch.randn(batch, act_dim, generator=g)),
            "reward": torch.randn(batch, generator=g),
            "next_obs": torch.randn(batch, obs_dim, generator=g),
            "terminated": terminated, "truncated": truncated,
        })  # fmt: skip
        draws.append({  # scaled so that many fall outside [-1, 1]: both sides clamp them themselves
            "target_noise": 1.3 * torch.randn(batch, act_dim, generator=g),
            "pi_noise": 1.3 * torch.randn(batch, act_dim, generator=g),
            "fm_noise": 1.3 * torch.randn(batch, act_dim, generator=g),
            "t": torch.rand(batch, 1, generator=g),
        })  # fmt: skip
    return batches, draws


def params(agent) -> dict[str, dict[str, torch.Tensor]]:
    return {n: {k: v.detach().clone() for k, v in getattr(agent, n).state_dict().items()} for n in NETWORKS}


def run_update(algo, agent, batch: dict, draws: dict, updates: int) -> dict:
    """One ``update_parameters(memory, B, updates)`` call; returns its losses and the actor's parts."""
    mask = 1.0 - batch["terminated"]  # truncated rows bootstrap (mask 1), as the reference's main loop sets them

    class Memory:
        def sample(self, batch_size):
            return tuple(x.numpy() for x in (batch["obs"], batch["action"], batch["reward"], batch["next_obs"], mask))

    losses, q_pi, q_buffer, mse = [], [], [], []
    agent.scaler.scale = lambda loss: (losses.append(loss.detach().clone()), loss)[1]  # every loss passes here
    update_critic = agent.update_critic
    agent.update_critic = lambda *a: (lambda q: (q_buffer.append(q.clone()), q)[1])(update_critic(*a))
    hook = agent.critic.register_forward_hook(lambda m, i, o: q_pi.append(torch.min(o[0], o[1]).detach()))
    real_mse = algo.F.mse_loss
    algo.F.mse_loss = lambda *a, **k: (lambda out: (mse.append(out.detach().clone()), out)[1])(real_mse(*a, **k))
    policy_step = updates % agent.target_update_interval == 0
    queue = [("fm_noise", draws["fm_noise"]), ("target_noise", draws["target_noise"])]
    if policy_step:
        queue += [("pi_noise", draws["pi_noise"]), ("t", draws["t"])]
    try:
        with ScriptedDraws(queue):
            agent.update_parameters(Memory(), batch["obs"].shape[0], updates)
    finally:
        algo.F.mse_loss = real_mse
        hook.remove()
        del agent.update_critic, agent.scaler.scale
    out = {"critic/loss": losses[0], "behaviour/loss": losses[1], "value/loss": losses[2], "q_buffer": q_buffer[0]}
    if policy_step:
        out.update({"actor/loss": losses[3], "actor/q": q_pi[-1].mean(), "reg/fm": mse[-1],
                    "reg/loss": losses[3] + q_pi[-1].mean()})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True, help="a checkout of bytedance/FlowRL (holds model/algo.py)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--obs", type=int, default=17)
    p.add_argument("--act", type=int, default=6)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    try:
        algo, agent = build_reference(args.ref, args.obs, args.act, args.hidden)
    except UserError as e:
        sys.exit(f"error: {e}")
    init = params(agent)
    batches, draws = make_data(args.updates, args.batch, args.obs, args.act, args.seed + 1)
    updates = []
    for k in range(args.updates):  # the reference's counter starts at 0: policy and targets on k = 0, 2, ...
        record = run_update(algo, agent, batches[k], draws[k], k)
        record["params"] = params(agent)
        updates.append(record)
        print(f"update {k + 1}: " + "  ".join(f"{n} {v.item():.6f}" for n, v in record.items() if "/" in n))
    commit = subprocess.run(["git", "-C", str(args.ref), "rev-parse", "HEAD"], capture_output=True, text=True)
    meta = {"obs_dim": args.obs, "act_dim": args.act, "hidden": args.hidden, "batch": args.batch,
            "seed": args.seed, "reference_commit": commit.stdout.strip() or "unknown", "torch": str(torch.__version__)}
    torch.save({"meta": meta, "init": init, "batches": batches, "draws": draws, "updates": updates}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
