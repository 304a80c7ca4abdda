"""Make ``tests/reference/dpmd_fixture.npz`` from the relax DPMD code (mahaitongdae/diffusion_policy_online_rl at
a50cf41, JAX + haiku + optax), run on the CPU.

The fixture records what the reference's jitted ``DPMD`` update computes: its initial weights (twin critic, their
targets, the diffusion policy and its target, ``log_alpha``), three replay batches with terminated, truncated and
ordinary rows, every random draw (derived from the update's key exactly as the reference splits it: the particles'
chains, the action noise, the denoising loss's steps and noise), the next actions, the losses, the running mean and
std and every parameter after each update. The critics' output layers start scaled by 60 (so that the Q-weights
spread and some reach the clip). ``test_dpmd_reference.py`` replays it through flowrl's ``DPMDAgent``.
Only numbers are stored; none of the reference's code is.

Sizes are shrunk: obs 5, act 3, widths 16 (3 hidden layers as the reference), batch 8, 4 particles (32 in the
reference); 20 diffusion steps, the schedule scale 0.8 and every other setting are ``scripts/train_mujoco.py --alg
dpmd``'s (lines 44-58, 99-107). Update 0 steps alpha and the policy (``step % 250 == 0``, ``step % 2 == 0``),
update 1 neither, update 2 the policy.

Run it with a Python that has jax, dm-haiku, optax (e.g. ``/work/jaxenv/bin/python``), from the project root, with
an extracted checkout of the reference::

    git -C <mirror> archive a50cf41 | tar -x -C /tmp/relax-ref
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false /work/jaxenv/bin/python tests/reference/make_dpmd_fixture.py \
        --ref /tmp/relax-ref

``relax/utils/persistence.py`` (policy export, unused by an update) is replaced by an empty module before import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).with_name("dpmd_fixture.npz")
HEAD_SCALE = 60.0
sys.path.insert(0, str(Path(__file__).parent))
from reference_rows import make_batches  # noqa: E402  (tests/reference, beside this script)
from relax_reference import flat, import_relax  # noqa: E402


def all_params(state) -> dict[str, np.ndarray]:
    p = state.params
    out = {}
    for name in ("q1", "q2", "target_q1", "target_q2", "policy"):
        out.update(flat(getattr(p, name), name))
    out.update(flat(p.target_poicy, "target_policy"))
    out["log_alpha"] = np.asarray(p.log_alpha)
    out["running_mean"], out["running_std"] = np.asarray(state.running_mean), np.asarray(state.running_std)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="an extracted checkout of the relax fork")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--act", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.ref / "relax" / "algorithm" / "dpmd.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no relax/algorithm/dpmd.py; fix: --ref an extracted relax fork")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_platforms", "cpu")
    dpmd, network, experience = import_relax(args.ref, "relax.algorithm.dpmd", "relax.network.diffv2",
                                               "relax.utils.experience")
    Experience = experience.Experience
    T, B, A, P = 20, args.batch, args.act, args.particles  # diffusion_steps 20: scripts/train_mujoco.py:44
    sizes = [args.hidden] * 3  # scripts/train_mujoco.py:42-45,80-81 (hidden_num 3)

    def mish(x):  # scripts/train_mujoco.py:100-101
        return x * jnp.tanh(jax.nn.softplus(x))

    net, params = network.create_diffv2_net(jax.random.key(args.seed), args.obs, A, sizes, sizes, mish,
                                            num_timesteps=T, num_particles=P, noise_scale=0.1,
                                            beta_schedule_scale=0.8)  # scripts/train_mujoco.py:54,57,102-106
    # The critics' heads scaled by 60 (targets alike): Q ~ N(0, 3^2) at the start instead of ~0.05, so that the
    # weights spread (exp(+-0.6) at alpha 5) and some rows reach the clip at +-3.
    params = params._replace(**{name: {m: ({k: v * HEAD_SCALE for k, v in d.items()} if m.endswith("linear_3") else d)
                                       for m, d in getattr(params, name).items()}
                                for name in ("q1", "q2", "target_q1", "target_q2")})
    algo = dpmd.DPMD(net, params, lr=3e-4, alpha_lr=7e-3, delay_alpha_update=250,
                     lr_schedule_end=3e-5)  # scripts/train_mujoco.py:48-51,107; the rest dpmd.py's defaults
    out = {f"init/{k}": v for k, v in all_params(algo.state).items()}
    batches = make_batches(args.updates, B, args.obs, A, args.seed + 1)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.updates)
    for u, (batch, key) in enumerate(zip(batches, keys)):
        for name, value in batch.items():
            out[f"batch{u}/{name}"] = value
        s = algo.state.params
        # The update's split (dpmd.py:93-94), get_action's (diffv2.py:54,58) and the sampler's (diffusion.py:108-110).
        next_key, _, _, _, _, time_key, noise_key = jax.random.split(key, 7)
        chains_key, action_noise_key = jax.random.split(next_key)
        xs, steps = [], []
        for k in jax.random.split(chains_key, P):
            x_key, steps_key = jax.random.split(k)
            xs.append(0.5 * np.asarray(jax.random.normal(x_key, (B, A))))
            steps.append(np.asarray(jax.random.normal(steps_key, (T, B, A))))
        out[f"draws{u}/x"] = np.stack(xs)  # (P, B, A)
        out[f"draws{u}/steps"] = np.stack(steps)  # (P, T, B, A)
        out[f"draws{u}/action_noise"] = np.asarray(jax.random.normal(action_noise_key, (B, A)))
        out[f"draws{u}/t"] = np.asarray(jax.random.randint(time_key, (B,), 0, T))
        out[f"draws{u}/noise"] = np.asarray(jax.random.normal(noise_key, (B, A)))
        out[f"out{u}/next_action"] = np.asarray(
            net.get_action(next_key, (s.policy, s.log_alpha, s.q1, s.q2), batch["next_obs"]))
        data = Experience(obs=batch["obs"], action=batch["action"], reward=batch["reward"],
                          next_obs=batch["next_obs"], done=batch["terminated"])  # done = terminated (experience.py:43)
        info, _ = algo.update(key, data)
        for name, value in info.items():
            out[f"info{u}/{name}"] = np.float32(value)
        out.update({f"params{u}/{k}": v for k, v in all_params(algo.state).items()})
        print(f"update {u}: " + "  ".join(f"{k} {v:.6g}" for k, v in info.items()))
    out["meta"] = np.array(repr({
        "obs_dim": args.obs, "act_dim": A, "hidden": args.hidden, "batch": B, "updates": args.updates,
        "particles": P, "num_steps": T, "seed": args.seed, "jax": jax.__version__, "reference_commit": "a50cf41",
    }))  # fmt: skip
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
