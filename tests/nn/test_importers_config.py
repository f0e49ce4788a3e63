"""Constructor arguments read from files: the allow-list, and the closed-form parameter bound against exact counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import TINY

from gaussjax.nn import DhariwalUNet, SongUNet
from gaussjax.nn._stored_config import MAX_INT, minimum_parameter_count, stored_arguments

CONFIGS = [
    (SongUNet, TINY),
    (SongUNet, {**TINY, "label_dim": 10, "augment_dim": 9, "attn_resolutions": (4,), "channel_mult_emb": 2}),
    (SongUNet, {**TINY, "embedding_type": "fourier", "channel_mult_noise": 2, "encoder_type": "residual",
                "resample_filter": (1, 3, 3, 1), "num_blocks": 0}),
    (SongUNet, {**TINY, "channel_mult_noise": 16}),
    (SongUNet, {**TINY, "encoder_type": "skip", "decoder_type": "skip", "channel_mult": (1, 2, 2), "num_blocks": 2}),
    (SongUNet, {**TINY, "in_channels": 3, "out_channels": 3, "model_channels": 32, "channel_mult": (2, 2)}),
    (DhariwalUNet, {**TINY, "attn_resolutions": (4,)}),
    (DhariwalUNet, {**TINY, "label_dim": 10, "augment_dim": 9, "channel_mult": (1, 2, 3), "num_blocks": 2}),
    (DhariwalUNet, {**TINY, "in_channels": 3, "out_channels": 6, "model_channels": 16, "num_blocks": 0}),
]


def _exact_count(cls, kwargs) -> int:
    net = cls(**kwargs)
    r, c = net.img_resolution, net.in_channels
    labels = jnp.zeros((1, net.label_dim)) if net.label_dim else None
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, r, r, c)), jnp.zeros((1,)), labels)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))


@pytest.mark.parametrize("cls, kwargs", CONFIGS)
@pytest.mark.slow
def test_minimum_parameter_count_is_a_tight_lower_bound(cls, kwargs):
    exact = _exact_count(cls, kwargs)
    bound = minimum_parameter_count(cls, kwargs)
    assert exact / 5 <= bound <= exact, (bound, exact)


def test_minimum_parameter_count_is_exact_arithmetic():
    """Sizes far past float64's 2^53 (and int64) are bounded without rounding or overflow."""
    kwargs = {**TINY, "model_channels": MAX_INT, "channel_mult": (MAX_INT,), "num_blocks": MAX_INT}
    c = MAX_INT * MAX_INT
    bound = minimum_parameter_count(SongUNet, kwargs)
    assert type(bound) is int and bound > (2 * MAX_INT + 1) * 9 * c * c > 2**158
    assert minimum_parameter_count(SongUNet, {**TINY, "model_channels": "8"}) is None  # the constructor refuses it
    assert minimum_parameter_count(SongUNet, {**TINY, "channel_mult": (1, 2.0)}) is None


def test_stored_arguments_allow_plain_constructor_arguments_only():
    where = "net.safetensors: net.kwargs"
    got = stored_arguments(SongUNet, {"channel_mult": [1, 2], "dropout": 0.5, "label_dim": np.int64(3),
                                      "fourier_freqs": [0.5] * 300}, where)
    assert got == {"channel_mult": (1, 2), "dropout": 0.5, "label_dim": 3, "fourier_freqs": (0.5,) * 300}
    assert type(got["label_dim"]) is int
    for kwargs, message in [
        ({"parent": None}, r"net.kwargs: SongUNet has no argument\(s\) 'parent' that a file may set"),
        ({"name": "x", "net": 1}, r"'name', 'net'"),
        ({"channel_mult": [1, [2]]}, r"net.kwargs.channel_mult\[1\] must be None, a bool, a string or a number"),
        ({"num_blocks": {"a": 1}}, r"net.kwargs.num_blocks must be None"),
        ({"num_blocks": 10**4000}, r"net.kwargs.num_blocks must be an integer of magnitude at most 2147483647, got "
                                   r"one of 13288 bits"),
        ({"channel_mult": [1, -2**31]}, r"channel_mult\[1\] must be an integer of magnitude"),
        ({"attn_resolutions": list(range(65))}, r"net.kwargs.attn_resolutions has 65 entries; at most 64"),
    ]:
        with pytest.raises(ValueError, match=message):
            stored_arguments(SongUNet, kwargs, where)
