"""Argument validation at the Python boundary.

Every public function checks its inputs here, before any array work, so that bad
input fails with a message naming the argument and what was expected instead of
silently producing NaN deep inside a jitted computation.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gaussjax._blocks import BLOCK_ELEMENTS
from gaussjax._errors import InputTypeError, InputValueError


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an `int`, or an error naming `name` unless it is an integer (bools refused) in `[minimum, maximum]`.

    Raises:
        InputTypeError: `value` is not an integer.
        InputValueError: it is outside the range (either bound may be None: unbounded).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r:.80}")
    value = int(value)
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise InputValueError(f"`{name}` must be an integer in [{minimum}, {maximum}], got {value}")
    if minimum is not None and value < minimum:
        raise InputValueError(f"`{name}` must be {'a positive integer' if minimum == 1 else f'>= {minimum}'}, "
                              f"got {value}")
    if maximum is not None and value > maximum:
        raise InputValueError(f"`{name}` must be <= {maximum}, got {value}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """`check_int(name, value, minimum=1)`."""
    return check_int(name, value, minimum=1)


def check_nonnegative_int(name: str, value: Any) -> int:
    """`check_int(name, value, minimum=0)`."""
    return check_int(name, value, minimum=0)


def check_real(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
               strict: bool = False) -> float:
    """`value` as a `float`, or an error naming `name` unless it is a finite real number (bools refused) in range.

    The range is `[minimum, maximum]`, or `(minimum, maximum)` with `strict`; either bound may be None.

    Raises:
        InputTypeError: `value` is not a real number.
        InputValueError: it is NaN, infinite or out of range.
    """
    low = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
    high = "" if maximum is None else f"{' and' if low else ''} {'<' if strict else '<='} {maximum:g}"
    what = f"a finite number{low}{high}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be {what}, got {type(value).__name__} {value!r:.80}")
    value = float(value)
    below = minimum is not None and (value <= minimum if strict else value < minimum)
    above = maximum is not None and (value >= maximum if strict else value > maximum)
    if not math.isfinite(value) or below or above:
        raise InputValueError(f"`{name}` must be {what}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """Raise unless `value` is one of `choices` (listed in the message)."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InputValueError(f"`{name}` must be one of {listed}; got {value!r}")
    return value


def check_value_range(name: str, value: Any) -> tuple[float, float]:
    """Return `value` as `(low, high)` floats with `low < high`, or raise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputTypeError(f"`{name}` must be a pair (low, high) of numbers, got {value!r}") from None
    if not low < high:
        raise InputValueError(f"`{name}` must satisfy low < high, got ({low}, {high})")
    return low, high


def is_concrete(*arrays) -> bool:
    """Whether all `arrays` hold values (not JAX tracers), so value checks can run now.

    Under `jax.jit`/`vmap`/`grad` only shapes are checked; values are checked when
    a public function is called eagerly.
    """
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def spans_processes(array) -> bool:
    """Whether `array` is a concrete `jax.Array` with values on other processes' devices (not fully addressable).

    Such a global array (e.g. built by `jax.make_array_from_process_local_data` over a mesh of every
    process's devices) cannot be fetched to this host: its values are checked where they lie
    (`summarize`). The answer is a property of the sharding, the same on every process.
    """
    return (isinstance(array, jax.Array) and not isinstance(array, jax.core.Tracer)
            and not array.is_fully_addressable)


def summarize(fn: Callable, *arrays):
    """`fn(xp, *arrays)` as NumPy values: a few numbers (verdicts, extremes) that a check needs.

    `fn` is written once against an array namespace `xp` (`numpy` or `jax.numpy`) and returns a
    pytree of small arrays. For ordinary arrays it runs in NumPy on this host's copy (the fast path;
    overflow and invalid-value warnings silenced: the checks look at the result). When an array
    spans processes (`spans_processes`), it runs in `jax.numpy` as one jitted program over the
    arrays' devices whose outputs are replicated on every device, so each process fetches the same
    numbers from its own devices and raises the same error; every process must then call it, as
    every process builds the same model (a collective).
    """
    spanning = [a for a in arrays if spans_processes(a)]
    if not spanning:
        with np.errstate(over="ignore", invalid="ignore"):
            return fn(np, *(np.asarray(a) for a in arrays))
    sharding = spanning[0].sharding
    replicated = NamedSharding(sharding.mesh, PartitionSpec()) if isinstance(sharding, NamedSharding) else None
    out = _replicating_jit(fn, replicated)(*arrays)
    return jax.tree_util.tree_map(np.asarray, out)


@functools.lru_cache(maxsize=64)
def _replicating_jit(fn: Callable, replicated: NamedSharding | None):
    """`jax.jit` of `fn(jax.numpy, ...)` with every output replicated (`None`: left to XLA, which
    replicates the full reductions that checks compute)."""
    compute = functools.partial(fn, jnp)
    return jax.jit(compute) if replicated is None else jax.jit(compute, out_shardings=replicated)


def _all_finite(xp, array):
    return xp.all(xp.isfinite(array))


def _identity(xp, array):
    return array


def host_copy(array) -> np.ndarray:
    """A NumPy copy of a concrete array that is small (a noise grid, eigenvalues); one that spans
    processes is first replicated on its devices (an all-gather), then fetched."""
    return np.asarray(summarize(_identity, array))


def all_finite(array) -> bool:
    """Whether a concrete `array` holds only finite values (computed on its devices if it spans processes)."""
    return bool(summarize(_all_finite, array))


def check_finite(name: str, array) -> None:
    """Raise if a concrete `array` holds NaN or infinite values (the same error on every process)."""
    if is_concrete(array) and not all_finite(array):
        raise InputValueError(f"`{name}` contains NaN or infinite values")


def as_float(name: str, value):
    """`value` as a floating JAX array: integers and bools become the default float; complex is refused."""
    if not isinstance(value, (jax.Array, jax.core.Tracer)):  # host values: checked in NumPy, one transfer
        try:
            host = np.asarray(value)
        except (TypeError, ValueError):
            raise InputTypeError(f"`{name}` must be a real numeric array, "
                                 f"got {type(value).__name__} {value!r:.80}") from None
        if host.dtype.kind not in "biuf":
            kind = "real, got a complex array" if host.dtype.kind == "c" else "a real numeric array, got dtype"
            raise InputTypeError(f"`{name}` must be {kind} ({host.dtype})")
        return jnp.asarray(host, dtype=None if host.dtype.kind == "f" else jnp.result_type(float))
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
        raise InputTypeError(f"`{name}` must be real, got a complex array ({value.dtype})")
    if not (jnp.issubdtype(value.dtype, jnp.number) or value.dtype == bool):
        raise InputTypeError(f"`{name}` must be a real numeric array, got dtype {value.dtype}")
    return value if jnp.issubdtype(value.dtype, jnp.floating) else value.astype(jnp.result_type(float))


def check_float_array(name: str, value, *, ndim: int | None = None):
    """Return `value` as a floating JAX array (ints are promoted), checking `ndim` and finiteness."""
    array = as_float(name, value)
    if ndim is not None and array.ndim != ndim:
        raise InputValueError(f"`{name}` must be a {ndim}-D array, got shape {array.shape}")
    check_finite(name, array)
    return array


def check_data_matrix(name: str, X, *, host: bool = False, spanning: bool = False):
    """Return `X` as a float array `(N, D)` with N, D >= 1, or raise naming `name`.

    By default a finite JAX array (checked when concrete; one that spans processes is checked
    on its devices). With `host=True` (the fitting code, which runs in NumPy on data that may
    not fit in memory twice) a NumPy array: floating dtypes are kept, integers become float64,
    tracers are refused, and finiteness is left to the caller, block by block; an array
    spanning processes (`spans_processes`) is refused too, unless `spanning` (a caller that
    computes on its devices): it is then returned as a floating `jax.Array`, as it is.
    """
    if host:
        if isinstance(X, jax.core.Tracer):
            raise InputTypeError(f"`{name}` must be a concrete array: "
                                 "fitting runs in NumPy and cannot be traced by jit")
        if spans_processes(X) and spanning:
            X = as_float(name, X)
        elif spans_processes(X):
            raise InputTypeError(
                f"`{name}` is a jax.Array spanning several processes: this function reads its data on the host, "
                "so it needs the whole array on this process (fit_gaussian, DeltaMixture, GaussianMixture and "
                "the local models accept arrays that span processes)"
            )
        else:
            X = np.asarray(X)
            if np.issubdtype(X.dtype, np.complexfloating):
                raise InputTypeError(f"`{name}` must be real, got a complex array ({X.dtype})")
            if not np.issubdtype(X.dtype, np.floating):
                if not (np.issubdtype(X.dtype, np.integer) or X.dtype == bool):
                    raise InputTypeError(f"`{name}` must be a numeric array, got dtype {X.dtype}")
                X = X.astype(np.float64)
    else:
        X = as_float(name, X)
    if X.ndim != 2:
        raise InputValueError(f"`{name}` must have shape (N, D), got {X.shape}")
    if X.shape[0] == 0:
        raise InputValueError(f"`{name}` is empty (N = 0)")
    if X.shape[1] == 0:
        raise InputValueError(f"`{name}` has dimension D = 0")
    if not host:
        check_finite_norms(name, X)
    return X


def check_noise_levels(
    name: str, value, *, ndim: tuple[int, ...] = (0, 1), min_size: int = 1, positive: bool = False,
    decreasing: bool = False, dtype=None,
):
    """The one validator of noise levels and grids: a float array of rank in `ndim`.

    Shapes are always checked; values when concrete (a traced grid passes through):
    finite, `> 0` if `positive` else `>= 0`, strictly decreasing if `decreasing`. A
    1-D grid must hold at least `min_size` levels. Cast to `dtype` if given.
    """
    levels = as_float(name, value)
    if levels.ndim not in ndim:
        expected = " or ".join({0: "a scalar", 1: "a 1-D grid"}[n] for n in ndim)
        raise InputValueError(f"`{name}` must be {expected}, got shape {levels.shape}")
    if levels.ndim == 1 and levels.shape[0] < min_size:
        raise InputValueError(f"`{name}` must hold at least {min_size} noise levels, got shape {levels.shape}")
    concrete = is_concrete(levels)
    if concrete:  # (checked on the host, before any array operation: under a trace those are staged)
        values = np.atleast_1d(host_copy(levels).astype(dtype or levels.dtype))
    if dtype is not None:
        levels = levels.astype(dtype)
    if not concrete:
        return levels
    bad = ~np.isfinite(values) | ((values <= 0) if positive else (values < 0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise InputValueError(f"`{name}` must be finite and {'> 0' if positive else '>= 0'}, "
                              f"got {name}[{i}] = {values[i]}")
    with np.errstate(over="ignore"):
        squares = np.square(values)
    if not np.all(np.isfinite(squares)):
        raise InputValueError(f"`{name}` is too large for {values.dtype}: "
                              f"its square overflows (max {values.max():.3g})")
    steps = np.diff(values)
    if decreasing and np.any(steps >= 0):
        i = int(np.argmax(steps >= 0))
        raise InputValueError(
            f"`{name}` must be strictly decreasing (from sigma_max down), got {name}[{i}] = {values[i]} "
            f"and {name}[{i + 1}] = {values[i + 1]}"
        )
    return levels


def check_query(x, sigma, dim: int):
    """Validate a query `x (..., dim)` and noise level `sigma`; return them with `sigma` broadcast.

    `sigma` may be a scalar or any shape that broadcasts against `x.shape[:-1]`; it is
    returned with shape `x.shape[:-1]` and `x`'s dtype. Concrete inputs must be finite,
    with `sigma > 0`.
    """
    x = as_float("x", x)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise InputValueError(f"`x` must have shape (..., D) with D = {dim} (the model's dimension), got {x.shape}")
    sigma = as_float("sigma", sigma).astype(x.dtype)
    try:
        sigma = jnp.broadcast_to(sigma, x.shape[:-1])
    except ValueError:
        raise InputValueError(
            f"`sigma` must be a scalar or broadcast against x.shape[:-1] = {x.shape[:-1]}, got shape {sigma.shape}"
        ) from None
    check_finite_norms("x", x)
    if is_concrete(sigma) and sigma.size:
        finite_positive, smallest, largest = summarize(_sigma_summary, sigma)
        if not finite_positive:
            raise InputValueError(f"`sigma` must be finite and > 0, got min {smallest}")
        low = np.sqrt(np.finfo(sigma.dtype).smallest_normal)
        high = 1 / low
        if smallest < low or largest > high:
            raise InputValueError(
                f"`sigma` must be in [{low:.2g}, {high:.2g}] in {sigma.dtype} (sigma^2 and 1 / sigma^2 must be "
                f"normal numbers), got "
                f"range [{smallest:.3g}, {largest:.3g}]; enable jax_enable_x64 for a wider range"
            )
    return x, sigma


def _sigma_summary(xp, sigma):
    """(all finite and > 0, min, max) of a non-empty `sigma`."""
    return xp.all(xp.isfinite(sigma) & (sigma > 0)), xp.min(sigma), xp.max(sigma)


def check_finite_norms(name: str, x) -> None:
    """Raise if a concrete `x (..., D)` is not finite or its squared norms overflow its dtype.

    Scores square distances: in float32 a vector of entries ~1e20 is finite but its
    squared norm is not, and the results would be NaN. An `x` that spans processes is
    checked on its devices (`summarize`): the same error on every process.
    """
    if not is_concrete(x):
        return
    finite, norms_finite, largest = summarize(_norms_summary, x)
    if not finite:
        raise InputValueError(f"`{name}` contains NaN or infinite values")
    if not norms_finite:
        raise InputValueError(
            f"`{name}` is too large for {x.dtype}: its squared norm overflows (max |{name}| = "
            f"{largest:.3g}); rescale it or enable jax_enable_x64"
        )


def _norms_summary(xp, x):
    """(all finite, all squared norms over the last axis finite, max |x|) of `x (..., D)`.

    On the host in blocks of rows of `BLOCK_ELEMENTS` values: the temporaries are a block's, not `x`'s."""
    if xp is np and x.ndim > 1 and x.size > BLOCK_ELEMENTS:
        rows = x.reshape(-1, x.shape[-1])
        step = max(1, BLOCK_ELEMENTS // max(x.shape[-1], 1))
        parts = [_norms_summary(np, rows[i : i + step]) for i in range(0, len(rows), step)]
        return all(p[0] for p in parts), all(p[1] for p in parts), max(p[2] for p in parts)
    norms = xp.sum(xp.square(x), axis=-1)
    return xp.all(xp.isfinite(x)), xp.all(xp.isfinite(norms)), xp.max(xp.abs(x), initial=0)


def check_nonnegative_real(name: str, value: Any) -> float:
    """`check_real(name, value, minimum=0)`."""
    return check_real(name, value, minimum=0)


def check_key(key: Any):
    """Return `key` as a typed PRNG key (legacy uint32 `(2,)` keys are wrapped), or raise."""
    if key is None:
        raise InputTypeError("`key` is required: pass a PRNG key such as jax.random.key(0)")
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise InputValueError(f"`key` must be a single PRNG key (shape ()), got shape {key.shape}")
        return key
    if isinstance(key, (np.ndarray, jax.Array)) and key.dtype == np.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)  # type: ignore[arg-type]  # NumPy arrays are accepted too
    raise InputTypeError(f"`key` must be a PRNG key such as jax.random.key(0), got {type(key).__name__} {key!r}")


def check_initial_state(model, x_T, dtype=None):
    """`x_T (..., D)` as a float array (of `dtype` if given), checked against `model.dim` when the model has one.

    `dtype` (the state dtype of a sampler or solve) must be float32 or float64.
    """
    if not callable(getattr(model, "denoise", None)):
        raise InputTypeError(f"`model` must have a `denoise(x, sigma)` method, got {type(model).__name__}")
    x_T = as_float("x_T", x_T)
    dim = getattr(model, "dim", None)
    if x_T.ndim == 0 or (isinstance(dim, numbers.Integral) and x_T.shape[-1] != dim):
        raise InputValueError(f"`x_T` must have shape (..., D) with D = {dim} (the model's dimension), got {x_T.shape}")
    if dtype is not None:
        try:
            dtype = jnp.dtype(dtype)
        except TypeError:
            raise InputTypeError(f"`dtype` must be float32 or float64, got {dtype!r}") from None
        if dtype not in (jnp.float32, jnp.float64):
            raise InputTypeError(f"`dtype` must be float32 or float64 (the sampler state's precision), got {dtype}")
        if dtype == jnp.float64 and not jax.config.jax_enable_x64:
            raise InputValueError("`dtype=float64` needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))")
        x_T = x_T.astype(dtype)
    check_finite("x_T", x_T)
    return x_T


def check_images(name: str, images) -> jax.Array:
    """Return `images` as a finite float array `(N, H, W, C)` with no empty axis, or raise naming `name`.

    Also refuses images whose squared norms overflow their dtype (the models square distances).
    """
    images = check_float_array(name, images, ndim=4)
    if 0 in images.shape:
        raise InputValueError(f"`{name}` must have shape (N, H, W, C) with no empty axis, got {images.shape}")
    check_finite_norms(name, images.reshape(images.shape[0], -1))
    return images
