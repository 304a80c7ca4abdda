"""Make ``tests/reference/dacer_fixture.npz`` from the authors' DACER code (happy-yan/DACER-Diffusion-with-Online-RL,
JAX + haiku + optax), run on the CPU.

The fixture records what the reference's jitted ``DACER`` update computes: its initial weights (twin Gaussian critic,
its targets, the diffusion policy, ``log_alpha``), three batches with terminated, truncated and ordinary rows, every
random draw of each update (derived from the update's key exactly as the reference splits it), the actions its
sampler makes from them (next actions, the policy loss's actions, the entropy's samples), its entropy estimate, and
after every update its losses, running stds, alpha and every parameter. ``test_dacer_reference.py`` replays it through
flowrl's ``DACERAgent``. Only numbers are stored; none of the reference's code is.

Sizes are shrunk so the fixture stays small: obs 5, act 3, widths 16 (3 hidden layers as the reference), batch 8,
50 entropy samples per state (``DACER(num_samples=50)``); 20 diffusion steps and every other setting are the
reference's (``scripts/train_mujoco.py --alg dacer``). The first update (step 0) estimates the entropy and steps
alpha; updates 0 and 2 step the policy and the target critics.

Run it with a Python that has jax, dm-haiku, optax, numpyro, dill and scikit-learn (not the project's; e.g.
``python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax dm-haiku optax numpyro dill scikit-learn``), from the
project root, with a checkout of the reference at 848c1f2::

    /tmp/jaxenv/bin/python tests/reference/make_dacer_fixture.py --ref /tmp/DACER-Diffusion-with-Online-RL

``relax/utils/persistence.py`` (policy export, unused by an update) needs an older jax; the script puts an empty
module in its place before importing the reference. Its files are not edited.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

from reference_rows import make_batches  # noqa: E402  (tests/reference, beside this script)

DEFAULT_OUT = Path(__file__).with_name("dacer_fixture.npz")


def import_reference(ref: Path):
    sys.path.insert(0, str(ref))
    stub = types.ModuleType("relax.utils.persistence")
    stub.make_persist = None  # only Algorithm.save_policy_structure calls it
    sys.modules["relax.utils.persistence"] = stub
    import relax.algorithm.dacer as dacer
    import relax.network.dacer as network

    return dacer, network


def chain_draws(jax, key, shape: tuple, num_steps: int):
    """The normals one ``DACERNet.get_action(key, ...)`` consumes (network/dacer.py:40-42, utils/diffusion.py:94-96):
    the start ``x``, one per reverse step (the scan's order: step K-1 first) and the action noise."""
    key, noise_key = jax.random.split(key)
    x_key, steps_key = jax.random.split(key)
    x = jax.random.normal(x_key, shape)
    steps = jax.random.normal(steps_key, (num_steps, *shape))
    return x, steps, jax.random.normal(noise_key, shape)


def flat(params, prefix: str) -> dict[str, np.ndarray]:
    """haiku's ``{module: {w, b}}`` as ``{prefix/module/w: array}``."""
    return {f"{prefix}/{m}/{k}": np.asarray(v) for m, d in params.items() for k, v in d.items()}


def all_params(state) -> dict[str, np.ndarray]:
    p = state.params
    out = {}
    for name in ("q1", "q2", "target_q1", "target_q2", "policy"):
        out.update(flat(getattr(p, name), name))
    out["log_alpha"] = np.asarray(p.log_alpha)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="a checkout of happy-yan/DACER-Diffusion-with-Online-RL")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--act", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--entropy-samples", type=int, default=50)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.ref / "relax" / "algorithm" / "dacer.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no relax/algorithm/dacer.py; fix: --ref a checkout of "
                 "happy-yan/DACER-Diffusion-with-Online-RL")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_platforms", "cpu")
    dacer, network = import_reference(args.ref)
    entropy_inputs: list[np.ndarray] = []
    real_estimate = dacer.estimate_entropy

    def recording_estimate(actions, *a, **k):  # called by jax.pure_callback with numpy arrays
        entropy_inputs.append(np.array(actions))
        return real_estimate(actions, *a, **k)

    dacer.estimate_entropy = recording_estimate  # looked up when the update is first traced

    def mish(x):  # scripts/train_mujoco.py:74-75
        return x * jnp.tanh(jax.nn.softplus(x))

    T = 20  # scripts/train_mujoco.py:34
    sizes = [args.hidden] * 3  # scripts/train_mujoco.py:33,57-58 (hidden_num 3)
    net, params = network.create_dacer_net(jax.random.key(args.seed), args.obs, args.act, sizes, sizes, mish,
                                           num_timesteps=T)
    algo = dacer.DACER(net, params, num_samples=args.entropy_samples)  # every other argument the default
    out = {f"init/{k}": v for k, v in all_params(algo.state).items()}
    batches = make_batches(args.updates, args.batch, args.obs, args.act, args.seed + 1)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.updates)
    B, A = args.batch, args.act
    for u, (batch, key) in enumerate(zip(batches, keys)):
        for name, value in batch.items():
            out[f"batch{u}/{name}"] = value
        state = algo.state
        pre = (state.params.policy, state.params.log_alpha)
        # The update's own split (relax/algorithm/dacer.py:77) and the draws each of its parts makes from its key.
        next_key, new_key, q1_key, q2_key, alpha_key = jax.random.split(key, 5)
        for tag, k, obs in (("next", next_key, batch["next_obs"]), ("new", new_key, batch["obs"])):
            x, steps, noise = chain_draws(jax, k, (B, A), T)
            out.update({f"draws{u}/{tag}_x": np.asarray(x), f"draws{u}/{tag}_steps": np.asarray(steps),
                        f"draws{u}/{tag}_noise": np.asarray(noise)})
            out[f"out{u}/{tag}_action"] = np.asarray(net.get_action(k, pre, jnp.asarray(obs)))
        out[f"draws{u}/z"] = np.stack([np.asarray(jax.random.normal(k, (B,))) for k in (q1_key, q2_key)])
        x, steps, noise = jax.vmap(lambda k: chain_draws(jax, k, (B, A), T))(
            jax.random.split(alpha_key, args.entropy_samples))  # dacer.py:113-114, one get_action per key
        out.update({f"draws{u}/entropy_x": np.asarray(x), f"draws{u}/entropy_steps": np.asarray(steps),
                    f"draws{u}/entropy_noise": np.asarray(noise)})
        calls = len(entropy_inputs)
        data = dacer.Experience(obs=jnp.asarray(batch["obs"]), action=jnp.asarray(batch["action"]),
                                reward=jnp.asarray(batch["reward"]), next_obs=jnp.asarray(batch["next_obs"]),
                                done=jnp.asarray(batch["terminated"]))  # done = terminated (utils/experience.py:41)
        info = algo.update(key, data)
        if len(entropy_inputs) > calls:
            out[f"out{u}/entropy_actions"] = entropy_inputs[-1]
        for name, value in info.items():
            out[f"info{u}/{name}"] = np.float32(value)
        out.update({f"params{u}/{k}": v for k, v in all_params(algo.state).items()})
        print(f"update {u}: " + "  ".join(f"{k} {v:.6g}" for k, v in info.items()))
    commit = subprocess.run(["git", "-C", str(args.ref), "rev-parse", "HEAD"], capture_output=True, text=True)
    out["meta"] = np.array(repr({
        "obs_dim": args.obs, "act_dim": args.act, "hidden": args.hidden, "batch": B, "updates": args.updates,
        "entropy_samples": args.entropy_samples, "num_steps": T, "seed": args.seed, "jax": jax.__version__,
        "reference_commit": commit.stdout.strip() or "unknown",
    }))  # fmt: skip
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
