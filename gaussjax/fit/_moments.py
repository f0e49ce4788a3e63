"""Mean and covariance of data, streamed, and the Gaussian that matches them.

The Gaussian score model (paper Eq. 30-34) needs only the data mean `mu` and the
eigenpairs of its covariance `Sigma = U diag(lambda) U^T`. This module computes
them in float64 NumPy from an array or from a stream of chunks, never holding more
than one chunk (or one bounded block of rows of an array) in float64 at a time.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from typing import Any, TypeGuard, overload

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_finite
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.scores.gaussian import Gaussian


def is_array(X: Any) -> TypeGuard[np.ndarray | jax.Array]:
    """Whether `X` is one array (NumPy, memmap, JAX, or a list of rows) rather than an iterable of chunks."""
    if isinstance(X, (list, tuple)):  # a list of rows (numbers), not a list of (n, D) chunks
        return len(X) == 0 or np.ndim(X[0]) < 2
    return isinstance(X, (np.ndarray, jax.Array))


@overload
def resolve_rank(rank: Any, dim: int) -> int: ...
@overload
def resolve_rank(rank: Any, dim: None) -> int | None: ...


def resolve_rank(rank: Any, dim: int | None) -> int | None:
    """Return `rank` as an int in `[1, dim]` (`None` means `dim`), or raise naming `rank` and D.

    With `dim=None` (D not known yet, e.g. before a stream is read) only the type and
    `rank >= 1` are checked.
    """
    bounds = "[1, D]" if dim is None else f"[1, D] = [1, {dim}]"
    if rank is None:
        return dim
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise InputTypeError(f"`rank` must be an integer in {bounds} or None, got {type(rank).__name__} {rank!r}")
    if int(rank) < 1 or (dim is not None and int(rank) > dim):
        raise InputValueError(f"`rank` must be in {bounds}, got {rank}")
    return int(rank)


def _blocks(X: Any) -> Iterator[np.ndarray]:
    """Yield validated float64 blocks of rows of `X` (an array or an iterable of chunks)."""
    if is_array(X):
        X = check_data_matrix("X", X, host=True)
        rows = max(1, BLOCK_ELEMENTS // X.shape[1])
        for start in range(0, X.shape[0], rows):
            block = np.asarray(X[start : start + rows], dtype=np.float64)
            check_finite("X", block)
            yield block
            del block
        return
    if isinstance(X, jax.core.Tracer):
        raise InputTypeError("`X` must be a concrete array: fitting runs in NumPy and cannot be traced by jit")
    if isinstance(X, (str, bytes)) or not isinstance(X, Iterable):
        raise InputTypeError(f"`X` must be an array (N, D) or an iterable of (n, D) chunks, got {type(X).__name__}")
    dim = None
    index = -1
    for chunk in X:  # (not enumerate: it would keep the previous chunk alive)
        index += 1
        chunk = np.asarray(chunk)
        if chunk.ndim != 2:
            raise InputValueError(f"`X` chunk {index} must have shape (n, D), got {chunk.shape}")
        if dim is None:
            dim = chunk.shape[1]
            if dim == 0:
                raise InputValueError("`X` chunks have dimension D = 0")
        elif chunk.shape[1] != dim:
            raise InputValueError(f"`X` chunk {index} has D = {chunk.shape[1]}, but earlier chunks have D = {dim}")
        if chunk.shape[0] == 0:
            continue
        if not (np.issubdtype(chunk.dtype, np.floating) or np.issubdtype(chunk.dtype, np.integer)):
            raise InputTypeError(f"`X` chunk {index} must be real numbers, got dtype {chunk.dtype}")
        chunk = np.asarray(chunk, dtype=np.float64)
        if not np.all(np.isfinite(chunk)):
            raise InputValueError(f"`X` chunk {index} contains NaN or infinite values")
        yield chunk
        del chunk


def merge_moments(
    count_a: int,
    mean_a: Float[np.ndarray, " D"] | None,
    scatter_a: Float[np.ndarray, "D D"] | None,
    count_b: int,
    mean_b: Float[np.ndarray, " D"] | None,
    scatter_b: Float[np.ndarray, "D D"] | None,
) -> tuple[int, Float[np.ndarray, " D"] | None, Float[np.ndarray, "D D"] | None]:
    """Merge the (count, mean, centred scatter) of two disjoint sets of rows into those of their union.

    The pairwise update of Chan, Golub & LeVeque (1979): with `n = n_a + n_b` and
    `delta = mean_b - mean_a`,

        mean    = mean_a + delta * n_b / n
        scatter = scatter_a + scatter_b + outer(delta, delta) * n_a n_b / n

    where `scatter = sum_n (x_n - mean)(x_n - mean)^T` (unnormalised). It is exact
    in exact arithmetic and does not form raw second moments, so a large common
    offset does not cancel the scatter away. A side with count 0 is the empty set
    (its mean and scatter are ignored, and may be None): the other side is
    returned unchanged. Used by `moments` and by `gaussjax.quality`'s `FeatureStats`.
    """
    if count_a == 0:
        return count_b, mean_b, scatter_b
    if count_b == 0:
        return count_a, mean_a, scatter_a
    assert mean_a is not None and scatter_a is not None and mean_b is not None and scatter_b is not None  # counts > 0
    total = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / total)
    scatter = scatter_a + scatter_b + np.outer(delta, delta) * (count_a * count_b / total)
    return total, mean, scatter


def moments(
    X: Float[ArrayLike, "N D"] | Iterable[Float[ArrayLike, "n D"]],
) -> tuple[Float[np.ndarray, " D"], Float[np.ndarray, "D D"], int]:
    """Mean, covariance (1/N normalisation) and count of data, in float64.

    Args:
        X: data `(N, D)` as one array (NumPy, memmap or JAX), or any iterable of
            `(n, D)` chunks such as `gaussjax.data.iter_chunks(...)`. Chunks are
            consumed one at a time and never stored.

    Returns:
        `(mean, cov, count)`: float64 NumPy `mean (D,)`, float64 NumPy `cov (D, D)`
        `= (1/N) sum_n (x_n - mean)(x_n - mean)^T`, and `count = N`.

    The covariance is that of the empirical distribution `(1/N) sum_n delta(x - x_n)`
    (not the unbiased 1/(N-1) estimate): it is the covariance whose Gaussian
    reproduces the far-field score of the training set's point cloud (paper Eq.
    24-27). Each block's mean and centred scatter matrix are computed in float64 and
    combined with the pairwise update of Chan, Golub & LeVeque (1979), so a large
    common offset in the data does not cancel the covariance away.

    Raises ValueError if `X` is empty, contains NaN/inf, or chunks disagree on D;
    TypeError if `X` is neither an array nor an iterable.
    """
    count = 0
    mean = scatter = None
    for block in _blocks(X):
        n_b = block.shape[0]
        mean_b = block.mean(axis=0)
        centred = block - mean_b
        scatter_b = centred.T @ centred
        del block, centred  # release this chunk before the next is read
        count, mean, scatter = merge_moments(count, mean, scatter, n_b, mean_b, scatter_b)
    if count == 0:
        raise InputValueError("`X` is empty (N = 0)")
    assert mean is not None and scatter is not None  # count > 0
    cov = scatter / count
    cov = 0.5 * (cov + cov.T)
    return mean, cov, count


def covariance_eigenpairs(
    cov: Float[np.ndarray, "D D"], rank: int
) -> tuple[Float[np.ndarray, " r"], Float[np.ndarray, "D r"]]:
    """Top `rank` eigenpairs of a symmetric PSD matrix `cov (D, D)`, in float64.

    Returns `eigvals (rank,)` in descending order, with the tiny negative values
    rounding can produce clipped to 0, and `eigvecs (D, rank)` with orthonormal
    columns. Each column's sign is fixed so that its entry of largest magnitude is
    positive (eigenvectors are otherwise defined only up to sign). Within a repeated
    eigenvalue (e.g. the zero eigenspace of a rank-deficient `cov`) the basis is an
    arbitrary orthonormal one, as returned by `numpy.linalg.eigh`.
    """
    eigvals, eigvecs = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    eigvals = np.maximum(eigvals[::-1][:rank], 0.0)
    eigvecs = eigvecs[:, ::-1][:, :rank]
    pivot = np.argmax(np.abs(eigvecs), axis=0)
    signs = np.where(eigvecs[pivot, np.arange(rank)] < 0, -1.0, 1.0)
    return eigvals, eigvecs * signs


def fit_gaussian(X: Float[ArrayLike, "N D"] | Iterable[Float[ArrayLike, "n D"]], rank: int | None = None) -> Gaussian:
    """The Gaussian with the data's mean and (top-`rank`) covariance, `N(mu, U diag(lambda) U^T)`.

    Args:
        X: data `(N, D)` as one array, or an iterable of `(n, D)` chunks (e.g.
            `gaussjax.data.iter_chunks(...)`), streamed with bounded memory.
        rank: number `r` of leading eigenpairs of the covariance to keep, an integer
            in `[1, D]`; default `D` (the full covariance).

    Returns:
        `Gaussian(mean (D,), eigvals (r,), eigvecs (D, r))` whose score is paper Eq.
        30-34. Moments and eigendecomposition are computed in float64 (see
        `moments` and `covariance_eigenpairs`: 1/N normalisation, descending
        eigenvalues clipped at 0); the arrays are returned as JAX arrays of the
        default float dtype (float32, or float64 when `jax_enable_x64` is on).

    Raises TypeError/ValueError for a `rank` outside `[1, D]`, and as `moments` does
    for bad data.
    """
    if is_array(X):
        X = check_data_matrix("X", X, host=True)
    resolve_rank(rank, X.shape[1] if is_array(X) else None)  # fail before streaming
    mean, cov, _ = moments(X)
    rank = resolve_rank(rank, mean.shape[0])
    eigvals, eigvecs = covariance_eigenpairs(cov, rank)
    return Gaussian(jnp.asarray(mean), jnp.asarray(eigvals), jnp.asarray(eigvecs))
