"""Make ``tests/reference/sac_flow_fixture.npz`` from the authors' SAC Flow JAX code (Elessar123/SAC-FLOW), on the CPU.

For each variant (``gru``: ``from_scratch_code/SAC_flow_gru_jax.py``, ``transformer``:
``SAC_flow_transformer_jax.py``) the fixture records what the reference's own update functions compute: its initial
weights and BatchRenorm statistics (actor, twin critic, temperature), four batches with terminated, truncated and
ordinary rows, every ``jax.random.normal`` draw in call order (drawn here from NumPy and fed in, so that flowrl can be
fed the same), and after every update the critic loss and mean Q, the actor and temperature losses (update 3: the
policy delay is 3) and every parameter and statistic. ``test_sac_flow_reference.py`` replays them through flowrl's
``SACFlowAgent``. Only numbers are stored; none of the reference's code is.

How the reference is run: the network classes (module level) and the update functions (``actor_apply_*``,
``qf_apply_*``, ``update_critic``, ``update_actor_and_alpha``, ``update_target``, from its ``__main__`` block) are
taken from the file by ``ast`` and executed here without their ``@jax.jit`` (the same arithmetic, eager, so the fed
draws arrive one call at a time); the train states are made as its ``__main__`` makes them (Adam with b1 0.5, alpha
0.2, target entropy 0). Three constants of the source text are replaced to keep the fixture small and to reach
BatchRenorm's renormalisation within four updates: the critic's width 1024 -> ``--critic-hidden``, the Flow-G
log-std network's width 512 -> ``--hidden``, and the warm-up 100_000 -> ``--warmup`` training calls. Everything
else is the reference's: obs 5, act 3, batch 8, 4 flow steps, GRU hidden and time embedding ``--hidden`` / 8,
Transformer d_model 16 with 4 heads and 2 layers.

Usage (in a scratch environment with ``pip install jax flax optax numpy``, not the project's; from the project root,
with a checkout of Elessar123/SAC-FLOW at commit 3df8b9d in /tmp/sac-flow)::

    python tests/reference/make_sac_flow_fixture.py --ref /tmp/sac-flow
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from reference_rows import make_batches  # noqa: E402  (tests/reference, beside this script)

DEFAULT_OUT = Path(__file__).with_name("sac_flow_fixture.npz")
FILES = {"gru": "SAC_flow_gru_jax.py", "transformer": "SAC_flow_transformer_jax.py"}
CLASSES = {"gru": ("BatchRenorm", "QNetwork", "VectorCritic", "SinusoidalPosEmb", "Actor", "EntropyCoef", "TrainState"),
           "transformer": ("BatchRenorm", "QNetwork", "VectorCritic", "MultiHeadAttention", "TransformerDecoderLayer",
                           "TransformerFlowActor", "EntropyCoef", "TrainState")}
FUNCTIONS = ("actor_apply_train", "actor_apply_inference", "qf_apply_train", "qf_apply_inference", "update_critic",
             "update_actor_and_alpha", "update_target")


def load_reference(path: Path, critic_hidden: int, logstd_hidden: int, warmup: int) -> dict:
    """The reference's imports, classes and update functions, executed into one namespace (sizes substituted)."""
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    module = types.ModuleType(f"sac_flow_reference_{path.stem}")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            try:  # gymnasium, tyro, torch's SummaryWriter and cleanrl_utils are for the env loop only
                exec(ast.get_source_segment(source, node), namespace)
            except ImportError:
                pass
    substitutions = {"nn.Dense(1024)": ("nn.Dense(CRITIC_HIDDEN)", 2), "100_000": ("BRN_WARMUP", 1)}
    if path.name == FILES["gru"]:
        substitutions["nn.Dense(512)"] = ("nn.Dense(LOGSTD_HIDDEN)", 2)
    wanted = CLASSES["gru" if path.name == FILES["gru"] else "transformer"]
    classes = {n.name: ast.get_source_segment(source, n) for n in tree.body if isinstance(n, ast.ClassDef)}
    code = "\n\n".join(classes[name] for name in wanted)
    for old, (new, count) in substitutions.items():
        assert code.count(old) == count, f"{path.name}: expected {count} x {old!r}, found {code.count(old)}"
        code = code.replace(old, new)
    namespace.update(CRITIC_HIDDEN=critic_hidden, LOGSTD_HIDDEN=logstd_hidden, BRN_WARMUP=warmup)
    exec(code, namespace)
    main = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.get_source_segment(source, n.test))
    for node in main.body:
        if isinstance(node, ast.FunctionDef) and node.name in FUNCTIONS:
            # from the 'def' line on: the @jax.jit above it is left out
            exec(textwrap.dedent("\n".join(lines[node.lineno - 1: node.end_lineno])), namespace)
    return namespace


class FedNormal:
    """Stands in for ``jax.random.normal`` during the updates: returns the next NumPy draw, records it.

    Draws are clipped to ``[-clip, clip]``: a sampled action near +-1 makes ``log(1 - a^2 + 1e-6)`` amplify the last
    bit in which XLA's and torch's tanh differ (seen: 3e-3 in one log-density at ``1 - a^2 = 4e-5``), which no port
    can match; clipped draws keep the actions away from it. The reference evaluates its density at whatever it draws.
    """

    def __init__(self, jnp, seed: int, clip: float, dtype):
        self.jnp, self.rng, self.clip, self.dtype, self.draws = jnp, np.random.default_rng(seed), clip, dtype, []

    def __call__(self, key, shape=(), dtype=None):
        draw = np.clip(self.rng.standard_normal(tuple(shape)), -self.clip, self.clip).astype(self.dtype)
        self.draws.append(draw)
        return self.jnp.asarray(draw)


def flat(prefix: str, tree) -> dict[str, np.ndarray]:
    from flax import traverse_util

    return {f"{prefix}/{'/'.join(k)}": np.asarray(v) for k, v in traverse_util.flatten_dict(
        {"x": tree} if not hasattr(tree, "keys") else dict(tree)).items()}


def run_variant(variant: str, ref: Path, args) -> dict[str, np.ndarray]:
    import jax
    import jax.numpy as jnp
    import optax

    ns = load_reference(ref / "from_scratch_code" / FILES[variant], args.critic_hidden, args.hidden, args.warmup)
    obs_dim, act_dim, n = args.obs, args.act, args.batch
    run_args = SimpleNamespace(use_batch_norm=True, crossq_style=True, gamma=0.99, alpha=0.2, autotune=True,
                               policy_lr=3e-4, q_lr=1e-3, batch_norm_momentum=0.99, n_critics=2, tau=1.0,
                               policy_delay=3, denoising_steps=4)
    common = dict(action_dim=act_dim, action_scale=jnp.ones(act_dim), action_bias=jnp.zeros(act_dim), obs_dim=obs_dim,
                  denoising_steps=4, use_batch_norm=True, batch_norm_momentum=0.99)
    if variant == "gru":
        actor = ns["Actor"](**common, time_emb_dim=8, hidden_dim=args.hidden)  # main: time_emb_dim=32, hidden_dim=512
    else:
        actor = ns["TransformerFlowActor"](**common, d_model=16, n_head=4, n_layers=2)  # main: d_model 96
    qf = ns["VectorCritic"](n_critics=2, use_batch_norm=True, batch_norm_momentum=0.99)
    entropy_coef = ns["EntropyCoef"](run_args.alpha)
    TrainState = ns["TrainState"]
    key = jax.random.PRNGKey(args.seed)
    key, actor_key, qf_key, alpha_key = jax.random.split(key, 4)
    dummy_obs, dummy_action = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
    dtype = np.float64 if args.float64 else np.float32
    # float64: every parameter and statistic cast after the reference's init (its BatchRenorm makes float32 ones)
    cast = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda v: v.astype(dtype) if jnp.issubdtype(jnp.result_type(v), jnp.floating) else v, tree)
    actor_vars = cast(actor.init(actor_key, dummy_obs, key=jax.random.PRNGKey(0), training=True))
    qf_vars = cast(qf.init(qf_key, dummy_obs, dummy_action, training=True))
    actor_state = TrainState.create(apply_fn=actor.apply, params=actor_vars["params"],
                                    target_params=actor_vars["params"],
                                    batch_stats=actor_vars["batch_stats"], target_batch_stats=actor_vars["batch_stats"],
                                    tx=optax.adam(learning_rate=run_args.policy_lr, b1=0.5))
    qf_state = TrainState.create(apply_fn=qf.apply, params=qf_vars["params"], target_params=qf_vars["params"],
                                 batch_stats=qf_vars["batch_stats"], target_batch_stats=qf_vars["batch_stats"],
                                 tx=optax.adam(learning_rate=run_args.q_lr, b1=0.5))
    alpha_params = cast(entropy_coef.init(alpha_key)["params"])
    alpha_state = TrainState.create(apply_fn=entropy_coef.apply, params=alpha_params, target_params=alpha_params,
                                    batch_stats={}, target_batch_stats={}, tx=optax.adam(learning_rate=run_args.q_lr,
                                                                                         b1=0.5))
    ns.update(args=run_args, actor=actor, qf=qf, entropy_coef=entropy_coef,
              target_entropy=-np.float32(act_dim) * 0)  # main: -prod(action shape) * 0

    def snapshot(prefix: str) -> dict[str, np.ndarray]:
        return {**flat(f"{prefix}/actor/params", actor_state.params),
                **flat(f"{prefix}/actor/batch_stats", actor_state.batch_stats),
                **flat(f"{prefix}/qf/params", qf_state.params),
                **flat(f"{prefix}/qf/batch_stats", qf_state.batch_stats),
                **flat(f"{prefix}/alpha/params", alpha_state.params)}

    out = snapshot(f"{variant}/init")
    fed = FedNormal(jnp, args.seed + 10, args.draw_clip, dtype)
    real_normal = jax.random.normal
    n_updates = 0
    for k, batch in enumerate(make_batches(args.updates, n, obs_dim, act_dim, args.seed + 1, reward_std=3.0, dtype=dtype), start=1):
        p = f"{variant}/u{k}"
        out.update({f"{p}/batch/{name}": v for name, v in batch.items()})
        start = len(fed.draws)
        jax.random.normal = fed
        try:
            qf_state, qf_loss, qf_a_values, next_q_values, key = ns["update_critic"](
                actor_state, qf_state, alpha_state, batch["obs"], batch["action"], batch["next_obs"],
                batch["reward"], batch["terminated"], key)
            qf_state = ns["update_target"](qf_state, run_args.tau)
            n_updates += 1
            out.update({f"{p}/critic_loss": np.asarray(qf_loss), f"{p}/critic_q": np.asarray(qf_a_values)})
            if n_updates % run_args.policy_delay == 0:
                actor_state, alpha_state, actor_loss, alpha_loss, key = ns["update_actor_and_alpha"](
                    actor_state, qf_state, alpha_state, batch["obs"], key)
                out.update({f"{p}/actor_loss": np.asarray(actor_loss), f"{p}/alpha_loss": np.asarray(alpha_loss)})
        finally:
            jax.random.normal = real_normal
        out[f"{p}/draws"] = np.stack(fed.draws[start:])
        out.update(snapshot(p))
        print(f"{variant} update {k}: critic loss {float(qf_loss):.6f}"
              + (f"  actor loss {float(actor_loss):.6f}  alpha loss {float(alpha_loss):.6f}"
                 if f"{p}/actor_loss" in out else "") + f"  draws {len(fed.draws) - start}")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True,
                   help="a checkout of Elessar123/SAC-FLOW (holds from_scratch_code/)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--obs", type=int, default=5)
    p.add_argument("--act", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--critic-hidden", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draw-clip", type=float, default=1.5)
    p.add_argument("--float64", action=argparse.BooleanOptionalAction, default=True,
                   help="run in float64 (default): see the module docstring")
    args = p.parse_args(argv)
    if not all((args.ref / "from_scratch_code" / f).is_file() for f in FILES.values()):
        sys.exit(f"error: '{args.ref}' holds no from_scratch_code/SAC_flow_gru_jax.py; fix: --ref a checkout of "
                 f"Elessar123/SAC-FLOW")
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", args.float64)
    out = {}
    with jax.disable_jit():
        for variant in FILES:
            out.update(run_variant(variant, args.ref, args))
    commit = subprocess.run(["git", "-C", str(args.ref), "rev-parse", "HEAD"], capture_output=True, text=True)
    meta = dict(obs_dim=args.obs, act_dim=args.act, batch=args.batch, hidden=args.hidden, draw_clip=args.draw_clip,
                float64=args.float64,
                critic_hidden=args.critic_hidden, warmup=args.warmup, updates=args.updates, seed=args.seed)
    out.update({f"meta/{k}": np.asarray(v) for k, v in meta.items()})
    out["meta/reference_commit"] = np.asarray(commit.stdout.strip() or "unknown")
    import flax, optax

    out["meta/versions"] = np.asarray(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(out)} arrays)")


if __name__ == "__main__":
    main()
