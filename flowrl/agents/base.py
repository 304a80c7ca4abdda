"""What every actor-critic agent shares with the runner: acting, the update's float metrics and its counter,
precision, compiling, checkpoints.

A new agent subclasses :class:`ActorCritic`, builds its networks and optimisers (target networks with
:func:`~components.targets.target_copy`), lists them in ``modules()`` and ``optimizers()``, and writes
``_update(batch)`` as a short sequence of named ``(loss, info)`` steps, its critic targets from
:func:`~components.targets.td_target` and its periodic steps gated by :meth:`ActorCritic._due`. The runner,
checkpoints, resume, evaluation and ``tools/`` then work unchanged (see ``flowrl/agents/sac.py``).
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from components.buffers import Batch
from components.protocols import Policy
from components.ranges import COUNT, POSITIVE, UNIT, Range
from flowrl.agents.compiled import compile_update, compiled_step, init_adam_state

Info = dict[str, torch.Tensor]


def prefixed(prefix: str, info: Info) -> Info:
    """``{'loss': x}`` -> ``{'prefix/loss': x}``."""
    return {f"{prefix}/{k}": v for k, v in info.items()}


def adam(params, lr: float, device: torch.device, eps: float = 1e-8,
         betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam, fused (one kernel per parameter group) on CUDA and, since torch 2.4, on the CPU."""
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, eps=eps, betas=tuple(betas), **fast)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   max_grad_norm: float | None = None) -> list[torch.Tensor]:
    """Clear the gradients, backpropagate ``loss`` into ``optimizer``'s parameters only, optionally clip their global
    2-norm to ``max_grad_norm``, ``step``.

    Only the stepped parameters are differentiated (``inputs=``): a loss through a critic costs no critic weight
    gradients, also under ``torch.compile``, where :func:`~components.critics.frozen` cannot toggle flags and the
    step is :func:`flowrl.agents.compiled.compiled_step` (the same arithmetic in a form the compiler traces).
    Returns the (clipped) gradients, one per stepped parameter, for :func:`optimizer_restep`.
    """
    params = stepped(optimizer)
    if torch.compiler.is_compiling():
        return compiled_step(optimizer, params, loss, max_grad_norm)
    for p in params:
        p.grad = None
    loss.backward(inputs=params)
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, max_norm=max_grad_norm)
    optimizer.step()
    return [p.grad for p in params]


def optimizer_restep(optimizer: torch.optim.Optimizer, grads: list[torch.Tensor]) -> None:
    """Another ``step`` of ``optimizer`` on ``grads`` (what :func:`optimizer_step` returned): Adam's moments and
    counter advance again on the same gradients (the relax DPMD applies each critic gradient twice)."""
    params = stepped(optimizer)
    if torch.compiler.is_compiling():
        compiled_step(optimizer, params, None, None, grads)
        return
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()


def stepped(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters ``optimizer`` steps (those that require gradients), in its groups' order."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


class ActorCritic:
    """The runner's interface: ``act``, ``update``, ``autocast``, ``compile``, ``compile_update``, ``modules``,
    ``state_dict``.

    Subclasses set ``self.device``, ``self.amp_dtype`` and ``self.policy`` (a :class:`~components.protocols.Policy`),
    and define ``modules()``, ``optimizers()`` and ``_update(batch) -> Info``.

    The update counter: ``num_updates`` is the number of finished updates. It is raised in one place, after
    ``_update`` returns (:meth:`_metrics`), so that while an update runs it is that update's index counted from 0;
    ``_due(every)`` says whether a periodic step (policy, targets, temperature) falls on it.
    """

    device: torch.device
    amp_dtype: torch.dtype | None
    policy: Policy
    num_updates: int
    max_grad_norm: float | None = None  # clip of the critic's gradient norm in ``critic_step`` (None: no clip)
    uncompiled: tuple[str, ...] = ()  # names in ``modules()`` that ``compile`` leaves alone (a scalar temperature)
    _compiled_update: Callable[[Batch], tuple[tuple[str, ...], torch.Tensor]] | None = None  # compile_update's
    _compiled_act: Callable[[torch.Tensor, bool], torch.Tensor] | None = None  # flowrl.agents.acting's
    # Ranges of the parameters agents share; each agent's ``__init__`` checks the ones it takes (``check_arguments``)
    # and adds its own ``RANGES`` (components/ranges.py).
    RANGES = {"discount": UNIT, "target_tau": Range(0.0, 1.0, low_open=True), "lr": POSITIVE, "critic_lr": POSITIVE,
              "policy_lr": POSITIVE, "adam_eps": POSITIVE, "max_grad_norm": POSITIVE, "policy_delay": COUNT}

    # ------------------------------------------------------------------------------------------- to override
    def modules(self) -> dict[str, nn.Module]:
        """Every network (online and target) by name; checkpoints and ``compile`` walk this."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def _update(self, batch: Batch) -> Info:
        """One gradient update on ``batch``; detached tensors keyed ``critic/``, ``actor/``, ... (no ``.item()``)."""
        raise NotImplementedError

    def delayed_update(self, batch: Batch) -> Info:
        """A critic step every update, a ``policy_step`` every ``policy_delay``-th (the 2nd, 4th, ... for 2, as the TD3
        and SAC Flow references count: ``_due(policy_delay, first=False)``). Agents that update so bind
        ``_update = ActorCritic.delayed_update``."""
        info = self.critic_step(batch)
        if self._due(self.policy_delay, first=False):
            info.update(self.policy_step(batch))
        return info

    # ------------------------------------------------------------------------------------------------ shared
    def _due(self, every: int, first: bool = True) -> bool:
        """Whether a step taken every ``every`` updates falls on the update now running (index ``num_updates``).

        ``first``: the 1st, ``every + 1``-th, ... update (``num_updates % every == 0``: references whose counter is
        read before it is raised, FlowRL's and DACER's); False: the ``every``-th, ``2 every``-th, ... (references
        that raise their counter first, TD3's and SAC Flow's). Both are True on every update for ``every = 1``.
        """
        return self.num_updates % every == (0 if first else every - 1)

    def critic_step(self, batch: Batch) -> Info:
        """One optimiser step of the critic: ``self.critic_loss(batch)`` through ``self.critic_optimizer``.

        The single-critic agents (SAC, TD3) share it; FlowRL trains ``Q``, ``Q_beta`` and ``V`` together in its own
        ``value_step``.
        """
        loss, info = self.critic_loss(batch)
        optimizer_step(self.critic_optimizer, loss, self.max_grad_norm)
        return prefixed("critic", info)

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient update on ``batch``; returns plain floats (one device sync for all of them)."""
        keys, values = (self._compiled_update or self._metrics)(batch)
        return dict(zip(keys, values.tolist()))

    def _metrics(self, batch: Batch) -> tuple[tuple[str, ...], torch.Tensor]:
        """The whole update under :meth:`autocast`: the metric names and their values as one float32 tensor."""
        with self.autocast():
            info = self._update(batch)
        self.num_updates += 1  # the one place the counter moves (see the class docstring)
        keys = tuple(info)
        return keys, torch.stack([info[k].float() for k in keys])

    def autocast(self) -> torch.autocast:
        """The precision context of every update: ``amp_dtype`` autocast, or a disabled one (float32)."""
        dtype = self.amp_dtype or torch.float32
        # Compiled, no cache of cast weights: one cast shared by two losses' backward passes splits dynamo's graph.
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp_dtype is not None,
                              cache_enabled=not torch.compiler.is_compiling())

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions ``(N, act_dim)`` in [-1, 1] for observations ``(N, obs_dim)``; exploration unless deterministic."""
        with torch.inference_mode():
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
            return (self._compiled_act or self._act)(obs_t, deterministic).cpu().numpy()

    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.policy.act(obs, deterministic=deterministic)

    def compile(self) -> None:
        """``torch.compile`` every network's forward (``Trainer.compile = 'networks'``): of each policy (and policy
        target) its ``compile_modules()``, every other module in ``modules()`` whole, except the ``uncompiled``."""
        for name, module in self.modules().items():
            if name not in self.uncompiled:
                for part in module.compile_modules() if isinstance(module, Policy) else [module]:
                    part.compile()

    def compile_update(self, cudagraph: bool = False, backend: str = "inductor") -> None:
        """Compile the whole update (``Trainer.compile = 'update'``): see :mod:`flowrl.agents.compiled`."""
        self._compiled_update = compile_update(self, cudagraph, backend)

    def state_dict(self) -> dict:
        """Networks, optimisers and the update counter."""
        return {
            "networks": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["networks"][k])
        # Optimizer.load_state_dict keeps the given tensors: copy them so two live agents never share Adam moments.
        for k, o in self.optimizers().items():
            o.load_state_dict(copy.deepcopy(state["optimizers"][k]))
            if self._compiled_update is not None:  # its step counters where the compiled step keeps them
                init_adam_state(o)
        self.num_updates = int(state["num_updates"])
