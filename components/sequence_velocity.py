"""The SAC Flow velocity networks: a GRU-gated update (Flow-G) and a Transformer decoder (Flow-T) over flow steps.

Both answer ``v(obs (B, obs_dim), x (B, act_dim), t (B, 1)) -> (B, act_dim)``, the call of
:class:`~components.velocity.MLPVelocity`, and ``bind(obs) -> (x, t, k) -> v``, which a policy uses to encode the
observation once per sample and to tell step ``k``. Ported from Elessar123/SAC-FLOW (``from_scratch_code/
SAC_flow_gru_jax.py`` lines 244-324 and ``SAC_flow_transformer_jax.py`` lines 250-456); weights start from Flax's
defaults. Their BatchRenorm layers follow ``train()`` / ``eval()``.
"""

from __future__ import annotations

import math

import gin
import torch
from torch import nn

from components.batch_renorm import BatchRenorm
from components.jax_init import flax_dense_init
from components.ranges import COUNT, check_arguments


class FlaxSinusoidalEmbedding(nn.Module):
    """``t (B, 1) -> [sin(t w), cos(t w)] (B, dim)``, ``w_i = 10000^(-i / (dim/2 - 1))`` (the reference's
    ``SinusoidalPosEmb``)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


@gin.configurable
class GRUVelocity(nn.Module):
    """Flow-G: the velocity is a GRU cell's update with the flow state ``x`` as its hidden state.

    ``h = [BRN([s, x]), time(t)]``, ``z = sigmoid(gate(h))``, ``h~ = candidate(h)``, ``v = z * (h~ - x)``: an Euler
    step ``x + dt v = (1 - dt z) x + dt z h~`` is the GRU update ``(1 - z) h + z h~`` scaled by ``dt``. No other
    state is carried across steps (``x`` is the hidden state), so ``v(s, x, t)`` is the whole interface. ``gate`` and
    ``candidate`` are Linear(hidden) -> SiLU -> Linear(act_dim); the gate's last layer starts at zero weights and
    bias 5 (``z`` about 1); ``time`` is sinusoidal(time_dim) -> Linear(2 time_dim) -> SiLU -> Linear(time_dim).

    Args:
        batch_norm: BatchRenorm on ``[s, x]`` (its gin bindings set momentum and warm-up); False: none.

    Example::

        v = GRUVelocity(obs_dim=17, act_dim=6, hidden=64)
        dx = v(torch.zeros(8, 17), torch.zeros(8, 6), torch.zeros(8, 1))   # (8, 6)
    """

    RANGES = {"hidden": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 512, time_dim: int = 32, batch_norm: bool = True):
        super().__init__()
        check_arguments(type(self), locals())
        width = obs_dim + act_dim
        self.norm = BatchRenorm(width) if batch_norm else nn.Identity()
        self.time = nn.Sequential(FlaxSinusoidalEmbedding(time_dim), nn.Linear(time_dim, 2 * time_dim), nn.SiLU(),
                                  nn.Linear(2 * time_dim, time_dim))
        self.gate = nn.Sequential(nn.Linear(width + time_dim, hidden), nn.SiLU(), nn.Linear(hidden, act_dim))
        self.candidate = nn.Sequential(nn.Linear(width + time_dim, hidden), nn.SiLU(), nn.Linear(hidden, act_dim))
        flax_dense_init(self)
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.constant_(self.gate[-1].bias, 5.0)  # the gate starts open: z = sigmoid(5)

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.norm(torch.cat([obs, x], dim=-1)), self.time(t)], dim=-1)
        z = torch.sigmoid(self.gate(h))
        return z * (self.candidate(h) - x)

    def bind(self, obs: torch.Tensor):
        """``(x, t, k) -> v(obs, x, t)``."""
        return lambda x, t, k: self(obs, x, t)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (the reference's ``MultiHeadAttention``):
    ``query (B, Lq, d)``, ``memory (B, Lk, d)`` -> ``(B, Lq, d)``."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"Attention: d_model {d_model} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, lq, d = query.shape
        heads = lambda y: y.reshape(b, -1, self.num_heads, d // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q(query)), heads(self.k(memory)), heads(self.v(memory))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.num_heads)
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(mixed.transpose(1, 2).reshape(b, lq, d))


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: self-attention, cross-attention to the observation, GELU feed-forward (4 d), each
    added back and normalised (BatchRenorm, or LayerNorm when ``batch_norm`` is False)."""

    def __init__(self, d_model: int, num_heads: int, batch_norm: bool = True):
        super().__init__()
        self.self_attn, self.cross_attn = Attention(d_model, num_heads), Attention(d_model, num_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(approximate="tanh"),
                                nn.Linear(4 * d_model, d_model))
        norm = BatchRenorm if batch_norm else (lambda d: nn.LayerNorm(d, eps=1e-6))  # Flax LayerNorm's eps
        self.norms = nn.ModuleList(norm(d_model) for _ in range(3))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        tgt = self.norms[0](tgt + self.self_attn(tgt, tgt))
        tgt = self.norms[1](tgt + self.cross_attn(tgt, memory))
        return self.norms[2](tgt + self.ff(tgt))


@gin.configurable
class TransformerVelocity(nn.Module):
    """Flow-T: the flow state at step ``k`` is one token that attends to the encoded observation.

    ``memory = enc(BRN(s))``; token ``= proj(BRN_k(x)) + time(k / num_steps)``; ``num_layers`` decoder layers; two
    heads read the token: the velocity mean and its log-std (tanh onto ``[log_std_min, log_std_max]``). ``enc`` is
    Linear(d/2) -> SiLU -> Linear(d); ``time`` is Linear(d/4) -> SiLU -> Linear(d/2) -> SiLU -> Linear(d) on the raw
    time. The reference gives each step its own BatchRenorm on ``x`` (``BRN_k``), so the step index is part of the
    input: ``t`` must be one of ``k / num_steps``, the same for every row (``forward`` reads it from ``t[0]``, a
    host sync; a policy passes ``k`` through ``bind``). The reference's attention mask is all zeros and is left out.

    ``forward`` returns the mean velocity; ``bind_with_log_std(obs)`` returns ``(x, t, k) -> (mean, log_std)``, the
    velocity's own noise, which :class:`~components.noisy_flow.NoisyFlowPolicy` uses with ``log_std=None``.

    Example::

        v = TransformerVelocity(obs_dim=17, act_dim=6, d_model=32)
        dx = v(torch.zeros(8, 17), torch.zeros(8, 6), torch.full((8, 1), 0.25))   # step 1 of 4: (8, 6)
    """

    RANGES = {"num_steps": COUNT}

    def __init__(self, obs_dim: int, act_dim: int, d_model: int = 96, num_heads: int = 4, num_layers: int = 2,
                 num_steps: int = 4, batch_norm: bool = True, log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        check_arguments(type(self), locals())
        if d_model % 4:
            raise ValueError(f"TransformerVelocity.d_model must be a multiple of 4, got {d_model}")
        self.num_steps, self.log_std_min, self.log_std_max = num_steps, log_std_min, log_std_max
        self.obs_norm = BatchRenorm(obs_dim) if batch_norm else nn.Identity()
        self.encoder = nn.Sequential(nn.Linear(obs_dim, d_model // 2), nn.SiLU(), nn.Linear(d_model // 2, d_model))
        self.x_norms = nn.ModuleList(BatchRenorm(act_dim) if batch_norm else nn.Identity() for _ in range(num_steps))
        self.action_proj = nn.Linear(act_dim, d_model)
        self.time = nn.Sequential(nn.Linear(1, d_model // 4), nn.SiLU(), nn.Linear(d_model // 4, d_model // 2),
                                  nn.SiLU(), nn.Linear(d_model // 2, d_model))
        self.layers = nn.ModuleList(DecoderLayer(d_model, num_heads, batch_norm) for _ in range(num_layers))
        self.mean_head, self.log_std_head = nn.Linear(d_model, act_dim), nn.Linear(d_model, act_dim)
        flax_dense_init(self)

    def bind_with_log_std(self, obs: torch.Tensor):
        """``(x (B, A), t (B, 1), k) -> (mean (B, A), log_std (B, A))`` with ``obs`` encoded once."""
        memory = self.encoder(self.obs_norm(obs)).unsqueeze(1)

        def field(x: torch.Tensor, t: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
            token = self.action_proj(self.x_norms[k](x.unsqueeze(1))) + self.time(t.unsqueeze(1))
            for layer in self.layers:
                token = layer(token, memory)
            token = token[:, 0]
            squashed = torch.tanh(self.log_std_head(token))
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (squashed + 1.0)
            return self.mean_head(token), log_std

        return field

    def bind(self, obs: torch.Tensor):
        """``(x, t, k) -> mean velocity``."""
        field = self.bind_with_log_std(obs)
        return lambda x, t, k: field(x, t, k)[0]

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = round(float(t.reshape(-1)[0]) * self.num_steps)
        if not 0 <= k < self.num_steps:
            raise ValueError(f"TransformerVelocity: t must be one of k / {self.num_steps}, k < {self.num_steps}")
        return self.bind(obs)(x, t, k)
