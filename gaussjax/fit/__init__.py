"""Fitting analytic score models to data: Gaussian moments, k-means and Gaussian mixtures.

- `fit_gaussian`: the Gaussian with the data's mean and covariance (paper Eq. 30-34),
  from an array or a stream of chunks.
- `kmeans`: k-means++ seeded Lloyd or mini-batch k-means, jitted.
- `fit_gmm`: one Gaussian per k-means cluster or per class (paper App. A.5, Eq. 41).
- `fit_references`: the named reference models (isotropic, Gaussian, GMMs, delta, local)
  a network is compared with, fitted one way for every figure and probe.
- `fit_patch_size`: the window size per sigma of a local model that best predicts a
  network's denoiser (a `PatchSizeSchedule`).
"""

from gaussjax.fit._gmm import fit_gmm
from gaussjax.fit._kmeans import kmeans
from gaussjax.fit._moments import fit_gaussian, moments
from gaussjax.fit._patch_size import PatchSizeSchedule, fit_patch_size
from gaussjax.fit._references import check_reference_name, fit_references

__all__ = [
    "PatchSizeSchedule",
    "check_reference_name",
    "fit_gaussian",
    "fit_gmm",
    "fit_patch_size",
    "fit_references",
    "kmeans",
    "moments",
]
