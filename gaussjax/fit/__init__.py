"""Fitting analytic score models to data: Gaussian moments, k-means and Gaussian mixtures.

- `fit_gaussian`: the Gaussian with the data's mean and covariance (paper Eq. 30-34),
  from an array or a stream of chunks.
- `kmeans`: k-means++ seeded Lloyd or mini-batch k-means, jitted.
- `fit_gmm`: one Gaussian per k-means cluster or per class (paper App. A.5, Eq. 41).
"""

from gaussjax.fit._gmm import fit_gmm
from gaussjax.fit._kmeans import kmeans
from gaussjax.fit._moments import fit_gaussian, moments

__all__ = ["fit_gaussian", "fit_gmm", "kmeans", "moments"]
