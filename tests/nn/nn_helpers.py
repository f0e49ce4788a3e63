"""Helpers shared by the gaussjax.nn tests.

Compiling a network is the cost of these tests (seconds each on a small CPU), so they
share a few compiled functions: `evaluate` (eval mode) and `train_apply` (dropout on), called
on a batch of `B` images.
"""

import functools
import os
import sys

import jax
import numpy as np
import pytest

TINY = {"img_resolution": 8, "in_channels": 1, "out_channels": 1, "model_channels": 8, "channel_mult": (1, 2),
        "num_blocks": 1, "attn_resolutions": ()}
B = 16  # batch size of every evaluation in the tests


@functools.partial(jax.jit, static_argnums=0)
def evaluate(module, variables, x, sigma, class_labels):
    """`module.apply(..., train=False)`: the network in evaluation mode, as `NeuralDenoiser` runs it."""
    return module.apply(variables, x, sigma, class_labels, train=False)


@functools.partial(jax.jit, static_argnums=0)
def train_apply(module, variables, x, sigma, key):
    """`module.apply(..., train=True)` with `key` as the dropout stream."""
    return module.apply(variables, x, sigma, train=True, rngs={"dropout": key})


def random_variables(module, key, *args, scale=0.1, **kwargs):
    """Variables of `module` (shapes from `init`) filled with `N(0, scale^2)` from one draw, in one compiled call.

    Tests that only need *some* non-trivial weights use this instead of compiling `init`.
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args, **kwargs)
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    offsets = np.cumsum([0] + sizes)

    @jax.jit
    def make(key):
        flat = scale * jax.random.normal(key, (int(offsets[-1]),))
        return treedef.unflatten(
            [flat[o:o + n].reshape(leaf.shape).astype(leaf.dtype)
             for o, n, leaf in zip(offsets[:-1], sizes, leaves, strict=True)])

    return make(key)


def import_edm():
    """`(torch, training.networks)` of NVlabs/edm at $GAUSSJAX_EDM_SRC; skips the test if either fails to import."""
    try:
        source = os.environ["GAUSSJAX_EDM_SRC"]
        if source not in sys.path:
            sys.path.insert(0, source)
        import torch
        from training import networks
        return torch, networks
    except Exception as error:  # noqa: BLE001 - any failure to import torch or EDM means "not available here"
        pytest.skip(f"torch/EDM not importable: {type(error).__name__}: {error}")
