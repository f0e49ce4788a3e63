"""Memory probe run in a fresh process by `bench/scores.py` (one call, peak RSS increase printed in MiB)."""

import jax
import jax.numpy as jnp
from _timing import peak_increase_mib

from gaussjax.scores import DeltaMixture


def run(num_points: int, dim: int, num_queries: int, formulation: str) -> None:
    key = jax.random.split(jax.random.key(0), 2)
    points = jax.random.uniform(key[0], (num_points, dim), minval=-1.0, maxval=1.0)
    x = jax.random.normal(key[1], (num_queries, dim))
    sigma = jnp.full((num_queries,), 0.5)
    if formulation == "streamed":
        model = DeltaMixture(points)
        del points
        compiled = jax.jit(lambda m, x, s: m.score(x, s)).lower(model, x, sigma).compile()
        call = lambda: compiled(model, x, sigma)  # noqa: E731
    else:
        half_sq = 0.5 * jnp.sum(jnp.square(points), axis=-1)

        def one_shot(points, half_sq, x, s):
            logits = (x @ points.T - half_sq[None, :]) / jnp.square(s)[:, None]
            return (jax.nn.softmax(logits, axis=-1) @ points - x) / jnp.square(s)[:, None]

        compiled = jax.jit(one_shot).lower(points, half_sq, x, sigma).compile()
        call = lambda: compiled(points, half_sq, x, sigma)  # noqa: E731
    jax.block_until_ready(x)
    print(f"{peak_increase_mib(call):.1f}")
