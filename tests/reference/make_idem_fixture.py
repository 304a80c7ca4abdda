"""Make ``tests/reference/idem_fixture.npz`` from the relax IDEM code (mahaitongdae/diffusion_policy_online_rl at
a50cf41, JAX + haiku + optax), run on the CPU.

The fixture records what the reference's jitted ``IDEM`` update computes: its initial weights (twin critic, their
targets, the diffusion policy and its target, ``log_alpha``), three replay batches with terminated, truncated and
ordinary rows, every random draw (derived from the update's key exactly as the reference splits it: the next and the
new actions' chains and noise, the noised step ``t``, the forward noise and the 64 reconstructions' noise), the next
and new actions, the losses and every parameter after each update. The critics' output layers start scaled by 60 (so
that ``logsumexp`` over the reconstructions weighs them unevenly). ``test_idem_reference.py`` replays it through
flowrl's ``IDEMAgent``. Only numbers are stored; none of the reference's code is.

Sizes are shrunk: obs 5, act 3, widths 16 (3 hidden layers as the reference), batch 8, 4 particles (32 in the
reference); 20 diffusion steps, the schedule scale 0.8, the 64 reconstructions (``idem.py:153``, a literal) and every
other setting are ``scripts/train_mujoco.py --alg idem``'s (lines 44-58, 109-117). Update 0 steps alpha and the
policy (``step % 250 == 0``, ``step % 2 == 0``), update 1 neither, update 2 the policy.

Run it with a Python that has jax, dm-haiku, optax (e.g. ``/work/jaxenv/bin/python``), from the project root, with
an extracted checkout of the reference::

    git -C <mirror> archive a50cf41 | tar -x -C /tmp/relax-ref
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false /work/jaxenv/bin/python tests/reference/make_idem_fixture.py \
        --ref /tmp/relax-ref

``relax/utils/persistence.py`` (policy export, unused by an update) is replaced by an empty module before import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).with_name("idem_fixture.npz")
HEAD_SCALE = 60.0
MC = 64  # reverse_mc_num, relax/algorithm/idem.py:153
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


def chain_draws(jax, key, P: int, T: int, B: int, A: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Diffv2Net.get_action``'s draws from ``key`` (diffv2.py:54,58; utils/diffusion.py:108-110): the chains'
    starts ``(P, B, A)``, their steps' noise ``(P, T, B, A)`` and the action noise ``(B, A)``."""
    chains_key, action_noise_key = jax.random.split(key)
    xs, steps = [], []
    for k in jax.random.split(chains_key, P):
        x_key, steps_key = jax.random.split(k)
        xs.append(0.5 * np.asarray(jax.random.normal(x_key, (B, A))))
        steps.append(np.asarray(jax.random.normal(steps_key, (T, B, A))))
    return np.stack(xs), np.stack(steps), np.asarray(jax.random.normal(action_noise_key, (B, A)))


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
    if not (args.ref / "relax" / "algorithm" / "idem.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no relax/algorithm/idem.py; fix: --ref an extracted relax fork")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_platforms", "cpu")
    idem, network, experience = import_relax(args.ref, "relax.algorithm.idem", "relax.network.diffv2",
                                               "relax.utils.experience")
    Experience = experience.Experience
    T, B, A, P = 20, args.batch, args.act, args.particles  # diffusion_steps 20: scripts/train_mujoco.py:44
    sizes = [args.hidden] * 3  # scripts/train_mujoco.py:42-45,80-81 (hidden_num 3)

    def mish(x):  # scripts/train_mujoco.py:110-111
        return x * jnp.tanh(jax.nn.softplus(x))

    net, params = network.create_diffv2_net(jax.random.key(args.seed), args.obs, A, sizes, sizes, mish,
                                            num_timesteps=T, num_particles=P, noise_scale=0.1,
                                            beta_schedule_scale=0.8)  # scripts/train_mujoco.py:54,57,112-116
    # The critics' heads scaled by 60 (targets alike): Q ~ N(0, 3^2) at the start instead of ~0.05, so that the
    # logsumexp over the reconstructions is a soft maximum, not a mean.
    params = params._replace(**{name: {m: ({k: v * HEAD_SCALE for k, v in d.items()} if m.endswith("linear_3") else d)
                                       for m, d in getattr(params, name).items()}
                                for name in ("q1", "q2", "target_q1", "target_q2")})
    # scripts/train_mujoco.py:48-51,117 (delay_alpha_update a float there: type=float); the rest idem.py's defaults
    algo = idem.IDEM(net, params, lr=3e-4, alpha_lr=7e-3, delay_alpha_update=250.0, lr_schedule_end=3e-5)
    out = {f"init/{k}": v for k, v in all_params(algo.state).items()}
    batches = make_batches(args.updates, B, args.obs, A, args.seed + 1)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.updates)
    for u, (batch, key) in enumerate(zip(batches, keys)):
        for name, value in batch.items():
            out[f"batch{u}/{name}"] = value
        s = algo.state.params
        pp = (s.policy, s.log_alpha, s.q1, s.q2)
        # The update's split (idem.py:94-95, 135) and get_action's.
        next_key, new_key, _, _, _, time_key, noise_key = jax.random.split(key, 7)
        key1, key2 = jax.random.split(noise_key)
        for name, k in (("next", next_key), ("new", new_key)):
            x, steps, action_noise = chain_draws(jax, k, P, T, B, A)
            out[f"draws{u}/{name}_x"], out[f"draws{u}/{name}_steps"] = x, steps  # (P, B, A), (P, T, B, A)
            out[f"draws{u}/{name}_action_noise"] = action_noise
        out[f"draws{u}/t"] = np.asarray(jax.random.randint(time_key, (B,), 0, T))  # idem.py:136
        out[f"draws{u}/noise1"] = np.asarray(jax.random.normal(key1, (B, A)))  # idem.py:142
        out[f"draws{u}/mc_noise"] = np.asarray(jax.random.normal(key2, (B * MC, A)))  # idem.py:157
        out[f"out{u}/next_action"] = np.asarray(net.get_action(next_key, pp, batch["next_obs"]))
        out[f"out{u}/new_action"] = np.asarray(net.get_action(new_key, pp, batch["obs"]))
        data = Experience(obs=batch["obs"], action=batch["action"], reward=batch["reward"],
                          next_obs=batch["next_obs"], done=batch["terminated"])  # done = terminated (experience.py:43)
        info, hist = algo.update(key, data)
        for name, value in info.items():
            out[f"info{u}/{name}"] = np.float32(value)
        assert (np.asarray(hist["hist_t"]) == out[f"draws{u}/t"]).all()  # the split above is the update's
        out.update({f"params{u}/{k}": v for k, v in all_params(algo.state).items()})
        print(f"update {u}: " + "  ".join(f"{k} {v:.6g}" for k, v in info.items()))
    out["meta"] = np.array(repr({
        "obs_dim": args.obs, "act_dim": A, "hidden": args.hidden, "batch": B, "updates": args.updates,
        "particles": P, "num_steps": T, "mc_samples": MC, "seed": args.seed, "jax": jax.__version__,
        "reference_commit": "a50cf41",
    }))  # fmt: skip
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
