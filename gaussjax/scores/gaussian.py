"""The Gaussian score in eigenbasis form, full or low rank (paper Eq. 5-6, 12-13)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_float_array, is_concrete, summarize
from gaussjax._errors import InputValueError
from gaussjax._precision import matmul
from gaussjax.scores._base import Density


def check_eigenbasis(
    eigvals: Float[ArrayLike, "*components r"],
    eigvecs: Float[ArrayLike, "*components D r"],
    *,
    batch_ndim: int = 0,
    dim: int | None = None,
) -> tuple[Float[Array, "*components r"], Float[Array, "*components D r"]]:
    """Validate eigenpairs `eigvals (..., r) >= 0` and orthonormal `eigvecs (..., D, r)`, r <= D.

    `batch_ndim` leading axes (e.g. one for mixture components) must agree.
    Orthonormality is checked to a tolerance suited to the dtype.
    """
    eigvals = check_float_array("eigvals", eigvals, ndim=batch_ndim + 1)
    eigvecs = check_float_array("eigvecs", eigvecs, ndim=batch_ndim + 2)
    D, r = eigvecs.shape[-2:]
    if dim is not None and D != dim:
        raise InputValueError(f"`eigvecs` must have shape (..., D, r) with D = {dim} (from the mean), got "
                              f"{eigvecs.shape}")
    if eigvals.shape != eigvecs.shape[:-2] + (r,):
        raise InputValueError(f"`eigvals` shape {eigvals.shape} does not match "
                              f"`eigvecs` shape {eigvecs.shape} (..., D, r)")
    if r > D:
        raise InputValueError(f"rank r = {r} exceeds the dimension D = {D}: `eigvecs` must be (D, r) with r <= D")
    if is_concrete(eigvals, eigvecs):
        negative, error = summarize(_eigenbasis_summary, eigvals, eigvecs)
        if negative:
            raise InputValueError("`eigvals` must be >= 0 (covariance eigenvalues)")
        tolerance = 1e-3 if eigvecs.dtype == jnp.float32 else 1e-8
        if error > tolerance:
            raise InputValueError("`eigvecs` columns must be orthonormal "
                                  f"(max |U^T U - I| = {error:.2e} > {tolerance:g})")
    return eigvals, eigvecs


def _eigenbasis_summary(xp, eigvals, eigvecs):
    """(any eigenvalue < 0, max |U^T U - I|) with the Gram matrices in float64 (on the host) or the widest
    float JAX has (float64 under `jax_enable_x64`), products at full precision."""
    rank = eigvecs.shape[-1]
    if xp is np:  # one component at a time: the float64 temporaries of one (D, r) basis, not of K
        error = 0.0
        for component in np.ndindex(eigvecs.shape[:-2]):
            vecs = eigvecs[component].astype(np.float64)
            gram = vecs.T @ vecs
            gram[np.diag_indices(rank)] -= 1.0
            error = max(error, float(np.max(np.abs(gram), initial=0.0)))
        return np.any(eigvals < 0), np.float64(error)
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 without x64
    vecs = eigvecs.astype(wide)
    gram = jnp.einsum("...dr,...ds->...rs", vecs, vecs, precision=jax.lax.Precision.HIGHEST)
    return jnp.any(eigvals < 0), jnp.max(jnp.abs(gram - jnp.eye(rank, dtype=wide)), initial=0.0)


class Gaussian(Density):
    """N(mean, U diag(eigvals) U^T): the Gaussian model, noised N(mean, Sigma + sigma^2 I).

    With `lambda_k = eigvals[k]`, `u_k = eigvecs[:, k]` (Eq. 12-13):

        D(x, sigma) = mean + sum_k lambda_k / (lambda_k + sigma^2) [u_k . (x - mean)] u_k
        s(x, sigma) = sum_k [u_k . (mean - x)] / (lambda_k + sigma^2) u_k
                      + (I - U U^T)(mean - x) / sigma^2

    Costs O(D r) per query; no D x D matrix and no inverse is ever formed. For
    rank r < D the covariance is zero off the span of `eigvecs`.

    Args:
        mean: `(D,)`.
        eigvals: `(r,)` covariance eigenvalues, >= 0 (any order; `fit_gaussian` gives them descending).
        eigvecs: `(D, r)` orthonormal eigenvectors, `r <= D`.
    """

    mean: Float[Array, " D"]
    eigvals: Float[Array, " r"]
    eigvecs: Float[Array, "D r"]

    def __post_init__(self):
        mean = check_float_array("mean", self.mean, ndim=1)
        eigvals, eigvecs = check_eigenbasis(self.eigvals, self.eigvecs, dim=mean.shape[0])
        self.mean = mean
        self.eigvals = eigvals
        self.eigvecs = eigvecs

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    @property
    def rank(self) -> int:
        return self.eigvecs.shape[-1]

    @property
    def covariance(self) -> Float[Array, "D D"]:
        """The dense `(D, D)` covariance `U diag(lambda) U^T` (for inspection; never used internally)."""
        return matmul(self.eigvecs * self.eigvals[None, :], self.eigvecs.T)

    def _denoise(self, x, sigma):
        coords = matmul(x - self.mean[None, :], self.eigvecs)  # (B, r)
        shrink = self.eigvals[None, :] / (self.eigvals[None, :] + jnp.square(sigma)[:, None])
        return self.mean[None, :] + matmul(shrink * coords, self.eigvecs.T)

    def _score(self, x, sigma):
        variance = jnp.square(sigma)[:, None]
        offset = self.mean[None, :] - x
        coords = matmul(offset, self.eigvecs)
        score = matmul(coords / (self.eigvals[None, :] + variance), self.eigvecs.T)
        if self.rank < self.dim:  # the complement of span(U) has variance sigma^2 only
            score = score + (offset - matmul(coords, self.eigvecs.T)) / variance
        return score

    def _log_density(self, x, sigma):
        variance = jnp.square(sigma)
        offset = x - self.mean[None, :]
        coords = matmul(offset, self.eigvecs)
        mode_variance = self.eigvals[None, :] + variance[:, None]
        quadratic = jnp.sum(jnp.square(coords) / mode_variance, axis=-1)
        log_det = jnp.sum(jnp.log(mode_variance), axis=-1)
        if self.rank < self.dim:
            residual = offset - matmul(coords, self.eigvecs.T)
            quadratic = quadratic + jnp.sum(jnp.square(residual), axis=-1) / variance
            log_det = log_det + (self.dim - self.rank) * jnp.log(variance)
        return -0.5 * (quadratic + log_det + self.dim * math.log(2 * math.pi))
