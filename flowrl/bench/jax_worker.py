"""The authors' JAX code timed for ``tools/bench.py reference``: a plain script that a scratch Python with jax runs.

It imports nothing from flowrl or torch (the parent, :mod:`flowrl.bench.jax_reference`, times flowrl in its own
process) and none of the authors' code lives here: it is imported from the checkout named by ``--ref``.

- ``dacer``: happy-yan/DACER-Diffusion-with-Online-RL at 848c1f2, built as ``scripts/train_mujoco.py --alg dacer``
  builds it (hidden 256 x 3, Mish, 20 diffusion steps, lr 1e-4, every other argument ``DACER``'s default). One unit
  is an update pair: ``DACER.update(key, batch)`` twice (its policy delay is 2; it returns floats: a sync). One action
  is its jitted ``get_action`` on one observation, to numpy. ``relax/utils/persistence.py`` (policy export) needs an
  older jax: an empty module stands in for it, as in ``tests/reference/make_dacer_fixture.py``.
- ``sac_flow_g``: Elessar123/SAC-FLOW at 3df8b9d, ``from_scratch_code/SAC_flow_gru_jax.py``. Its network classes
  and its jitted functions (in its ``__main__`` block) are taken from the file by ``ast`` and run as written, built
  as its ``__main__`` builds them (GRU hidden 512, time embedding 32, critic 1024, Adam b1 0.5, alpha 0.2). One unit is
  an update triple, its loop's body three times: ``update_critic``, ``update_target``, and on the third
  ``update_actor_and_alpha`` (policy delay 3), each loss read back as its loop does. One action is its
  ``actor_apply_inference`` on one observation, to numpy.

Keys are split before each timed request; batches are fixed numpy arrays (the references' buffers hand numpy).

Protocol, one JSON object a line: started as ``python jax_worker.py --agent dacer --ref DIR``, it builds the agent,
runs one unit, then more while they compile (``jax.jit`` compiles on the first call, and again while a state's
dtypes settle), the same for actions, and writes ``{"ready": {...}}`` with the seconds those warm-up calls took. Then
``{"op": "update" | "act", "n": K}`` in -> ``{"seconds": S, "compiles": C}`` out (wall seconds of K units / K
actions, XLA compilations among them), ``{"op": "exit"}`` ends it. An error ends it with its traceback on stderr and
a non-zero exit.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np

# Set before jax is imported: one thread, XLA's and the BLAS libraries' (sklearn in DACER's entropy estimate); no
# persistent compilation cache, so that the warm-up is a cold compile wherever the bench runs.
WORKER_ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "JAX_PLATFORMS": "cpu", "JAX_ENABLE_COMPILATION_CACHE": "false", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
MAX_WARMUP_CALLS = 10
SAC_FLOW_FILE = "from_scratch_code/SAC_flow_gru_jax.py"
SAC_FLOW_CLASSES = ("BatchRenorm", "QNetwork", "VectorCritic", "SinusoidalPosEmb", "Actor", "EntropyCoef", "TrainState")
SAC_FLOW_FUNCTIONS = ("actor_apply_train", "actor_apply_inference", "qf_apply_train", "qf_apply_inference",
                      "update_critic", "update_actor_and_alpha", "update_target")


def batch_arrays(obs_dim: int, act_dim: int, batch: int, seed: int = 0) -> dict:
    """A fixed batch: obs, next_obs ``(B, obs_dim)``, action ``(B, act_dim)`` in [-1, 1], reward, done ``(B,)``."""
    rng = np.random.default_rng(seed)
    return {"obs": rng.normal(size=(batch, obs_dim)).astype(np.float32),
            "action": np.tanh(rng.normal(size=(batch, act_dim))).astype(np.float32),
            "reward": rng.normal(size=batch).astype(np.float32),
            "next_obs": rng.normal(size=(batch, obs_dim)).astype(np.float32),
            "done": (rng.random(batch) < 0.01).astype(np.float32)}


def build_dacer(ref: Path, obs_dim: int, act_dim: int, batch: int, seed: int):
    """``(unit(key_fn), act(key_fn))`` for DACER; each takes a function that returns the next fresh key."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ref))
    stub = types.ModuleType("relax.utils.persistence")
    stub.make_persist = None  # only Algorithm.save_policy_structure calls it
    sys.modules["relax.utils.persistence"] = stub
    import relax.algorithm.dacer as dacer
    import relax.network.dacer as network

    real_estimate = dacer.estimate_entropy
    # One XLA thread: a host callback that iterates a jax array can deadlock; it gets numpy.
    dacer.estimate_entropy = lambda actions, *a, **k: real_estimate(np.asarray(actions), *a, **k)

    def mish(x):  # scripts/train_mujoco.py:74-75
        return x * jnp.tanh(jax.nn.softplus(x))

    sizes = [256] * 3  # scripts/train_mujoco.py:32-35,57-58
    net, params = network.create_dacer_net(jax.random.key(seed), obs_dim, act_dim, sizes, sizes, mish, num_timesteps=20)
    algo = dacer.DACER(net, params, lr=1e-4)
    b = batch_arrays(obs_dim, act_dim, batch, seed)
    data = dacer.Experience(obs=b["obs"], action=b["action"], reward=b["reward"], next_obs=b["next_obs"],
                            done=b["done"])
    one_obs = b["obs"][:1]

    def unit(key):
        algo.update(key(), data)
        algo.update(key(), data)

    return unit, lambda key: algo.get_action(key(), one_obs)


def load_sac_flow(path: Path) -> dict:
    """The file's imports (those the scratch env has: the env loop's gymnasium, tyro, tensorboard are left out), its
    classes and its jitted functions (from the ``@jax.jit`` line on), executed into one module's namespace."""
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    module = types.ModuleType("sac_flow_reference")  # flax's dataclasses look their module up
    sys.modules[module.__name__] = module
    ns = module.__dict__
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            try:
                exec(ast.get_source_segment(source, node), ns)
            except ImportError:
                pass
    classes = {n.name: ast.get_source_segment(source, n) for n in tree.body if isinstance(n, ast.ClassDef)}
    exec("\n\n".join(classes[name] for name in SAC_FLOW_CLASSES), ns)
    main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.get_source_segment(source, n.test))
    for node in main.body:
        if isinstance(node, ast.FunctionDef) and node.name in SAC_FLOW_FUNCTIONS:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            exec(textwrap.dedent("\n".join(lines[first - 1: node.end_lineno])), ns)
    return ns


def build_sac_flow_g(ref: Path, obs_dim: int, act_dim: int, batch: int, seed: int):
    """``(unit(key_fn), act(key_fn))`` for SAC Flow-G, built as the file's ``__main__`` builds it."""
    import jax
    import jax.numpy as jnp
    import optax

    ns = load_sac_flow(ref / SAC_FLOW_FILE)
    args = types.SimpleNamespace(use_batch_norm=True, crossq_style=True, gamma=0.99, alpha=0.2, autotune=True,
                                 policy_lr=3e-4, q_lr=1e-3, batch_norm_momentum=0.99, n_critics=2, tau=1.0,
                                 policy_delay=3, denoising_steps=4)  # its Args defaults
    actor = ns["Actor"](action_dim=act_dim, action_scale=jnp.ones(act_dim), action_bias=jnp.zeros(act_dim),
                        obs_dim=obs_dim, denoising_steps=4, use_batch_norm=True, batch_norm_momentum=0.99,
                        time_emb_dim=32, hidden_dim=512)
    qf = ns["VectorCritic"](n_critics=2, use_batch_norm=True, batch_norm_momentum=0.99)
    entropy_coef = ns["EntropyCoef"](args.alpha)
    TrainState = ns["TrainState"]
    key = jax.random.PRNGKey(seed)
    key, actor_key, qf_key, alpha_key = jax.random.split(key, 4)
    dummy_obs, dummy_action = np.zeros((1, obs_dim), np.float32), np.zeros((1, act_dim), np.float32)

    def state(variables, apply_fn, lr):
        return TrainState.create(apply_fn=apply_fn, params=variables["params"], target_params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}),
                                 target_batch_stats=variables.get("batch_stats", {}), tx=optax.adam(lr, b1=0.5))

    s = {"actor": state(actor.init(actor_key, dummy_obs, key=jax.random.PRNGKey(0), training=True), actor.apply,
                        args.policy_lr),
         "qf": state(qf.init(qf_key, dummy_obs, dummy_action, training=True), qf.apply, args.q_lr),
         "alpha": state(entropy_coef.init(alpha_key), entropy_coef.apply, args.q_lr), "n": 0, "key": key}
    ns.update(args=args, actor=actor, qf=qf, entropy_coef=entropy_coef,
              target_entropy=-np.float32(act_dim) * 0)  # its __main__: -prod(action shape) * 0
    b = batch_arrays(obs_dim, act_dim, batch, seed)
    one_obs = b["obs"][:1]

    def unit(_key):  # the loop threads its own key through the updates, as the file's does
        for _ in range(3):
            s["qf"], qf_loss, _, _, s["key"] = ns["update_critic"](
                s["actor"], s["qf"], s["alpha"], b["obs"], b["action"], b["next_obs"], b["reward"], b["done"],
                s["key"])
            s["qf"] = ns["update_target"](s["qf"], args.tau)
            s["n"] += 1
            if s["n"] % args.policy_delay == 0:
                s["actor"], s["alpha"], actor_loss, alpha_loss, s["key"] = ns["update_actor_and_alpha"](
                    s["actor"], s["qf"], s["alpha"], b["obs"], s["key"])
                actor_loss.item(), alpha_loss.item()
            qf_loss.item()  # its loop logs every loss with .item(): a sync

    def act(key):
        action, _ = ns["actor_apply_inference"](s["actor"].params, s["actor"].batch_stats, one_obs, key())
        return np.array(jax.device_get(action))

    return unit, act


BUILDERS = {"dacer": build_dacer, "sac_flow_g": build_sac_flow_g}


def serve(agent: str, ref: Path, obs_dim: int, act_dim: int, batch: int, seed: int, out) -> None:
    """Build, warm up, answer requests from stdin until ``exit`` or end of input (see the module docstring)."""
    start = time.perf_counter()
    import jax
    import jax.monitoring

    import_s = time.perf_counter() - start
    start = time.perf_counter()
    unit, act = BUILDERS[agent](ref, obs_dim, act_dim, batch, seed)
    build_s = time.perf_counter() - start
    base, counter = jax.random.PRNGKey(seed + 1), [0]

    def keys(n: int):  # fresh keys, split before the clock starts
        counter[0] += 1
        return iter(list(jax.random.split(jax.random.fold_in(base, counter[0]), n)))

    compiles = [0]
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *_, **__: compiles.__setitem__(0, compiles[0] + (name == COMPILE_EVENT)))
    fns = {"update": unit, "act": act}

    def timed(op: str, n: int) -> tuple[float, int]:
        """Wall seconds of ``n`` calls, and the compilations during them."""
        ks, before = keys(2 * n), compiles[0]
        start = time.perf_counter()
        for _ in range(n):
            fns[op](lambda: next(ks))
        return time.perf_counter() - start, compiles[0] - before

    ready = {"import_s": import_s, "build_s": build_s}
    for op in fns:  # the first call, and more while they compile (SAC Flow's states settle their dtypes over 9 updates)
        ready[f"warmup_{op}_s"], ready[f"warmup_{op}_calls"] = 0.0, 0
        for calls in range(MAX_WARMUP_CALLS):
            seconds, compiled = timed(op, 1)
            if calls and not compiled:
                break
            ready[f"warmup_{op}_s"] += seconds
            ready[f"warmup_{op}_calls"] += 1
    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    ready.update(jax=jax.__version__, numpy=np.__version__, commit=commit.strip() or "unknown",
                 threads=WORKER_ENV["XLA_FLAGS"])
    send(out, {"ready": ready})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "exit":
            return
        seconds, compiled = timed(request["op"], int(request["n"]))
        send(out, {"seconds": seconds, "compiles": compiled})


def send(out, message: dict) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agent", choices=sorted(BUILDERS), required=True)
    p.add_argument("--ref", type=Path, required=True, help="the authors' checkout")
    p.add_argument("--obs", type=int, default=67)
    p.add_argument("--act", type=int, default=21)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = p.parse_args(argv)
    for name, value in WORKER_ENV.items():
        os.environ.setdefault(name, value)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    # The protocol gets stdout to itself; whatever the references print goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve(args.agent, args.ref.resolve(), args.obs, args.act, args.batch, args.seed, out)


if __name__ == "__main__":
    main()
