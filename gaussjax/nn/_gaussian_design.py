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
back: `x_T = mu + sigma_max W^(-1) n` (`prior_sample`), not from `sigma_max n`.

The Gaussian's and the whitening's matrix products are analytic code: they run at the precision of
`gaussjax.matmul_precision` (HIGHEST by default), the network `F` at JAX's default.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaussjax._checks import check_choice, check_real
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._precision import matmul
from gaussjax.nn._precond import EDMPrecond, VEPrecond, VPPrecond, _Preconditioner, iDDPMPrecond

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

    @nn.nowrap
    def prior_sample(self, gaussian: dict, noise, sigma_max):
        """The sampler's start `x_T` in data coordinates for `noise (N, H, W, C) ~ N(0, I)`.

        `sigma_max * noise` without whitening; `mu + sigma_max W^(-1) noise` with it (the
        whitened prior mapped back; the mean is negligible at EDM's `sigma_max`, kept for exactness).
        """
        noise = jnp.asarray(noise, jnp.float32)
        if self.whiten is None:
            return sigma_max * noise
        flat = unwhiten_flat(gaussian, self.whiten, sigma_max * noise.reshape(noise.shape[0], -1))
        return flat.reshape(noise.shape)


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
