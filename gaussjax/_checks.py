"""Argument validation at the Python boundary.

Every public function checks its inputs here, before any array work, so that bad
input fails with a message naming the argument and what was expected instead of
silently producing NaN deep inside a jitted computation.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return `value` as an `int`, or raise if it is not an integer `>= minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """Raise unless `value` is one of `choices` (listed in the message)."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}")
    return value


def check_value_range(name: str, value: Any) -> tuple[float, float]:
    """Return `value` as `(low, high)` floats with `low < high`, or raise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a pair (low, high) of numbers, got {value!r}") from None
    if not low < high:
        raise ValueError(f"`{name}` must satisfy low < high, got ({low}, {high})")
    return low, high


def is_concrete(*arrays) -> bool:
    """Whether all `arrays` hold values (not JAX tracers), so value checks can run now.

    Under `jax.jit`/`vmap`/`grad` only shapes are checked; values are checked when
    a public function is called eagerly.
    """
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_finite(name: str, array) -> None:
    """Raise if a concrete `array` holds NaN or infinite values."""
    if is_concrete(array) and not np.all(np.isfinite(np.asarray(array))):
        raise ValueError(f"`{name}` contains NaN or infinite values")


def check_data_matrix(name: str, X):
    """Return `X` as a float array `(N, D)` with N >= 1, finite, or raise naming `name`."""
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, D), got {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (N = 0)")
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jnp.result_type(float))
    check_finite(name, X)
    return X


def check_float_array(name: str, value, *, ndim: int | None = None):
    """Return `value` as a floating JAX array (ints are promoted), checking `ndim` and finiteness."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.result_type(float))
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"`{name}` must be a {ndim}-D array, got shape {array.shape}")
    check_finite(name, array)
    return array


def check_query(x, sigma, dim: int):
    """Validate a query `x (..., dim)` and noise level `sigma`; return them with `sigma` broadcast.

    `sigma` may be a scalar or any shape that broadcasts against `x.shape[:-1]`; it is
    returned with shape `x.shape[:-1]` and `x`'s dtype. Concrete inputs must be finite,
    with `sigma > 0`.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"`x` must have shape (..., D) with D = {dim} (the model's dimension), got {x.shape}")
    sigma = jnp.asarray(sigma, dtype=x.dtype)
    try:
        sigma = jnp.broadcast_to(sigma, x.shape[:-1])
    except ValueError:
        raise ValueError(
            f"`sigma` must be a scalar or broadcast against x.shape[:-1] = {x.shape[:-1]}, got shape {sigma.shape}"
        ) from None
    check_finite("x", x)
    if is_concrete(sigma):
        values = np.asarray(sigma)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"`sigma` must be finite and > 0, got min {values.min() if values.size else None}")
    return x, sigma


def check_nonnegative_real(name: str, value: Any) -> float:
    """Return `value` as a float, or raise unless it is a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0, got {type(value).__name__} {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {value}")
    return float(value)


def check_key(key: Any):
    """Return `key` as a typed PRNG key (legacy uint32 `(2,)` keys are wrapped), or raise."""
    if key is None:
        raise TypeError("`key` is required: pass a PRNG key such as jax.random.key(0)")
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`key` must be a single PRNG key (shape ()), got shape {key.shape}")
        return key
    if isinstance(key, (np.ndarray, jax.Array)) and key.dtype == np.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise TypeError(f"`key` must be a PRNG key such as jax.random.key(0), got {type(key).__name__} {key!r}")


def check_sigma_grid(sigmas, name: str = "sigmas"):
    """A noise grid `(K,)` as a float array: K >= 2, finite, >= 0, strictly decreasing.

    Shapes are always checked; values when concrete (a traced grid passes through).
    """
    sigmas = jnp.asarray(sigmas)
    if not jnp.issubdtype(sigmas.dtype, jnp.floating):
        sigmas = sigmas.astype(jnp.result_type(float))
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"`{name}` must be a 1-D grid of at least 2 noise levels, got shape {sigmas.shape}")
    check_finite(name, sigmas)
    if is_concrete(sigmas):
        values = np.asarray(sigmas)
        if np.any(values < 0):
            raise ValueError(f"`{name}` must be >= 0, got min {values.min()}")
        steps = np.diff(values)
        if np.any(steps >= 0):
            i = int(np.argmax(steps >= 0))
            raise ValueError(
                f"`{name}` must be strictly decreasing (from sigma_max down), got {name}[{i}] = {values[i]} "
                f"and {name}[{i + 1}] = {values[i + 1]}"
            )
    return sigmas


def check_initial_state(model, x_T, dtype=None):
    """`x_T (..., D)` as a float array (of `dtype` if given), checked against `model.dim` when the model has one."""
    if not callable(getattr(model, "denoise", None)):
        raise TypeError(f"`model` must have a `denoise(x, sigma)` method, got {type(model).__name__}")
    x_T = jnp.asarray(x_T)
    dim = getattr(model, "dim", None)
    if x_T.ndim == 0 or (isinstance(dim, numbers.Integral) and x_T.shape[-1] != dim):
        raise ValueError(f"`x_T` must have shape (..., D) with D = {dim} (the model's dimension), got {x_T.shape}")
    if dtype is not None:
        if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
            raise ValueError("`dtype=float64` needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))")
        x_T = x_T.astype(dtype)
    elif not jnp.issubdtype(x_T.dtype, jnp.floating):
        x_T = x_T.astype(jnp.result_type(float))
    check_finite("x_T", x_T)
    return x_T
