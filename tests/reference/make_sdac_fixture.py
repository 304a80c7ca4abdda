"""Make ``tests/reference/sdac_fixture.npz`` from the relax SDAC code (mahaitongdae/diffusion_policy_online_rl at
a50cf41, JAX + haiku + optax), run on the CPU.

The fixture records what the reference's jitted ``SDAC`` update computes: its initial weights (twin critic, their
targets, the diffusion policy and its target, ``log_alpha``), three replay batches with terminated, truncated and
ordinary rows, every random draw (derived from the update's key exactly as the reference splits it: both action
samples' chains and noise, the loss's steps ``t``, the forward noise and the 64 reverse noises per state), the next
and new actions, the losses and every parameter after each update. The critics' output layers start scaled by 20
(so that ``Q ~ N(0, 1)`` and the softmax weights spread). ``test_sdac_reference.py`` replays it through flowrl's
``SDACAgent``. Only numbers are stored; none of the reference's code is.

Sizes are shrunk: obs 5, act 3, widths 16 (3 hidden layers as the reference), batch 6, 4 particles (32 in the
reference); 20 diffusion steps, the schedule scale 0.8, the 64 reverse samples (``sdac.py:137``, hard-coded) and
every other setting are ``scripts/train_mujoco.py --alg sdac``'s (lines 44-58, 89-97). Update 0 steps alpha and the
policy (``step % 250 == 0``, ``step % 2 == 0``), update 1 neither, update 2 the policy.

Run it with a Python that has jax, dm-haiku, optax (e.g. ``/work/jaxenv/bin/python``), from the project root, with
an extracted checkout of the reference::

    git -C <mirror> archive a50cf41 | tar -x -C /tmp/relax-ref
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false /work/jaxenv/bin/python tests/reference/make_sdac_fixture.py \
        --ref /tmp/relax-ref

``relax/utils/persistence.py`` (policy export, unused by an update) is replaced by an empty module before import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).with_name("sdac_fixture.npz")
HEAD_SCALE = 20.0
REVERSE_SAMPLES = 64  # relax/algorithm/sdac.py:137 (reverse_mc_num)
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
    return out


def chain_draws(jax, key, B: int, A: int, T: int, P: int, prefix: str) -> dict[str, np.ndarray]:
    """``Diffv2Net.get_action``'s draws from ``key`` (diffv2.py:54,58; utils/diffusion.py:108-110)."""
    chains_key, action_noise_key = jax.random.split(key)
    xs, steps = [], []
    for k in jax.random.split(chains_key, P):
        x_key, steps_key = jax.random.split(k)
        xs.append(0.5 * np.asarray(jax.random.normal(x_key, (B, A))))
        steps.append(np.asarray(jax.random.normal(steps_key, (T, B, A))))
    return {f"{prefix}_x": np.stack(xs), f"{prefix}_steps": np.stack(steps),  # (P, B, A), (P, T, B, A)
            f"{prefix}_noise": np.asarray(jax.random.normal(action_noise_key, (B, A)))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="an extracted checkout of the relax fork")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--act", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.ref / "relax" / "algorithm" / "sdac.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no relax/algorithm/sdac.py; fix: --ref an extracted relax fork")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_platforms", "cpu")
    sdac, network, experience = import_relax(args.ref, "relax.algorithm.sdac", "relax.network.diffv2",
                                               "relax.utils.experience")
    Experience = experience.Experience
    T, B, A, P, M = 20, args.batch, args.act, args.particles, REVERSE_SAMPLES  # diffusion_steps: train_mujoco.py:44
    sizes = [args.hidden] * 3  # scripts/train_mujoco.py:42-45,80-81 (hidden_num 3)

    def mish(x):  # scripts/train_mujoco.py:90-91
        return x * jnp.tanh(jax.nn.softplus(x))

    net, params = network.create_diffv2_net(jax.random.key(args.seed), args.obs, A, sizes, sizes, mish,
                                            num_timesteps=T, num_particles=P, noise_scale=0.1,
                                            beta_schedule_scale=0.8)  # scripts/train_mujoco.py:54,57,92-96
    # The critics' heads scaled by 20 (targets alike): Q ~ N(0, 1) at the start instead of ~0.05, so that the
    # softmax weights over the 64 candidates spread (logits 5 Q / alpha = Q at alpha 5).
    params = params._replace(**{name: {m: ({k: v * HEAD_SCALE for k, v in d.items()} if m.endswith("linear_3") else d)
                                       for m, d in getattr(params, name).items()}
                                for name in ("q1", "q2", "target_q1", "target_q2")})
    algo = sdac.SDAC(net, params, lr=3e-4, alpha_lr=7e-3, delay_alpha_update=250,
                     lr_schedule_end=3e-5)  # scripts/train_mujoco.py:48-51,97; the rest sdac.py's defaults
    out = {f"init/{k}": v for k, v in all_params(algo.state).items()}
    batches = make_batches(args.updates, B, args.obs, A, args.seed + 1)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.updates)
    for u, (batch, key) in enumerate(zip(batches, keys)):
        for name, value in batch.items():
            out[f"batch{u}/{name}"] = value
        s = algo.state.params
        # The update's split (sdac.py:93-94) and the loss's (:126-129).
        next_key, new_key, _, _, _, time_key, noise_key = jax.random.split(key, 7)
        diff_key1, diff_key2 = jax.random.split(noise_key)
        out.update({f"draws{u}/{k}": v for k, v in chain_draws(jax, next_key, B, A, T, P, "next").items()})
        out.update({f"draws{u}/{k}": v for k, v in chain_draws(jax, new_key, B, A, T, P, "new").items()})
        out[f"draws{u}/t"] = np.asarray(jax.random.randint(time_key, (B,), 0, T))
        out[f"draws{u}/noise1"] = np.asarray(jax.random.normal(diff_key1, (B, A)))
        out[f"draws{u}/noise2"] = np.asarray(jax.random.normal(diff_key2, (B * M, A)))
        policy_params = (s.policy, s.log_alpha, s.q1, s.q2)
        out[f"out{u}/next_action"] = np.asarray(net.get_action(next_key, policy_params, batch["next_obs"]))
        out[f"out{u}/new_action"] = np.asarray(net.get_action(new_key, policy_params, batch["obs"]))
        data = Experience(obs=batch["obs"], action=batch["action"], reward=batch["reward"],
                          next_obs=batch["next_obs"], done=batch["terminated"])  # done = terminated (experience.py:43)
        info, hist = algo.update(key, data)
        for name, value in info.items():
            out[f"info{u}/{name}"] = np.float32(value)
        out[f"out{u}/q_weights"] = np.asarray(hist["hist_q_weights"]).reshape(B, M)
        out.update({f"params{u}/{k}": v for k, v in all_params(algo.state).items()})
        print(f"update {u}: " + "  ".join(f"{k} {float(v):.6g}" for k, v in info.items()))
    out["meta"] = np.array(repr({
        "obs_dim": args.obs, "act_dim": A, "hidden": args.hidden, "batch": B, "updates": args.updates,
        "particles": P, "num_steps": T, "num_samples": M, "seed": args.seed, "jax": jax.__version__,
        "reference_commit": "a50cf41",
    }))  # fmt: skip
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
