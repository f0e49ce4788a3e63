"""The Gaussian-mixture score with low-rank components (paper Eq. 7-8; App. D.5 Eq. 138)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from gaussjax._checks import check_finite_norms, check_float_array, is_concrete
from gaussjax._errors import InputValueError
from gaussjax._precision import einsum, matmul
from gaussjax.scores import _softmax
from gaussjax.scores._base import Density
from gaussjax.scores.gaussian import check_eigenbasis


class GaussianMixture(Density):
    """sum_k pi_k N(mu_k, U_k diag(lambda_k) U_k^T): K Gaussian modes of common rank r.

    Noised by sigma, each mode becomes N(mu_k, Sigma_k + sigma^2 I), and (Eq. 7-8)

        D(x, sigma) = sum_k w_k(x, sigma) [mu_k + U_k diag(lambda_k / (lambda_k + sigma^2)) U_k^T (x - mu_k)]
        w_k(x, sigma) = softmax_k(log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I))

    with the low-rank log-determinant `sum_j log(lambda_kj + sigma^2) + (D - r) log sigma^2`.
    The projections `U_k^T x` of all modes are one matmul and the weighted
    reconstruction another, O(K D r) per query; no (queries x K x D) tensor is formed.
    The products run at full float32 precision on every backend (`gaussjax._precision`):
    the logits scale their rounding error by 1 / sigma^2.
    Rank 0 gives a mixture of isotropic modes (the delta mixture, with equal weights).

    Args:
        weights: `(K,)` mixture weights pi_k > 0 (normalized here if they do not sum to 1).
        means: `(K, D)`.
        eigvals: `(K, r)` per-mode covariance eigenvalues, >= 0.
        eigvecs: `(K, D, r)` per-mode orthonormal eigenvectors.
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K D"]
    eigvals: Float[Array, "K r"]
    eigvecs: Float[Array, "K D r"]

    def __post_init__(self):
        weights = check_float_array("weights", self.weights, ndim=1)
        if weights.shape[0] == 0:
            raise InputValueError("`weights` must have shape (K,) with K >= 1 modes, got (0,)")
        means = check_float_array("means", self.means, ndim=2)
        check_finite_norms("means", means)
        if means.shape[0] != weights.shape[0]:
            raise InputValueError(f"`means` must have shape (K, D) with K = {weights.shape[0]} (from `weights`), got "
                                  f"{means.shape}")
        eigvals, eigvecs = check_eigenbasis(self.eigvals, self.eigvecs, batch_ndim=1, dim=means.shape[1])
        if eigvals.shape[0] != weights.shape[0]:
            raise InputValueError(f"`eigvals` must have K = {weights.shape[0]} rows (one per mode), got "
                                  f"{eigvals.shape}")
        if is_concrete(weights):
            if np.any(np.asarray(weights) <= 0):
                raise InputValueError("`weights` must be > 0")
            weights = weights / jnp.sum(weights)
        self.weights, self.means, self.eigvals, self.eigvecs = weights, means, eigvals, eigvecs

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def rank(self) -> int:
        return self.eigvecs.shape[-1]

    @property
    def num_components(self) -> int:
        return self.weights.shape[0]

    def _responsibility_logits(self, x, variance):
        """Per-mode log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I) and the mode coordinates.

        `x (B, D)`, `variance (B,)` -> logits `(B, K)`, coords `U_k^T (x - mu_k)` `(B, K, r)`.
        """
        coords = einsum("bd,kdr->bkr", x, self.eigvecs) - einsum("kd,kdr->kr", self.means, self.eigvecs)[None]
        distance2 = (
            jnp.sum(jnp.square(x), axis=-1, keepdims=True)
            - 2 * matmul(x, self.means.T)
            + jnp.sum(jnp.square(self.means), axis=-1)[None, :]
        )  # (B, K) ||x - mu_k||^2 by the matmul expansion
        mode_variance = self.eigvals[None] + variance[:, None, None]  # (B, K, r)
        in_span = jnp.sum(jnp.square(coords), axis=-1)
        # Squared distances over variances, with each variance floored where the quotient would
        # overflow: there the softmax is already a hard choice, so the floor changes no weight.
        largest = jnp.maximum(distance2.max(axis=-1), in_span.max(axis=-1))  # (B,), bounds every numerator
        floor = (largest + 1.0) / (0.01 * jnp.finfo(x.dtype).max)
        quadratic = jnp.sum(jnp.square(coords) / jnp.maximum(mode_variance, floor[:, None, None]), axis=-1)
        log_det = jnp.sum(jnp.log(mode_variance), axis=-1)
        if self.rank < self.dim:
            off_span = jnp.maximum(distance2 - in_span, 0.0)
            quadratic = quadratic + off_span / jnp.maximum(variance, floor)[:, None]
            log_det = log_det + (self.dim - self.rank) * jnp.log(variance)[:, None]
        logits = jnp.log(self.weights)[None, :] - 0.5 * (quadratic + log_det + self.dim * math.log(2 * math.pi))
        return logits, coords, mode_variance

    def _denoise(self, x, sigma):
        logits, coords, mode_variance = self._responsibility_logits(x, jnp.square(sigma))
        shrunk = coords * (self.eigvals[None] / mode_variance)  # (B, K, r)

        def weigh(p):  # sum_k p_k [mu_k + U_k shrunk_k]
            return matmul(p, self.means) + einsum("bkr,kdr->bd", p[..., None] * shrunk, self.eigvecs)

        total = _softmax.accumulate(_softmax.empty(x.shape[0], self.dim, logits.dtype), logits, weigh)
        return _softmax.weighted_mean(total)

    def _log_density(self, x, sigma):
        logits, _, _ = self._responsibility_logits(x, jnp.square(sigma))
        return jax.nn.logsumexp(logits, axis=-1)
