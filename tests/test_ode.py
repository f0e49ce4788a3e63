"""solve_pf_ode / solve_vp_pf_ode against independent references.

References: the closed-form Gaussian solution (paper Eq. 15) and Gaussian denoiser,
written here in NumPy; SciPy `solve_ivp` with a NumPy delta-mixture denoiser; SciPy
integration of the VP PF-ODE of a Gaussian in its own variables (paper Eq. 71); and a
denoiser that counts its own evaluations at run time.

Compiling a diffrax solve takes seconds, so the tests share a few shapes: every
Gaussian solve is 3 trajectories in D = 5 on an 8-point grid (grid values and
tolerances do not recompile).
"""

from typing import ClassVar

import chex
import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from gaussjax import DeltaMixture, Gaussian
from gaussjax.ode import RK4, PFODESolution, solve_pf_ode, solve_vp_pf_ode
from gaussjax.schedules import VPSchedule

DIM, RANK, BATCH = 5, 3, 3


def gaussian_problem(seed=0):
    """A rank-3 Gaussian in D = 5 (so the closed form has a part orthogonal to span U) and x_T (3, 5)."""
    rng = np.random.default_rng(seed)
    eigvecs = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0][:, :RANK]
    eigvals = np.array([4.0, 1.0, 0.05])
    mean = rng.normal(size=DIM)
    return Gaussian(mean, eigvals, eigvecs), mean, eigvals, eigvecs, rng


def closed_form(mean, eigvals, eigvecs, x_T, sigma_T, sigma):
    """Paper Eq. 15: x_sigma = mu + (sigma/sigma_T) x_T^perp + sum_k psi(sigma, l_k) c_k u_k."""
    offset = x_T - mean
    coords = offset @ eigvecs
    perp = offset - coords @ eigvecs.T
    psi = np.sqrt((sigma**2 + eigvals) / (sigma_T**2 + eigvals))
    return mean + sigma / sigma_T * perp + (psi * coords) @ eigvecs.T


def gaussian_denoiser(mean, eigvals, eigvecs, x, sigma):
    """D(x, sigma) = mu + U diag(l / (l + sigma^2)) U^T (x - mu) (paper Eq. 6)."""
    return mean + ((x - mean) @ eigvecs * (eigvals / (eigvals + sigma**2))) @ eigvecs.T


def test_gaussian_matches_closed_form_at_every_sigma(x64):
    model, mean, eigvals, eigvecs, rng = gaussian_problem()
    x_T = 50.0 * rng.normal(size=(BATCH, DIM))
    sigmas = np.geomspace(50.0, 0.01, 8)
    solution = solve_pf_ode(model, x_T, sigmas, rtol=1e-10, atol=1e-10)
    assert isinstance(solution, PFODESolution)
    chex.assert_shape(solution.states, (8, BATCH, DIM))
    chex.assert_type(solution.states, jnp.float64)
    expected = np.stack([closed_form(mean, eigvals, eigvecs, x_T, 50.0, s) for s in sigmas])
    np.testing.assert_array_equal(solution.states[0], x_T)
    np.testing.assert_allclose(solution.states, expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(solution.sigmas, sigmas)

    # a trailing 0 denoises at the last positive sigma (same shapes: no recompilation)
    sigmas = np.append(np.geomspace(50.0, 0.01, 7), 0.0)
    solution = solve_pf_ode(model, x_T, sigmas, rtol=1e-10, atol=1e-10)
    expected = np.stack([closed_form(mean, eigvals, eigvecs, x_T, 50.0, s) for s in sigmas[:-1]])
    np.testing.assert_allclose(solution.states[:-1], expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(
        solution.states[-1], gaussian_denoiser(mean, eigvals, eigvecs, expected[-1], 0.01), rtol=1e-8, atol=1e-8
    )


def test_step_counts_are_positive_and_grow_with_tighter_tolerance(x64):
    model, *_, rng = gaussian_problem()
    x_T = 50.0 * rng.normal(size=(BATCH, DIM))
    sigmas = np.geomspace(50.0, 0.01, 8)
    loose = solve_pf_ode(model, x_T, sigmas, rtol=1e-4, atol=1e-4)
    tight = solve_pf_ode(model, x_T, sigmas, rtol=1e-9, atol=1e-9)
    for solution in (loose, tight):
        chex.assert_shape([solution.num_steps, solution.nfe], (BATCH,))
        chex.assert_type([solution.num_steps, solution.nfe], int)  # any integer dtype
        for count in (solution.num_steps, solution.nfe):
            assert np.all(np.asarray(count) > 0)
        assert np.all(np.asarray(solution.nfe) >= 6 * np.asarray(solution.num_steps))  # Tsit5: 6 new stages a step
    assert np.all(np.asarray(tight.nfe) > np.asarray(loose.nfe))
    assert np.all(np.asarray(tight.num_steps) > np.asarray(loose.num_steps))


@pytest.mark.parametrize(
    ("solver", "tol", "agree"),
    [
        pytest.param("dopri5", 1e-9, 1e-7, marks=pytest.mark.slow),
        pytest.param("rk4", 1e-9, 1e-7, marks=pytest.mark.slow),
        ("heun", 1e-6, 2e-4),
        (diffrax.Tsit5(), 1e-9, 1e-7),  # an instance (the compiled tsit5 solve is reused)
    ],
)
def test_every_solver_agrees_with_tsit5_and_closed_form(x64, solver, tol, agree):
    model, mean, eigvals, eigvecs, rng = gaussian_problem()
    x_T = 50.0 * rng.normal(size=(BATCH, DIM))
    sigmas = np.geomspace(50.0, 0.01, 8)
    reference = solve_pf_ode(model, x_T, sigmas, rtol=1e-10, atol=1e-10)
    solution = solve_pf_ode(
        model, x_T, sigmas, solver=solver, rtol=tol, atol=tol, dt0=0.5 if solver == "heun" else None
    )
    expected = np.stack([closed_form(mean, eigvals, eigvecs, x_T, 50.0, s) for s in sigmas])
    scale = np.max(np.abs(expected), axis=-1, keepdims=True)  # tolerances are relative to |x| ~ 50 early on
    assert np.max(np.abs(solution.states - reference.states) / scale) < agree
    assert np.max(np.abs(solution.states - expected) / scale) < agree
    assert np.all(np.asarray(solution.num_steps) > 0) and np.all(np.asarray(solution.nfe) > 0)


def test_rk4_is_adaptive_and_fourth_order(x64):
    model, mean, eigvals, eigvecs, rng = gaussian_problem()
    x_T = 50.0 * rng.normal(size=(BATCH, DIM))
    sigmas = np.geomspace(50.0, 0.01, 8)
    expected = closed_form(mean, eigvals, eigvecs, x_T, 50.0, 0.01)
    errors, steps = [], []
    for tol in (1e-5, 1e-7, 1e-9):
        solution = solve_pf_ode(model, x_T, sigmas, solver="rk4", rtol=tol, atol=tol)
        errors.append(np.max(np.abs(solution.states[-1] - expected)))
        steps.append(int(np.max(solution.num_steps)))
    assert steps[0] < steps[1] < steps[2]  # the controller refines with the tolerance
    assert errors[2] < errors[1] < errors[0] and errors[2] < 1e-8
    # 4th order with a 3rd-order error estimate: 100x tighter tolerance -> about 100^(1/4) ~ 3x more steps
    assert 2.0 < steps[2] / steps[1] < 5.0
    assert RK4.tableau.fsal and RK4().order(None) == 4


class CountingDenoiser(eqx.Module):
    """Wraps a model; counts denoiser evaluations at run time and traces at trace time."""

    inner: Gaussian
    log: ClassVar[list] = []  # class attributes, not pytree fields
    traces: ClassVar[list] = []

    @property
    def dim(self):
        return self.inner.dim

    def denoise(self, x, sigma):
        CountingDenoiser.traces.append(1)
        jax.debug.callback(lambda: CountingDenoiser.log.append(1))
        return self.inner.denoise(x, sigma)


def test_nfe_counts_every_denoiser_evaluation_and_compiles_once(x64):
    model, *_, rng = gaussian_problem()
    counting = CountingDenoiser(model)
    for sigmas, rtol in [
        (np.geomspace(50.0, 0.01, 8), 1e-6),
        (np.append(np.geomspace(30.0, 0.1, 7), 0.0), 1e-4),  # trailing 0: one more evaluation
        (np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.5, 0.2, 0.0]), 1e-8),
    ]:
        CountingDenoiser.log.clear()
        solution = solve_pf_ode(counting, 30.0 * rng.normal(size=DIM), sigmas, solver="rk4", rtol=rtol, atol=rtol)
        chex.assert_shape([solution.states, solution.nfe, solution.num_steps], [(8, DIM), (), ()])
        assert int(solution.nfe) == len(CountingDenoiser.log)
        if sigmas[0] == 50.0:
            traced = len(CountingDenoiser.traces)
    assert len(CountingDenoiser.traces) == traced  # new grid values and tolerances: no retrace


def delta_denoiser(points, x, sigma):
    """softmax_i(-|x - y_i|^2 / 2 sigma^2) . y for one x (D,), in NumPy (paper Eq. 38-39)."""
    logits = -np.sum((points - x) ** 2, axis=1) / (2 * sigma**2)
    weights = np.exp(logits - logits.max())
    return weights @ points / weights.sum()


@pytest.mark.slow
def test_delta_mixture_matches_scipy_and_ends_on_a_training_point(x64):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(12, 3))
    model = DeltaMixture(points)
    x_T = 10.0 * rng.normal(size=(4, 3))
    sigmas = np.append(np.geomspace(10.0, 1e-3, 9), 0.0)
    solve = jax.jit(lambda model, x_T, sigmas: solve_pf_ode(model, x_T, sigmas, rtol=1e-10, atol=1e-10))
    solution = solve(model, x_T, sigmas)  # under jit, model and (trailing-zero) grid traced
    for b in range(len(x_T)):
        reference = solve_ivp(
            lambda s, x: (x - delta_denoiser(points, x, s)) / s,
            (sigmas[0], sigmas[-2]),
            x_T[b],
            method="DOP853",
            t_eval=sigmas[:-1],
            rtol=1e-12,
            atol=1e-12,
        )
        np.testing.assert_allclose(solution.states[:-1, b], reference.y.T, rtol=1e-6, atol=1e-7)
        last = np.asarray(solution.states[-2, b])  # at sigma = 1e-3
        nearest = points[np.argmin(np.sum((points - last) ** 2, axis=1))]
        assert np.max(np.abs(last - nearest)) < 1e-2  # converged onto a training point
        np.testing.assert_allclose(solution.states[-1, b], nearest, atol=1e-4)


def test_vp_matches_direct_integration_of_the_vp_ode(x64):
    """Paper App. D.3, Eq. 71: dx/dt = -beta x - g^2/2 (sigma_t^2 I + alpha_t^2 Sigma)^-1 (alpha_t mu - x)."""
    model, mean, eigvals, eigvecs, rng = gaussian_problem()
    cov = (eigvecs * eigvals) @ eigvecs.T

    def beta(t):
        return 0.1 + 19.9 * t

    def alpha(t):
        return np.exp(-(0.1 * t + 0.5 * 19.9 * t**2))  # exp(-int_0^t beta)

    def rhs(t, x):
        a = alpha(t)
        g2 = 2 * beta(t)
        return -beta(t) * x - 0.5 * g2 * np.linalg.solve((1 - a**2) * np.eye(DIM) + a**2 * cov, a * mean - x)

    ts = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.05, 0.01, 1e-3])
    alphas = alpha(ts)
    sigmas_vp = np.sqrt(1 - alphas**2)
    x_T = rng.normal(size=(BATCH, DIM))  # VP states at t = 1 are ~ N(0, I)
    solution = solve_vp_pf_ode(model, x_T, VPSchedule(alphas**2), rtol=1e-10, atol=1e-10)
    chex.assert_shape(solution.states, (8, BATCH, DIM))
    np.testing.assert_allclose(solution.sigmas, sigmas_vp, rtol=1e-12)
    np.testing.assert_array_equal(solution.states[0], x_T)
    for b in range(BATCH):
        reference = solve_ivp(rhs, (1.0, 1e-3), x_T[b], method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(solution.states[:, b], reference.y.T, rtol=1e-7, atol=1e-8)


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigmas", "message"),
    [
        (np.ones((2, 2)), "`sigmas` must be a 1-D grid"),
        (np.array([1.0]), "at least 2 noise levels"),
        (np.array([1.0, 2.0, 0.5]), "strictly decreasing"),
        (np.array([2.0, 1.0, 1.0]), "strictly decreasing"),
        (np.array([2.0, 1.0, -0.5]), ">= 0"),
        (np.array([2.0, np.nan]), "finite"),
    ],
)
def test_bad_sigmas(sigmas, message):
    model, *_ = gaussian_problem()
    with pytest.raises(ValueError, match=message):
        solve_pf_ode(model, np.zeros(DIM), sigmas)


def test_bad_arguments():
    model, *_ = gaussian_problem()
    sigmas = np.array([2.0, 1.0, 0.0])
    x_T = np.zeros((2, DIM))
    with pytest.raises(ValueError, match=r"`x_T` must have shape \(..., D\) with D = 5"):
        solve_pf_ode(model, np.zeros((2, DIM + 1)), sigmas)
    with pytest.raises(ValueError, match="`x_T`"):
        solve_pf_ode(model, 1.0, sigmas)
    for name, value in [("rtol", 0.0), ("atol", -1e-5), ("rtol", np.inf), ("dt0", 0.0)]:
        with pytest.raises(ValueError, match=f"`{name}` must be finite and > 0"):
            solve_pf_ode(model, x_T, sigmas, **{name: value})
    with pytest.raises(TypeError, match="`atol` must be a real numeric"):
        solve_pf_ode(model, x_T, sigmas, atol="tight")
    with pytest.raises(ValueError, match="`solver` must be one of 'tsit5', 'dopri5', 'heun', 'rk4'"):
        solve_pf_ode(model, x_T, sigmas, solver="euler")
    with pytest.raises(TypeError, match="`solver`"):
        solve_pf_ode(model, x_T, sigmas, solver=object())
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer, got 0"):
        solve_pf_ode(model, x_T, sigmas, max_steps=0)
    with pytest.raises(TypeError, match="`model` must have a `denoise"):
        solve_pf_ode(object(), x_T, sigmas)


def test_bad_vp_arguments():
    model, *_ = gaussian_problem()
    x_T = np.zeros((2, DIM))
    with pytest.raises(TypeError, match="`schedule` must be a gaussjax.VPSchedule"):
        solve_vp_pf_ode(model, x_T, np.array([0.5, 0.9, 1.0]))
    with pytest.raises(ValueError, match="`alphas_cumprod` must be finite and > 0"):
        solve_vp_pf_ode(model, x_T, VPSchedule(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match=r"`schedule.edm_sigma` must be strictly decreasing"):
        solve_vp_pf_ode(model, x_T, VPSchedule(np.array([0.9, 0.5])))  # noise increasing
    with pytest.raises(ValueError, match="`rtol`"):
        solve_vp_pf_ode(model, x_T, VPSchedule(np.array([0.5, 1.0])), rtol=0.0)


def test_max_steps_reached_says_what_to_do(x64):
    model, *_, rng = gaussian_problem()
    x_T = 50.0 * rng.normal(size=(BATCH, DIM))
    # Heun (2nd order) at 1e-13 needs far more than the default 4096 steps; same compiled solve as above
    with pytest.raises(RuntimeError, match=r"`max_steps` = 4096.*raise `max_steps` or loosen `rtol`/`atol`"):
        solve_pf_ode(model, x_T, np.geomspace(50.0, 0.01, 8), solver="heun", rtol=1e-13, atol=1e-13, dt0=0.5)


def test_a_denoiser_of_the_wrong_output_shape_is_named():
    class WrongShape:
        def denoise(self, x, sigma):
            return x[..., :2]

    with pytest.raises(ValueError, match=r"`model.denoise` returned shape \(2,\) for states of shape \(4,\)"):
        solve_pf_ode(WrongShape(), 80.0 * jnp.ones((3, 4)), jnp.array([80.0, 1.0]))
