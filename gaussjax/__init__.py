"""gaussjax: the analytic structure of diffusion models, in JAX.

Implements "The Unreasonable Effectiveness of Gaussian Score Approximation for
Diffusion Models": analytic scores, the closed-form Gaussian probability-flow
solution, analytical teleportation, and EDM training with score-structure probes.
See `docs/index.md`.
"""

from gaussjax import conventions, data, evaluation, fit, metrics, scores
from gaussjax.evaluation import compare_scores, noised_data, pure_noise
from gaussjax.fit import fit_gaussian, fit_gmm, kmeans
from gaussjax.metrics import fraction_unexplained_variance, per_sample_unexplained_variance
from gaussjax.scores import DeltaMixture, Denoiser, Gaussian, GaussianMixture, Isotropic

__version__ = "0.1.0"

__all__ = [
    "DeltaMixture",
    "Denoiser",
    "Gaussian",
    "GaussianMixture",
    "Isotropic",
    "compare_scores",
    "conventions",
    "data",
    "evaluation",
    "fit",
    "fit_gaussian",
    "fit_gmm",
    "fraction_unexplained_variance",
    "kmeans",
    "metrics",
    "noised_data",
    "per_sample_unexplained_variance",
    "pure_noise",
    "scores",
]
