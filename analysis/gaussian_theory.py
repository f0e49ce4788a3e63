"""`python -m analysis gaussian-theory`: the closed-form Gaussian dynamics of a dataset (paper Fig. 3, Sec. 3).

For each of the top covariance eigenvalues `lam_k` of the training set (`gj.fit_gaussian`)
and each noise level, the special functions of the Gaussian PF-ODE solution:

    psi(sigma, lam)   growth of the state along u_k            (Eq. 15; VP psi-bar, Eq. 18)
    xi(sigma, lam)    gain of the denoiser output along u_k    (Eq. 16; VP xi-bar, Eq. 20)
    d xi / d sigma    its rate: the "critical period" of a feature, peaking at sigma = sqrt(lam / 2) (EDM)
    amplification     sqrt(lam / (sigma^2 + lam alpha^2)), effect of a perturbation on x_0 (Eq. 23)

in two conventions: EDM (`alpha = 1`, a geometric sigma grid, started at `sigma_T = --sigma-T`)
and VP with DDPM's linear schedule (`alpha_t, sigma_t` of `gj.ddpm_linear_schedule()`,
started at its last timestep). In VP, `d xi / d sigma` is the derivative along the schedule's
path `alpha^2 + sigma^2 = 1` (`jax.jvp` of `xi`), and `dxi_dt` is its time derivative
(Fig. 3D) through `d sigma_t / d t` (finite differences of the schedule).

CSV `gaussian_theory.csv`, one row per (convention, noise level, eigenvalue):
    convention      'edm' or 'vp'
    t               VP timestep index (empty for EDM)
    alpha           signal scale (1 for EDM)
    sigma           noise scale (EDM sigma, or VP sigma_t)
    edm_sigma       the equivalent EDM noise level sigma / alpha
    eigval_index    k, 0 for the largest eigenvalue
    eigval          lam_k
    psi, xi         Eq. 15 / 16 (VP: 18 / 20)
    dxi_dsigma      d xi / d sigma
    dxi_dt          d xi / d t per timestep (VP only; empty for EDM)
    amplification   Eq. 23
PNG `gaussian_theory.png`: rows EDM and VP; columns psi, xi / sqrt(lam), d xi, amplification.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import gaussjax as gj
from analysis._common import Command, Result, check_sigma, sigma_grid
from analysis.memory import ROW_BYTES, check_memory
from analysis.output import figure, save_figure, write_csv
from gaussjax.checks import InputValueError
from gaussjax.solution import amplification_factor, dxi_dsigma, psi, xi

OUTPUTS = ("gaussian_theory.csv", "gaussian_theory.png")
COLUMNS = ("convention", "t", "alpha", "sigma", "edm_sigma", "eigval_index", "eigval", "psi", "xi", "dxi_dsigma",
           "dxi_dt", "amplification")
SUMMARY_EIGVALS = 5  # critical sigmas printed for this many top eigenvalues


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gaussian-theory")
    group.add_argument("--num-sigmas", type=int, default=200, help="EDM grid size (default 200)")
    group.add_argument("--sigma-min", type=float, default=1e-3, help="EDM grid start (default 1e-3)")
    group.add_argument("--sigma-max", type=float, default=1e2, help="EDM grid end (default 1e2)")
    group.add_argument("--sigma-T", type=float, default=80.0, help="EDM initial noise level sigma_T (default 80)")
    group.add_argument("--num-eigvals", type=int, default=10, help="top covariance eigenvalues (default 10)")


def top_eigvals(flat: np.ndarray, count: int) -> np.ndarray:
    """The `count` largest covariance eigenvalues `(count,)` of `flat (N, D)`, descending (`gj.fit_gaussian`)."""
    _check_num_eigvals(count, flat.shape[1])
    return np.asarray(gj.fit_gaussian(flat, rank=count).eigvals, dtype=np.float64)


def _check_num_eigvals(count: int, dim: int) -> None:
    if not 1 <= count <= dim:
        raise InputValueError(f"`--num-eigvals` must be in [1, D = {dim}], got {count}")


def edm_curves(sigmas: np.ndarray, lam: np.ndarray, sigma_T: float) -> dict[str, np.ndarray]:
    """Eq. 15, 16, d xi / d sigma and Eq. 23 at `alpha = 1`: each `(S, K)` for `sigmas (S,)`, `lam (K,)`."""
    s, lam_ = jnp.asarray(sigmas)[:, None], jnp.asarray(lam)[None, :]
    curves = {
        "psi": psi(s, lam_, sigma_T),
        "xi": xi(s, lam_, sigma_T),
        "dxi_dsigma": dxi_dsigma(s, lam_, sigma_T),
        "amplification": amplification_factor(s, lam_),
    }
    return {name: np.asarray(value, dtype=np.float64) for name, value in curves.items()}


def vp_curves(schedule, lam: np.ndarray) -> dict[str, np.ndarray]:
    """Eq. 18, 20, d xi-bar / d sigma_t, d xi-bar / d t and Eq. 23 along a VP schedule: each `(T, K)`.

    The trajectory starts at the schedule's last timestep (`sigma_T`, `alpha_T`). The slope is
    the directional derivative of `xi(sigma, alpha)` along the VP path `alpha^2 + sigma^2 = 1`,
    tangent `(1, -sigma / alpha)` (a `jax.jvp` of Eq. 20: no `sqrt(1 - sigma^2)` cancellation).
    """
    alpha, sigma = np.asarray(schedule.alpha), np.asarray(schedule.sigma)
    sigma_T, alpha_T = sigma[-1], alpha[-1]
    s, a, lam_ = jnp.asarray(sigma)[:, None], jnp.asarray(alpha)[:, None], jnp.asarray(lam)[None, :]
    tangent = (jnp.ones_like(s), jnp.asarray(-sigma / alpha)[:, None])
    xi_bar, slope = jax.jvp(lambda s_, a_: xi(s_, lam_, sigma_T, a_, alpha_T), (s, a), tangent)
    curves = {
        "psi": psi(s, lam_, sigma_T, a, alpha_T),
        "xi": xi_bar,
        "dxi_dsigma": slope,
        "amplification": amplification_factor(s, lam_, a),
    }
    curves = {name: np.asarray(value, dtype=np.float64) for name, value in curves.items()}
    return {**curves, "dxi_dt": curves["dxi_dsigma"] * np.gradient(sigma)[:, None]}


def check_finite(curves: dict[str, np.ndarray], sigmas: np.ndarray, lam: np.ndarray, sigma_T: float) -> None:
    """Refuse EDM curves `(S, K)` that overflowed float32 (sigma, sigma_T and lam too far apart), naming the options.

    Each noise level is in float32's range (`analysis.noise_levels`), but a ratio such as
    `sigma^2 / lam` can still overflow; no row is written with inf or NaN.
    """
    for name, values in curves.items():
        bad = ~np.isfinite(values)
        if bad.any():
            i, k = np.argwhere(bad)[0]
            raise InputValueError(f"{name} overflows float32 at sigma = {sigmas[i]:.3g} for the eigenvalue "
                                  f"{lam[k]:.3g} with `--sigma-T` {sigma_T:.3g}: narrow `--sigma-min`/`--sigma-max` "
                                  "or change `--sigma-T`")


def curve_rows(convention: str, levels: dict[str, np.ndarray], lam: np.ndarray, curves: dict) -> list[dict]:
    """Tidy rows: `levels` are per-noise-level columns `(S,)` (alpha, sigma, VP t), `curves` are `(S, K)`.

    Columns missing from `levels` and `curves` (t and dxi_dt for EDM) stay empty in the CSV.
    """
    edm_sigma = levels["sigma"] / levels["alpha"]
    return [
        {"convention": convention, **{name: value[i].item() for name, value in levels.items()},
         "edm_sigma": float(edm_sigma[i]), "eigval_index": k, "eigval": float(lam[k]),
         **{name: float(value[i, k]) for name, value in curves.items()}}
        for i in range(len(edm_sigma))
        for k in range(len(lam))
    ]


def critical_sigmas(sigmas: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """The grid noise level where `|rate|` peaks, per eigenvalue: `(K,)` from `sigmas (S,)`, `rate (S, K)`."""
    return sigmas[np.argmax(np.abs(rate), axis=0)]


def plot(edm: dict, vp: dict, sigmas: np.ndarray, lam: np.ndarray, path) -> None:
    """Fig. 3 B-E for both conventions: EDM against sigma (log), VP against the timestep t.

    The xi panels show `xi / sqrt(lam)` and its derivative (Fig. 3C, D); dotted lines mark
    the EDM critical sigmas `sqrt(lam / 2)`.
    """
    fig, axes = figure(4, 2)
    panels = (("psi", "psi"), ("xi", "xi / sqrt(lam)"), ("rate", "d (xi / sqrt(lam)) / d {}"),
              ("amplification", "amplification (Eq. 23)"))
    edm_axis = (edm, sigmas, "sigma", "dxi_dsigma", "sigma (EDM)")
    vp_axis = (vp, np.arange(len(vp["psi"])), "t", "dxi_dt", "t (VP, DDPM linear)")
    for row, (curves, x, variable, rate, label) in enumerate((edm_axis, vp_axis)):
        for col, (name, title) in enumerate(panels):
            ax = axes[row, col]
            values = curves[rate if name == "rate" else name]
            if name in ("xi", "rate"):
                values = values / np.sqrt(lam)[None, :]
            for k in range(len(lam)):
                ax.plot(x, values[:, k], color=f"C{k % 10}", lw=1, label=f"lam={lam[k]:.3g}")
            ax.set_title(title.format(variable), fontsize=9)
            ax.set_xlabel(label)
        axes[row, 0].set_yscale("log")
    for ax in axes[0]:
        ax.set_xscale("log")
    for k in range(len(lam)):
        axes[0, 2].axvline(np.sqrt(lam[k] / 2), color=f"C{k % 10}", ls=":", lw=0.6)
    axes[1, 0].legend(fontsize=6)
    fig.subplots_adjust(hspace=0.4, wspace=0.3)
    save_figure(fig, path)


def summary_lines(lam: np.ndarray, sigmas: np.ndarray, edm: dict, vp: dict, schedule) -> list[str]:
    """Critical noise levels of the top eigenvalues: theory `sqrt(lam / 2)` vs the grid peak of |d xi / d sigma|."""
    edm_peak = critical_sigmas(sigmas, edm["dxi_dsigma"])
    vp_peak_t = np.argmax(np.abs(vp["dxi_dt"]), axis=0)
    vp_edm_sigma = np.asarray(schedule.edm_sigma)
    lines = ["critical period of the top eigenvalues (peak of |d xi|):",
             f"  {'k':>3} {'lam':>10} {'sqrt(lam/2)':>12} {'EDM peak':>10} {'VP peak t':>10} {'sigma/alpha':>12}"]
    for k in range(min(SUMMARY_EIGVALS, len(lam))):
        t = int(vp_peak_t[k])
        lines.append(f"  {k:>3} {lam[k]:>10.4g} {np.sqrt(lam[k] / 2):>12.4g} {edm_peak[k]:>10.4g} {t:>10d} "
                     f"{vp_edm_sigma[t]:>12.4g}")
    return lines


def validate(context, args) -> None:
    """Refuse bad options (named) and a grid whose rows would not fit in memory, before any work."""
    check_sigma("--sigma-T", args.sigma_T)
    _check_num_eigvals(args.num_eigvals, context.flat.shape[1])
    levels = args.num_sigmas + len(gj.ddpm_linear_schedule())
    check_memory(ROW_BYTES * levels * args.num_eigvals,
                 f"`--num-sigmas` {args.num_sigmas} x `--num-eigvals` {args.num_eigvals} (the rows of {OUTPUTS[0]})")
    sigma_grid(args.num_sigmas, args.sigma_min, args.sigma_max, min_num=2)


def run(context, args) -> Result:
    """Compute the curves, write `gaussian_theory.csv` and `.png`."""
    sigmas = sigma_grid(args.num_sigmas, args.sigma_min, args.sigma_max, min_num=2)
    lam = top_eigvals(context.flat, args.num_eigvals)
    schedule = gj.ddpm_linear_schedule()
    edm, vp = edm_curves(sigmas, lam, args.sigma_T), vp_curves(schedule, lam)
    check_finite(edm, sigmas, lam, args.sigma_T)
    rows = curve_rows("edm", {"alpha": np.ones_like(sigmas), "sigma": sigmas}, lam, edm)
    vp_levels = {"t": np.arange(len(schedule)), "alpha": np.asarray(schedule.alpha),
                 "sigma": np.asarray(schedule.sigma)}
    rows += curve_rows("vp", vp_levels, lam, vp)
    csv_path = write_csv(context.path("gaussian_theory.csv"), rows, COLUMNS)
    png_path = context.path("gaussian_theory.png")
    plot(edm, vp, sigmas, lam, png_path)
    return Result(summary_lines(lam, sigmas, edm, vp, schedule), [csv_path, png_path])


COMMAND = Command(
    name="gaussian-theory",
    help="Fig. 3: psi, xi, d xi / d sigma and the amplification factor of the Gaussian solution",
    description=__doc__, outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run, needs_network=False,
)
