"""Preconditioning: the denoiser `D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)` (Karras et al. 2022, Table 1).

EDM's four parameterizations of the same network wrapper, `EDMPrecond`, `VPPrecond`,
`VEPrecond` and `iDDPMPrecond`, differ only in the scalings `(c_skip, c_out, c_in,
c_noise)`; each scaling is a pure function of `sigma` here (`edm_preconditioning`,
`vp_preconditioning`, `ve_preconditioning`, `iddpm_preconditioning`) and the modules
share one call (`_Preconditioner.__call__`), so they load NVlabs/edm's released
`edm-*.pkl` and `baseline-*.pkl` snapshots with the same outputs.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._checks import check_finite, check_nonnegative_real, is_concrete
from gaussjax._errors import InputTypeError, InputValueError

_NET_ATTRIBUTES = ("img_resolution", "in_channels", "out_channels", "label_dim")
COMPUTE_DTYPES = (None, "bfloat16", "float16")  # `compute_dtype` of the preconditioners (None: float32)
MAX_IDDPM_M = 100_000  # largest iDDPM table (`iddpm_u` runs M float32 steps in Python)


def _floating(sigma):
    sigma = jnp.asarray(sigma)
    return sigma if jnp.issubdtype(sigma.dtype, jnp.floating) else sigma.astype(jnp.result_type(float))


def edm_preconditioning(sigma, sigma_data: float = 0.5):
    """EDM's scalings `(c_skip, c_out, c_in, c_noise)` at noise level `sigma` (EDM Table 1, Eq. 7).

    `c_skip = sd^2 / (sigma^2 + sd^2)`, `c_out = sigma sd / sqrt(sigma^2 + sd^2)`,
    `c_in = 1 / sqrt(sigma^2 + sd^2)`, `c_noise = ln(sigma) / 4`, with `sd = sigma_data`
    the data standard deviation. They keep the network's input and training target at
    unit variance; as `sigma -> 0`, `c_skip -> 1` and `c_out -> 0`, so `D(x; sigma) -> x`.

    Args:
        sigma: noise level(s) > 0, any shape.
        sigma_data: standard deviation of the data.

    Returns:
        Four arrays shaped like `sigma`.
    """
    sigma = _floating(sigma)
    variance = jnp.square(sigma) + sigma_data**2
    c_skip = sigma_data**2 / variance
    c_out = sigma * sigma_data * jax.lax.rsqrt(variance)
    c_in = jax.lax.rsqrt(variance)
    c_noise = jnp.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


def vp_sigma_of_t(t, beta_d: float = 19.9, beta_min: float = 0.1):
    """The VP noise level at time `t`: `sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)` (EDM Table 1).

    Song et al. (2021)'s variance-preserving SDE with the linear schedule
    `beta(t) = beta_min + beta_d t`, `t in [epsilon_t, 1]`, expressed as a noise level.
    Shaped like `t`.
    """
    t = _floating(t)
    return jnp.sqrt(jnp.exp(0.5 * beta_d * jnp.square(t) + beta_min * t) - 1)


def vp_t_of_sigma(sigma, beta_d: float = 19.9, beta_min: float = 0.1):
    """The inverse of `vp_sigma_of_t`: `t = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d`.

    `ln(1 + sigma^2)` is evaluated as written (not `log1p`), as in EDM's code, so a
    network trained there sees the same `c_noise` in float32. Shaped like `sigma`.
    """
    sigma = _floating(sigma)
    return (jnp.sqrt(beta_min**2 + 2 * beta_d * jnp.log(1 + jnp.square(sigma))) - beta_min) / beta_d


def vp_preconditioning(sigma, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000):
    """The VP scalings `(c_skip, c_out, c_in, c_noise)` (EDM Table 1, "VP" column; Song et al. 2021).

    `c_skip = 1`, `c_out = -sigma`, `c_in = 1 / sqrt(sigma^2 + 1)`,
    `c_noise = (M - 1) t(sigma)` with `t(sigma)` of `vp_t_of_sigma`: `F` predicts the
    noise `-n / sigma` scaled by DDPM's discrete timestep `(M - 1) t`.

    Args:
        sigma: noise level(s) > 0, any shape.
        beta_d, beta_min: the schedule `beta(t) = beta_min + beta_d t`.
        M: the number of DDPM timesteps the network's noise labels are scaled to.

    Returns:
        Four arrays shaped like `sigma`.
    """
    sigma = _floating(sigma)
    c_in = jax.lax.rsqrt(jnp.square(sigma) + 1)
    return jnp.ones_like(sigma), -sigma, c_in, (M - 1) * vp_t_of_sigma(sigma, beta_d, beta_min)


def ve_preconditioning(sigma):
    """The VE scalings `(c_skip, c_out, c_in, c_noise)` (EDM Table 1, "VE" column; Song et al. 2021).

    `c_skip = 1`, `c_out = sigma`, `c_in = 1`, `c_noise = ln(sigma / 2)` (NCSN++'s
    noise embedding of `sigma / 2`). Four arrays shaped like `sigma` (> 0).
    """
    sigma = _floating(sigma)
    return jnp.ones_like(sigma), sigma, jnp.ones_like(sigma), jnp.log(0.5 * sigma)


@functools.lru_cache(maxsize=8)
def iddpm_u(C_1: float = 0.001, C_2: float = 0.008, M: int = 1000) -> np.ndarray:
    """iDDPM's noise levels `u_0 > u_1 > ... > u_M = 0`, `(M + 1,)` float32 (EDM Table 1, "iDDPM" column).

    `u_{j-1} = sqrt((u_j^2 + 1) / max(abar_{j-1} / abar_j, C_1) - 1)` from `u_M = 0`,
    `abar_j = sin^2(pi j / (2 M (C_2 + 1)))` (Nichol & Dhariwal 2021's cosine schedule).
    Computed in float32 in EDM's order of operations, as EDM's `iDDPMPrecond.u` buffer
    (float32 `sin` implementations differ in the last bit, so it agrees with a buffer
    computed by PyTorch to ~1e-5 relative, not bitwise). A read-only NumPy constant.
    """
    j = np.arange(M + 1, dtype=np.float32)
    abar = np.square(np.sin(np.float32(0.5 * np.pi) * j / np.float32(M) / np.float32(C_2 + 1)))
    ratio = np.maximum(abar[:-1] / abar[1:], np.float32(C_1))  # abar_{j-1} / abar_j, j = 1..M
    u = np.zeros(M + 1, np.float32)
    for k in range(M, 0, -1):
        u[k - 1] = np.sqrt((np.square(u[k]) + np.float32(1)) / ratio[k - 1] - np.float32(1))
    u.setflags(write=False)
    return u


def check_iddpm_u(u, C_1: float = 0.001, C_2: float = 0.008, M: int = 1000, rtol: float = 1e-4) -> None:
    """Raise a ValueError unless a loaded `u` buffer (e.g. from an EDM pickle) matches `iddpm_u(C_1, C_2, M)`.

    Entries must agree to `rtol` relative (EDM's own float32 table differs from ours
    by ~1e-5 in the last entries, where it is most sensitive to rounding).
    """
    u = np.asarray(u)
    if u.shape != (M + 1,):  # (before any conversion: `u` may be a view of a few bytes posing as many)
        raise InputValueError(f"`u` must have shape (M + 1,) = {(M + 1,)}, got {u.shape}")
    u = u.astype(np.float64)
    expected = iddpm_u(C_1, C_2, M).astype(np.float64)
    error = np.abs(u - expected) > rtol * np.abs(expected)
    if np.any(error | ~np.isfinite(u)):
        k = int(np.argmax(error | ~np.isfinite(u)))
        raise InputValueError(f"`u` differs from iDDPM's table for C_1={C_1}, C_2={C_2}, M={M} at index {k}: "
                              f"{u[k]} vs {expected[k]} (rtol {rtol})")


def _nearest_index(sigma, u):
    """The index of the entry of `u (K,)` nearest to each `sigma` (ties: the first), shaped like `sigma`."""
    u = jnp.asarray(u).reshape((1,) * sigma.ndim + (-1,))
    return jnp.argmin(jnp.abs(jnp.expand_dims(sigma, -1) - u), axis=-1)


def iddpm_preconditioning(sigma, u):
    """The iDDPM scalings `(c_skip, c_out, c_in, c_noise)` (EDM Table 1, "iDDPM" column).

    `c_skip = 1`, `c_out = -sigma`, `c_in = 1 / sqrt(sigma^2 + 1)`,
    `c_noise = M - 1 - j(sigma)` with `j` the index of the table entry `u_j` nearest to
    `sigma`: the network sees DDPM's integer timestep. `sigma` itself is not rounded
    (EDM's samplers round it first, with `iDDPMPrecond.round_sigma`).

    Args:
        sigma: noise level(s) > 0, any shape.
        u: the table `(M + 1,)` of `iddpm_u`.

    Returns:
        Four arrays shaped like `sigma`.
    """
    sigma = _floating(sigma)
    M = jnp.shape(u)[0] - 1
    c_noise = (M - 1 - _nearest_index(sigma, u)).astype(sigma.dtype)
    return jnp.ones_like(sigma), -sigma, jax.lax.rsqrt(jnp.square(sigma) + 1), c_noise


def _check_timesteps(M, maximum: int | None = None) -> None:
    """`M` (DDPM's number of timesteps) must be an integer-valued real >= 2 (and <= `maximum`)."""
    check_nonnegative_real("M", M)
    if int(M) != M or M < 2 or (maximum is not None and M > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise InputValueError(f"`M` must be an integer >= 2{bound}, got {M}")


def _check_net(net, out_per_in: int, owner: str):
    """`net` is a Flax module with EDM's network attributes, and `out_channels = out_per_in * in_channels`."""
    missing = [a for a in _NET_ATTRIBUTES if not hasattr(net, a)]
    if not isinstance(net, nn.Module) or missing:
        raise InputTypeError(f"`net` must be a flax Module with attributes {', '.join(_NET_ATTRIBUTES)} (a SongUNet or "
                             f"DhariwalUNet), got {type(net).__name__}")
    if net.out_channels != out_per_in * net.in_channels:
        expected = "net.in_channels" if out_per_in == 1 else f"{out_per_in} * net.in_channels"
        raise InputValueError(f"{owner} needs net.out_channels == {expected}, got {net.out_channels} and "
                              f"{net.in_channels}")


class _Preconditioner(nn.Module):
    """The shared call of the four preconditioners: `D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`.

    Subclasses give `scalings(sigma)`; `F`'s first `net.in_channels` output channels are
    used (iDDPM's network also outputs its learned variance). Computed in float32 and
    cast back to `x`'s dtype, like EDM without fp16; with `compute_dtype='bfloat16'` (or
    `'float16'`, EDM's `use_fp16`) the network `F` runs in that dtype: its input is cast,
    each layer casts its float32 parameters to the activations' dtype (so parameters,
    gradients and optimizer state stay float32: mixed precision), normalisation
    statistics stay float32, and `F`'s output is cast back to float32 before the
    skip connection. Unconditional nets ignore
    `class_labels`; conditional ones get zeros when none are given (EDM's default), and
    concrete labels must be finite.
    Parameters live under `params['params']['net']`.

    Call: `x (N, H, W, C)` images, `sigma` a scalar or `(N,)`, `class_labels (N,
    label_dim)` (or `(1, label_dim)`, broadcast), `augment_labels (N, augment_dim)`,
    `train` enables dropout (the `'dropout'` PRNG stream). Returns `D(x; sigma)`,
    `(N, H, W, C)`.
    """

    net: nn.Module  # F: SongUNet, DhariwalUNet, or any module with their call and attributes.
    compute_dtype: str | None = None  # F's activation dtype: None (float32), 'bfloat16' or 'float16'.

    out_per_in = 1  # net.out_channels / net.in_channels (not a field)

    def __post_init__(self):
        _check_net(self.net, self.out_per_in, type(self).__name__)
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise InputValueError(f"`compute_dtype` must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        self._check_arguments()
        super().__post_init__()

    def _check_arguments(self):
        """Validate the subclass's own fields (named errors)."""

    @nn.nowrap
    def scalings(self, sigma):
        """`(c_skip, c_out, c_in, c_noise)`, each shaped like `sigma`."""
        raise NotImplementedError

    @nn.nowrap
    def round_sigma(self, sigma):
        """The noise level the network is meant for nearest to `sigma` (the identity; iDDPM: its table)."""
        return jnp.asarray(sigma)

    @nn.compact
    def __call__(self, x, sigma, class_labels=None, augment_labels=None, *, train: bool = False):
        if x.ndim != 4:
            raise InputValueError(f"`x` must have shape (N, H, W, C), got {x.shape}")
        dtype, n = x.dtype, x.shape[0]
        x = x.astype(jnp.float32)
        sigma = jnp.asarray(sigma, jnp.float32)
        if sigma.ndim == 0:
            sigma = jnp.broadcast_to(sigma, (n,))
        elif sigma.shape != (n,):
            raise InputValueError(f"`sigma` must be a scalar or have shape (N,) = ({n},), got {sigma.shape}")
        label_dim = self.net.label_dim
        if label_dim:
            if class_labels is None:
                class_labels = jnp.zeros((n, label_dim), jnp.float32)
            elif is_concrete(class_labels):
                with np.errstate(over="ignore"):  # overflow to inf is refused
                    check_finite("class_labels", np.asarray(class_labels, np.float32))
            class_labels = jnp.asarray(class_labels, jnp.float32).reshape(-1, label_dim)
            if class_labels.shape[0] == 1:
                class_labels = jnp.broadcast_to(class_labels, (n, label_dim))
        else:
            class_labels = None

        c_skip, c_out, c_in, c_noise = (c[:, None, None, None] for c in self.scalings(sigma))
        net_in = c_in * x if self.compute_dtype is None else (c_in * x).astype(self.compute_dtype)
        F_x = self.net(net_in, c_noise[:, 0, 0, 0], class_labels, augment_labels, train=train)
        F_x = F_x[..., : self.net.in_channels].astype(jnp.float32)
        return (c_skip * x + c_out * F_x).astype(dtype)


class EDMPrecond(_Preconditioner):
    """EDM's denoiser around a network `F` (EDM Sec. 5, Table 1): scalings of `edm_preconditioning`.

    `sigma_min = 0`, `sigma_max = inf`: EDM's defaults (any noise level). Call and
    parameter layout as described in `_Preconditioner`.
    """

    sigma_data: float = 0.5  # Expected standard deviation of the training data (its square a normal float32).

    def _check_arguments(self):
        check_nonnegative_real("sigma_data", self.sigma_data)
        tiny, huge = np.sqrt(np.finfo(np.float32).smallest_normal), np.sqrt(np.finfo(np.float32).max)
        if not tiny <= self.sigma_data <= huge:
            raise InputValueError(f"`sigma_data` must be in [{tiny:.3g}, {huge:.3g}] (its square a normal float32 "
                                  f"number), got {self.sigma_data}")

    @nn.nowrap
    def scalings(self, sigma):
        return edm_preconditioning(sigma, self.sigma_data)

    @property
    def sigma_min(self) -> float:
        return 0.0

    @property
    def sigma_max(self) -> float:
        return float("inf")


class VPPrecond(_Preconditioner):
    """The variance-preserving denoiser (DDPM++ "VP", EDM Table 1): scalings of `vp_preconditioning`.

    `sigma_min = sigma(epsilon_t)`, `sigma_max = sigma(1)` of `vp_sigma_of_t`, evaluated
    in float32 as EDM does (so `sigma_min` is EDM's `2^-10`, not the exact `1.0e-3`).
    """

    beta_d: float = 19.9  # Extent of the noise level schedule.
    beta_min: float = 0.1  # Initial slope of the noise level schedule.
    M: int = 1000  # Original number of timesteps in the DDPM formulation.
    epsilon_t: float = 1e-5  # Minimum t-value used during training.

    def _check_arguments(self):
        if not check_nonnegative_real("beta_d", self.beta_d) > 0:
            raise InputValueError(f"`beta_d` must be > 0, got {self.beta_d}")
        check_nonnegative_real("beta_min", self.beta_min)
        _check_timesteps(self.M)
        if not 0 < check_nonnegative_real("epsilon_t", self.epsilon_t) < 1:
            raise InputValueError(f"`epsilon_t` must be in (0, 1), got {self.epsilon_t}")

    @nn.nowrap
    def scalings(self, sigma):
        return vp_preconditioning(sigma, self.beta_d, self.beta_min, self.M)

    @property
    def sigma_min(self) -> float:
        return float(vp_sigma_of_t(np.float32(self.epsilon_t), self.beta_d, self.beta_min))

    @property
    def sigma_max(self) -> float:
        return float(vp_sigma_of_t(np.float32(1), self.beta_d, self.beta_min))


class VEPrecond(_Preconditioner):
    """The variance-exploding denoiser (NCSN++ "VE", EDM Table 1): scalings of `ve_preconditioning`."""

    sigma_min: float = 0.02  # Minimum supported noise level.
    sigma_max: float = 100.0  # Maximum supported noise level.

    def _check_arguments(self):
        check_nonnegative_real("sigma_min", self.sigma_min)
        check_nonnegative_real("sigma_max", self.sigma_max)
        if not 0 < self.sigma_min < self.sigma_max:
            raise InputValueError(f"`sigma_min` and `sigma_max` must satisfy 0 < sigma_min < sigma_max, got "
                                  f"{self.sigma_min} and {self.sigma_max}")

    @nn.nowrap
    def scalings(self, sigma):
        return ve_preconditioning(sigma)


class iDDPMPrecond(_Preconditioner):
    """The improved-DDPM denoiser (ADM "iDDPM", EDM Table 1): scalings of `iddpm_preconditioning`.

    `net.out_channels` must be `2 * net.in_channels` (the learned variance, unused
    here). The noise levels are the table `u = iddpm_u(C_1, C_2, M)` (`M <= MAX_IDDPM_M`);
    `sigma_min = u_{M-1}`, `sigma_max = u_0`, and `round_sigma` maps `sigma` to the nearest entry.
    """

    C_1: float = 0.001  # Timestep adjustment at low noise levels.
    C_2: float = 0.008  # Timestep adjustment at high noise levels.
    M: int = 1000  # Original number of timesteps in the DDPM formulation.

    out_per_in = 2

    def _check_arguments(self):
        if not 0 < check_nonnegative_real("C_1", self.C_1) <= 1:
            raise InputValueError(f"`C_1` must be in (0, 1], got {self.C_1}")
        check_nonnegative_real("C_2", self.C_2)
        _check_timesteps(self.M, MAX_IDDPM_M)

    @property
    def u(self) -> np.ndarray:
        """The noise levels `(M + 1,)`, decreasing from `u_0` to `u_M = 0` (`iddpm_u`)."""
        return iddpm_u(self.C_1, self.C_2, int(self.M))

    @nn.nowrap
    def scalings(self, sigma):
        return iddpm_preconditioning(sigma, self.u)

    @nn.nowrap
    def round_sigma(self, sigma):
        sigma = _floating(sigma)
        return jnp.asarray(self.u)[_nearest_index(sigma, self.u)].astype(sigma.dtype)

    @property
    def sigma_min(self) -> float:
        return float(self.u[int(self.M) - 1])

    @property
    def sigma_max(self) -> float:
        return float(self.u[0])


PRECONDITIONERS = (EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond)
