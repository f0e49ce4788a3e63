"""Fixtures of the gaussjax.nn tests: one tiny network, its EDM initialization and random weights."""

import jax
import jax.numpy as jnp
import pytest
from nn_helpers import TINY, random_variables

from gaussjax.nn import EDMPrecond, SongUNet


@pytest.fixture(scope="session")
def tiny_precond():
    """An 8x8x1 EDMPrecond(SongUNet) with dropout 0.1 and its initial variables (EDM's initialization)."""
    precond = EDMPrecond(SongUNet(**TINY, dropout=0.1))
    params = jax.jit(precond.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
    return precond, params


@pytest.fixture(scope="session")
def tiny_random(tiny_precond):
    """The same network with random weights everywhere (so F(x) is far from its ~0 initialization)."""
    precond, _ = tiny_precond
    return precond, random_variables(precond, jax.random.key(2), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
