"""Analytic models over data split across JAX processes, against float64 NumPy.

Each multi-process test runs one script as 2 processes on localhost (`tests/multiprocess.py`: a free
port, gloo collectives, CPU devices, bounded waits, the peer killed when one fails). Every process
builds the same data with the same seed and passes only its own block of rows
(`jax.make_array_from_process_local_data`), so a model's arrays span both processes; the script
checks the results against float64 NumPy computed from the whole data, and prints what the test
compares across processes. The `(1, 4)` cases run the same script as one process with 4 devices.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from multiprocess import INIT, check_all_succeeded, run_processes
from scipy.special import logsumexp, softmax

from gaussjax.scores import _softmax

TIMEOUT = 300  # seconds for a whole job (start, compile, run); the slowest takes ~20 s here


def run_until(marker: str, script: str, processes: int, *, devices: int) -> list:
    """Run `script` as a job of `processes` processes with `devices` CPU devices each; every process must exit 0
    having printed `marker` (its last line: every check before it passed)."""
    finished = run_processes(script, processes, devices=devices, timeout=TIMEOUT)
    check_all_succeeded(finished)
    assert all(marker in f.stdout for f in finished), [f.stdout[-2000:] for f in finished]
    return finished

PRELUDE = INIT + '''
import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from scipy.special import logsumexp, softmax
import gaussjax as gj

process = jax.process_index()
mesh = jax.make_mesh((jax.device_count(),), ("data",))
rng = np.random.default_rng(0)  # the same data on every process


def split_rows(array):
    """The global array of `array`'s rows split over every device; each process passes only its own rows."""
    rows = array.shape[0] // jax.process_count()
    local = array[process * rows : (process + 1) * rows]
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")), local)


def fetch(array):
    """The NumPy value of a global array (replicated on every device first)."""
    return np.asarray(jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, PartitionSpec()))(array))


def delta64(points, x, sigma):
    """float64 delta mixture: denoiser (B, D) and log density (B,) of the points (N, D) at x (B, D), sigma (B,)."""
    points, x, sigma = (np.asarray(a, np.float64) for a in (points, x, sigma))
    logits = -np.sum(np.square(x[:, None, :] - points[None]), axis=-1) / (2 * sigma[:, None] ** 2)
    dim = points.shape[1]
    log_density = logsumexp(logits, axis=1) - np.log(len(points)) - 0.5 * dim * np.log(2 * np.pi * sigma**2)
    return softmax(logits, axis=1) @ points, log_density


def close(actual, expected, rtol, what):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=rtol * np.abs(expected).max(),
                               err_msg=what)
'''

DELTA = PRELUDE + '''
points = rng.normal(size=(48, 6)).astype(np.float32)
x = rng.normal(size=(9, 6)).astype(np.float32)
sigma = rng.uniform(0.2, 3.0, 9).astype(np.float32)
denoised, log_density = delta64(points, x, sigma)
score = (denoised - x) / sigma[:, None].astype(np.float64) ** 2

model = gj.DeltaMixture(split_rows(points), chunk_size=5)  # 12 rows a device: chunks of 5, 5 and 2 + 3 padding
assert model.mesh == mesh and model.chunks.shape == (12, 5, 6), (model.mesh, model.chunks.shape)
close(model.denoise(x, sigma), denoised, 1e-5, "denoise")
close(model.score(x, sigma), score, 1e-5, "score")
close(model.log_density(x, sigma), log_density, 1e-5, "log density")
close(jax.jit(lambda m, x, s: m.score(x, s))(model, x, sigma), score, 1e-5, "score in jit, model an argument")
close(model.denoise(split_rows(x[:8]), sigma[:8]), denoised[:8], 1e-5, "denoise of queries split too")
with jax.set_mesh(mesh):  # grad of the log density: the score
    grad = jax.jit(jax.grad(lambda m, x: m.log_density(x, sigma).sum(), argnums=1))(model, jnp.asarray(x))
close(grad, score, 1e-5, "grad log density")
assert np.array_equal(fetch(model.points), points)
# the FUV (Eq. 28) of a reference that spans processes
close(gj.fraction_unexplained_variance(split_rows(score[:8].astype(np.float32)), 0.9 * score[:8].astype(np.float32)),
      np.sum((0.1 * score[:8]) ** 2) / np.sum(score[:8] ** 2), 1e-5, "FUV of process-spanning arrays")
print("delta ok")
'''


@pytest.mark.slow
@pytest.mark.parametrize(("processes", "devices"), [(2, 2), (1, 4)])
def test_delta_mixture_over_processes_matches_float64(processes, devices):
    run_until("delta ok", DELTA, processes, devices=devices)


MIXTURE = PRELUDE + '''
K, D, r = 4, 5, 3
weights = rng.uniform(0.5, 1.0, K).astype(np.float32)
means = (2 * rng.normal(size=(K, D))).astype(np.float32)
eigvals = rng.uniform(0.1, 1.0, (K, r)).astype(np.float32)
eigvecs = np.stack([np.linalg.qr(rng.normal(size=(D, r)))[0] for _ in range(K)]).astype(np.float32)
x = (2 * rng.normal(size=(8, D))).astype(np.float32)
sigma = rng.uniform(0.3, 2.0, 8).astype(np.float32)

# float64 reference from the dense covariances: responsibilities and per-mode posterior means
x64, s2 = x.astype(np.float64), sigma.astype(np.float64) ** 2
covs = np.einsum("kdr,kr,ker->kde", eigvecs.astype(np.float64), eigvals.astype(np.float64), eigvecs.astype(np.float64))
logits, posterior = np.zeros((8, K)), np.zeros((8, K, D))
for b in range(8):
    for k in range(K):
        noised = covs[k] + s2[b] * np.eye(D)
        offset = x64[b] - means[k]
        logits[b, k] = (np.log(weights[k] / weights.sum()) - 0.5 * offset @ np.linalg.solve(noised, offset)
                        - 0.5 * np.linalg.slogdet(2 * np.pi * noised)[1])
        posterior[b, k] = means[k] + covs[k] @ np.linalg.solve(noised, offset)
denoised = np.einsum("bk,bkd->bd", softmax(logits, axis=1), posterior)

model = gj.GaussianMixture(*(split_rows(a) for a in (weights, means, eigvals, eigvecs)))  # one mode a device
assert model.rows is not None and model.rows.mesh == mesh
close(model.denoise(x, sigma), denoised, 1e-5, "denoise")
close(model.log_density(split_rows(x), sigma), logsumexp(logits, axis=1), 1e-5, "log density, queries split")
close(jax.jit(lambda m, x: m.score(x, sigma))(model, x), (denoised - x64) / s2[:, None], 1e-5, "score in jit")
print("mixture ok")
'''


@pytest.mark.slow
def test_gaussian_mixture_over_processes_matches_float64():
    run_until("mixture ok", MIXTURE, 2, devices=2)


FIT = PRELUDE + '''
data = (rng.normal(size=(64, 5)) * [3.0, 2.0, 1.0, 0.5, 0.1] + 100.0).astype(np.float32)  # a large common offset
reference = data.astype(np.float64)
eigvals64 = np.linalg.eigvalsh(np.cov(reference.T, bias=True))[::-1]

gaussian = gj.fit_gaussian(split_rows(data))  # float32 sums on the devices, centred on the global mean
close(gaussian.mean, reference.mean(axis=0), 1e-6, "mean")
close(gaussian.eigvals, eigvals64, 1e-4, "eigenvalues")
assert gaussian.mean.is_fully_addressable  # the Gaussian itself is an ordinary array on every process

jax.config.update("jax_enable_x64", True)  # float64 data, float64 sums
gaussian = gj.fit_gaussian(split_rows(reference))
close(gaussian.mean, reference.mean(axis=0), 1e-12, "mean, x64")
close(gaussian.eigvals, eigvals64, 1e-10, "eigenvalues, x64")
print("fit ok")
'''


@pytest.mark.slow
def test_fit_gaussian_over_processes_matches_float64():
    run_until("fit ok", FIT, 2, devices=2)


LOCAL = PRELUDE + '''
from gaussjax.scores import make_local_model, receptive_fields

N, H, W, C = 8, 4, 4, 2
images = rng.uniform(-1, 1, (N, H, W, C)).astype(np.float32)
x = rng.uniform(-1.5, 1.5, (3, H, W, C)).astype(np.float32)
sigma = np.array([0.3, 0.6, 1.2], np.float32)
y, q, s2 = images.astype(np.float64), x.astype(np.float64), sigma.astype(np.float64)[:, None, None, None] ** 2
global_images = split_rows(images)


def pixel_softmax(components):  # components (B, P, M, C) per query pixel -> the softmax-weighted mean (B, P, C)
    pixels = q.reshape(3, H * W, 1, C)
    logits = -np.sum(np.square(pixels - components), axis=-1) / (2 * s2.reshape(3, 1, 1))
    return np.einsum("bpm,bpmc->bpc", softmax(logits, axis=-1), components)


# LS with the whole-image window is the delta mixture
close(gj.PatchMixture(global_images, 2 * H - 1).denoise(x, sigma).reshape(3, -1),
      delta64(y.reshape(N, -1), q.reshape(3, -1), sigma)[0], 1e-5, "LS, full window")
# ELS with 1 x 1 windows: each pixel a softmax over every pixel value of every image
every_pixel = np.broadcast_to(y.reshape(1, 1, N * H * W, C), (3, H * W, N * H * W, C))
close(gj.PatchMixture(global_images, 1, equivariant=True).denoise(x, sigma).reshape(3, H * W, C),
      pixel_softmax(every_pixel), 1e-5, "ELS, k = 1")
# PSPC with 1 x 1 crops: each pixel a softmax over the same pixel of every image
same_pixel = np.broadcast_to(y.reshape(N, H * W, C).transpose(1, 0, 2)[None], (3, H * W, N, C))
close(gj.PatchPosteriorMean(global_images, 1, 1).denoise(x, sigma).reshape(3, H * W, C),
      pixel_softmax(same_pixel), 1e-5, "PSPC, p = 1")
# locality: output m a softmax over the images of the distance over its receptive field M[:, m]
model = make_local_model("locality", global_images)  # fits its Gaussian on the devices
masks = np.asarray(receptive_fields(model.gaussian, jnp.asarray(sigma), model.threshold), np.float64)  # (B, n, m)
flat_x, flat_y = q.reshape(3, -1), y.reshape(N, -1)
distances = np.einsum("bnm,bin->bmi", masks, np.square(flat_x[:, None, :] - flat_y[None]))
weights = softmax(-distances / (2 * s2.reshape(3, 1, 1)), axis=-1)  # (B, m, N)
close(model.denoise(x, sigma).reshape(3, -1), np.einsum("bmi,im->bm", weights, flat_y), 1e-5, "locality")
close(model.gaussian.mean, flat_y.mean(axis=0), 1e-6, "locality's Gaussian")
print("local ok")
'''


@pytest.mark.slow
def test_local_models_over_processes_match_float64():
    run_until("local ok", LOCAL, 2, devices=2)


ERRORS = PRELUDE + '''
points = rng.normal(size=(16, 3)).astype(np.float32)


def refused(build, data):
    """Print the error `build(split_rows(data))` raises on this process."""
    try:
        build(split_rows(data))
    except gj.InputError as error:
        print(f"{type(error).__name__}: {error}")
    else:
        print("accepted")


nan = points.copy()
nan[-1, 1] = np.nan  # in the last process's rows only
refused(gj.DeltaMixture, nan)
refused(gj.fit_gaussian, nan)
huge = points.copy()
huge[0] = 1e20  # in the first process's rows only: finite, but its squared norm overflows float32
refused(gj.DeltaMixture, huge)
refused(lambda images: gj.PatchMixture(images, 3), nan.reshape(16, 1, 3, 1))
weights = np.ones(4, np.float32)
weights[-1] = 0.0
refused(lambda w: gj.GaussianMixture(w, split_rows(points[:4]), split_rows(np.ones((4, 1), np.float32)),
                                     split_rows(np.tile(np.eye(3, 1, dtype=np.float32), (4, 1, 1)))), weights)
model = gj.DeltaMixture(points)
refused(lambda x: model.denoise(x, 1.0), nan[8:])  # queries split over the processes, the NaN in the last
refused(lambda sigma: model.denoise(points[:8], sigma), -np.ones(8, np.float32))
'''

EXPECTED_ERRORS = [
    "InputValueError: `points` contains NaN or infinite values",
    "InputValueError: `X` contains NaN or infinite values",
    "InputValueError: `points` is too large for float32: its squared norm overflows (max |points| = 1e+20); "
    "rescale it or enable jax_enable_x64",
    "InputValueError: `images` contains NaN or infinite values",
    "InputValueError: `weights` must be > 0",
    "InputValueError: `x` contains NaN or infinite values",
    "InputValueError: `sigma` must be finite and > 0, got min -1.0",
]


@pytest.mark.slow
def test_bad_values_over_processes_raise_the_same_named_error_everywhere():
    finished = run_processes(ERRORS, 2, devices=2, timeout=TIMEOUT)
    check_all_succeeded(finished)
    lines = [[line for line in f.stdout.splitlines() if not line.startswith("[Gloo]")] for f in finished]
    assert lines[0] == lines[1] == EXPECTED_ERRORS, lines


CLOSURE = PRELUDE + '''
points = rng.normal(size=(16, 3)).astype(np.float32)
x = rng.normal(size=(4, 3)).astype(np.float32)
model = gj.DeltaMixture(split_rows(points))
try:
    jax.jit(lambda x: model.denoise(x, 0.5))(x)  # the model's arrays captured as constants
except RuntimeError as error:
    print(f"closure: {error}")
close(jax.jit(lambda m, x: m.denoise(x, 0.5))(model, x), delta64(points, x, np.full(4, 0.5))[0], 1e-5, "argument")
print("argument ok")
'''


@pytest.mark.slow
def test_closing_over_a_model_across_processes_is_refused_by_jax_an_argument_works():
    finished = run_processes(CLOSURE, 2, devices=1, timeout=TIMEOUT)
    check_all_succeeded(finished)
    for f in finished:
        assert "closure: Closing over jax.Array that spans non-addressable" in f.stdout, f.stdout
        assert "argument ok" in f.stdout


RECIPE = re.compile(r"^cat > sharded_delta.py <<'EOF'\n(.*?)^EOF$", re.DOTALL | re.MULTILINE)


@pytest.mark.slow
def test_the_localhost_recipe_of_the_docs_runs():
    """docs/scaling.md's 2-process script, as written there (its command-line arguments from the launcher)."""
    script = RECIPE.search((Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()).group(1)
    arguments = ("import os, sys\n"
                 "sys.argv[1:] = [os.environ['GJ_' + n] for n in ('COORDINATOR', 'NUM_PROCESSES', 'PROCESS_ID')]\n")
    finished = run_processes(arguments + script, 2, devices=2, timeout=TIMEOUT)
    check_all_succeeded(finished)
    for index, f in enumerate(finished):
        assert f"process {index} of 2: the sharded delta score matches float64" in f.stdout


def test_merge_across_devices_equals_one_softmax(x64):
    """`merge_across` over 4 simulated devices (a named vmap axis) equals one float64 softmax, and
    differentiates like it (the shift `pmax` is a constant)."""
    rng = np.random.default_rng(1)
    scores, values = rng.normal(size=(4, 3, 5)) * 30, rng.normal(size=(4, 5, 2))  # (device, query, component)
    scale = np.array([0.5, 2.0, 40.0])
    everything = np.concatenate(list(scores), axis=1) * scale[:, None]

    @jax.jit
    def merged(scores, values, scale):
        def device(scores, values):
            state = _softmax.accumulate(_softmax.empty(3, 2, scores.dtype), scores, lambda p: p @ values, scale)
            return _softmax.merge_across(state, "devices", scale)

        return jax.vmap(device, axis_name="devices")(scores, values)

    total = jax.tree.map(np.asarray, merged(jnp.asarray(scores), jnp.asarray(values), jnp.asarray(scale)))
    expected = softmax(everything, axis=1) @ np.concatenate(list(values))
    for device in range(4):  # every device holds the whole sum
        np.testing.assert_allclose(total.weighted[device] / total.total[device, :, None], expected, rtol=1e-12)
    log_normalizer = total.max[0] * scale + np.log(total.total[0])
    np.testing.assert_allclose(log_normalizer, logsumexp(everything, axis=1), rtol=1e-12)

    def log_sum(scores):
        total = merged(scores, jnp.asarray(values), jnp.asarray(scale))
        return jnp.sum(total.max[0] * scale + jnp.log(total.total[0]))

    expected_grad = softmax(everything, axis=1).reshape(3, 4, 5).transpose(1, 0, 2) * scale[None, :, None]
    np.testing.assert_allclose(jax.grad(log_sum)(jnp.asarray(scores)), expected_grad, rtol=1e-10, atol=1e-14)


def test_models_of_a_one_device_mesh_are_ordinary_models():
    """Arrays on a mesh of this process's one device, typed with its axis (`PartitionSpec("data")`), make
    ordinary models (their arrays moved off the mesh), equal to float64 NumPy."""
    from jax.sharding import NamedSharding, PartitionSpec

    import gaussjax as gj

    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    rng = np.random.default_rng(2)
    points, x = rng.normal(size=(12, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    on_mesh = jax.device_put(points, NamedSharding(mesh, PartitionSpec("data")))
    delta = gj.DeltaMixture(on_mesh, chunk_size=5)
    assert delta.rows is None and delta.chunks.shape == (3, 5, 3)
    logits = -np.square(x[:, None, :].astype(np.float64) - points[None]).sum(-1) / (2 * 0.7**2)
    np.testing.assert_allclose(delta.denoise(x, 0.7), softmax(logits, axis=1) @ points, rtol=1e-5, atol=1e-6)
    mixture = gj.GaussianMixture(*(jax.device_put(a, NamedSharding(mesh, PartitionSpec("data")))
                                   for a in (np.ones(12, np.float32), points, np.zeros((12, 0), np.float32),
                                             np.zeros((12, 3, 0), np.float32))))
    assert mixture.rows is None
    np.testing.assert_allclose(mixture.denoise(x, 0.7), softmax(logits, axis=1) @ points, rtol=1e-5, atol=1e-6)
    gaussian = gj.fit_gaussian(on_mesh)
    np.testing.assert_allclose(gaussian.mean, points.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7)

