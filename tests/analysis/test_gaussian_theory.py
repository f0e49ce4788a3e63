"""`python -m analysis gaussian-theory` (Fig. 3) against the paper's formulas written in NumPy."""

import numpy as np
import pytest

from analysis.__main__ import main
from analysis.output import read_csv
from gaussjax.data import load_dataset

SIGMA_T = 80.0


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("gaussian-theory")
    argv = ["gaussian-theory", "--dataset", "digits", "--out", str(out), "--num-sigmas", "40", "--num-eigvals", "4"]
    assert main(argv) == 0
    rows = read_csv(out / "gaussian_theory.csv")
    assert (out / "gaussian_theory.png").stat().st_size > 1000
    return rows


def _columns(rows, convention, *names):
    picked = [r for r in rows if r["convention"] == convention]
    return [np.array([float(r[n]) for r in picked]) for n in names]


def _top_eigvals(count):
    flat = load_dataset("digits").flat.astype(np.float64)
    centered = flat - flat.mean(axis=0)
    return np.linalg.eigvalsh(centered.T @ centered / len(flat))[::-1][:count]


def test_eigenvalues_are_the_training_covariance_spectrum(table):
    for convention in ("edm", "vp"):
        index, lam = _columns(table, convention, "eigval_index", "eigval")
        np.testing.assert_allclose(lam, _top_eigvals(4)[index.astype(int)], rtol=1e-5)


def test_edm_curves_equal_eq_15_16_23(table):
    sigma, lam, psi, xi, dxi, amp = _columns(table, "edm", "sigma", "eigval", "psi", "xi", "dxi_dsigma",
                                             "amplification")
    assert len(sigma) == 40 * 4
    np.testing.assert_allclose(np.unique(sigma), np.geomspace(1e-3, 1e2, 40), rtol=1e-12)
    np.testing.assert_allclose(psi, np.sqrt((sigma**2 + lam) / (SIGMA_T**2 + lam)), rtol=1e-5)
    np.testing.assert_allclose(xi, lam / np.sqrt((lam + sigma**2) * (lam + SIGMA_T**2)), rtol=1e-5)
    np.testing.assert_allclose(dxi, -lam * sigma / ((lam + sigma**2) ** 1.5 * np.sqrt(lam + SIGMA_T**2)), rtol=1e-4)
    np.testing.assert_allclose(amp, np.sqrt(lam / (sigma**2 + lam)), rtol=1e-5)
    assert all(r["t"] == "" and r["dxi_dt"] == "" for r in table if r["convention"] == "edm")


def test_vp_curves_equal_eq_18_20_23_on_the_ddpm_linear_schedule(table):
    t, alpha, sigma, edm_sigma, lam, psi, xi, dxi, dxi_dt, amp = _columns(
        table, "vp", "t", "alpha", "sigma", "edm_sigma", "eigval", "psi", "xi", "dxi_dsigma", "dxi_dt", "amplification")
    alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    a, s = np.sqrt(alphas_cumprod)[t.astype(int)], np.sqrt(1 - alphas_cumprod)[t.astype(int)]
    a_T, s_T = np.sqrt(alphas_cumprod[-1]), np.sqrt(1 - alphas_cumprod[-1])
    np.testing.assert_allclose(alpha, a, rtol=1e-12)
    np.testing.assert_allclose(sigma, s, rtol=1e-12)
    np.testing.assert_allclose(edm_sigma, s / a, rtol=1e-12)
    np.testing.assert_allclose(psi, np.sqrt((s**2 + lam * a**2) / (s_T**2 + lam * a_T**2)), rtol=1e-5)
    norm = np.sqrt(a_T**2 * lam + s_T**2)
    np.testing.assert_allclose(xi, a * lam / np.sqrt(a**2 * lam + s**2) / norm, rtol=1e-5)
    # d/d sigma of xi-bar along alpha = sqrt(1 - sigma^2), worked by hand: -lam sigma / (alpha g^(3/2) norm)
    expected = -lam * s / (a * (a**2 * lam + s**2) ** 1.5 * norm)
    np.testing.assert_allclose(dxi, expected, rtol=1e-4, atol=1e-6)
    sigma_grid = np.sqrt(1 - alphas_cumprod)
    np.testing.assert_allclose(dxi_dt, expected * np.gradient(sigma_grid)[t.astype(int)], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(amp, np.sqrt(lam / (s**2 + lam * a**2)), rtol=1e-5)


@pytest.mark.slow
def test_summary_reports_the_critical_sigma(tmp_path, capsys):
    assert main(["gaussian-theory", "--dataset", "digits", "--out", str(tmp_path), "--num-eigvals", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    lam = _top_eigvals(3)
    grid = np.geomspace(1e-3, 1e2, 200)
    for k in range(3):
        row = next(line.split() for line in lines if line.split()[:1] == [str(k)])
        assert float(row[1]) == pytest.approx(lam[k], rel=1e-3)
        assert float(row[2]) == pytest.approx(np.sqrt(lam[k] / 2), rel=1e-3)
        # the grid peak of |d xi / d sigma| is the grid point nearest sqrt(lam / 2) in log spacing
        nearest = grid[np.argmin(np.abs(np.log(grid) - np.log(np.sqrt(lam[k] / 2))))]
        assert float(row[3]) == pytest.approx(nearest, rel=0.06)


@pytest.mark.parametrize("extra, message", [
    (["--num-sigmas", "1"], "--num-sigmas"),
    (["--sigma-min", "10", "--sigma-max", "1"], "--sigma-min"),
    (["--num-eigvals", "65"], "--num-eigvals"),
    (["--sigma-T", "0"], "--sigma-T"),
])
def test_bad_options_are_named_errors(tmp_path, capsys, extra, message):
    assert main(["gaussian-theory", "--dataset", "digits", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_needs_a_dataset_or_run(tmp_path, capsys):
    assert main(["gaussian-theory", "--out", str(tmp_path)]) == 2
    assert "--dataset" in capsys.readouterr().err
