"""The Gaussian-mixture score with low-rank components (paper Eq. 7-8; App. D.5 Eq. 138)."""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from gaussjax._checks import check_finite_norms, check_float_array, is_concrete, summarize
from gaussjax._errors import InputValueError
from gaussjax._precision import einsum, matmul
from gaussjax.scores import _sharded, _softmax
from gaussjax.scores._base import Density
from gaussjax.scores.gaussian import check_eigenbasis


def _all_positive(xp, weights):
    return xp.all(weights > 0)


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

    The four arrays may be split over the modes K on a mesh, of this process's devices or of
    every process's (global arrays, e.g. from `jax.make_array_from_process_local_data`), all
    four the same way: each device then scores its own modes and the partial softmax sums
    are merged across devices exactly (`_softmax.merge_across`); the validation runs on the
    devices. Queries may be split too (they are gathered on every device). Pass such a model
    to `jax.jit` as an argument (docs/scaling.md).

    Args:
        weights: `(K,)` mixture weights pi_k > 0 (normalized here if they do not sum to 1).
        means: `(K, D)`.
        eigvals: `(K, r)` per-mode covariance eigenvalues, >= 0.
        eigvecs: `(K, D, r)` per-mode orthonormal eigenvectors.

    Raises:
        ValueError: for shapes that disagree, non-finite values, weights <= 0, negative
            eigenvalues, eigenvectors that are not orthonormal, or arrays split over the modes
            in different ways (or along another axis).
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K D"]
    eigvals: Float[Array, "K r"]
    eigvecs: Float[Array, "K D r"]
    rows: _sharded.RowSharding | None = eqx.field(static=True, default=None, init=False)  # the modes' split

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
        arrays = {"weights": weights, "means": means, "eigvals": eigvals, "eigvecs": eigvecs}
        splits = {name: _sharded.row_sharding(name, array) for name, array in arrays.items()}
        if len(set(splits.values())) > 1:
            listed = ", ".join(f"`{name}` {getattr(array, 'sharding', None)}" for name, array in arrays.items())
            raise InputValueError(f"`weights`, `means`, `eigvals` and `eigvecs` must be split over the K modes in the "
                                  f"same way (or all not split); got {listed}")
        self.rows = splits["means"]
        if self.rows is None:
            weights, means, eigvals, eigvecs = (_sharded.local_copy(a) for a in (weights, means, eigvals, eigvecs))
        if is_concrete(weights):
            if not summarize(_all_positive, weights):
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

    def _sum(self, x, sigma, *, values: bool) -> _softmax.SoftmaxSum:
        """The softmax sum over all modes (each device's own, merged), of the shrunk means if `values`."""
        modes = (self.weights, self.means, self.eigvals, self.eigvecs)
        axes = None if self.rows is None else self.rows.axes
        mode_sum = functools.partial(_mode_sum, values=values, axes=axes)
        return _sharded.stream(mode_sum, self.rows, modes, (x, jnp.square(sigma)), None)

    def _denoise(self, x, sigma):
        return _softmax.weighted_mean(self._sum(x, sigma, values=True))

    def _log_density(self, x, sigma):
        return _softmax.log_normalizer(self._sum(x, sigma, values=False))


def _responsibility_logits(weights, means, eigvals, eigvecs, x, variance, axes):
    """Per-mode log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I) and the mode coordinates.

    `x (B, D)`, `variance (B,)` -> logits `(B, K)`, coords `U_k^T (x - mu_k)` `(B, K, r)`, and the
    mode variances `(B, K, r)`. With `axes` (the mesh axes the modes are split over, inside
    `shard_map`) the overflow floor below is the same on every device.
    """
    dim, rank = eigvecs.shape[-2:]
    coords = einsum("bd,kdr->bkr", x, eigvecs) - einsum("kd,kdr->kr", means, eigvecs)[None]
    distance2 = (
        jnp.sum(jnp.square(x), axis=-1, keepdims=True)
        - 2 * matmul(x, means.T)
        + jnp.sum(jnp.square(means), axis=-1)[None, :]
    )  # (B, K) ||x - mu_k||^2 by the matmul expansion
    mode_variance = eigvals[None] + variance[:, None, None]  # (B, K, r)
    in_span = jnp.sum(jnp.square(coords), axis=-1)
    # Squared distances over variances, with each variance floored where the quotient would
    # overflow: there the softmax is already a hard choice, so the floor changes no weight.
    largest = jnp.maximum(distance2.max(axis=-1), in_span.max(axis=-1))  # (B,), bounds every numerator
    if axes is not None:
        largest = jax.lax.pmax(jax.lax.stop_gradient(largest), axes)
    floor = (largest + 1.0) / (0.01 * jnp.finfo(x.dtype).max)
    quadratic = jnp.sum(jnp.square(coords) / jnp.maximum(mode_variance, floor[:, None, None]), axis=-1)
    log_det = jnp.sum(jnp.log(mode_variance), axis=-1)
    if rank < dim:
        off_span = jnp.maximum(distance2 - in_span, 0.0)
        quadratic = quadratic + off_span / jnp.maximum(variance, floor)[:, None]
        log_det = log_det + (dim - rank) * jnp.log(variance)[:, None]
    logits = jnp.log(weights)[None, :] - 0.5 * (quadratic + log_det + dim * math.log(2 * math.pi))
    return logits, coords, mode_variance


def _mode_sum(weights, means, eigvals, eigvecs, x, variance, *, values: bool, axes) -> _softmax.SoftmaxSum:
    """The softmax sum over the modes given, of `mu_k + U_k shrunk_k` if `values` (else of nothing, `(B, 0)`)."""
    logits, coords, mode_variance = _responsibility_logits(weights, means, eigvals, eigvecs, x, variance, axes)
    if not values:
        return _softmax.accumulate(_softmax.empty(x.shape[0], 0, logits.dtype), logits, lambda p: p[:, :0])
    shrunk = coords * (eigvals[None] / mode_variance)  # (B, K, r)

    def weigh(p):  # sum_k p_k [mu_k + U_k shrunk_k]
        return matmul(p, means) + einsum("bkr,kdr->bd", p[..., None] * shrunk, eigvecs)

    return _softmax.accumulate(_softmax.empty(x.shape[0], means.shape[-1], logits.dtype), logits, weigh)
