"""The paper's Sec. 8 design options as preconditioners: a Gaussian bypass and whitened coordinates.

`gaussian_design(precond, bypass=..., whiten=...)` turns any of the four preconditioners into its
subclass (`GaussianEDMPrecond`, `GaussianVPPrecond`, `GaussianVEPrecond`, `GaussianiDDPMPrecond`)
that holds the training set's fitted Gaussian `N(mu, U diag(lambda) U^T)` in the variable
collection `'gaussian'` (`mean (D,)`, `eigvals (D,)`, `eigvecs (D, D)`, full rank, `D = H W C`,
pixels in row-major HWC order) next to the network's `'params'`:

    variables = {'params': {'net': ...}, 'gaussian': {'mean': ..., 'eigvals': ..., 'eigvecs': ...}}

so a checkpoint of the variables is self-contained. Only `'params'` is trained (the trainer
differentiates that collection alone, and the module reads the Gaussian through
`jax.lax.stop_gradient`). `init` stores a placeholder (`mean 0`, `eigvals 1`, `eigvecs I`);
`with_gaussian(variables, gaussian)` puts the fitted one in.

**Bypass** (`bypass=True`, paper Sec. 8 "Model design"): the network learns only the residual
of the Gaussian's exact denoiser,

    D(x, sigma) = D_gauss(x, sigma) + c_out(sigma) F(c_in x, c_noise),
    D_gauss(x, sigma) = mu + U diag(lambda / (lambda + sigma^2)) U^T (x - mu)   (paper Eq. 12),

computed as `D_gauss + (D_precond - c_skip x)` with `D_precond` the wrapped preconditioner's
output (so the residual is `c_out F` up to float32 rounding of `c_skip x`, and exactly 0 when
`F = 0`, e.g. at EDM's initialisation, where the last layer is zero: the network *is* the
Gaussian denoiser).

**Whitening** (`whiten=eps`, Sec. 8 "Training distribution"): with the floor
`eps_abs = eps * max(lambda)` (`eps > 0`, relative to the largest eigenvalue; it regularises
the directions of small or zero variance) the whitening map and its inverse are

    W = (Sigma + eps_abs I)^(-1/2) = U diag((lambda + eps_abs)^(-1/2)) U^T   (symmetric, "ZCA"),
    z = W (x - mu),   x = mu + W^(-1) z.

Whitened training data `z` has mean 0 and covariance `U diag(lambda / (lambda + eps_abs)) U^T`
(about `I` above the floor). The network is trained in `z` coordinates (`coordinates='whitened'`:
the call takes and returns `z`, with isotropic noise `z + sigma n`; with `bypass` the Gaussian
there is `N(0, U diag(lambda / (lambda + eps_abs)) U^T)`). In data coordinates (the default
`coordinates='data'`, what `NeuralDenoiser`, samplers, probes and analysis see) the call is
mapped back:

    D(x, sigma) = mu + W^(-1) D_z(W (x - mu), sigma).

*What this means:* noise isotropic in whitened space, `z = z0 + sigma n`, is
`x = x0 + sigma W^(-1) n` in data space, of covariance `sigma^2 W^(-2) = sigma^2 (Sigma + eps_abs I)`.
So the mapped-back `D(x, sigma)` is the denoiser (posterior mean `E[x0 | x]`) for that
*anisotropic* noise, not for `N(0, sigma^2 I)`; `sigma` is a noise level in whitened units. For
the Gaussian data `N(mu, Sigma)` the exact mapped-back denoiser is

    D(x, sigma) = mu + U diag(lambda / (lambda + sigma^2 (lambda + eps_abs))) U^T (x - mu).

The probability-flow ODE `dx/dsigma = (x - D(x, sigma)) / sigma` in data coordinates is the
whitened one mapped by `x = mu + W^(-1) z` (the map is affine), so EDM's samplers give the
whitened model's samples mapped back, *provided* they start from the whitened prior mapped
back: `x_T = mu + sigma_max W^(-1) n`, not from `sigma_max n`. `sampling_start` gives a network's
start, in either coordinates and with a warm start (paper Sec. 8 "Noise schedule": the Gaussian
carries the states down to the level training stopped at).

The Gaussian's and the whitening's matrix products are analytic code: they run at the precision of
`gaussjax.matmul_precision` (HIGHEST by default), the network `F` at JAX's default.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._checks import check_choice, check_real
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._precision import matmul
from gaussjax.nn._precond import EDMPrecond, VEPrecond, VPPrecond, _Preconditioner, iDDPMPrecond
from gaussjax.scores.gaussian import Gaussian
from gaussjax.solution import gaussian_trajectory

COORDINATES = ("data", "whitened")
COLLECTION = "gaussian"  # the variable collection holding the fitted Gaussian


def whitening_floor(eigvals, whiten: float):
    """`eps_abs = whiten * max(eigvals)`: the absolute eigenvalue floor of a relative `whiten > 0`."""
    return whiten * jnp.max(eigvals)


def _lead(vector, x):
    """`vector (D,)` with leading unit axes to broadcast against `x (..., D)` (explicit rank promotion)."""
    return vector.reshape((1,) * (x.ndim - 1) + vector.shape)


def whiten_flat(gaussian: dict, whiten: float, x):
    """`z = W (x - mu)`, `W = U diag((lambda + eps_abs)^(-1/2)) U^T`, for flat `x (..., D)` (float32)."""
    mean, eigvals, eigvecs = (jax.lax.stop_gradient(gaussian[k]) for k in ("mean", "eigvals", "eigvecs"))
    scale = jax.lax.rsqrt(eigvals + whitening_floor(eigvals, whiten))
    return matmul(matmul(x - _lead(mean, x), eigvecs) * _lead(scale, x), eigvecs.T)


def unwhiten_flat(gaussian: dict, whiten: float, z):
    """`x = mu + W^(-1) z`, the inverse of `whiten_flat`, for flat `z (..., D)`."""
    mean, eigvals, eigvecs = (jax.lax.stop_gradient(gaussian[k]) for k in ("mean", "eigvals", "eigvecs"))
    scale = jnp.sqrt(eigvals + whitening_floor(eigvals, whiten))
    return _lead(mean, z) + matmul(matmul(z, eigvecs) * _lead(scale, z), eigvecs.T)


def _gaussian_denoise(mean, eigvals, eigvecs, x, sigma):
    """Paper Eq. 12: `mu + U diag(lambda / (lambda + sigma^2)) U^T (x - mu)`, `x (N, D)`, `sigma (N,)`."""
    shrink = eigvals[None, :] / (eigvals[None, :] + jnp.square(sigma)[:, None])
    return mean[None, :] + matmul(shrink * matmul(x - mean[None, :], eigvecs), eigvecs.T)


class _GaussianDesign(_Preconditioner):
    """A preconditioner with a fixed Gaussian bypass and/or whitened coordinates (module docstring).

    Fields (besides the wrapped preconditioner's): `bypass`, `whiten` (the relative floor
    `eps > 0`, or None: no whitening) and `coordinates` (`'data'` or `'whitened'`: what the
    call takes and returns). Same call as the preconditioners: `x (N, H, W, C)`, `sigma` a
    scalar or `(N,)`; the output is shaped like `x`. The Gaussian's `D = H W C` is fixed by
    `init`'s `x`.
    """

    bypass: bool = False
    whiten: float | None = None
    coordinates: str = "data"

    def _check_arguments(self):
        super()._check_arguments()
        if not isinstance(self.bypass, bool):
            raise InputTypeError(f"`bypass` must be a bool, got {type(self.bypass).__name__}")
        if self.whiten is not None:
            check_real("whiten", self.whiten, minimum=0, strict=True)
        check_choice("coordinates", self.coordinates, COORDINATES)

    @nn.compact
    def __call__(self, x, sigma, class_labels=None, augment_labels=None, *, train: bool = False):
        if x.ndim != 4:
            raise InputValueError(f"`x` must have shape (N, H, W, C), got {x.shape}")
        n, dim, dtype = x.shape[0], int(np.prod(x.shape[1:])), x.dtype
        gaussian = {
            "mean": self.variable(COLLECTION, "mean", jnp.zeros, (dim,), jnp.float32).value,
            "eigvals": self.variable(COLLECTION, "eigvals", jnp.ones, (dim,), jnp.float32).value,
            "eigvecs": self.variable(COLLECTION, "eigvecs", jnp.eye, dim, dtype=jnp.float32).value,
        }
        gaussian = {k: jax.lax.stop_gradient(jnp.asarray(v, jnp.float32)) for k, v in gaussian.items()}
        flat = x.astype(jnp.float32).reshape(n, dim)
        if self.whiten is not None and self.coordinates == "data":
            flat = whiten_flat(gaussian, self.whiten, flat)
        out = super().__call__(flat.reshape(x.shape), sigma, class_labels, augment_labels, train=train)
        out = out.astype(jnp.float32).reshape(n, dim)
        if self.bypass:
            sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (n,))
            c_skip = self.scalings(sigma)[0][:, None]
            mean, eigvals, eigvecs = gaussian["mean"], gaussian["eigvals"], gaussian["eigvecs"]
            if self.whiten is not None:  # the Gaussian in whitened coordinates
                mean = jnp.zeros_like(mean)
                eigvals = eigvals / (eigvals + whitening_floor(eigvals, self.whiten))
            out = _gaussian_denoise(mean, eigvals, eigvecs, flat, sigma) + (out - c_skip * flat)
        if self.whiten is not None and self.coordinates == "data":
            out = unwhiten_flat(gaussian, self.whiten, out)
        return out.reshape(x.shape).astype(dtype)

    @nn.nowrap
    def whiten_images(self, gaussian: dict, images):
        """`images (N, H, W, C)` in the coordinates the network is trained in: `W (x - mu)`, or as given.

        `gaussian` is the `'gaussian'` collection of the variables (float32 result).
        """
        if self.whiten is None:
            return images
        flat = images.astype(jnp.float32).reshape(images.shape[0], -1)
        return whiten_flat(gaussian, self.whiten, flat).reshape(images.shape)


class GaussianEDMPrecond(_GaussianDesign, EDMPrecond):
    """`EDMPrecond` with a Gaussian bypass and/or whitening (see `gaussian_design`)."""


class GaussianVPPrecond(_GaussianDesign, VPPrecond):
    """`VPPrecond` with a Gaussian bypass and/or whitening (see `gaussian_design`)."""


class GaussianVEPrecond(_GaussianDesign, VEPrecond):
    """`VEPrecond` with a Gaussian bypass and/or whitening (see `gaussian_design`)."""


class GaussianiDDPMPrecond(_GaussianDesign, iDDPMPrecond):
    """`iDDPMPrecond` with a Gaussian bypass and/or whitening (see `gaussian_design`)."""


_DESIGNS: dict[type, type[_GaussianDesign]] = {
    EDMPrecond: GaussianEDMPrecond, VPPrecond: GaussianVPPrecond, VEPrecond: GaussianVEPrecond,
    iDDPMPrecond: GaussianiDDPMPrecond,
}
GAUSSIAN_PRECONDITIONERS: tuple[type[_GaussianDesign], ...] = tuple(_DESIGNS.values())


def gaussian_design(precond, *, bypass: bool = False, whiten: float | None = None):
    """`precond` with the paper's Sec. 8 options: a Gaussian bypass and/or whitened training coordinates.

    Args:
        precond: an `EDMPrecond`, `VPPrecond`, `VEPrecond` or `iDDPMPrecond` (its fields are kept).
        bypass: `D = D_gauss + c_out F` (module docstring).
        whiten: the relative eigenvalue floor `eps > 0` of the whitening `W = (Sigma + eps max(lambda) I)^(-1/2)`,
            or None.

    Returns:
        The matching `Gaussian*Precond` (a subclass of `precond`'s class, so it is accepted wherever
        the preconditioner is); its variables hold a placeholder Gaussian until `with_gaussian`.

    Raises:
        InputTypeError: `precond` is not one of the four preconditioners, or `bypass` not a bool.
        InputValueError: `whiten` not a finite real > 0.
    """
    cls = _DESIGNS.get(type(precond))
    if cls is None:
        if isinstance(precond, GAUSSIAN_PRECONDITIONERS):
            return precond.clone(bypass=bypass, whiten=whiten)
        raise InputTypeError(f"`precond` must be an EDMPrecond, VPPrecond, VEPrecond or iDDPMPrecond, got "
                             f"{type(precond).__name__}")
    fields = {name: getattr(precond, name) for name in precond.__dataclass_fields__ if name not in ("parent", "name")}
    return cls(**fields, bypass=bypass, whiten=whiten)


def with_gaussian(variables, gaussian):
    """`variables` with the `'gaussian'` collection set to `gaussian` (a full-rank `gaussjax.scores.Gaussian`).

    The fitted Gaussian's `mean (D,)`, `eigvals (D,)` and `eigvecs (D, D)` must match the shapes `init`
    gave (full rank `r = D`); stored as float32. Returns a new dict; `variables` is not modified.

    Raises:
        InputValueError: `variables` has no `'gaussian'` collection, or the shapes differ.
    """
    if COLLECTION not in variables:
        raise InputValueError("`variables` has no 'gaussian' collection: initialise a `gaussian_design` module")
    new = {"mean": gaussian.mean, "eigvals": gaussian.eigvals, "eigvecs": gaussian.eigvecs}
    for key, value in new.items():
        expected = tuple(variables[COLLECTION][key].shape)
        if tuple(np.shape(value)) != expected:
            raise InputValueError(f"`gaussian.{key}` must have shape {expected} (full rank, D = H W C of the "
                                  f"network), got {tuple(np.shape(value))}")
    return dict(variables, **{COLLECTION: {k: jnp.asarray(v, jnp.float32) for k, v in new.items()}})


def warm_start_skip(sigmas, warm_start: float | None) -> int:
    """Steps of the sampler grid `sigmas (N + 1,)` that a network trained up to `warm_start` leaves to the Gaussian.

    The index of the first grid level at or below `warm_start`: 0 for None or a limit at or above
    `sigmas[0]`, at most `N - 1` (the network is queried only at levels it was trained on, and
    at least one step is sampled).
    """
    if warm_start is None:
        return 0
    check_real("warm_start", warm_start, minimum=0, strict=True)
    levels = np.asarray(sigmas, np.float64)
    at_or_below = np.flatnonzero(levels[:-1] <= warm_start)
    return int(at_or_below[0]) if len(at_or_below) else len(levels) - 2


class SamplingStart(NamedTuple):
    """Where a sampler starts (`sampling_start`): `x (M, D)` at `sigmas[0]`, the grid `sigmas (N + 1 - n_skip,)` left
    to the sampler, and `n_skip`, the grid steps the Gaussian solution replaced."""

    x: jax.Array
    sigmas: jax.Array
    n_skip: int


def sampling_start(denoiser, noise, sigmas, *, warm_start: float | None = None, gaussian=None) -> SamplingStart:
    """The start of a sampler for `denoiser` on the grid `sigmas`: the prior draw, teleported for a warm start.

    With `n_skip = warm_start_skip(sigmas, warm_start)` and `s_0 = sigmas[0]`, `s_k = sigmas[n_skip]`:

    - a plain network: `x_T = s_0 noise`, carried to `s_k` by the exact Gaussian PF-ODE solution
      (`gaussjax.gaussian_trajectory`, paper Eq. 15: analytical teleportation; identity for `n_skip = 0`);
    - a whitened `gaussian_design` network (`whiten` set): the same in whitened coordinates, where the
      prior is isotropic and the data Gaussian is `N(0, U diag(lambda / (lambda + eps_abs)) U^T)`,
      mapped back: `x = mu + W^(-1) z` (module docstring). The Gaussian is the network's own.

    Then any sampler on `start.sigmas` from `start.x` samples the network, e.g.
    `gj.heun_sampler(denoiser, start.x, start.sigmas)`. For a plain network this is exactly
    `gj.hybrid_sampler(denoiser, gaussian, s_0 noise, sigmas, n_skip)`.

    A host-side function (`n_skip` sets the grid length): call it outside `jax.jit`.

    Args:
        denoiser: a `NeuralDenoiser` (or any `Denoiser`; only a `gaussian_design` module is treated specially).
        noise: `(M, D)` standard normal draws, `D = H W C`.
        sigmas: the sampler's grid `(N + 1,)`, decreasing, `N >= 1` (e.g. `gj.karras_sigmas(18)`).
        warm_start: the largest noise level the network was trained on (`TrainConfig.warm_start`), or None.
        gaussian: the training data's `Gaussian` (`fit_gaussian`), for a warm start of a network that
            holds none (one without `bypass` or `whiten`); otherwise the network's own is used.

    Returns:
        `SamplingStart(x (M, D) float32, sigmas (N + 1 - n_skip,), n_skip)`.

    Raises:
        InputValueError: `noise` or `sigmas` mis-shaped (`noise`'s D not the network's), `warm_start`
            not > 0, or a warm start of a network without a Gaussian and no `gaussian` given.
    """
    noise = jnp.asarray(noise, jnp.float32)
    sigmas = jnp.asarray(sigmas, jnp.float32)
    if noise.ndim != 2:
        raise InputValueError(f"`noise` must have shape (M, D), got {noise.shape}")
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise InputValueError(f"`sigmas` must have shape (N + 1,) with N >= 1, got {sigmas.shape}")
    shape = getattr(denoiser, "image_shape", None)
    if shape is not None and noise.shape[1] != int(np.prod(shape)):
        raise InputValueError(f"`noise` must have shape (M, D) with D = H W C = {int(np.prod(shape))} of the network's "
                              f"images {tuple(shape)}, got {noise.shape}")
    n_skip = warm_start_skip(sigmas, warm_start)
    module = getattr(denoiser, "module", None)
    own = denoiser.params.get(COLLECTION) if isinstance(module, _GaussianDesign) else None
    whiten = module.whiten if isinstance(module, _GaussianDesign) else None
    x = sigmas[0] * noise
    if own is not None and whiten is not None:
        eigvals = own["eigvals"] / (own["eigvals"] + whitening_floor(own["eigvals"], whiten))
        if n_skip:
            whitened = Gaussian(jnp.zeros_like(own["mean"]), eigvals, own["eigvecs"])
            x = gaussian_trajectory(whitened, x, sigmas[0], sigmas[n_skip])
        x = unwhiten_flat(own, whiten, x)
    elif n_skip:
        if gaussian is None:
            if own is None:
                raise InputValueError(f"a warm start (`warm_start` {warm_start}) teleports with the data's Gaussian: "
                                      "pass `gaussian` (fit_gaussian of the training data)")
            gaussian = Gaussian(own["mean"], own["eigvals"], own["eigvecs"])
        x = gaussian_trajectory(gaussian, x, sigmas[0], sigmas[n_skip])
    return SamplingStart(x.astype(jnp.float32), sigmas[n_skip:], n_skip)
