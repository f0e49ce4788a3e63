"""Kernel Inception Distance: the unbiased MMD^2 with a cubic polynomial kernel, over random subsets."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from gaussjax._checks import check_data_matrix, check_key, check_positive_int
from gaussjax._errors import InputValueError


class KID(NamedTuple):
    """The mean and standard deviation (over subsets) of the KID estimate."""

    mean: float
    std: float


_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on GPU/TPU: the estimate is a difference of near-equal sums


def _mmd2_unbiased(x: Float[Array, "m d"], y: Float[Array, "m d"], offset: Float[Array, ""]) -> Float[Array, ""]:
    """Unbiased MMD^2 of two equal-size samples with `k(u, v) = (u.v / d + offset)^3`.

    `offset` is 1 for the KID's kernel on features as they are; features scaled by
    `1/c` use `offset = 1/c^2`, and the result is then the KID divided by `c^6`.

    The estimator `[sum_{i != j} Kxx + Kyy] / (m (m - 1)) - 2 sum_{i,j} Kxy / m^2` is
    regrouped exactly as `sum_{i != j} T_ij / (m (m - 1))` with

        T_ij = Kxx_ij + Kyy_ij - 2 Kxy_ij + (2 / m) (Kxy_ij - (Kxy_ii + Kxy_jj) / 2),

    whose terms are small differences, so the float32 reduction does not have to
    cancel three large sums (the accuracy this gains: docs/quality.md, "Numerics").
    """
    m, d = x.shape

    def kernel(u, v):
        return (jnp.matmul(u, v.T, precision=_HIGHEST) / d + offset) ** 3

    cross = kernel(x, y)
    diagonal = jnp.diagonal(cross)
    terms = kernel(x, x) + kernel(y, y) - 2 * cross + (2 / m) * (cross - 0.5 * (diagonal[:, None] + diagonal[None, :]))
    terms = jnp.where(jnp.eye(m, dtype=bool), 0, terms)
    return jnp.sum(jnp.sum(terms, axis=1)) / (m * (m - 1))


@functools.partial(jax.jit, static_argnames=("sizes", "num_subsets", "subset_size"))
def _subset_indices(key, *, sizes: tuple[int, int], num_subsets: int, subset_size: int):
    """Row indices `(num_subsets, m)` into each set: per subset, m distinct rows of each, drawn independently."""

    def one(subset_key):
        key_a, key_b = jax.random.split(subset_key)
        return (jax.random.choice(key_a, sizes[0], (subset_size,), replace=False),
                jax.random.choice(key_b, sizes[1], (subset_size,), replace=False))

    return jax.vmap(one)(jax.random.split(key, num_subsets))


@jax.jit
def _subset_mmd2(features_a, features_b, index_a, index_b, scale) -> Float[Array, " s"]:
    """The unbiased MMD^2 of each pair of subsets `(features_a[index_a[s]], features_b[index_b[s]])`, over `scale^6`.

    The features are divided by `scale` (1 unless they are so large that the cubic
    kernel would overflow), with the kernel's offset divided by `scale^2` to match.
    One subset pair (three `m x m` kernel matrices) is in memory at a time (`lax.map`).
    """
    dtype = jnp.result_type(features_a.dtype, features_b.dtype)
    scale = scale.astype(dtype)
    features_a, features_b = features_a.astype(dtype) / scale, features_b.astype(dtype) / scale
    offset = 1 / scale**2
    return jax.lax.map(lambda ij: _mmd2_unbiased(features_a[ij[0]], features_b[ij[1]], offset), (index_a, index_b))


# Features up to this magnitude keep the kernel (u.v / D + 1)^3 <= ~1e24 and the sums of m^2
# kernel values far inside float32; larger ones are scaled down (see `_subset_mmd2`).
_UNSCALED_MAX = 1e4


def kernel_inception_distance(
    features_a: Float[ArrayLike, "Na D"],
    features_b: Float[ArrayLike, "Nb D"],
    *,
    key: jax.Array,
    num_subsets: int = 100,
    subset_size: int = 1000,
) -> KID:
    """The Kernel Inception Distance (KID) between two sets of features.

    The unbiased estimate of the squared maximum mean discrepancy (Binkowski et al.
    2018) with the cubic polynomial kernel `k(x, y) = (x.y / D + 1)^3`, averaged
    over random subsets, as in the clean-fid, torch-fidelity and StyleGAN2-ADA
    metrics. For subsets `x, y` of size `m`:

        MMD^2 = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2

    Args:
        features_a: `(Na, D)` features (e.g. of real images).
        features_b: `(Nb, D)` features (e.g. of generated images), same D.
        key: JAX PRNG key choosing the subsets.
        num_subsets: number of subset pairs to average over.
        subset_size: subset size; `m = min(subset_size, Na, Nb)` rows are drawn
            without replacement from each set (independently per subset), m >= 2.

    Returns:
        `KID(mean, std)` as Python floats: the mean of the per-subset MMD^2 and
        their standard deviation (`ddof=0`, like torch-fidelity's `kid_subset_std`).
        The mean can be slightly negative (the estimator is unbiased).

    Precision: computed in JAX in the default float dtype (float32; float64 when
    `jax_enable_x64` is on and the inputs are float64), jitted, one subset pair at
    a time (`lax.map`), with full-precision matrix products. Float32 is what
    StyleGAN2-ADA's metric computes in on float32 features, and halves the memory
    traffic of the `m x m` kernel matrices. The three kernel sums are combined
    elementwise before the float32 reduction (see `_mmd2_unbiased`), so their
    cancellation costs little accuracy: the result agrees with a float64 NumPy
    evaluation on the same float32 features to 1e-8 of the mean kernel value
    (docs/quality.md, "Numerics", has the measured error). Features too large
    for the kernel to fit float32 (|x| beyond 1e4) are divided by their largest
    magnitude `c` first, the kernel offset by `c^2`, and the estimate multiplied by
    `c^6` in float64, which is the same value to float32 precision. With
    `num_subsets=1` and `subset_size >= max(Na, Nb)` (and `Na == Nb`) the subsets are
    the whole sets and the result is the full-sample unbiased MMD^2.

    Raises TypeError/ValueError naming the argument for non-real, non-2-D,
    non-finite or mismatched features, bad sizes (`m < 2`) or a missing key.

    Example:
        One subset of the whole sets, `m = 2`, 1-D features, so `k(u, v) = (u v + 1)^3` and
        `MMD^2 = (2 + 2) / 2 - 2 (1 + 1 + 1 + 0) / 4 = 0.5`:

        >>> import numpy as np
        >>> kernel_inception_distance(np.array([[0.0], [1.0]]), np.array([[0.0], [-1.0]]),
        ...                           key=jax.random.key(0), num_subsets=1, subset_size=2)
        KID(mean=0.5, std=0.0)
    """
    features_a = check_data_matrix("features_a", features_a)
    features_b = check_data_matrix("features_b", features_b)
    if features_a.shape[1] != features_b.shape[1]:
        raise InputValueError(
            f"`features_a` and `features_b` must have the same dimension D, got {features_a.shape[1]} and "
            f"{features_b.shape[1]}"
        )
    key = check_key(key)
    num_subsets = check_positive_int("num_subsets", num_subsets)
    subset_size = check_positive_int("subset_size", subset_size)
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    if size < 2:
        raise InputValueError(
            f"the subset size m = min(subset_size, Na, Nb) = min({subset_size}, {features_a.shape[0]}, "
            f"{features_b.shape[0]}) must be >= 2 for the unbiased estimate"
        )
    index_a, index_b = _subset_indices(
        key, sizes=(features_a.shape[0], features_b.shape[0]), num_subsets=num_subsets, subset_size=size
    )
    largest = float(max(jnp.max(jnp.abs(features_a)), jnp.max(jnp.abs(features_b))))
    scale = largest if largest > _UNSCALED_MAX else 1.0
    values = _subset_mmd2(features_a, features_b, index_a, index_b, jnp.asarray(scale))
    with np.errstate(over="ignore"):
        values = np.asarray(values, dtype=np.float64) * np.float64(scale) ** 6
    if not np.all(np.isfinite(values)):
        raise InputValueError(
            f"the KID of features as large as {largest:.3g} overflows float64 (the cubic kernel grows as |x|^6): "
            "rescale `features_a` and `features_b`"
        )
    return KID(float(values.mean()), float(values.std()))
