"""Make ``tests/reference/qsm_fixture.npz`` from the authors' QSM code (the relax fork
mahaitongdae/diffusion_policy_online_rl, JAX + haiku + optax), run on the CPU.

The fixture records what the reference's jitted ``QSM`` update computes: its initial weights (twin Q, their targets,
the score network), three batches with terminated, truncated and ordinary rows, every random draw of each update
(the Langevin chains of the next actions, derived from the update's key exactly as ``QSMNet.get_action`` splits it),
the next actions its sampler makes from them, and after every update its losses and every parameter. It also records
two calls of the sampler alone (``num_particles`` 4 and 1) with their draws, and the learning rate the score
network's optimiser applies at a few update counts (the linear schedule). ``test_qsm_reference.py`` replays it
through flowrl's ``QSMAgent``. Only numbers are stored; none of the reference's code is.

Sizes are shrunk so the fixture stays small: obs 5, act 3, widths 16 (3 hidden layers as the reference), batch 8,
4 particles (the script's 32); 20 Langevin steps, ReLU, lr 3e-4 -> 3e-5 and every other setting are the reference's
(``scripts/train_mujoco.py --alg qsm``).

Run it with a Python that has jax, dm-haiku and optax (not the project's), from the project root, with the
reference's tree at a50cf41 (``git archive`` of the mirror is enough)::

    /work/jaxenv/bin/python tests/reference/make_qsm_fixture.py --ref /tmp/relax-ref

``relax/utils/persistence.py`` (policy export, unused by an update) needs an older jax; the script puts an empty
module in its place before importing the reference, and gives ``jnp.clip`` back the ``a_min``/``a_max`` keywords
that ``relax/utils/langevin.py`` uses (removed in newer jax). Its files are not edited.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

from reference_rows import make_batches  # noqa: E402  (tests/reference, beside this script)

DEFAULT_OUT = Path(__file__).with_name("qsm_fixture.npz")
SCHEDULE_STEPS = (0, 1, 24_999, 25_000, 25_001, 37_500, 74_999, 75_000, 75_001, 200_000)


def import_reference(ref: Path):
    import jax.numpy as jnp

    clip = jnp.clip
    # utils/langevin.py:31 calls jnp.clip(x, a_min=, a_max=), keywords jax 0.8 removed; the same call by new names.
    jnp.clip = lambda x, min=None, max=None, a_min=None, a_max=None: clip(
        x, min if a_min is None else a_min, max if a_max is None else a_max)
    sys.path.insert(0, str(ref))
    stub = types.ModuleType("relax.utils.persistence")
    stub.make_persist = None  # only Algorithm.save_policy_structure calls it
    sys.modules["relax.utils.persistence"] = stub
    import relax.algorithm.qsm as qsm
    import relax.network.qsm as network

    return qsm, network


def langevin_draws(jax, key, shape: tuple, num_steps: int, num_particles: int):
    """The normals one ``QSMNet.get_action(key, ...)`` consumes (network/qsm.py:39-46, utils/langevin.py:15-18): per
    particle (``split(key, N)``; one particle: ``key`` itself) the start ``x`` and one normal per step.
    Returns ``x (N, *shape)``, ``noise (N, T, *shape)``."""
    keys = jax.random.split(key, num_particles) if num_particles > 1 else [key]
    xs, noises = [], []
    for k in keys:
        x_key, noise_key = jax.random.split(k)
        xs.append(np.asarray(jax.random.normal(x_key, shape)))
        noises.append(np.asarray(jax.random.normal(noise_key, (num_steps, *shape))))
    return np.stack(xs), np.stack(noises)


def flat(params, prefix: str) -> dict[str, np.ndarray]:
    """haiku's ``{module: {w, b}}`` as ``{prefix/module/w: array}``."""
    return {f"{prefix}/{m}/{k}": np.asarray(v) for m, d in params.items() for k, v in d.items()}


def all_params(state) -> dict[str, np.ndarray]:
    out = {}
    for name in ("q1", "q2", "target_q1", "target_q2", "q_score"):
        out.update(flat(getattr(state.params, name), name))
    return out


def schedule_lrs(jax, optax, algo) -> np.ndarray:
    """The learning rate ``algo.policy_optim`` applies after ``count`` steps, for each of ``SCHEDULE_STEPS``: one
    update of a unit gradient from a state whose Adam moments make Adam's direction 1 (mu = nu = 1, bias corrections
    1), so the update is ``-lr / (1 + eps)``."""
    p = {"w": jax.numpy.zeros(())}
    state = algo.policy_optim.init(p)
    adam, sched = state  # chain(scale_by_adam, scale_by_learning_rate(schedule))
    out = []
    for count in SCHEDULE_STEPS:
        s = (adam._replace(count=jax.numpy.asarray(10**9, jax.numpy.int32), mu={"w": 1.0}, nu={"w": 1.0}),
             sched._replace(count=jax.numpy.asarray(count, jax.numpy.int32)))
        update, _ = algo.policy_optim.update({"w": jax.numpy.ones(())}, s)
        out.append(-float(update["w"]) * (1.0 + 1e-8))
    return np.asarray(out, np.float64)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="the tree of mahaitongdae/diffusion_policy_online_rl")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--act", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.ref / "relax" / "algorithm" / "qsm.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no relax/algorithm/qsm.py; fix: --ref the tree of "
                 "mahaitongdae/diffusion_policy_online_rl")
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_platforms", "cpu")
    qsm, network = import_reference(args.ref)
    T = 20  # scripts/train_mujoco.py:119
    sizes = [args.hidden] * 3  # scripts/train_mujoco.py:42,80 (hidden_num 3)
    net, params = network.create_qsm_net(jax.random.key(args.seed), args.obs, args.act, sizes, num_timesteps=T,
                                         num_particles=args.particles)  # activation: relu (network/qsm.py:70)
    algo = qsm.QSM(net, params, lr=3e-4, lr_schedule_end=3e-5)  # scripts/train_mujoco.py:48-49,120
    out = {f"init/{k}": v for k, v in all_params(algo.state).items()}
    batches = make_batches(args.updates, args.batch, args.obs, args.act, args.seed + 1, reward_std=3.0)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.updates + 2)
    B, A, N = args.batch, args.act, args.particles
    for u, (batch, key) in enumerate(zip(batches, keys)):
        for name, value in batch.items():
            out[f"batch{u}/{name}"] = value
        p = algo.state.params
        x, noise = langevin_draws(jax, key, (B, A), T, N)  # next_action_key = key (algorithm/qsm.py:54)
        out[f"draws{u}/next_x"], out[f"draws{u}/next_noise"] = x, noise
        out[f"out{u}/next_action"] = np.asarray(net.get_action(key, (p.q_score, p.q1, p.q2),
                                                               jnp.asarray(batch["next_obs"])))
        data = qsm.Experience(obs=jnp.asarray(batch["obs"]), action=jnp.asarray(batch["action"]),
                              reward=jnp.asarray(batch["reward"]), next_obs=jnp.asarray(batch["next_obs"]),
                              done=jnp.asarray(batch["terminated"]))  # done = terminated (utils/experience.py)
        info, _ = algo.update(key, data)
        for name, value in info.items():
            out[f"info{u}/{name}"] = np.float32(value)
        out.update({f"params{u}/{k}": v for k, v in all_params(algo.state).items()})
        print(f"update {u}: " + "  ".join(f"{k} {v:.6g}" for k, v in info.items()))
    # The sampler alone, after the updates: N particles, then one.
    p = algo.state.params
    obs = np.random.default_rng(args.seed + 3).standard_normal((B, args.obs)).astype(np.float32)
    out["act/obs"] = obs
    for tag, n, key in (("many", N, keys[-2]), ("one", 1, keys[-1])):
        x, noise = langevin_draws(jax, key, (B, A), T, n)
        out[f"act/{tag}_x"], out[f"act/{tag}_noise"] = x, noise
        out[f"act/{tag}_action"] = np.asarray(net.get_action(key, (p.q_score, p.q1, p.q2), jnp.asarray(obs),
                                                             num_particles=n))
    out["schedule/steps"] = np.asarray(SCHEDULE_STEPS, np.int64)
    out["schedule/lr"] = schedule_lrs(jax, optax, algo)
    print("schedule:", dict(zip(SCHEDULE_STEPS, out["schedule/lr"])))
    out["meta"] = np.array(repr({
        "obs_dim": args.obs, "act_dim": args.act, "hidden": args.hidden, "batch": B, "updates": args.updates,
        "num_particles": N, "num_steps": T, "seed": args.seed, "jax": jax.__version__,
        "reference_commit": "a50cf41",
    }))  # fmt: skip
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
