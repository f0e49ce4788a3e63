"""A Gaussian mixture with one component per cluster or class (paper App. A.5, Eq. 41)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, Int, PRNGKeyArray

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_finite, check_nonnegative_real, check_positive_int
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.data._memory import device_view, empty_aligned
from gaussjax.fit._kmeans import kmeans
from gaussjax.fit._moments import covariance_eigenpairs, moments, resolve_rank
from gaussjax.scores.mixture import GaussianMixture


def _class_indices(labels: Any, n_points: int, n_components: int) -> np.ndarray:
    """Map integer `labels (N,)` to component indices `0..K-1` in sorted label order, or raise."""
    if isinstance(labels, jax.core.Tracer):
        raise InputTypeError("`labels` must be a concrete array: fitting runs in NumPy and cannot be traced by jit")
    labels = np.asarray(labels)
    if labels.shape != (n_points,):
        raise InputValueError(f"`labels` must have shape (N,) = ({n_points},) to match X, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputTypeError(f"`labels` must be integers, got dtype {labels.dtype}")
    classes, index = np.unique(labels, return_inverse=True)
    if len(classes) != n_components:
        raise InputValueError(
            f"`labels` has {len(classes)} distinct classes but `n_components` = {n_components}; they must be equal"
        )
    return index.reshape(n_points)


def fit_gmm(
    X: Float[ArrayLike, "N D"] | Int[ArrayLike, "N D"],
    n_components: int,
    rank: int | None = None,
    *,
    key: PRNGKeyArray | None = None,
    labels: Int[ArrayLike, " N"] | None = None,
    eigval_floor: float = 0.0,
) -> GaussianMixture:
    """Fit `sum_i (N_i / N) N(x; mu_i, Sigma_i)` with one component per cluster (paper Eq. 41).

    Exactly one of `key` and `labels` selects the partition of the data:

    - `key`: clusters of `kmeans(X, n_components, key=key)` (full-batch Lloyd; for
      the paper's mini-batch clustering, run `kmeans(..., batch_size=2048)` yourself
      and pass its labels);
    - `labels`: given integer classes `(N,)`, e.g. CIFAR-10's 10 classes for the
      paper's per-class GMM (Sec. 4.2); component `i` is the `i`-th smallest label,
      and `n_components` must equal the number of distinct labels.

    Args:
        X: data `(N, D)`.
        n_components: number of components `K`, `1 <= K <= N`.
        rank: number `r` of covariance eigenpairs kept per component, in `[1, D]`;
            default `D`. All components share `r`, so the arrays are rectangular.
        key: PRNG key for k-means.
        labels: integer class labels `(N,)`.
        eigval_floor: lower bound applied to every kept eigenvalue (default 0.0).

    Returns:
        `GaussianMixture(weights (K,), means (K, D), eigvals (K, r), eigvecs (K, D, r))`
        with weights `N_i / N`, the cluster means, and the top-`r` eigenpairs of the
        cluster covariances (1/N_i normalisation, as in `fit_gaussian`), computed in
        float64 and returned in JAX's default float dtype. Eigenvalues are
        descending, clipped below at `eigval_floor`.

    A cluster of `N_i < r + 1` points has a covariance of rank at most `N_i - 1`,
    so it cannot determine `r` eigenpairs: its surplus eigenvalues are zero up to
    rounding (then clipped to `eigval_floor`) and the corresponding eigenvectors are
    an arbitrary orthonormal completion. With the default floor 0, a 1-point
    cluster is a delta component at its point: the score of the noised mixture is
    still finite at every `sigma > 0` (the paper's reference code divides by
    `N_i - 1` there and fails). A positive floor gives every component full width
    in its `r` kept directions.

    Raises TypeError/ValueError when neither or both of `key` and `labels` are
    given, for `labels` of the wrong shape, dtype or number of classes, `rank`
    outside `[1, D]`, a negative `eigval_floor`, `n_components > N`, bad `X`, or if
    k-means leaves a cluster empty (fewer distinct points than `n_components`).
    """
    if (key is None) == (labels is None):
        raise InputValueError("pass exactly one of `key` (cluster with k-means) and `labels` (given classes)")
    X = check_data_matrix("X", X, host=True)
    check_finite("X", X)
    n_points, dim = X.shape
    n_components = check_positive_int("n_components", n_components)
    if n_components > n_points:
        raise InputValueError(f"`n_components` = {n_components} exceeds the number of points N = {n_points} (K > N)")
    rank = resolve_rank(rank, dim)
    eigval_floor = check_nonnegative_real("eigval_floor", eigval_floor)
    if key is None:  # then `labels` is given
        index = _class_indices(labels, n_points, n_components)
    else:
        index = np.asarray(kmeans(device_view(X), n_components, key=key)[1])

    counts = np.bincount(index, minlength=n_components)
    if np.any(counts == 0):
        raise InputValueError(
            f"k-means left {int(np.sum(counts == 0))} of {n_components} clusters empty "
            "(X has fewer distinct points than `n_components`?)"
        )
    order = np.argsort(index, kind="stable")
    means = np.empty((n_components, dim))
    eigvals = np.empty((n_components, rank))
    # in JAX's float dtype from the start: one component's float64 eigenvectors exist at a time, not K
    eigvecs = empty_aligned((n_components, dim, rank), jax.dtypes.canonicalize_dtype(np.float64))
    block = max(1, BLOCK_ELEMENTS // dim)
    for i, rows in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        # the cluster's rows in blocks (the float64 blocks `moments` would cut from `X[rows]`, without that copy)
        means[i], cov, _ = moments(X[rows[start : start + block]] for start in range(0, len(rows), block))
        values, vectors = covariance_eigenpairs(cov, rank)
        del cov
        eigvecs[i] = vectors
        eigvals[i] = np.maximum(values, eigval_floor)
    weights = counts / n_points
    eigvecs.setflags(write=False)
    return GaussianMixture(jnp.asarray(weights), jnp.asarray(means), jnp.asarray(eigvals), device_view(eigvecs))
