"""Score agreement across noise levels: one model against several candidates (paper Sec. 4.2, 5).

For each sigma of a grid, query points x are drawn from a query distribution, and each
candidate's denoiser is compared with the reference's through the fraction of
unexplained variance (Eq. 28) of the denoiser and of the score. Because
`score = (D(x) - x) / sigma^2` for every model, the score FUV is
`E||D_ref - D_c||^2 / E||D_ref - x||^2`: both columns come from one denoiser call per
model and sigma (the paper's tables carry both, `St_EV` and `Dt_EV`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from gaussjax._checks import check_data_matrix, check_noise_levels, check_positive_int, is_concrete
from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._pytree import check_output_shape as _check_output_shape
from gaussjax._pytree import denoise_checked as _denoise_checked
from gaussjax._pytree import traceable_model
from gaussjax.conventions import score_from_denoiser
from gaussjax.data._memory import device_view
from gaussjax.metrics import fraction_unexplained_variance
from gaussjax.scores._base import AnalyticModel

ANALYTIC_BATCH = 256  # queries per call of an analytic candidate (`make_score_probe`)

__all__ = [
    "NoisedData",
    "PureNoise",
    "ScoreProbe",
    "compare_scores",
    "denoiser_r2",
    "format_table",
    "make_score_probe",
    "noised_data",
    "pure_noise",
]


@dataclasses.dataclass(frozen=True)
class NoisedData:
    """Query distribution: `x = y + sigma n`, `y` drawn uniformly from `points (N, D)`, `n ~ N(0, I)` (Sec. 5).

    The same `y` and `n` are used at every sigma (common random numbers), so curves
    over sigma are smooth. Built by `noised_data(points)`; `points` is checked (a finite,
    non-empty `(N, D)` matrix; a read-only NumPy array of the default float dtype, such as a
    `Dataset`'s `.flat`, is used without a copy on a CPU backend, see `gaussjax.data._memory`).
    """

    points: Float[Array, "N D"]

    def __post_init__(self):
        # a read-only host array (a `Dataset`'s) is used in place where JAX can (`device_view`), not copied
        object.__setattr__(self, "points", check_data_matrix("points", device_view(self.points)))

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def sample(self, key: PRNGKeyArray, sigmas: Float[ArrayLike, " S"], num: int) -> Float[Array, "S num D"]:
        """`(len(sigmas), num, D)` query points."""
        pick, noise = jax.random.split(key)
        y = self.points[jax.random.randint(pick, (num,), 0, self.points.shape[0])]
        n = jax.random.normal(noise, y.shape, y.dtype)
        return y[None] + jnp.asarray(sigmas, y.dtype)[:, None, None] * n[None]


@dataclasses.dataclass(frozen=True)
class PureNoise:
    """Query distribution: `x ~ N(0, sigma^2 I)` in `dim` dimensions (Sec. 4.2). Built by `pure_noise(dim)`."""

    dim: int

    def __post_init__(self):
        object.__setattr__(self, "dim", check_positive_int("dim", self.dim))

    def sample(self, key: PRNGKeyArray, sigmas: Float[ArrayLike, " S"], num: int) -> Float[Array, "S num D"]:
        n = jax.random.normal(key, (num, self.dim))
        return jnp.asarray(sigmas, n.dtype)[:, None, None] * n[None]


def noised_data(points: Float[ArrayLike, "N D"]) -> NoisedData:
    """Query distribution: training points plus noise, `y + sigma n`."""
    return NoisedData(points)  # type: ignore[arg-type]  # its __post_init__ checks and converts any ArrayLike


def pure_noise(dim: int) -> PureNoise:
    """Query distribution: pure noise `N(0, sigma^2 I)`."""
    return PureNoise(dim)


def _check_grid(sigmas) -> np.ndarray:
    """The probe's noise levels as float64 NumPy `(S,)` (concrete: they label the rows)."""
    if not is_concrete(check_noise_levels("sigmas", sigmas, positive=True)):
        raise InputTypeError("`sigmas` must be concrete: the rows of the table are labelled by their values")
    return np.atleast_1d(np.asarray(sigmas, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class ScoreProbe:
    """A fixed query set with the candidates' denoiser outputs computed once.

    Calling it with a reference model costs one reference denoiser call per sigma,
    which makes repeated comparisons (e.g. a network at every training checkpoint)
    cheap. Build it with `make_score_probe`.

    Attributes:
        sigmas: `(S,)` noise levels.
        queries: `(S, Q, D)` query points per sigma.
        candidate_outputs: name -> `(S, Q, D)` candidate denoiser outputs.
    """

    sigmas: np.ndarray
    queries: jax.Array
    candidate_outputs: dict

    def __call__(self, reference) -> list[dict]:
        """Rows `sigma, candidate, fuv_score, fuv_denoiser, r2_denoiser, mse_denoiser` of `reference` vs each candidate.

        The reference denoises one noise level's `Q` queries per compiled call (outside any
        compiled loop, so its working memory, e.g. a network's activations, is that of a batch of
        `Q`, and a network's convolutions run as fast as XLA makes them), and every statistic is
        reduced on the device in one more call (one transfer, whatever the number of candidates).
        """
        names = list(self.candidate_outputs)
        sigmas = jnp.asarray(self.sigmas, self.queries.dtype)
        outputs = tuple(self.candidate_outputs[name] for name in names)  # (a dict would come back key-sorted)
        model = traceable_model(reference)
        ref = tuple(_denoise_level(model, self.queries, sigmas, level) for level in range(len(self.sigmas)))
        stats = jax.device_get(_probe_statistics(ref, self.queries, sigmas, outputs))
        return [
            {"sigma": float(sigma), "candidate": name, **{column: float(stats[column][c, i]) for column in _STATISTICS}}
            for i, sigma in enumerate(self.sigmas)
            for c, name in enumerate(names)
        ]


_STATISTICS = ("fuv_score", "fuv_denoiser", "r2_denoiser", "mse_denoiser")


def denoiser_r2(reference: Float[ArrayLike, "Q D"], approx: Float[ArrayLike, "Q D"]) -> Float[Array, ""]:
    """Coefficient of determination of `approx` for the denoiser outputs `reference (Q, D)`.

        R^2 = 1 - sum ||ref - approx||^2 / sum ||ref - mean_q(ref)||^2

    over the Q queries of one noise level (the denoiser-space agreement that Kamb & Ganguli
    and Niedoba et al. report): 1 is perfect, 0 is no better than the mean output.
    """
    reference, approx = jnp.asarray(reference), jnp.asarray(approx)
    centered = reference - jnp.mean(reference, axis=0, keepdims=True)
    return 1 - jnp.sum(jnp.square(reference - approx)) / jnp.sum(jnp.square(centered))


@jax.jit
def _denoise_level(reference, queries, sigmas, level) -> jax.Array:
    """`reference`'s denoiser at noise level `level`: `queries[level] (Q, D)` at `sigmas[level]`."""
    x = queries[level]
    out = reference.denoise(x, sigmas[level])
    _check_output_shape("reference", out, x)  # at trace time: a wrong shape would broadcast below
    return out


@jax.jit
def _probe_statistics(reference, queries, sigmas, candidate_outputs) -> dict:
    """Each of `_STATISTICS` as `(C, S)`; S reference outputs `(Q, D)`, `queries (S, Q, D)`, `sigmas (S,)`,
    C candidate outputs `(S, Q, D)`."""
    ref = jnp.stack(reference)  # (S, Q, D)
    approx = jnp.stack(candidate_outputs)  # (C, S, Q, D)
    per_sigma = jax.vmap(_pair_statistics)  # over S
    return jax.vmap(per_sigma, in_axes=(None, 0, None, None))(ref, approx, queries, sigmas)


def _pair_statistics(ref, approx, queries, sigma) -> dict:
    """The statistics of one candidate at one sigma; `ref`, `approx`, `queries` `(Q, D)`, `sigma` scalar."""
    return {
        "fuv_score": fraction_unexplained_variance(
            score_from_denoiser(ref, queries, sigma), score_from_denoiser(approx, queries, sigma)
        ),
        "fuv_denoiser": fraction_unexplained_variance(ref, approx),
        "r2_denoiser": denoiser_r2(ref, approx),
        "mse_denoiser": jnp.mean(jnp.square(ref - approx)),
    }


def make_score_probe(
    candidates: Mapping[str, object],
    queries: NoisedData | PureNoise,
    sigmas: Float[ArrayLike, " S"] | Sequence[float],
    *,
    key: PRNGKeyArray,
    num_queries: int = 256,
) -> ScoreProbe:
    """Draw the query points and evaluate every candidate on them once (see `compare_scores`).

    A candidate denoises one noise level's `Q` queries per call; an analytic model (`AnalyticModel`,
    whose working memory is bounded by its own blocks) takes several levels per call, up to
    `ANALYTIC_BATCH` queries, which reads its arrays (a mixture's eigenvectors, the delta's points)
    once for all of them instead of once per level.
    """
    sigmas = _check_grid(sigmas)
    if not candidates:
        raise InputValueError("`candidates` is empty: pass a dict name -> model")
    num_queries = check_positive_int("num_queries", num_queries)
    points = queries.sample(key, sigmas, num_queries)
    outputs = {name: _candidate_outputs(f"candidates[{name!r}]", model, sigmas, points)
               for name, model in candidates.items()}
    return ScoreProbe(sigmas, points, outputs)


def _candidate_outputs(name: str, model, sigmas: np.ndarray, points: jax.Array) -> jax.Array:
    """`model`'s denoiser outputs `(S, Q, D)` at the queries `points (S, Q, D)`, a group of noise levels per call."""
    num_levels, num_queries, dim = points.shape
    if not isinstance(model, AnalyticModel):
        return jnp.stack([_denoise_checked(name, model, x, jnp.asarray(s, x.dtype))
                          for s, x in zip(sigmas, points, strict=True)])
    levels = max(1, ANALYTIC_BATCH // num_queries)
    groups = []
    for start in range(0, num_levels, levels):
        x = points[start : start + levels].reshape(-1, dim)
        sigma = jnp.repeat(jnp.asarray(sigmas[start : start + levels], x.dtype), num_queries)
        groups.append(_denoise_checked(name, model, x, sigma).reshape(-1, num_queries, dim))
    return groups[0] if len(groups) == 1 else jnp.concatenate(groups)


def compare_scores(
    reference,
    candidates: Mapping[str, object],
    queries: NoisedData | PureNoise,
    sigmas: Float[ArrayLike, " S"] | Sequence[float],
    *,
    key: PRNGKeyArray,
    num_queries: int = 256,
) -> list[dict]:
    """FUV of each candidate's score and denoiser against `reference`, per sigma.

    Args:
        reference: any model with `.denoise(x, sigma)` (neural or analytic).
        candidates: name -> model with `.denoise`.
        queries: `noised_data(points)` or `pure_noise(dim)`.
        sigmas: the noise grid, each > 0.
        key: PRNG key for the query points (fixed key: same queries every call).
        num_queries: query points per sigma.

    Returns:
        A tidy table: one dict per (sigma, candidate) with keys `sigma`, `candidate`,
        `fuv_score`, `fuv_denoiser` (Eq. 28 of the score and of the denoiser),
        `r2_denoiser` (`denoiser_r2`) and `mse_denoiser` (mean squared difference of the
        denoiser outputs per coordinate), floats, in grid order.
    """
    return make_score_probe(candidates, queries, sigmas, key=key, num_queries=num_queries)(reference)


def format_table(rows: Sequence[dict], column: str = "fuv_score") -> str:
    """Rows of `compare_scores` as text: one line per sigma, one column per candidate."""
    names = list(dict.fromkeys(r["candidate"] for r in rows))
    sigmas = list(dict.fromkeys(r["sigma"] for r in rows))
    value = {(r["sigma"], r["candidate"]): r[column] for r in rows}
    width = max(10, *(len(n) for n in names))
    lines = [f"{'sigma':>9} " + " ".join(f"{n:>{width}}" for n in names)]
    for s in sigmas:
        lines.append(f"{s:>9.3g} " + " ".join(f"{value[(s, n)]:>{width}.3e}" for n in names))
    return "\n".join(lines)
