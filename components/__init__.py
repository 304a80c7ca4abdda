"""flowrl's building blocks: velocity networks, ODE integrators, flow, diffusion, Gaussian and deterministic policies,
best-of-N action selection, Langevin policies, Q-score matching (QSM) and IDEM's energy score, an entropy temperature and a sample-based
entropy estimate, regularizers, critics (also distributional), buffers (also DIPO's diffusion buffer and action
gradient); noisy flows with a density, GRU and Transformer velocity networks and BatchRenorm (SAC
Flow's parts); the policy protocol every policy keeps (``Policy``) and what agents bootstrap from (``td_target``,
``target_copy``, ``soft_update``).

Depends on torch, einops and gin only, never on ``flowrl``: import any piece into your own agent.
Every class and function is registered with gin and works as plain Python without a config.
"""

from components.action_gradient import ActionGradient
from components.batch_renorm import BatchRenorm, EnsembleBatchRenormMLP
from components.bounds import ActionBounds
from components.buffers import Batch, ReplayBuffer
from components.critics import (
    QEnsemble,
    RandomSubsetMin,
    ValueNetwork,
    ensemble_td_loss,
    expectile_loss,
    frozen,
    mean_aggregate,
    min_aggregate,
    polyak_update,
)
from components.deterministic_policy import DeterministicPolicy
from components.distributional import DistributionalCriticLoss, DistributionalQEnsemble, min_mean_target
from components.diffusion_buffer import DiffusionBuffer
from components.diffusion import (
    DiffusionPolicy,
    DiffusionSchedule,
    NoiseMLP,
    cosine_beta_schedule,
    linear_beta_schedule,
    vp_beta_schedule,
)
from components.ensemble import EnsembleFeedForward, EnsembleLayerNorm, EnsembleLinear, EnsembleMLP
from components.energy_matching import idem_score, noise_matching_loss, score_noise_target
from components.flow_matching import flow_matching_loss
from components.gmm_entropy import GaussianMixtureEntropy, mixture_entropy_bound
from components.gaussian_policy import GaussianPolicy
from components.noisy_flow import NoisyFlowPolicy, StateLogStd, noisy_euler
from components.langevin import LangevinPolicy, ScoreMLP, langevin_sample, langevin_step_sizes
from components.integrators import ODESolver, euler_step, heun_step, integrate, midpoint_step, rk4_step
from components.noise_nets import DACERNoiseMLP, DIPONoiseMLP, ScaledSinusoidalEmbedding
from components.policy import FlowPolicy
from components.protocols import Policy
from components.regularizers import (
    BCRegularizer,
    KLRegularizer,
    NoRegularizer,
    RegularizerInputs,
    W2Regularizer,
)
from components.reverse_sampling import reverse_sampling_loss
from components.samplers import RecentMixSampler, UniformSampler
from components.score_matching import (
    action_gradients,
    linear_schedule,
    min_member_gradient,
    q_score_matching_loss,
)
from components.selectors import BestOfN, Candidates, best_of_n, q_advantage_weights
from components.sequence_velocity import GRUVelocity, TransformerVelocity
from components.targets import soft_update, target_copy, td_target
from components.temperature import AlphaTemperature, Temperature
from components.velocity import MLPVelocity, ResidualVelocity, SinusoidalTimeEmbedding

__all__ = [name for name in dir() if not name.startswith("_")]
