"""`fit_references`: the named analytic models a network is compared with, fitted one way everywhere."""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import numpy as np

from gaussjax._checks import check_data_matrix, check_key
from gaussjax._errors import InputValueError
from gaussjax.data._memory import device_view
from gaussjax.fit._gmm import fit_gmm
from gaussjax.fit._moments import fit_gaussian
from gaussjax.scores import DeltaMixture, Denoiser, Gaussian, Isotropic
from gaussjax.scores.local_spec import SPEC, SPEC_HELP, make_local_model

GMM = re.compile(r"gmm([1-9][0-9]*)")  # 'gmm{K}', the k-means mixture of K components
NAMES_HELP = f"isotropic, gaussian, gmm{{K}}, gmm-class, delta, {SPEC_HELP}"


def reference_components(name: str) -> int | None:
    """K of a `'gmm{K}'` reference name, None for any other name."""
    match = GMM.fullmatch(name)
    return None if match is None else int(match.group(1))


def check_reference_name(name: str) -> str:
    """`name` if it names a reference model of `fit_references`, else an `InputValueError` listing the names."""
    known = name in ("isotropic", "gaussian", "gmm-class", "delta") or GMM.fullmatch(name) or SPEC.fullmatch(name)
    if not isinstance(name, str) or not known:
        raise InputValueError(f"unknown reference model {name!r}; reference models are {NAMES_HELP}")
    return name


def fit_references(
    data, names: Sequence[str], *, key=None, labels=None, image_shape: tuple[int, int, int] | None = None,
    rank: int | None = None, gaussian: Gaussian | None = None,
) -> dict[str, Denoiser]:
    """The reference models `names`, fitted to the training set `data (N, D)`, as `{name: model}` in that order.

    One recipe for every figure and probe, so that a name denotes the same model wherever a
    training set is analysed (given the same `key` and `rank`; with the default key the models are a
    function of the data alone, which is how the training probes and `python -m analysis` fit them):

    - `'isotropic'`: `Isotropic(mean)` (paper Eq. 29);
    - `'gaussian'`: `fit_gaussian(data)` (Eqs. 12-13, 30-34);
    - `'gmm{K}'`: `fit_gmm(data, K, rank=rank, key=jax.random.fold_in(key, K))`, k-means clusters (Eq. 41);
    - `'gmm-class'`: one component per class of `labels` (Eq. 41), of rank `rank`;
    - `'delta'`: `DeltaMixture(data)`, the training set's exact score (Eqs. 9-11);
    - local models `'ls{k}'`, `'els{k}'`, `'pspc{p}'`, `'locality'` (`gaussjax.scores.make_local_model`) on the
      images `data.reshape(N, *image_shape)`, built on the `'gaussian'` fit.

    Args:
        data: the training set `(N, D)`, float, finite.
        names: the models wanted (repeats are fitted once).
        key: PRNG key of the k-means clusterings (default `jax.random.key(0)`).
        labels: `(N,)` integer class labels, needed for `'gmm-class'`.
        image_shape: `(H, W, C)` with `H W C = D`, needed for the local models.
        rank: covariance rank of each mixture component (None: full).
        gaussian: the `'gaussian'` fit of `data` if the caller has it (e.g. from a cache): used for `'gaussian'`
            and the local models instead of fitting it again.

    Raises:
        InputValueError: an unknown name (the message lists the names), `'gmm{K}'` with `K > N`,
            `'gmm-class'` without `labels`, or a local model without `image_shape`.
    """
    flat = np.asarray(check_data_matrix("data", data, host=True))
    key = jax.random.key(0) if key is None else check_key(key)
    names = list(dict.fromkeys(check_reference_name(name) for name in names))
    if "gmm-class" in names and labels is None:
        raise InputValueError("`names` asks for 'gmm-class', which needs `labels`")
    local = [name for name in names if SPEC.fullmatch(name)]
    if local and image_shape is None:
        raise InputValueError(f"`names` asks for local models ({', '.join(local)}), which need `image_shape`")
    models: dict[str, Denoiser] = {}
    if gaussian is None and ("gaussian" in names or local):
        gaussian = fit_gaussian(flat)
    for name in names:
        components = reference_components(name)
        if name == "isotropic":
            models[name] = Isotropic(flat.mean(axis=0))
        elif name == "gaussian":
            assert gaussian is not None  # fitted above when "gaussian" is named
            models[name] = gaussian
        elif components is not None:
            models[name] = fit_gmm(flat, components, rank=rank, key=jax.random.fold_in(key, components))
        elif name == "gmm-class":
            labels = np.asarray(labels)
            models[name] = fit_gmm(flat, len(np.unique(labels)), rank=rank, labels=labels)
        elif name == "delta":
            models[name] = DeltaMixture(device_view(flat))  # a read-only `flat` (a Dataset's) enters JAX uncopied
        else:
            assert image_shape is not None  # checked above
            models[name] = make_local_model(name, flat.reshape(len(flat), *image_shape), gaussian=gaussian)
    return models
