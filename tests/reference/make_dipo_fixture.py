"""Make ``tests/reference/dipo_fixture.npz`` from the relax DIPO code (mahaitongdae/diffusion_policy_online_rl at
a50cf41, JAX + haiku + optax), run on the CPU.

The fixture records what the reference's jitted ``DIPO`` update computes: its initial weights (two critics, their
targets, the diffusion policy and its target), the diffusion buffer's rows, three replay batches with terminated,
truncated and ordinary rows, each update's diffusion-buffer indices and rows, every random draw (derived from the
update's key exactly as the reference splits it), the target policy's next actions, the improved actions it wrote
back, its losses and every parameter after each update. ``test_dipo_reference.py`` replays it through flowrl's
``DIPOAgent``. Only numbers are stored; none of the reference's code is.

Sizes are shrunk: obs 5, act 3, widths 16 (3 hidden layers as the reference), batch 8, a diffusion buffer of 12 rows;
100 diffusion steps and every other setting are the reference's (``scripts/train_mujoco.py --alg dipo``: lines
150-151). Updates 0 and 2 step the policy's target (``step % policy_target_delay == 0``).

Run it with a Python that has jax, dm-haiku, optax (e.g. ``/work/jaxenv/bin/python``), from the project root, with
an extracted checkout of the reference::

    git -C <mirror> archive a50cf41 | tar -x -C /tmp/relax-ref
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false /work/jaxenv/bin/python tests/reference/make_dipo_fixture.py \
        --ref /tmp/relax-ref

``relax/utils/persistence.py`` (policy export, unused by an update) is replaced by an empty module before import.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

from reference_rows import make_batches  # noqa: E402  (tests/reference, beside this script)
from relax_reference import flat  # noqa: E402

DEFAULT_OUT = Path(__file__).with_name("dipo_fixture.npz")


def import_reference(ref: Path):
    sys.path.insert(0, str(ref))
    stub = types.ModuleType("relax.utils.persistence")
    stub.make_persist = None
    sys.modules["relax.utils.persistence"] = stub
    import relax.algorithm.dipo as dipo
    import relax.network.dipo as network
    from relax.buffer.tree import TreeBuffer
    from relax.utils.experience import Experience, ObsActionPair

    return dipo, network, TreeBuffer, Experience, ObsActionPair


def all_params(state) -> dict[str, np.ndarray]:
    out = {}
    for name in ("q1", "q2", "target_q1", "target_q2", "policy", "target_policy"):
        out.update(flat(getattr(state.params, name), name))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", type=Path, required=True, help="an extracted checkout of the relax fork")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--obs", type=int, default=5)
    ap.add_argument("--act", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rows", type=int, default=12, help="rows in the diffusion buffer")
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.ref / "relax" / "algorithm" / "dipo.py").is_file():
        sys.exit(f"error: '{args.ref}' holds no relax/algorithm/dipo.py; fix: --ref an extracted relax fork")
    import jax

    jax.config.update("jax_platforms", "cpu")
    dipo, network, TreeBuffer, Experience, ObsActionPair = import_reference(args.ref)
    T, B, A = 100, args.batch, args.act  # num_timesteps=100: scripts/train_mujoco.py:150
    sizes = [args.hidden] * 3  # scripts/train_mujoco.py:42,80 (hidden_num 3)
    net, params = network.create_dipo_net(jax.random.key(args.seed), args.obs, A, sizes, num_timesteps=T)
    g = np.random.default_rng(args.seed + 3)
    rows = {"obs": g.standard_normal((args.rows, args.obs)).astype(np.float32),
            "action": np.tanh(1.5 * g.standard_normal((args.rows, A))).astype(np.float32)}
    dbuf = TreeBuffer.from_example(ObsActionPair.create_example(args.obs, A), args.rows, args.seed + 4,
                                   remove_batch_dim=False)  # as scripts/train_mujoco.py:139-144
    dbuf.add_batch(ObsActionPair(rows["obs"], rows["action"]))
    algo = dipo.DIPO(net, params, dbuf, lr=3e-4, action_gradient_steps=30, policy_target_delay=2,
                     action_grad_norm=0.16)  # scripts/train_mujoco.py:151 (lr: :48); the rest dipo.py's defaults
    out = {f"init/{k}": v for k, v in all_params(algo.state).items()}
    out.update({"diffusion/obs": rows["obs"], "diffusion/action": rows["action"]})
    record: dict = {}
    sample, replace = dbuf.sample_with_indices, dbuf.replace

    def recording_sample(size, **kw):
        data, index = sample(size, **kw)
        record["index"], record["obs"], record["action"] = np.array(index), np.array(data.obs), np.array(data.action)
        return data, index

    def recording_replace(index, data, **kw):
        record["improved"] = np.array(data.action)
        replace(index, ObsActionPair(None, np.array(data.action)), **kw)

    dbuf.sample_with_indices, dbuf.replace = recording_sample, recording_replace
    batches = make_batches(args.updates, B, args.obs, A, args.seed + 1)
    keys = jax.random.split(jax.random.key(args.seed + 2), args.updates)
    for u, (batch, key) in enumerate(zip(batches, keys)):
        for name, value in batch.items():
            out[f"batch{u}/{name}"] = value
        target_policy = algo.state.params.target_policy
        # The update's split (dipo.py:84), the sampler's (utils/diffusion.py:107-110) and p_loss's (:127-130).
        next_key, time_key, noise_key = jax.random.split(key, 3)
        x_key, steps_key = jax.random.split(next_key)
        out[f"draws{u}/next_x"] = 0.5 * np.asarray(jax.random.normal(x_key, (B, A)))
        out[f"draws{u}/next_steps"] = np.asarray(jax.random.normal(steps_key, (T, B, A)))
        out[f"draws{u}/t"] = np.asarray(jax.random.randint(time_key, (B,), 0, T))
        out[f"draws{u}/noise"] = np.asarray(jax.random.normal(noise_key, (B, A)))
        out[f"out{u}/next_action"] = np.asarray(net.get_action(next_key, target_policy, batch["next_obs"]))
        data = Experience(obs=batch["obs"], action=batch["action"], reward=batch["reward"],
                          next_obs=batch["next_obs"], done=batch["terminated"])  # done = terminated (experience.py:43)
        info = algo.update(key, data)
        out.update({f"diffusion{u}/index": record["index"], f"diffusion{u}/obs": record["obs"],
                    f"diffusion{u}/action": record["action"], f"out{u}/improved": record["improved"],
                    f"out{u}/buffer_action": np.array(dbuf.buffers[1][: args.rows])})
        for name, value in info.items():
            out[f"info{u}/{name}"] = np.float32(value)
        out.update({f"params{u}/{k}": v for k, v in all_params(algo.state).items()})
        shift = np.abs(record["improved"] - record["action"]).max()
        print(f"update {u}: " + "  ".join(f"{k} {v:.6g}" for k, v in info.items()) + f"  max action shift {shift:.4g}")
    out["meta"] = np.array(repr({
        "obs_dim": args.obs, "act_dim": A, "hidden": args.hidden, "batch": B, "updates": args.updates,
        "rows": args.rows, "num_steps": T, "seed": args.seed, "jax": jax.__version__, "reference_commit": "a50cf41",
    }))  # fmt: skip
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
