"""gaussjax: the analytic structure of diffusion models, in JAX.

Implements "The Unreasonable Effectiveness of Gaussian Score Approximation for
Diffusion Models": analytic scores, the closed-form Gaussian
probability-flow solution, analytical teleportation, and EDM training with
score-structure probes. See `docs/index.md`.
"""

from gaussjax import data

__version__ = "0.1.0"

__all__ = ["data"]
