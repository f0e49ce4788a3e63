"""`python -m analysis score-field`: projections against NumPy, the plane through the anchors, the cosine summary."""

import contextlib
import io
import re

import jax
import numpy as np
import pytest

import gaussjax as gj
from analysis.__main__ import main
from analysis.output import read_csv
from analysis.score_field import choose_anchors, plane_basis
from gaussjax.data import load_dataset
from gaussjax.runs import load_denoiser

SIGMAS = (0.2, 1.0)
SEED, GRID, COMPONENTS = 5, (5, 4), 3


@pytest.fixture(scope="module")
def field(tiny_run, tmp_path_factory):
    """One small run on both planes, with the network at every checkpoint: CSV rows, anchors, stdout."""
    out = tmp_path_factory.mktemp("score-field")
    argv = ["score-field", "--run", str(tiny_run), "--out", str(out), "--seed", str(SEED), "--grid", "5x4",
            "--sigmas", ",".join(map(str, SIGMAS)), "--gmm-components", str(COMPONENTS), "--all-checkpoints"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return read_csv(out / "score_field.csv"), read_csv(out / "score_field_anchors.csv"), stdout.getvalue(), out


@pytest.fixture(scope="module")
def train():
    return load_dataset("digits")


def numpy_basis(a, b, c):
    """Gram-Schmidt of (b - a, c - a), written out independently."""
    e1 = (b - a) / np.sqrt(np.sum((b - a) ** 2))
    r = (c - a) - np.dot(c - a, e1) * e1
    return e1, r / np.sqrt(np.sum(r**2))


def anchors_of(anchor_rows, classes):
    rows = [r for r in anchor_rows if r["classes"] == classes]
    assert [r["anchor"] for r in rows] == ["a", "b", "c"]
    return [int(r["index"]) for r in rows], np.array([(float(r["u"]), float(r["v"])) for r in rows])


@pytest.mark.parametrize("classes", ["same", "different"])
def test_anchors_deterministic_with_the_requested_classes(field, train, classes):
    _, anchor_rows, _, _ = field
    index, _ = anchors_of(anchor_rows, classes)
    np.testing.assert_array_equal(index, choose_anchors(train.labels, classes, SEED))
    labels = set(train.labels[index].tolist())
    assert len(set(index)) == 3 and len(labels) == (1 if classes == "same" else 3)
    assert [int(r["label"]) for r in anchor_rows if r["classes"] == classes] == train.labels[index].tolist()


@pytest.mark.parametrize("classes", ["same", "different"])
def test_basis_orthonormal_and_anchors_on_the_grid_plane(field, train, classes):
    rows, anchor_rows, _, _ = field
    flat = train.flat.astype(np.float64)
    index, anchor_uv = anchors_of(anchor_rows, classes)
    a, b, c = flat[index]
    basis, uv = plane_basis(a, b, c)
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(basis, np.stack(numpy_basis(a, b, c), axis=1), atol=1e-12)
    np.testing.assert_allclose(uv, anchor_uv, atol=1e-12)
    e1, e2 = numpy_basis(a, b, c)
    for (u, v), image in zip(anchor_uv, (a, b, c), strict=True):
        np.testing.assert_allclose(a + u * e1 + v * e2, image, atol=1e-9)  # each anchor is a point of the plane
    grid = np.array([(float(r["u"]), float(r["v"])) for r in rows
                     if r["classes"] == classes and r["model"] == "network" and float(r["sigma"]) == SIGMAS[0]])
    assert len(grid) == GRID[0] * GRID[1]
    assert len(np.unique(grid[:, 0])) == GRID[0] and len(np.unique(grid[:, 1])) == GRID[1]
    assert np.all(grid.min(axis=0) < anchor_uv.min(axis=0)) and np.all(grid.max(axis=0) > anchor_uv.max(axis=0))


def reference_models(run_dir, flat):
    return {
        "network": load_denoiser(run_dir),
        "network@0": load_denoiser(run_dir, step=0),
        "network@40": load_denoiser(run_dir, step=40),
        "gaussian": gj.fit_gaussian(flat),
        f"gmm{COMPONENTS}": gj.fit_gmm(flat, COMPONENTS, key=jax.random.fold_in(jax.random.key(0), COMPONENTS)),
        "delta": gj.DeltaMixture(flat),
    }


@pytest.mark.parametrize("classes", ["same", "different"])
@pytest.mark.slow
def test_projections_equal_numpy_projections_of_model_scores(field, train, tiny_run, classes):
    rows, anchor_rows, _, _ = field
    flat = train.flat.astype(np.float64)
    index, _ = anchors_of(anchor_rows, classes)
    e1, e2 = numpy_basis(*flat[index])
    assert {r["model"] for r in rows} == {"network", "network@0", "network@20", "network@40", "gaussian",
                                          f"gmm{COMPONENTS}", "delta"}
    for name, model in reference_models(tiny_run, train.flat).items():
        for sigma in SIGMAS:
            got = [r for r in rows if r["classes"] == classes and r["model"] == name and float(r["sigma"]) == sigma]
            u, v = (np.array([float(r[k]) for r in got]) for k in ("u", "v"))
            x = flat[index[0]] + u[:, None] * e1[None] + v[:, None] * e2[None]
            score = np.asarray(model.score(x.astype(np.float32), sigma), np.float64)
            expected = np.stack([score @ e1, score @ e2], axis=1)
            projected = np.array([(float(r["score_u"]), float(r["score_v"])) for r in got])
            scale = np.max(np.abs(expected))
            np.testing.assert_allclose(projected, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=f"{name} {sigma}")


def test_summary_is_the_mean_cosine_with_the_network(field):
    rows, _, stdout, out = field

    def vectors(classes, sigma, model):
        return np.array([(float(r["score_u"]), float(r["score_v"])) for r in rows
                         if r["classes"] == classes and float(r["sigma"]) == sigma and r["model"] == model])

    lines = [line for line in stdout.splitlines() if line.startswith("classes=")]
    assert len(lines) == 2 * len(SIGMAS)
    for line in lines:
        classes, sigma, rest = re.match(r"classes=(\w+) sigma=(\S+): (.*)$", line).groups()
        for model, printed in re.findall(r"(\S+) (-?\d\.\d+)", rest):
            f, g = vectors(classes, float(sigma), model), vectors(classes, float(sigma), "network")
            cosine = np.mean(np.sum(f * g, axis=1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(g, axis=1)))
            assert float(printed) == pytest.approx(cosine, abs=6e-4)
    assert (out / "score_field_same.png").stat().st_size > 1000
    assert (out / "score_field_different.png").stat().st_size > 1000


@pytest.mark.parametrize("extra, message", [
    (["--grid", "1x5"], "--grid"),
    (["--grid", "ax3"], "--grid"),
    (["--sigmas", "0"], "--sigmas"),
    (["--gmm-components", "0"], "--gmm-components"),
    (["--margin", "-1"], "--margin"),
])
def test_bad_options_are_named_errors(tiny_run, tmp_path, capsys, extra, message):
    assert main(["score-field", "--run", str(tiny_run), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
