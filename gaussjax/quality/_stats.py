"""Feature statistics (mean, covariance, count) and the Frechet distance between them (FID).

The Frechet Inception Distance (Heusel et al. 2017) compares two sets of network
features through the Gaussians that match their first two moments. This module
accumulates those moments in float64 NumPy, from an array or streamed batch by
batch (`feature_stats`), merges partial statistics exactly, and evaluates the
Frechet distance between two of them with a symmetric, complex-free route that
also works for rank-deficient covariances (fewer samples than dimensions).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np
from jaxtyping import ArrayLike, Float

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._checks import check_data_matrix, check_finite
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax.fit._moments import merge_moments

_Moments = tuple[int, "np.ndarray | None", "np.ndarray | None"]  # (count, mean, scatter)


def _rows(name: str, X: Any, dim: int | None) -> np.ndarray:
    """`X` as a host NumPy array `(n, D)` (its own floating dtype, ints as float64), or raise naming `name`."""
    X = check_data_matrix(name, X, host=True)
    if dim is not None and X.shape[1] != dim:
        raise InputValueError(f"`{name}` has dimension D = {X.shape[1]}, but the statistics have D = {dim}")
    return X


def _accumulate(name: str, X: np.ndarray, moments: _Moments) -> _Moments:
    """Merge the rows of `X (n, D)` into `moments`, one bounded float64 block of rows at a time."""
    rows = max(1, BLOCK_ELEMENTS // X.shape[1])
    for start in range(0, X.shape[0], rows):
        block = np.asarray(X[start : start + rows], dtype=np.float64)
        check_finite(name, block)
        mean_b = block.mean(axis=0)
        centred = block - mean_b
        with np.errstate(over="ignore"):  # an overflow is refused with a clear error by `_finish`
            scatter_b = centred.T @ centred
        del centred
        moments = merge_moments(*moments, block.shape[0], mean_b, scatter_b)
    return moments


def _finish(moments: _Moments, name: str) -> FeatureStats:
    count, mean, scatter = moments
    if count == 0 or mean is None or scatter is None:
        raise InputValueError(f"`{name}` holds no feature vectors")
    if not np.all(np.isfinite(scatter)):
        raise InputValueError(
            f"the covariance of `{name}` overflows float64 (features up to |x| = {np.max(np.abs(mean)):.3g} "
            "and beyond): rescale the features"
        )
    cov = scatter / (count - 1) if count > 1 else np.zeros_like(scatter)
    return FeatureStats(mean, 0.5 * (cov + cov.T), count)


def _check_mean_cov(mean: Any, cov: Any, mean_name: str = "mean", cov_name: str = "cov"):
    """`(mean (D,), cov (D, D))` as fresh read-only float64 arrays, checked, with `cov` symmetrised."""
    for name, value in ((mean_name, mean), (cov_name, cov)):
        if isinstance(value, jax.core.Tracer):
            raise InputTypeError(f"`{name}` must be a concrete array: feature statistics are host-side NumPy")
        kind = np.asarray(value).dtype.kind
        if kind not in "biuf":
            raise InputTypeError(f"`{name}` must be a real numeric array, got dtype {np.asarray(value).dtype}")
    mean = np.array(mean, dtype=np.float64)
    cov = np.array(cov, dtype=np.float64)
    if mean.ndim != 1 or mean.shape[0] == 0:
        raise InputValueError(f"`{mean_name}` must have shape (D,) with D >= 1, got {mean.shape}")
    dim = mean.shape[0]
    if cov.shape != (dim, dim):
        raise InputValueError(f"`{cov_name}` must have shape (D, D) = ({dim}, {dim}) to match `{mean_name}`, "
                              f"got {cov.shape}")
    check_finite(mean_name, mean)
    check_finite(cov_name, cov)
    scale = np.max(np.abs(cov))
    if np.max(np.abs(cov - cov.T)) > 1e-6 * scale:
        raise InputValueError(f"`{cov_name}` must be symmetric (max |cov - cov^T| = {np.max(np.abs(cov - cov.T)):.3g})")
    if np.any(np.diag(cov) < 0):
        raise InputValueError(f"`{cov_name}` must be positive semi-definite, but has negative diagonal entries")
    cov = 0.5 * (cov + cov.T)
    mean.setflags(write=False)
    cov.setflags(write=False)
    return mean, cov


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean, unbiased covariance and count of a set of feature vectors, in float64.

    The sufficient statistics of the FID (Heusel et al. 2017): `mean (D,)`,
    `cov (D, D) = 1/(N - 1) sum_n (x_n - mean)(x_n - mean)^T` (the unbiased estimate,
    as pytorch-fid's `np.cov(features, rowvar=False)`; note that
    `gaussjax.fit.moments` uses 1/N instead) and `count = N`. Immutable: the arrays
    are read-only float64 NumPy copies, and `update`/`merge` return new statistics.
    Not a JAX pytree: statistics live on the host, like `gaussjax.fit`'s moments.

    Partial statistics combine exactly (Chan, Golub & LeVeque 1979, via
    `gaussjax.fit._moments.merge_moments`): the stats of chunks of any sizes
    (N >= 1 each), merged or updated in any order, equal those of the
    concatenated features up to float64 rounding.

    Attributes:
        mean: `(D,)` float64.
        cov: `(D, D)` float64, symmetric, unbiased (1/(N-1)); zero when N = 1.
        count: `N >= 1`, the number of feature vectors (weighs `merge` and `update`).
            One vector has no covariance: with `count == 1`, `cov` is zero (the
            vector's scatter), which merges exactly, and `frechet_distance` refuses
            the statistics. Statistics loaded from elsewhere without a count (e.g. a
            pytorch-fid `.npz` of `mu`, `sigma`) may use any `count >= 2`, or be
            passed to `frechet_distance` as a `(mean, cov)` tuple.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> real, more = rng.normal(size=(100, 4)), rng.normal(size=(50, 4))   # (N, D), (n, D)
        >>> stats = FeatureStats.from_features(real).update(more)
        >>> stats.count, np.allclose(stats.cov, np.cov(np.concatenate([real, more]), rowvar=False))
        (150, True)
    """

    mean: Float[np.ndarray, " D"]
    cov: Float[np.ndarray, "D D"]
    count: int

    def __post_init__(self):
        count = self.count
        if isinstance(count, bool) or not isinstance(count, numbers.Integral):
            raise InputTypeError(f"`count` must be an integer >= 1, got {type(count).__name__} {count!r}")
        if count < 1:
            raise InputValueError(f"`count` must be >= 1, got {count}")
        mean, cov = _check_mean_cov(self.mean, self.cov)
        if count == 1 and np.any(cov != 0):
            raise InputValueError("`cov` must be zero when `count` is 1: one feature vector has no covariance")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "count", int(count))

    @property
    def dim(self) -> int:
        """The feature dimension D."""
        return self.mean.shape[0]

    def _moments(self) -> _Moments:
        return self.count, self.mean, self.cov * (self.count - 1)

    @classmethod
    def from_features(cls, features: Float[ArrayLike, "N D"]) -> FeatureStats:
        """The statistics of `features (N, D)`, N >= 1 (NumPy, JAX or nested lists; ints allowed).

        Computed in float64 a bounded block of rows at a time, so a float32 array is
        never copied whole to float64. Raises TypeError/ValueError naming `features`
        for a non-real, non-2-D, empty or non-finite input, or features so large that
        their covariance overflows float64.
        """
        features = _rows("features", features, None)
        return _finish(_accumulate("features", features, (0, None, None)), "features")

    def update(self, batch: Float[ArrayLike, "n D"]) -> FeatureStats:
        """These statistics with the rows of `batch (n, D)` (n >= 1, same D) added."""
        batch = _rows("batch", batch, self.dim)
        return _finish(_accumulate("batch", batch, self._moments()), "batch")

    def merge(self, other: FeatureStats) -> FeatureStats:
        """The statistics of the union of the two (disjoint) sets of features."""
        if not isinstance(other, FeatureStats):
            raise InputTypeError(f"`other` must be a FeatureStats, got {type(other).__name__}")
        if other.dim != self.dim:
            raise InputValueError(f"`other` has dimension D = {other.dim}, but these statistics have D = {self.dim}")
        return _finish(merge_moments(*self._moments(), *other._moments()), "other")


def feature_stats(
    feature_fn: Callable[[Any], Float[ArrayLike, "n D"]],
    batches: Iterable[Any],
    *,
    progress: bool = False,
) -> FeatureStats:
    """Statistics of `feature_fn(batch)` over a stream of batches, never holding all features.

    Args:
        feature_fn: maps one batch (e.g. images `(n, H, W, C)`) to features `(n, D)`,
            typically a jitted network. Its output is copied to the host and merged
            into float64 running statistics; the next batch is dispatched before the
            previous output is merged, so device and host work overlap.
        batches: any iterable of batches (a list, a generator, a data loader). A
            single array is refused (iterating it would feed `feature_fn` one image
            at a time): split it first, e.g. `np.array_split(images, 100)`.
        progress: show a tqdm progress bar.

    Returns:
        `FeatureStats` of all the feature rows (at least 1 in total; a batch may
        yield 0 rows).

    Raises TypeError/ValueError naming the batch whose features are not `(n, D)`,
    not real, not finite, or disagree on D with the earlier ones.

    Example:
        >>> images = np.random.default_rng(0).uniform(-1, 1, (100, 8, 8, 1)).astype(np.float32)
        >>> features = jax.jit(lambda batch: batch.reshape(batch.shape[0], -1)[:, :4])  # a network in practice
        >>> stats = feature_stats(features, np.array_split(images, 10))
        >>> stats.count, stats.mean.shape
        (100, (4,))
    """
    if not callable(feature_fn):
        raise InputTypeError(f"`feature_fn` must be callable, got {type(feature_fn).__name__}")
    if isinstance(batches, (np.ndarray, jax.Array)):
        raise InputTypeError("`batches` must be an iterable of batches, not one array: split it, e.g. "
                             "np.array_split(x, k)")
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise InputTypeError(f"`batches` must be an iterable of batches, got {type(batches).__name__}")
    from tqdm.auto import tqdm

    moments: _Moments = (0, None, None)
    dim = None
    pending = None  # (index, output) of the batch dispatched last, merged after the next is dispatched

    def merge(index, output):
        nonlocal moments, dim
        name = f"feature_fn(batch {index})"
        if np.ndim(output) == 2 and np.shape(output)[0] == 0:
            return
        rows = _rows(name, output, dim)
        dim = rows.shape[1]
        moments = _accumulate(name, rows, moments)

    index = -1
    for batch in tqdm(batches, desc="feature stats", unit="batch", disable=not progress):
        index += 1
        output = feature_fn(batch)
        del batch
        if pending is not None:
            merge(*pending)
        pending = (index, output)
        del output
    if pending is not None:
        merge(*pending)
    pending = None
    return _finish(moments, "batches")


def _as_mean_cov(name: str, stats: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """`(mean, cov, the name of cov)` of a `FeatureStats` or a `(mean, cov)` tuple, checked."""
    if isinstance(stats, FeatureStats):
        if stats.count < 2:
            raise InputValueError(f"`{name}` holds N = {stats.count} feature vector; its covariance needs N >= 2")
        return stats.mean, stats.cov, f"{name}.cov"
    if isinstance(stats, tuple) and len(stats) == 2:
        return (*_check_mean_cov(*stats, mean_name=f"{name}[0]", cov_name=f"{name}[1]"), f"{name}[1]")
    raise InputTypeError(f"`{name}` must be a FeatureStats or a (mean, cov) tuple, got {type(stats).__name__}")


def _factor(name: str, cov: np.ndarray) -> np.ndarray:
    """A factor `C (D, r)` with `C C^T = cov`, for symmetric PSD `cov (D, D)`; refuses indefinite `cov`.

    The Cholesky factor when `cov` is positive definite to working precision, else
    `V diag(w)^{1/2}` over the eigenvalues `w` of `eigh(cov)` above `D eps max|w|`
    (a singular covariance, e.g. from fewer samples than dimensions, whose zero
    eigenvalues come out as rounding noise of either sign and that size; kept, each
    would add noise of order `sqrt(D eps)` to the trace). Eigenvalues below
    `-D eps max|w|` cannot be rounding: `cov` is then not a covariance.
    """
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        pass
    eigvals, eigvecs = np.linalg.eigh(cov)
    tolerance = cov.shape[0] * np.finfo(np.float64).eps * max(abs(eigvals[0]), abs(eigvals[-1]))
    if eigvals[0] < -tolerance:
        raise InputValueError(
            f"`{name}` must be positive semi-definite, but has the eigenvalue {eigvals[0]:.6g} "
            f"(largest {eigvals[-1]:.6g}): it is not a covariance matrix"
        )
    keep = eigvals > tolerance
    return eigvecs[:, keep] * np.sqrt(eigvals[keep])


def _trace_sqrt_product(A: np.ndarray, B: np.ndarray, names: tuple[str, str]) -> float:
    """`tr((A B)^{1/2})` for symmetric PSD `A`, `B` `(D, D)`, in float64, without complex numbers.

    With factors `A = C_A C_A^T` and `B = C_B C_B^T`, the eigenvalues of `A B` are
    those of `C_A^T B C_A = M^T M` with `M = C_B^T C_A` (plus zeros), so
    `tr((A B)^{1/2})` is the nuclear norm of `M`, the sum of its singular values.
    The SVD gives them to `eps * sigma_max(M)` on this unsquared scale, so the small
    eigenvalues of ill-conditioned or singular covariances count in full, and no
    threshold is needed (forming `M^T M` and taking square roots of its eigenvalues
    would lose every eigenvalue of `A` below `sqrt(D eps)` of its largest).
    """
    factor_a, factor_b = _factor(names[0], A), _factor(names[1], B)
    if factor_a.shape[1] == 0 or factor_b.shape[1] == 0:
        return 0.0
    return float(np.sum(np.linalg.svd(factor_b.T @ factor_a, compute_uv=False)))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """The Frechet distance between the Gaussians of two feature statistics (the FID).

    `FD = ||mu_a - mu_b||^2 + tr(A) + tr(B) - 2 tr((A B)^{1/2})`, the squared
    2-Wasserstein distance between `N(mu_a, A)` and `N(mu_b, B)` (Heusel et al. 2017;
    with Inception-v3 pool features, the FID).

    Args:
        a, b: `FeatureStats` of the same dimension D, or plain `(mean (D,), cov (D, D))`
            tuples (e.g. a pytorch-fid `.npz`'s `mu`, `sigma`).

    Returns:
        The distance as a Python float (float64), >= 0 (rounding below 0 is clipped).

    `tr((A B)^{1/2})` is the nuclear norm of `C_B^T C_A`, where `A = C_A C_A^T` and
    `B = C_B C_B^T` (Cholesky factors, or `eigh` ones when a covariance is singular,
    e.g. from fewer samples than dimensions): the sum of its singular values, which
    the SVD gives to `eps` of the largest, so ill-conditioned covariances (condition
    numbers to 1e12 and beyond) lose none of their small eigenvalues, and
    `frechet_distance(a, a)` is 0 to about `D eps tr(A)`. This avoids pytorch-fid's
    `scipy.linalg.sqrtm` of the non-symmetric `A B` (complex Schur form, `.real`,
    and an `eps * I` offset on failure), and costs two Cholesky factorisations, one
    matrix product and one SVD without singular vectors, of size D.

    Raises TypeError for other argument types, and ValueError for mismatched D,
    statistics of a single feature vector, covariances that are not positive
    semi-definite (an eigenvalue below `-D eps max|eigenvalue|`) or, for tuples,
    bad shapes and non-finite or non-symmetric covariances.

    Example:
        `N(0, I)` against `N((1, 1), 4 I)` in 2-D: `2 + 2 + 8 - 2 tr((4 I)^{1/2}) = 4`:

        >>> frechet_distance((np.zeros(2), np.eye(2)), (np.ones(2), 4 * np.eye(2)))
        4.0
    """
    mean_a, cov_a, cov_a_name = _as_mean_cov("a", a)
    mean_b, cov_b, cov_b_name = _as_mean_cov("b", b)
    if mean_a.shape != mean_b.shape:
        raise InputValueError(f"`a` and `b` must have the same dimension D, got {mean_a.shape[0]} and "
                              f"{mean_b.shape[0]}")
    diff = mean_a - mean_b
    trace_sqrt = _trace_sqrt_product(cov_a, cov_b, (cov_a_name, cov_b_name))
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return max(float(value), 0.0)
