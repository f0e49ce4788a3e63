"""Preconditioning: Table 1 formulas, the composed denoiser D = c_skip x + c_out F(c_in x, c_noise), EDM parity."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import TINY, B, evaluate

from gaussjax._torch import variables_from_state_dict
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet, edm_preconditioning
from gaussjax.nn._precond import (
    VEPrecond,
    VPPrecond,
    check_iddpm_u,
    iddpm_preconditioning,
    iddpm_u,
    iDDPMPrecond,
    ve_preconditioning,
    vp_preconditioning,
    vp_sigma_of_t,
    vp_t_of_sigma,
)


def test_preconditioning_formulas(x64):
    sigma = np.geomspace(1e-4, 100.0, 13)
    sd = 0.7
    c_skip, c_out, c_in, c_noise = edm_preconditioning(jnp.asarray(sigma), sd)
    np.testing.assert_allclose(c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sd**2 + sigma**2), rtol=1e-14)
    np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-14)
    # Unit-variance identities: c_skip + (c_out / sd)^2 = 1 and c_in^2 (sigma^2 + sd^2) = 1.
    np.testing.assert_allclose(c_skip + (c_out / sd) ** 2, 1, rtol=1e-14)
    np.testing.assert_allclose(np.square(c_in) * (sigma**2 + sd**2), 1, rtol=1e-14)
    assert c_skip.dtype == jnp.float64
    tiny = edm_preconditioning(1e-8)
    assert float(tiny[0]) == pytest.approx(1.0) and float(tiny[1]) == pytest.approx(0.0, abs=1e-8)


def test_default_sigma_data_is_half():
    np.testing.assert_allclose(edm_preconditioning(0.5)[0], 0.5)  # sd^2 / (sd^2 + sd^2)


SIGMAS = jnp.geomspace(0.01, 80.0, B)


@pytest.mark.slow
def test_denoiser_composes_the_network(tiny_random):
    precond, variables = tiny_random
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    D = evaluate(precond, variables, x, SIGMAS, None)
    c_skip, c_out, c_in, c_noise = (np.asarray(c)[:, None, None, None] for c in edm_preconditioning(SIGMAS))
    F = jax.jit(precond.net.apply)({"params": variables["params"]["net"]}, c_in * x, c_noise[:, 0, 0, 0])
    np.testing.assert_allclose(D, c_skip * x + c_out * F, rtol=1e-5, atol=1e-5)
    assert np.abs(F).mean() > 0.01  # a non-trivial F, so the check above means something
    # A scalar sigma is accepted and broadcast over the batch.
    assert jax.eval_shape(precond.apply, variables, x, 2.0).shape == x.shape


def test_denoiser_tends_to_identity_as_sigma_vanishes(tiny_random):
    precond, variables = tiny_random
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    D = evaluate(precond, variables, x, jnp.full((B,), 1e-6), None)
    np.testing.assert_allclose(D, x, atol=1e-4)


def test_initial_denoiser_is_the_skip_connection(tiny_precond):
    """The output layer starts at 1e-5 scale (EDM's init_zero), so D(x; sigma) ~ c_skip x, |F| << 1, at init."""
    precond, variables = tiny_precond
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    D = evaluate(precond, variables, x, SIGMAS, None)
    c_skip, c_out = (np.asarray(c)[:, None, None, None] for c in edm_preconditioning(SIGMAS)[:2])
    F = (np.asarray(D, np.float64) - c_skip * np.asarray(x)) / c_out
    assert 0 < np.abs(F).max() < 1e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_channels == net.in_channels"):
        EDMPrecond(SongUNet(**dict(TINY, out_channels=2)))
    with pytest.raises(TypeError, match="SongUNet"):
        EDMPrecond(net=None)
    with pytest.raises(TypeError, match="img_resolution, in_channels, out_channels, label_dim"):
        VPPrecond(net=jnp.zeros(3))
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(SongUNet(**TINY), sigma_data=0.0)
    precond = EDMPrecond(SongUNet(**TINY))
    x = jnp.zeros((2, 8, 8, 1))
    variables = jax.eval_shape(precond.init, jax.random.key(0), x, jnp.ones((2,)))
    with pytest.raises(ValueError, match=r"sigma.*\(N,\) = \(2,\)"):
        jax.eval_shape(precond.apply, variables, x, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        jax.eval_shape(precond.apply, variables, jnp.zeros((8, 8, 1)), 1.0)


@pytest.mark.slow
def test_bfloat16_compute_dtype_is_mixed_precision(tiny_random):
    """`compute_dtype='bfloat16'`: the network's convolutions run in bfloat16 on float32 parameters."""
    precond, variables = tiny_random
    half = precond.clone(compute_dtype="bfloat16")
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    full = evaluate(precond, variables, x, SIGMAS, None)
    mixed = jax.jit(half.apply)(variables, x, SIGMAS)
    assert mixed.dtype == jnp.float32
    # D = c_skip x + c_out F: F carries bfloat16's relative error (2^-8 per rounding, a few roundings deep).
    c_out = np.asarray(edm_preconditioning(SIGMAS)[1])[:, None, None, None]
    F_error = np.abs(np.asarray(mixed) - np.asarray(full)) / c_out
    assert 1e-4 < F_error.max() < 0.1  # bfloat16 was used, and only bfloat16's error is made
    xla_convolutions = half.clone(net=half.net.clone(conv_impl="xla"))  # (on CPU "auto" is im2col + matmul)
    jaxpr = str(jax.make_jaxpr(xla_convolutions.apply)(variables, x, SIGMAS))
    convolutions = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
    assert convolutions and all("bf16[" in line for line in convolutions)
    grads = jax.eval_shape(jax.grad(lambda v: jnp.sum(half.apply(v, x, SIGMAS) ** 2)), variables)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(grads)} == {jnp.dtype(jnp.float32)}
    with pytest.raises(ValueError, match="`compute_dtype` must be one of"):
        precond.clone(compute_dtype="float8")


# ---- EDM's VP, VE and iDDPM preconditioners, and parity of all four with NVlabs/edm's PyTorch code ----

REFERENCE = Path(__file__).parent / "data" / "edm_precond_reference.npz"
PRECONDS = {"EDMPrecond": EDMPrecond, "VPPrecond": VPPrecond, "VEPrecond": VEPrecond, "iDDPMPrecond": iDDPMPrecond}


def _state_dict(flat, index) -> dict:
    """EDM's SongUNet state dict, stored flattened in `index` order, with its preconditioner's `model.` prefix."""
    state, offset = {}, 0
    for name, shape in index:
        size = int(np.prod(shape))
        state[f"model.{name}"] = flat[offset:offset + size].reshape(shape)
        offset += size
    return state


@pytest.fixture(scope="module")
def reference():
    """{tag: (precond, variables, arrays)} for EDM's four preconditioners around a tiny SongUNet."""
    data = np.load(REFERENCE)
    out = {}
    for tag in ("edm", "vp", "ve", "iddpm"):
        config = json.loads(str(data[f"{tag}/config"]))
        net = dict(config["net"], channel_mult=tuple(config["net"]["channel_mult"]),
                   attn_resolutions=tuple(config["net"]["attn_resolutions"]))
        precond = PRECONDS[config["precond"]](SongUNet(**net), **config["precond_kwargs"])
        state = _state_dict(data[f"{tag}/params"].astype(np.float32), json.loads(str(data[f"{tag}/index"])))
        x = jax.ShapeDtypeStruct((1, net["img_resolution"], net["img_resolution"], net["in_channels"]), jnp.float32)
        labels = jax.ShapeDtypeStruct((1, net["label_dim"]), jnp.float32) if net.get("label_dim") else None
        variables = variables_from_state_dict(state, jax.eval_shape(precond.init, jax.random.key(0), x, jnp.ones((1,)),
                                                                    labels))
        arrays = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{tag}/")}
        out[tag] = precond, variables, arrays
    return out


@pytest.mark.parametrize("tag", ["edm", "vp", "ve", "iddpm"])
@pytest.mark.slow
def test_output_matches_edm_pytorch(reference, tag):
    """Same weights, same D(x; sigma) as NVlabs/edm's preconditioner (eval mode), sigmas across its range.

    iDDPM's sigmas are three table entries and three points between entries (c_noise rounds).
    """
    precond, variables, ref = reference[tag]
    labels = ref.get("class_labels")
    out = evaluate(precond, variables, jnp.asarray(ref["x"]), jnp.asarray(ref["sigma"]), labels)
    np.testing.assert_allclose(out, ref["output"], atol=2e-5, rtol=1e-4)
    if labels is not None:  # a conditional net without labels gets zeros, as in EDM
        out = evaluate(precond, variables, jnp.asarray(ref["x"]), jnp.asarray(ref["sigma"]), None)
        np.testing.assert_allclose(out, ref["output_no_labels"], atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(precond.sigma_min, ref["sigma_min"], rtol=1e-6)
    np.testing.assert_allclose(precond.sigma_max, ref["sigma_max"], rtol=1e-6)
    np.testing.assert_allclose(precond.round_sigma(jnp.asarray(ref["sigma"])), ref["round_sigma"], rtol=1e-6)


def test_iddpm_table_matches_edm_buffer(reference):
    edm_u = reference["iddpm"][2]["u"]
    u = iddpm_u()
    assert u.shape == (1001,) and u.dtype == np.float32 and u[-1] == 0 and not u.flags.writeable
    np.testing.assert_allclose(u, edm_u, rtol=2e-5)
    np.testing.assert_array_equal(reference["iddpm"][0].u, u)
    check_iddpm_u(edm_u)
    with pytest.raises(ValueError, match=r"`u` differs .* at index 3"):
        check_iddpm_u(np.where(np.arange(1001) == 3, 1.01 * edm_u, edm_u))
    with pytest.raises(ValueError, match=r"`u` must have shape \(M \+ 1,\) = \(1001,\)"):
        check_iddpm_u(edm_u[:-1])
    with pytest.raises(ValueError, match="C_2=0.01"):
        check_iddpm_u(edm_u, C_2=0.01)


def test_iddpm_table_recursion(x64):
    """The table against a float64 transcription of EDM's recursion (float32 rounding: ~5e-4 at the low end)."""
    M, C_1, C_2 = 50, 0.001, 0.008
    abar = np.sin(0.5 * np.pi * np.arange(M + 1) / M / (C_2 + 1)) ** 2
    u = np.zeros(M + 1)
    for j in range(M, 0, -1):
        ratio = max(abar[j - 1] / abar[j], C_1) if abar[j - 1] > 0 else C_1
        u[j - 1] = np.sqrt((u[j] ** 2 + 1) / ratio - 1)
    np.testing.assert_allclose(iddpm_u(C_1, C_2, M), u, rtol=1e-4)


def test_scalings_match_edm_formulas(x64):
    """VP, VE, iDDPM scalings against NumPy float64 transcriptions of EDM's Table 1."""
    sigma = np.geomspace(1e-3, 150.0, 11)
    beta_d, beta_min, M = 18.0, 0.2, 500
    t = (np.sqrt(beta_min**2 + 2 * beta_d * np.log(1 + sigma**2)) - beta_min) / beta_d
    np.testing.assert_allclose(vp_t_of_sigma(sigma, beta_d, beta_min), t, rtol=1e-12)
    np.testing.assert_allclose(vp_sigma_of_t(t, beta_d, beta_min), sigma, rtol=1e-9)
    np.testing.assert_allclose(vp_sigma_of_t(1.0), np.sqrt(np.exp(0.5 * 19.9 + 0.1) - 1), rtol=1e-14)
    expected = {
        "vp": (np.ones_like(sigma), -sigma, 1 / np.sqrt(sigma**2 + 1), (M - 1) * t),
        "ve": (np.ones_like(sigma), sigma, np.ones_like(sigma), np.log(0.5 * sigma)),
    }
    got = {"vp": vp_preconditioning(jnp.asarray(sigma), beta_d, beta_min, M), "ve": ve_preconditioning(sigma)}
    u = iddpm_u()
    nearest = np.argmin(np.abs(sigma[:, None] - u.astype(np.float64)[None, :]), axis=1)
    expected["iddpm"] = (np.ones_like(sigma), -sigma, 1 / np.sqrt(sigma**2 + 1), 999.0 - nearest)
    got["iddpm"] = iddpm_preconditioning(jnp.asarray(sigma), u)
    for name, wanted in expected.items():
        for c, want in zip(got[name], wanted, strict=True):
            assert c.shape == sigma.shape and c.dtype == jnp.float64, name
            np.testing.assert_allclose(c, want, rtol=1e-12, err_msg=name)


def test_iddpm_rounding():
    precond = iDDPMPrecond(SongUNet(**dict(TINY, out_channels=2)))
    u = precond.u
    between = u[1:-1] + np.float32(0.4) * (u[:-2] - u[1:-1])  # 40% of the way up to the next entry: rounds down
    np.testing.assert_array_equal(precond.round_sigma(between), u[1:-1])
    c_noise = iddpm_preconditioning(jnp.asarray(between), u)[3]
    np.testing.assert_array_equal(c_noise, 999 - np.arange(1, 1000))
    assert precond.sigma_min == u[999] and precond.sigma_max == u[0]
    assert VEPrecond(SongUNet(**TINY)).round_sigma(0.3) == np.float32(0.3)


@pytest.mark.parametrize("tag", ["vp", "ve", "iddpm"])
@pytest.mark.slow
def test_neural_denoiser_with_each_preconditioner(reference, tag):
    precond, variables, ref = reference[tag]
    model = NeuralDenoiser(precond, variables)
    assert model.image_shape == (8, 8, 1) and model.dim == 64
    x, sigma = jnp.asarray(ref["x"]), jnp.asarray(ref["sigma"])
    flat = model.denoise(x.reshape(len(sigma), 64), sigma)
    np.testing.assert_allclose(flat.reshape(x.shape), ref["output"], atol=2e-5, rtol=1e-4)
    score = model.score(x, sigma)
    assert score.shape == x.shape
    np.testing.assert_allclose(score, (ref["output"] - ref["x"]) / np.square(ref["sigma"])[:, None, None, None],
                               atol=2e-5, rtol=2e-4)


@pytest.mark.slow
def test_jit_vmap_grad_through_vp_denoiser(reference):
    precond, variables, ref = reference["vp"]
    model = NeuralDenoiser(precond, variables)
    x, sigma = jnp.asarray(ref["x"]).reshape(-1, 64), jnp.asarray(ref["sigma"])
    expected = ref["output"].reshape(-1, 64)
    jitted = jax.jit(lambda m, x, s: m.denoise(x, s))
    np.testing.assert_allclose(jitted(model, x, sigma), expected, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(jax.vmap(model.denoise)(x, sigma), expected, atol=2e-5, rtol=1e-4)

    def loss(x):
        return jnp.sum(jnp.sin(model.denoise(x, sigma[2]) / 10))

    x = x[2:3]
    direction = jax.random.normal(jax.random.key(0), x.shape)
    h = 1e-2
    finite_difference = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(jax.grad(loss)(x), direction), finite_difference, rtol=2e-2)


def test_bad_preconditioner_arguments():
    net = SongUNet(**TINY)
    with pytest.raises(ValueError, match=r"iDDPMPrecond needs net.out_channels == 2 \* net.in_channels"):
        iDDPMPrecond(net)
    with pytest.raises(ValueError, match=r"VPPrecond needs net.out_channels == net.in_channels"):
        VPPrecond(SongUNet(**dict(TINY, out_channels=2)))
    for cls, options, match in [(VPPrecond, {"beta_d": 0.0}, "beta_d"), (VPPrecond, {"beta_min": -1.0}, "beta_min"),
                                (VPPrecond, {"M": 1}, "`M`"), (VPPrecond, {"epsilon_t": 0.0}, "epsilon_t"),
                                (VEPrecond, {"sigma_min": 0.0}, "sigma_min"),
                                (VEPrecond, {"sigma_max": 0.01}, "sigma_max"), (iDDPMPrecond, {"C_1": 0.0}, "C_1"),
                                (iDDPMPrecond, {"C_2": -0.1}, "C_2"), (iDDPMPrecond, {"M": 2.5}, "`M`")]:
        with pytest.raises(ValueError, match=match):
            cls(net if cls is not iDDPMPrecond else SongUNet(**dict(TINY, out_channels=2)), **options)
    with pytest.raises(TypeError, match="EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond"):
        NeuralDenoiser(net, {})


@pytest.mark.parametrize("value, error, match", [
    ("0.5", TypeError, r"`sigma_data` must be a finite number >= 0, got str '0\.5'"),
    (None, TypeError, "`sigma_data` must be a finite number >= 0, got NoneType None"),
    (float("inf"), ValueError, "`sigma_data` must be a finite number >= 0, got inf"),
    (float("nan"), ValueError, "`sigma_data` must be a finite number >= 0, got nan"),
    (1e30, ValueError, r"`sigma_data` must be in \[1.08e-19, 1.84e\+19\]"),
    (1e-20, ValueError, "`sigma_data` must be in"),
])
def test_sigma_data_is_a_finite_number_whose_square_is_a_float32(value, error, match):
    """D8: `sigma_data="0.5"` was `TypeError: '>' not supported`; inf and 1e30 (square overflows) gave NaN outputs."""
    with pytest.raises(error, match=match):
        EDMPrecond(SongUNet(**TINY), sigma_data=value)
    EDMPrecond(SongUNet(**TINY), sigma_data=1e19)  # its square, 1e38, is a float32


@pytest.mark.parametrize("cls, name, value, error", [
    (VPPrecond, "beta_d", "19.9", TypeError), (VPPrecond, "beta_min", float("nan"), ValueError),
    (VPPrecond, "M", float("inf"), ValueError), (VPPrecond, "M", float("nan"), ValueError),
    (VPPrecond, "epsilon_t", [1e-5], TypeError), (VEPrecond, "sigma_max", float("inf"), ValueError),
    (VEPrecond, "sigma_min", "0.02", TypeError), (iDDPMPrecond, "C_1", True, TypeError),
    (iDDPMPrecond, "M", 10**9, ValueError), (iDDPMPrecond, "M", float("inf"), ValueError),
])
def test_preconditioner_arguments_are_finite_numbers(cls, name, value, error):
    """Wrong types are TypeErrors naming the argument; non-finite values (and huge iDDPM tables) ValueErrors."""
    net = SongUNet(**dict(TINY, out_channels=2 if cls is iDDPMPrecond else 1))
    with pytest.raises(error, match=f"`{name}`"):
        cls(net, **{name: value})


def test_iddpm_table_shape_is_checked_before_conversion():
    """D5: a stride-0 `u` standing for 2^60 entries is refused by its shape, not converted to float64."""
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (2**60,), (0,))
    with pytest.raises(ValueError, match=r"`u` must have shape \(M \+ 1,\) = \(1001,\)"):
        check_iddpm_u(huge)
