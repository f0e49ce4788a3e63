"""Benchmark the sample-quality statistics: FID's Frechet distance, KID and precision/recall.

    python bench/quality.py            # D = 2048 (Inception pool features); a few minutes on 2 cores
    python bench/quality.py --quick    # smaller shapes, for a smoke run

Prints median times measured in alternation in this run (see `_timing.py`):

* `frechet_distance` on D = 2048 statistics of 4096 random features each, against
  pytorch-fid's route (`scipy.linalg.sqrtm` of the non-symmetric product), with the
  ratio and the two values; then the accuracy of both on ill-conditioned statistics
  (a rank-64 structure over two decades plus a noise floor, condition number ~1e8)
  against the nuclear norm of the centred samples' cross product (float64 SVD), and
  the distance of the statistics to themselves (0 exactly);
* `kernel_inception_distance` (JAX, float32) on 10k x 2048 features, against the
  StyleGAN2-ADA / clean-fid loop written in float64 NumPy, over the same number of
  subsets of 1000 (fewer than the default 100, to keep the run short: the time is
  linear in `num_subsets`);
* `precision_recall` (JAX, float32, k = 3) on Nr = Nf = 5k x 2048 features (timed
  alone: the brute-force alternative does not fit in memory at 10k).

On a shared machine whose cores are oversubscribed, run it with
`OPENBLAS_NUM_THREADS=1`: multithreaded OpenBLAS LAPACK (Cholesky, `eigvalsh`,
`sqrtm`'s Schur form) then spins and slows down by 10-100x, for both contenders.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import time_alternating  # noqa: E402

from gaussjax.quality._kid import kernel_inception_distance  # noqa: E402
from gaussjax.quality._precision_recall import precision_recall  # noqa: E402
from gaussjax.quality._stats import FeatureStats, frechet_distance  # noqa: E402


def pytorch_fid(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's `calculate_frechet_distance` (v0.3), verbatim in substance."""
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def numpy_kid(features_a, features_b, num_subsets, subset_size, seed=0):
    """StyleGAN2-ADA's `compute_kid` loop (clean-fid's is the same), in float64 NumPy."""
    rng = np.random.default_rng(seed)
    n = features_a.shape[1]
    m = min(subset_size, features_a.shape[0], features_b.shape[0])
    t = 0.0
    for _ in range(num_subsets):
        x = features_b[rng.choice(features_b.shape[0], m, replace=False)]
        y = features_a[rng.choice(features_a.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return t / num_subsets / m


def inception_like(rng, n, dim, rank=None):
    """Nonnegative correlated features (ReLU of a random linear map), float32, like Inception pool features."""
    rank = rank or dim
    mixing = rng.normal(size=(rank, dim)).astype(np.float32) / np.sqrt(rank)
    return np.maximum(rng.normal(size=(n, rank)).astype(np.float32) @ mixing + 0.3, 0)


def ill_conditioned(rng, n, dim, rank=64, noise=0.05):
    """A rank-`rank` structure over two decades of scale plus an isotropic noise floor."""
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]
    return (rng.normal(size=(n, rank)) * np.logspace(0, 2, rank)) @ basis.T + noise * rng.normal(size=(n, dim))


def fd_from_samples(Xa, Xb):
    """The FD from the samples: tr((A B)^1/2) is the nuclear norm of `Xa_c Xb_c^T / sqrt((Na-1)(Nb-1))`."""
    ca, cb = Xa - Xa.mean(axis=0), Xb - Xb.mean(axis=0)
    trace_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((len(Xa) - 1) * (len(Xb) - 1))
    diff = Xa.mean(axis=0) - Xb.mean(axis=0)
    return diff @ diff + np.sum(ca * ca) / (len(Xa) - 1) + np.sum(cb * cb) / (len(Xb) - 1) - 2 * trace_sqrt


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    dim = 256 if args.quick else 2048
    fd_samples = 2 * dim
    kid_rows, kid_subsets = (2000, 5) if args.quick else (10_000, 10)
    pr_rows = 1000 if args.quick else 5000
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")

    # Frechet distance
    a = FeatureStats.from_features(inception_like(rng, fd_samples, dim))
    b = FeatureStats.from_features(inception_like(rng, fd_samples, dim) * 1.1)
    ours, theirs = frechet_distance(a, b), pytorch_fid(a.mean, a.cov, b.mean, b.cov)
    times = time_alternating(
        {"frechet_distance": lambda: frechet_distance(a, b),
         "pytorch-fid sqrtm": lambda: pytorch_fid(a.mean, a.cov, b.mean, b.cov)},
        repeats=3,
    )
    print(f"\nFrechet distance, D = {dim}, statistics of {fd_samples} features each")
    print(f"  frechet_distance   {times['frechet_distance']:8.3f} s   FD = {ours:.10g}")
    print(f"  pytorch-fid sqrtm  {times['pytorch-fid sqrtm']:8.3f} s   FD = {theirs:.10g}"
          f"   (relative difference {abs(ours - theirs) / ours:.1e})")
    print(f"  speed-up: {times['pytorch-fid sqrtm'] / times['frechet_distance']:.1f}x")
    Xa, Xb = ill_conditioned(rng, fd_samples, dim), 1.1 * ill_conditioned(rng, fd_samples, dim)
    a, b = FeatureStats.from_features(Xa), FeatureStats.from_features(Xb)
    exact = fd_from_samples(Xa, Xb)
    print(f"\nill-conditioned statistics (condition number {np.linalg.cond(a.cov):.1e}), exact FD = {exact:.10g}")
    for name, fd in (("frechet_distance", frechet_distance), ("pytorch-fid sqrtm", lambda a, b: pytorch_fid(
            a.mean, a.cov, b.mean, b.cov))):
        print(f"  {name:18s} relative error {abs(fd(a, b) - exact) / exact:.1e}, "
              f"FD(a, a) / tr(A) = {fd(a, a) / np.trace(a.cov):.1e}")

    # KID
    real = inception_like(rng, kid_rows, dim)
    fake = inception_like(rng, kid_rows, dim) * 1.05
    key = jax.random.key(0)
    times = time_alternating(
        {"kernel_inception_distance": lambda: kernel_inception_distance(real, fake, key=key, num_subsets=kid_subsets),
         "NumPy float64 loop": lambda: numpy_kid(real, fake, kid_subsets, 1000)},
        repeats=3,
    )
    ours = kernel_inception_distance(real, fake, key=key, num_subsets=kid_subsets).mean
    theirs = numpy_kid(real, fake, kid_subsets, 1000)
    print(f"\nKID, {kid_rows} x {dim} features each, {kid_subsets} subsets of 1000 (different random subsets)")
    print(f"  kernel_inception_distance (float32)  {times['kernel_inception_distance']:8.3f} s   KID = {ours:.6g}")
    print(f"  NumPy float64 loop                   {times['NumPy float64 loop']:8.3f} s   KID = {theirs:.6g}")
    print(f"  speed-up: {times['NumPy float64 loop'] / times['kernel_inception_distance']:.1f}x")

    # precision / recall
    real = inception_like(rng, pr_rows, dim)
    fake = inception_like(rng, pr_rows, dim) * 1.05
    times = time_alternating({"precision_recall": lambda: precision_recall(real, fake, k=3)}, repeats=2)
    result = precision_recall(real, fake, k=3)
    print(f"\nprecision_recall, k = 3, {pr_rows} x {dim} features each (float32)")
    print(f"  precision_recall  {times['precision_recall']:8.3f} s   {result}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
