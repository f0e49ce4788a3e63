"""gaussjax: the analytic structure of diffusion models, in JAX.

Implements "The Unreasonable Effectiveness of Gaussian Score Approximation for
Diffusion Models": analytic scores, the closed-form Gaussian probability-flow
solution, analytical teleportation, and EDM training with score-structure probes.
See `docs/index.md`.
"""

from gaussjax import (
    conventions,
    data,
    evaluation,
    fit,
    metrics,
    nn,
    ode,
    quality,
    samplers,
    schedules,
    scores,
    solution,
    teleportation,
)
from gaussjax.conventions import score_from_denoiser
from gaussjax.evaluation import compare_scores, noised_data, pure_noise
from gaussjax.fit import fit_gaussian, fit_gmm, fit_patch_size, kmeans
from gaussjax.metrics import fraction_unexplained_variance, per_sample_unexplained_variance
from gaussjax.ode import PFODESolution, solve_pf_ode, solve_vp_pf_ode
from gaussjax.samplers import (
    SamplerOutput,
    ddim_sampler,
    dpmpp_2m_sampler,
    euler_sampler,
    heun_sampler,
    hybrid_sampler,
)
from gaussjax.schedules import VPSchedule, cosine_schedule, ddpm_linear_schedule, karras_sigmas
from gaussjax.scores import (
    DeltaMixture,
    Denoiser,
    Gaussian,
    GaussianMixture,
    Isotropic,
    LocalDeltaMixture,
    PatchMixture,
    PatchPosteriorMean,
)
from gaussjax.solution import (
    gaussian_denoiser_trajectory,
    gaussian_final_state,
    gaussian_trajectory,
    gaussian_warm_start,
    teleport,
)

from gaussjax.teleportation import TeleportChoice, auto_sigma_skip

__version__ = "0.1.0"

__all__ = [
    "PFODESolution",
    "SamplerOutput",
    "VPSchedule",
    "DeltaMixture",
    "Denoiser",
    "Gaussian",
    "GaussianMixture",
    "Isotropic",
    "LocalDeltaMixture",
    "PatchMixture",
    "PatchPosteriorMean",
    "compare_scores",
    "cosine_schedule",
    "ddim_sampler",
    "ddpm_linear_schedule",
    "dpmpp_2m_sampler",
    "euler_sampler",
    "gaussian_denoiser_trajectory",
    "gaussian_final_state",
    "gaussian_trajectory",
    "gaussian_warm_start",
    "heun_sampler",
    "hybrid_sampler",
    "karras_sigmas",
    "samplers",
    "schedules",
    "solution",
    "solve_pf_ode",
    "solve_vp_pf_ode",
    "teleport",
    "TeleportChoice",
    "auto_sigma_skip",
    "teleportation",
    "conventions",
    "data",
    "evaluation",
    "fit",
    "fit_gaussian",
    "fit_gmm",
    "fit_patch_size",
    "fraction_unexplained_variance",
    "kmeans",
    "metrics",
    "nn",
    "ode",
    "quality",
    "noised_data",
    "per_sample_unexplained_variance",
    "pure_noise",
    "score_from_denoiser",
    "scores",
]
