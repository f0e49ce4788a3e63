"""Analytic score models, one per file; all implement the `Denoiser` protocol."""

from gaussjax.scores._base import AnalyticModel, Denoiser
from gaussjax.scores.delta import DeltaMixture
from gaussjax.scores.gaussian import Gaussian
from gaussjax.scores.isotropic import Isotropic
from gaussjax.scores.mixture import GaussianMixture

__all__ = ["AnalyticModel", "DeltaMixture", "Denoiser", "Gaussian", "GaussianMixture", "Isotropic"]
