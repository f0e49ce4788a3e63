"""Local models by name (`'ls3'`, `'els5'`, `'pspc4'`, `'locality'`): one spelling for probes and analysis commands.

    ls{k}       PatchMixture(images, k): Kamb & Ganguli's LS machine, k x k windows (k odd)
    els{k}      PatchMixture(images, k, equivariant=True): their ELS machine
    pspc{p}     PatchPosteriorMean(images, p, stride=max(1, p // 2)): Niedoba et al.'s PSPC-square
    locality    LocalDeltaMixture(images, gaussian): Lukoianov et al.'s data-derived locality,
                with the Gaussian fitted to the same images and the default threshold
"""

from __future__ import annotations

import re

import jax
import numpy as np

from gaussjax._errors import InputValueError
from gaussjax.scores.local_delta import LocalDeltaMixture
from gaussjax.scores.patch import PatchMixture
from gaussjax.scores.patch_posterior import PatchPosteriorMean

SPEC = re.compile(r"(ls|els|pspc)([0-9]+)|locality")  # whole string (fullmatch), ASCII digits only
SPEC_HELP = "ls{k}, els{k} (k odd), pspc{p} or locality"


def check_local_spec(spec: str) -> str:
    """`spec` if it names a local model (see the module docstring), else a ValueError naming it."""
    match = SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise InputValueError(f"unknown local model {spec!r}: expected {SPEC_HELP}")
    if match.group(1) in ("ls", "els") and int(match.group(2)) % 2 == 0:
        raise InputValueError(f"local model {spec!r}: the window size k must be odd (a window centred at each pixel)")
    if match.group(2) is not None and int(match.group(2)) == 0:
        raise InputValueError(f"local model {spec!r}: the size must be >= 1")
    return spec


def make_local_model(spec: str, images: np.ndarray, *, gaussian=None):
    """The local model `spec` of the training images `(N, H, W, C)`.

    Args:
        spec: see the module docstring.
        images: the training images.
        gaussian: the Gaussian fitted to `images` (needed by `locality`; fitted here if None).
    """
    match = SPEC.fullmatch(check_local_spec(spec))
    assert match is not None  # check_local_spec accepts only what SPEC matches
    kind, size = match.group(1), match.group(2)
    if kind == "ls":
        return PatchMixture(images, int(size))
    if kind == "els":
        return PatchMixture(images, int(size), equivariant=True)
    if kind == "pspc":
        return PatchPosteriorMean(images, int(size), max(1, int(size) // 2))
    if gaussian is None:
        from gaussjax.fit import fit_gaussian

        # a jax.Array (perhaps spanning processes) is reshaped where it lies, other arrays on the host
        if isinstance(images, jax.Array):
            gaussian = fit_gaussian(images.reshape(images.shape[0], -1))
        else:
            gaussian = fit_gaussian(np.reshape(images, (len(images), -1)))
    return LocalDeltaMixture(images, gaussian)
