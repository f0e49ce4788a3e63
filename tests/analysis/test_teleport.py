"""`python -m analysis teleport` (Fig. 14) on the tiny run.

NFE counts, the same-x_T baseline, FD from its own features.
"""

import contextlib
import io

import jax
import numpy as np
import pytest
from frechet import numpy_fd

import gaussjax as gj
from analysis import teleport as T
from analysis.__main__ import main
from analysis.output import read_csv
from analysis.report import report_commands
from gaussjax.data import load_dataset

STEPS, SAMPLES = 2, 20  # SAMPLES > the feature net's 16 features: full-rank covariances


@pytest.fixture(scope="module")
def ran(tiny_run, tmp_path_factory):
    from gaussjax.quality import save_feature_net, train_feature_net

    out = tmp_path_factory.mktemp("teleport")
    # a small, briefly trained feature net where the command caches its own: it must be reused (saves the training)
    net = train_feature_net(load_dataset("digits"), jax.random.key(0), steps=2, widths=(8,), num_features=16,
                            progress=False)
    save_feature_net(net, out / "feature_net")
    argv = ["teleport", "--run", str(tiny_run), "--out", str(out), "--num-steps", str(STEPS),
            "--num-samples", str(SAMPLES), "--num-queries", "4"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def swept():
    """`sweep` for every sampler with an analytic "network" (compiles fast) and pixel features."""
    data = load_dataset("digits")
    flat = np.asarray(data.flat)
    gaussian, network = gj.fit_gaussian(flat), gj.DeltaMixture(flat[::40])
    sigmas = gj.karras_sigmas(4)
    x_T, x_T2 = (80.0 * jax.random.normal(jax.random.key(i), (10, 64)) for i in (1, 2))
    projection = np.random.default_rng(0).normal(size=(64, 6))  # 6-D "features": full rank from 10 samples

    def features(x):
        return np.float64(x) @ projection

    quality = T.Quality(features(load_dataset("digits", split="test").flat[:60]), jax.random.key(0))
    setup = T.SweepSetup(network=network, gaussian=gaussian, x_T=x_T, x_T2=x_T2, sigmas=sigmas, quality=quality,
                         features=features, auto_skip=0)
    results = {}
    for name in T.SAMPLERS:
        swept = T.sweep(name, setup)
        results[name] = swept.rows, swept.floor, swept.features
    return results, network, gaussian, x_T, sigmas, features


@pytest.mark.slow
def test_sweep_nfe_and_same_noise_baseline(swept):
    results, network, gaussian, x_T, sigmas, features = swept
    N = len(sigmas) - 1
    for name, (rows, floor, saved) in results.items():
        assert [r["n_skip"] for r in rows] == list(range(len(rows))) and len(rows) >= 1
        for row in rows:
            k = row["n_skip"]
            assert row["nfe"] == (2 * (N - k) - 1 if name == "heun" else N - k)
            assert row["sigma_skip"] == pytest.approx(float(sigmas[k]))
            assert row["within_floor"] == (row["fd"] <= floor["fd_full"] + floor["floor"])
        assert rows[0]["mse_to_full"] == 0.0 and floor["nfe"] == rows[0]["nfe"]
        # the rows are the library's hybrid sampler from the same x_T: recompute one
        if len(rows) > 1:
            full = np.float64(gj.hybrid_sampler(network, gaussian, x_T, sigmas, 0, sampler=T.SAMPLERS[name]).x)
            x = np.float64(gj.hybrid_sampler(network, gaussian, x_T, sigmas, 1, sampler=T.SAMPLERS[name]).x)
            np.testing.assert_allclose(rows[1]["mse_to_full"], np.mean((x - full) ** 2), rtol=1e-6)
            np.testing.assert_allclose(saved[f"{name}_1"], features(x), rtol=1e-4, atol=1e-4)
        # the floor: the FD between the full sampler's two sample sets
        np.testing.assert_allclose(floor["floor"], numpy_fd(saved[f"{name}_0"], saved[f"{name}_second"]), rtol=1e-5)


@pytest.mark.slow
def test_table_columns_and_heun_nfe(ran):
    out, _ = ran
    rows = read_csv(out / "teleport.csv")
    assert list(rows[0]) == list(T.columns("FD")) and "fd" in rows[0] and "fid" not in rows[0]
    assert [r["sampler"] for r in rows] == ["heun"] * len(rows) and len(rows) == STEPS
    for row in rows:
        k = int(row["n_skip"])
        assert int(row["nfe"]) == 2 * (STEPS - k) - 1
    assert float(rows[0]["mse_to_full"]) == 0.0 and float(rows[0]["sigma_skip"]) == pytest.approx(80.0)
    assert float(rows[1]["mse_to_full"]) > 0


@pytest.mark.slow
def test_fd_and_floor_recomputed_from_saved_features(ran):
    out, _ = ran
    saved = np.load(out / "teleport_features.npz")
    real = saved["real"]
    assert real.shape[0] == 355  # the held-out digits
    floors = {r["sampler"]: r for r in read_csv(out / "teleport_floor.csv")}
    for row in read_csv(out / "teleport.csv"):
        fake = saved[f"{row['sampler']}_{row['n_skip']}"]
        assert fake.shape[0] == SAMPLES
        np.testing.assert_allclose(float(row["fd"]), numpy_fd(real, fake), rtol=1e-5, atol=1e-6)
        floor = floors[row["sampler"]]
        assert (row["within_floor"] == "True") == (float(row["fd"]) <= float(floor["fd_full"]) + float(floor["floor"]))
        assert 0 <= float(row["precision"]) <= 1 and 0 <= float(row["recall"]) <= 1
    for name, floor in floors.items():
        np.testing.assert_allclose(float(floor["floor"]), numpy_fd(saved[f"{name}_0"], saved[f"{name}_second"]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_summary_lines(ran):
    out, printed = ran
    lines = printed.splitlines()
    assert "FID" not in printed and "cached" in lines[0] and "held-out accuracy" in lines[0]
    assert "against digits/test (355 images)" in lines[0]
    auto = read_csv(out / "teleport_auto.csv")
    assert len(auto) == STEPS and list(auto[0]) == list(T.AUTO_COLUMNS)
    n_skip = max(int(r["step"]) for r in auto if r["teleported"] == "True")
    assert f"auto choice (tolerance 0.01): n_skip={n_skip}" in printed
    for name in ["heun"]:
        assert any(line.startswith(f"{name}: saves ") and "NFE within the noise floor" in line for line in lines)
        assert any(line.startswith(f"  {name} auto: n_skip={n_skip}") for line in lines)
    assert (out / "teleport.png").stat().st_size > 0


def test_within_floor_skip_is_contiguous():
    rows = [{"n_skip": k, "within_floor": w} for k, w in enumerate([True, True, False, True])]
    assert T.within_floor_skip(rows) == 1


def test_left_out_of_the_report_and_bad_options(tiny_run, tmp_path, capsys):
    assert "teleport" not in {c.name for c in report_commands()}
    assert main(["teleport", "--run", str(tiny_run), "--out", str(tmp_path), "--num-steps", "1"]) == 2
    assert "`--num-steps` must be >= 2" in capsys.readouterr().err
