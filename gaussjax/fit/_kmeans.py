"""k-means clustering in JAX: k-means++ seeding, then Lloyd or mini-batch iterations.

The paper's Gaussian-mixture models (App. A.5, Eq. 41) put one Gaussian on each
k-means cluster; for large datasets it used mini-batch k-means (Sculley 2010) with
batch size 2048. Everything here is jitted, with `n_clusters`, `max_iter` and
`batch_size` static, and deterministic given the PRNG key.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_key, check_nonnegative_real, check_positive_int
from gaussjax._errors import InputValueError
from gaussjax._precision import matmul


def assign(X: Float[Array, "N D"], centers: Float[Array, "K D"]) -> tuple[Int[Array, " N"], Float[Array, " N"]]:
    """Nearest center of every point: `labels (N,)` int32 and squared distances `(N,)`.

    Distances use the matmul form `||x||^2 - 2 x.c + ||c||^2` (at full float
    precision, `gaussjax._precision`) in blocks of rows, so only a bounded
    `(rows, K)` slice of the distance matrix exists at a time. Squared distances
    are clipped at 0.
    """
    n, k = X.shape[0], centers.shape[0]
    center_sq = jnp.sum(centers * centers, axis=1)

    def nearest(x):
        d2 = matmul(x, x) - 2 * matmul(centers, x) + center_sq
        label = jnp.argmin(d2)
        return label.astype(jnp.int32), jnp.maximum(d2[label], 0)

    rows = max(1, BLOCK_ELEMENTS // k)
    return jax.vmap(nearest)(X) if n <= rows else lax.map(nearest, X, batch_size=rows)


def _uniform_indices(key: PRNGKeyArray, shape: tuple[int, ...], n: int) -> Int[Array, " ..."]:
    """Indices uniform on `0..n-1` (32 random bits modulo n; the bias, below n / 2^32, is negligible)."""
    return (jax.random.bits(key, shape, jnp.uint32) % jnp.uint32(n)).astype(jnp.int32)


def kmeans_plusplus(key: PRNGKeyArray, X: Float[Array, "N D"], n_clusters: int) -> Float[Array, "K D"]:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): `centers (K, D)` chosen among the rows of `X`.

    The first center is uniform over the points; each next one is drawn with
    probability proportional to the squared distance to the nearest center chosen
    so far (by inverting the cumulative distribution with one uniform number per
    center), or uniformly if every point already coincides with a chosen center.
    Points at distance 0 are never drawn while any point is farther away.
    """
    n = X.shape[0]
    uniform = jax.random.uniform(key, (n_clusters,), X.dtype)
    fallback = jnp.minimum((uniform * n).astype(jnp.int32), n - 1)
    first = X[fallback[0]]
    centers = jnp.zeros((n_clusters, X.shape[1]), X.dtype).at[0].set(first)
    nearest_sq = jnp.sum((X - first[None, :]) ** 2, axis=1)

    def add_center(j, state):
        centers, nearest_sq = state
        cumulative = jnp.cumsum(nearest_sq)
        total = cumulative[-1]
        drawn = jnp.searchsorted(cumulative, uniform[j] * total, side="right")
        last_positive = n - 1 - jnp.argmax(nearest_sq[::-1] > 0)  # if u * total rounds up to total
        center = X[jnp.where(total > 0, jnp.minimum(drawn, last_positive), fallback[j])]
        nearest_sq = jnp.minimum(nearest_sq, jnp.sum((X - center[None, :]) ** 2, axis=1))
        return centers.at[j].set(center), nearest_sq

    centers, _ = lax.fori_loop(1, n_clusters, add_center, (centers, nearest_sq))
    return centers


def reseed_empty(
    X: Float[Array, "N D"], centers: Float[Array, "K D"], empty: Bool[Array, " K"], sq_dist: Float[Array, " N"]
) -> Float[Array, "K D"]:
    """Move every empty center (`empty (K,)` bool) onto a distinct far point of `X`.

    The j-th empty cluster (in index order) gets the j-th point farthest from its
    assigned center, by `sq_dist (N,)`; non-empty centers are returned unchanged.
    """
    k = centers.shape[0]
    _, farthest = lax.top_k(sq_dist, k)
    order = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    return jnp.where(empty[:, None], X[farthest[order]], centers)


def lloyd_step(X: Float[Array, "N D"], centers: Float[Array, "K D"]) -> Float[Array, "K D"]:
    """One Lloyd iteration: assign points, move each center to its cluster mean, re-seed empty clusters."""
    k = centers.shape[0]
    labels, sq_dist = assign(X, centers)
    counts = jax.ops.segment_sum(jnp.ones_like(sq_dist), labels, k)
    sums = jax.ops.segment_sum(X, labels, k)
    means = sums / jnp.maximum(counts, 1)[:, None]
    return reseed_empty(X, means, counts == 0, sq_dist)


def _shift(new: Float[Array, "K D"], old: Float[Array, "K D"]) -> Float[Array, ""]:
    return jnp.max(jnp.sum((new - old) ** 2, axis=1))


def lloyd(
    X: Float[Array, "N D"], centers: Float[Array, "K D"], max_iter: int, threshold: Float[ArrayLike, ""]
) -> Float[Array, "K D"]:
    """Lloyd iterations from `centers` until the largest squared center shift is `<= threshold`, or `max_iter`."""

    def keep_going(state):
        i, _, shift = state
        return (i < max_iter) & (shift > threshold)

    def step(state):
        i, centers, _ = state
        new = lloyd_step(X, centers)
        return i + 1, new, _shift(new, centers)

    state = (jnp.asarray(0), centers, jnp.asarray(jnp.inf, X.dtype))
    return lax.while_loop(keep_going, step, state)[1]


def minibatch(
    key: PRNGKeyArray,
    X: Float[Array, "N D"],
    centers: Float[Array, "K D"],
    batch_size: int,
    max_iter: int,
    threshold: Float[ArrayLike, ""],
) -> Float[Array, "K D"]:
    """Mini-batch k-means (Sculley 2010) from `centers`.

    Each step draws `batch_size` points (uniformly, with replacement), assigns them
    to the nearest centers, and moves center `c` by the running-mean update with
    per-center count `v_c` and learning rate `1 / v_c`: exactly Sculley's
    per-point update `c <- (1 - 1/v_c) c + x / v_c`, vectorised over the batch.
    Centers that win no point of a batch stay put. Stops when the largest squared
    center shift of a step is `<= threshold`, or after `max_iter` steps.
    """
    n, k = X.shape[0], centers.shape[0]

    def keep_going(state):
        i, _, _, shift = state
        return (i < max_iter) & (shift > threshold)

    def step(state):
        i, centers, counts, _ = state
        batch = X[_uniform_indices(jax.random.fold_in(key, i), (batch_size,), n)]
        labels, _ = assign(batch, centers)
        batch_counts = jax.ops.segment_sum(jnp.ones((batch_size,), jnp.int32), labels, k)
        batch_sums = jax.ops.segment_sum(batch, labels, k)
        counts = counts + batch_counts
        pull = batch_sums - batch_counts.astype(X.dtype)[:, None] * centers
        new = centers + pull / jnp.maximum(counts, 1).astype(X.dtype)[:, None]
        return i + 1, new, counts, _shift(new, centers)

    state = (jnp.asarray(0), centers, jnp.zeros((k,), jnp.int32), jnp.asarray(jnp.inf, X.dtype))
    return lax.while_loop(keep_going, step, state)[1]


@functools.partial(jax.jit, static_argnames=("n_clusters", "max_iter", "batch_size"))
def _kmeans(X, key, tol, *, n_clusters, max_iter, batch_size):
    n = X.shape[0]
    threshold = tol * jnp.mean(jnp.var(X, axis=0))
    init_key, run_key = jax.random.split(key)
    if batch_size is None:
        centers = kmeans_plusplus(init_key, X, n_clusters)
        centers = lloyd(X, centers, max_iter, threshold)
        return centers, assign(X, centers)[0]
    init_size = min(n, max(3 * batch_size, 3 * n_clusters))
    subset_key, init_key = jax.random.split(init_key)
    sample = X if init_size == n else X[_uniform_indices(subset_key, (init_size,), n)]
    centers = kmeans_plusplus(init_key, sample, n_clusters)
    centers = minibatch(run_key, X, centers, batch_size, max_iter, threshold)
    labels, sq_dist = assign(X, centers)
    empty = jax.ops.segment_sum(jnp.ones_like(sq_dist), labels, n_clusters) == 0

    def fix(_):
        reseeded = reseed_empty(X, centers, empty, sq_dist)
        return reseeded, assign(X, reseeded)[0]

    return lax.cond(jnp.any(empty), fix, lambda _: (centers, labels), None)


def kmeans(
    X: Float[ArrayLike, "N D"] | Int[ArrayLike, "N D"],
    n_clusters: int,
    *,
    key: PRNGKeyArray,
    max_iter: int = 300,
    tol: float = 1e-4,
    batch_size: int | None = None,
) -> tuple[Float[Array, "K D"], Int[Array, " N"]]:
    """Cluster the rows of `X` into `n_clusters` groups by k-means.

    Args:
        X: data `(N, D)` (integers are promoted to float; computation is in X's
            float dtype).
        n_clusters: number of clusters `K`, `1 <= K <= N`.
        key: a PRNG key (`jax.random.key(seed)`); the result is a deterministic
            function of `X` and `key`.
        max_iter: the most Lloyd iterations, or mini-batch steps with `batch_size`.
        tol: convergence tolerance relative to the data's scale: iterations stop
            once `max_k ||c_k^new - c_k^old||^2 <= tol * mean_d Var(X[:, d])`, the
            largest squared center shift compared with the mean per-coordinate
            variance of the data (the scale scikit-learn uses).
        batch_size: if given, run mini-batch k-means (Sculley 2010) with this many
            points per step, as the paper did (batch 2048) for large N; the
            k-means++ seeding then uses `min(N, max(3 * batch_size, 3 * K))`
            points (all of `X`, or that many drawn at random with replacement).

    Returns:
        `(centers (K, D), labels (N,) int32)`, where `labels[n]` is the index of the
        center nearest to `X[n]` among the returned centers.

    Seeding is k-means++ (each new center drawn with probability proportional to
    the squared distance to the nearest chosen center). Lloyd iterations move each
    center to the mean of its points; a cluster left empty is re-seeded
    deterministically at the point farthest from its assigned center (distinct
    points for several empty clusters). In mini-batch mode, clusters still empty
    over all of `X` after the last step are re-seeded the same way once before the
    final labels are computed. Squared distances use the matmul form
    `||x||^2 - 2 x.c + ||c||^2`, evaluated in bounded blocks of rows.

    Raises TypeError/ValueError for a bad `X`, `n_clusters < 1`, `n_clusters > N`,
    a missing or invalid `key`, `max_iter < 1`, negative `tol` or `batch_size < 1`.
    """
    X = check_data_matrix("X", X)
    n_clusters = check_positive_int("n_clusters", n_clusters)
    if n_clusters > X.shape[0]:
        raise InputValueError(f"`n_clusters` = {n_clusters} exceeds the number of points N = {X.shape[0]} (K > N)")
    key = check_key(key)
    max_iter = check_positive_int("max_iter", max_iter)
    tol = check_nonnegative_real("tol", tol)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    return _kmeans(X, key, jnp.asarray(tol, X.dtype), n_clusters=n_clusters, max_iter=max_iter, batch_size=batch_size)
