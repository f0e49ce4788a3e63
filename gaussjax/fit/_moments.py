"""Mean and covariance of data, streamed, and the Gaussian that matches them.

The Gaussian score model (paper Eq. 30-34) needs only the data mean `mu` and the
eigenpairs of its covariance `Sigma = U diag(lambda) U^T`. This module computes
them in float64 NumPy from an array or from a stream of chunks, never holding more
than one chunk (or one bounded block of rows of an array) in float64 at a time.
Data split by rows over the devices of several processes (a global `jax.Array`) is
reduced on its devices instead (`device_moments`), and only the `(D,)` mean and the
`(D, D)` scatter come to the host.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from typing import Any, TypeGuard, overload

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jaxtyping import ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_finite, spans_processes
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.scores import _sharded
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

    A `jax.Array` whose rows are split over the devices of several processes is reduced
    on its devices (`device_moments`); every process must then call this function.

    Raises ValueError if `X` is empty, contains NaN/inf, or chunks disagree on D;
    TypeError if `X` is neither an array nor an iterable.
    """
    if isinstance(X, jax.Array) and spans_processes(X):
        return device_moments(X)
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


def device_moments(X: jax.Array) -> tuple[Float[np.ndarray, " D"], Float[np.ndarray, "D D"], int]:
    """`moments` of a `jax.Array` `X (N, D)` spanning processes, reduced where its rows lie.

    Each device reads its own rows in blocks of at most `BLOCK_ELEMENTS` numbers, twice:
    the sum (then `psum` over the devices: the mean `mu`), then the scatter
    `sum_n (x_n - mu)(x_n - mu)^T` of its rows about that global mean (then `psum`).
    Centring on the global mean before any product keeps a large common offset from
    cancelling the covariance away, and the per-device sums add up exactly to the scatter of
    all rows (no merge correction is needed). The sums run in float64 under
    `jax_enable_x64`, else in float32; the products at full precision.
    Only the mean `(D,)` and scatter `(D, D)`, replicated on every device, come to the host;
    every process gets the same values. An `X` replicated on every device is read from this
    process's copy, in float64 NumPy.

    Raises ValueError (the same on every process) if `X` is not `(N, D)`, is empty, is split
    along D, holds NaN or infinite values, or if its scatter overflows float32.
    """
    X = check_data_matrix("X", X, host=True, spanning=True)
    if X.is_fully_replicated:
        return moments(_sharded.local_copy(X))
    rows = _sharded.row_sharding("X", X)
    if rows is None:
        raise InputValueError(f"`X` must be split by rows over a mesh (a NamedSharding), got {X.sharding}")
    count, dim = X.shape
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)  # float64 under jax_enable_x64, else float32
    block = max(1, BLOCK_ELEMENTS // dim)

    def local(X):  # this device's rows (n, D)
        total, finite = _block_sums(X, block, lambda rows: (jnp.sum(rows, axis=0), jnp.all(jnp.isfinite(rows))),
                                    (jnp.zeros(dim, dtype), jnp.asarray(True)), dtype)
        mean = jax.lax.psum(total, rows.axes) / count
        finite = jax.lax.pmin(finite.astype(jnp.int32), rows.axes)

        def scatter(block_rows):
            centred = block_rows - mean[None, :]
            return (jnp.matmul(centred.T, centred, precision=jax.lax.Precision.HIGHEST),)

        (local_scatter,) = _block_sums(X, block, scatter, (jnp.zeros((dim, dim), dtype),), dtype)
        return mean, jax.lax.psum(local_scatter, rows.axes), finite

    replicated = jax.sharding.NamedSharding(rows.mesh, jax.sharding.PartitionSpec())
    program = jax.shard_map(local, mesh=rows.mesh, in_specs=rows.spec, out_specs=jax.sharding.PartitionSpec(),
                            check_vma=False)
    mean, scatter, finite = (np.asarray(a) for a in jax.jit(program, out_shardings=replicated)(X))
    if not finite:
        raise InputValueError("`X` contains NaN or infinite values")
    if not np.all(np.isfinite(scatter)):
        raise InputValueError(f"`X` is too large for {np.dtype(dtype).name}: its scatter overflows; "
                              "rescale it or enable jax_enable_x64")
    cov = np.asarray(scatter, np.float64) / count
    return np.asarray(mean, np.float64), 0.5 * (cov + cov.T), count


def _block_sums(X, block: int, fn, init: tuple, dtype) -> tuple:
    """The sum over blocks of `block` rows of `X (n, D)` (cast to `dtype`) of the tuple `fn(rows)`, combined
    with `+` (and `&` for booleans), starting from `init`; no copy of `X` is made."""

    def combine(a, b):
        return tuple(x & y if x.dtype == bool else x + y for x, y in zip(a, b, strict=True))

    block = min(block, X.shape[0])
    full = X.shape[0] // block

    def body(i, acc):
        return combine(acc, fn(jax.lax.dynamic_slice_in_dim(X, i * block, block).astype(dtype)))

    acc = jax.lax.fori_loop(0, full, body, init)
    if X.shape[0] > full * block:
        acc = combine(acc, fn(X[full * block :].astype(dtype)))
    return acc


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
    # LAPACK's divide-and-conquer `syevd` (numpy's too, ~15% slower through numpy at D = 3072 here)
    eigvals, eigvecs = scipy.linalg.eigh(np.asarray(cov, dtype=np.float64), driver="evd")
    eigvals = np.maximum(eigvals[::-1][:rank], 0.0)
    rows = eigvecs.T[::-1][:rank]  # the leading eigenvectors as contiguous rows `(rank, D)`
    pivot = np.argmax(np.abs(rows), axis=1)
    negative = rows[np.arange(rank), pivot] < 0
    rows[negative] *= -1.0
    return eigvals, rows.T


def fit_gaussian(X: Float[ArrayLike, "N D"] | Iterable[Float[ArrayLike, "n D"]], rank: int | None = None) -> Gaussian:
    """The Gaussian with the data's mean and (top-`rank`) covariance, `N(mu, U diag(lambda) U^T)`.

    Args:
        X: data `(N, D)` as one array, or an iterable of `(n, D)` chunks (e.g.
            `gaussjax.data.iter_chunks(...)`), streamed with bounded memory. A `jax.Array`
            split by rows over several processes' devices is reduced on them (`device_moments`).
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
        X = check_data_matrix("X", X, host=True, spanning=True)
    resolve_rank(rank, X.shape[1] if is_array(X) else None)  # fail before streaming
    mean, cov, _ = moments(X)
    rank = resolve_rank(rank, mean.shape[0])
    eigvals, eigvecs = covariance_eigenpairs(cov, rank)
    return Gaussian(jnp.asarray(mean), jnp.asarray(eigvals), jnp.asarray(eigvecs))
