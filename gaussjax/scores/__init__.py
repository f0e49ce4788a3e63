"""Analytic score models, one per file, on one contract: `Denoiser` (`denoise`, and `score` derived from it)
and `Density` (a denoiser with a `log_density`).

Global models (the paper), densities: `Isotropic`, `Gaussian`, `GaussianMixture`, `DeltaMixture`.
Local (patch) models, denoisers only: `PatchMixture` (Kamb & Ganguli's LS / ELS machines),
`PatchPosteriorMean` (Niedoba et al.'s PSPC), `LocalDeltaMixture` (Lukoianov et al.'s
data-derived locality); `make_local_model` builds one by name (`'els3'`, ...).
"""

from gaussjax.scores._base import AnalyticModel, Denoiser, Density
from gaussjax.scores._local import LocalModel
from gaussjax.scores.delta import DeltaMixture
from gaussjax.scores.gaussian import Gaussian
from gaussjax.scores.isotropic import Isotropic
from gaussjax.scores.local_delta import LocalDeltaMixture, receptive_fields
from gaussjax.scores.local_spec import make_local_model
from gaussjax.scores.mixture import GaussianMixture
from gaussjax.scores.patch import PatchMixture
from gaussjax.scores.patch_posterior import PatchPosteriorMean

__all__ = [
    "AnalyticModel",
    "DeltaMixture",
    "Denoiser",
    "Density",
    "Gaussian",
    "GaussianMixture",
    "Isotropic",
    "LocalDeltaMixture",
    "LocalModel",
    "PatchMixture",
    "PatchPosteriorMean",
    "make_local_model",
    "receptive_fields",
]
