"""gaussjax: the analytic structure of diffusion models, in JAX.

Implements "The Unreasonable Effectiveness of Gaussian Score Approximation for
Diffusion Models": analytic scores, the closed-form Gaussian probability-flow
solution, analytical teleportation, and EDM training with score-structure probes.
See `docs/index.md`.

`import gaussjax` loads the analytic core only. The subpackages `gaussjax.data`,
`gaussjax.nn` (Flax networks), `gaussjax.quality` (Optax, Orbax) and `gaussjax.runs`
(training run directories, Orbax) are imported on first access, e.g.
`gaussjax.nn.SongUNet` or `import gaussjax.nn`. Every error caused by a caller's input
is a `gaussjax.InputError` (`gaussjax.checks`).
"""

import importlib.metadata
import typing

from gaussjax import (
    checks,
    conventions,
    evaluation,
    fit,
    metrics,
    ode,
    samplers,
    schedules,
    scores,
    solution,
    teleportation,
)
from gaussjax._errors import InputError
from gaussjax._precision import matmul_precision
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

if typing.TYPE_CHECKING:
    from gaussjax import data, nn, quality, runs

try:
    __version__ = importlib.metadata.version("gaussjax")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

_LAZY_SUBPACKAGES = ("data", "nn", "quality", "runs")

__all__ = [
    "DeltaMixture",
    "Denoiser",
    "Gaussian",
    "GaussianMixture",
    "InputError",
    "Isotropic",
    "LocalDeltaMixture",
    "PFODESolution",
    "PatchMixture",
    "PatchPosteriorMean",
    "SamplerOutput",
    "TeleportChoice",
    "VPSchedule",
    "auto_sigma_skip",
    "compare_scores",
    "cosine_schedule",
    "ddim_sampler",
    "ddpm_linear_schedule",
    "dpmpp_2m_sampler",
    "euler_sampler",
    "fit_gaussian",
    "fit_gmm",
    "fit_patch_size",
    "fraction_unexplained_variance",
    "gaussian_denoiser_trajectory",
    "gaussian_final_state",
    "gaussian_trajectory",
    "gaussian_warm_start",
    "heun_sampler",
    "hybrid_sampler",
    "karras_sigmas",
    "kmeans",
    "matmul_precision",
    "noised_data",
    "per_sample_unexplained_variance",
    "pure_noise",
    "score_from_denoiser",
    "solve_pf_ode",
    "solve_vp_pf_ode",
    "teleport",
]


def __getattr__(name: str):
    """Import the subpackage `gaussjax.<name>` of `_LAZY_SUBPACKAGES` on first access."""
    if name in _LAZY_SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_SUBPACKAGES})
