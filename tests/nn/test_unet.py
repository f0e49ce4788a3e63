"""SongUNet: parameter counts and outputs against NVlabs/edm, structure, initialization, validation."""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from nn_helpers import TINY, B, evaluate, random_variables, train_apply

from gaussjax._torch import variables_from_state_dict
from gaussjax.nn import SongUNet
from gaussjax.nn._rng import bit_generator_key

REFERENCE = Path(__file__).parent / "data" / "edm_songunet_reference.npz"


def _variables_shape(net, batch=1, **labels):
    r, c = net.img_resolution, net.in_channels
    x = jax.ShapeDtypeStruct((batch, r, r, c), jnp.float32)
    noise = jax.ShapeDtypeStruct((batch,), jnp.float32)
    return jax.eval_shape(net.init, jax.random.key(0), x, noise, **labels)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


CIFAR10 = {"img_resolution": 32, "in_channels": 3, "out_channels": 3, "model_channels": 128, "channel_mult": (2, 2, 2),
               "num_blocks": 4, "attn_resolutions": (16,)}
MNIST_MINI = {"img_resolution": 32, "in_channels": 1, "out_channels": 1, "model_channels": 16,
              "channel_mult": (1, 2, 3, 4), "num_blocks": 1, "attn_resolutions": ()}


@pytest.mark.parametrize(
    "config, expected",
    [
        (dict(CIFAR10, augment_dim=9), 55_733_891),  # EDM's DDPM++ CIFAR-10 (config F, with augmentation)
        (CIFAR10, 55_732_739),
        (MNIST_MINI, 1_000_801),  # the paper's mini-EDM MNIST network (Table 3)
    ],
)
def test_parameter_count_matches_edm(config, expected):
    variables = _variables_shape(SongUNet(**config))
    assert list(variables) == ["params"]
    assert _count(variables) == expected


def test_cifar10_layer_breakdown():
    """Per-layer counts of EDM's DDPM++ CIFAR-10 net, worked out from its constructor."""
    params = _variables_shape(SongUNet(**CIFAR10))["params"]
    c, e = 256, 512  # channels at every level (128 * 2), embedding channels (128 * 4)

    def block(cin, cout, attention=False, skip=False):
        n = 2 * cin + 9 * cin * cout + cout + e * cout + cout + 2 * cout + 9 * cout * cout + cout
        if skip:
            n += cin * cout + cout
        if attention:
            n += 2 * cout + cout * 3 * cout + 3 * cout + cout * cout + cout
        return n

    assert _count(params["map_layer0"]) == 128 * e + e
    assert _count(params["map_layer1"]) == e * e + e
    assert _count(params["enc_32x32_conv"]) == 9 * 3 * 128 + 128
    assert _count(params["enc_32x32_block0"]) == block(128, c, skip=True)
    assert _count(params["enc_16x16_down"]) == block(c, c, skip=True)  # resample_proj: 1x1 skip on down blocks
    assert _count(params["enc_16x16_block0"]) == block(c, c, attention=True)
    assert _count(params["dec_8x8_in0"]) == block(c, c, attention=True)
    assert _count(params["dec_8x8_in1"]) == block(c, c)
    assert _count(params["dec_16x16_block4"]) == block(2 * c, c, attention=True, skip=True)
    assert _count(params["dec_32x32_block4"]) == block(c + 128, c, skip=True)  # last skip is the 128-ch input conv
    assert _count(params["dec_32x32_aux_conv"]) == 9 * c * 3 + 3
    names = list(params)
    assert sum(n.startswith("enc_") for n in names) == 1 + 3 * 4 + 2  # conv, 4 blocks per level, 2 down blocks
    assert sum(n.startswith("dec_") for n in names) == 2 + 2 + 3 * 5 + 2  # in0/in1, 2 up, 5 blocks per level, aux


def _load_reference(tag):
    data = np.load(REFERENCE)
    config = json.loads(str(data[f"{tag}/config"]))
    for name in ("channel_mult", "attn_resolutions", "resample_filter"):
        if name in config:
            config[name] = tuple(config[name])
    flat = data[f"{tag}/params"].astype(np.float32)
    state, offset = {}, 0
    for name, shape in json.loads(str(data[f"{tag}/index"])):
        size = int(np.prod(shape))
        state[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    inputs = [jnp.asarray(data[f"{tag}/x"]), jnp.asarray(data[f"{tag}/noise_labels"])]
    labels = {k: jnp.asarray(data[f"{tag}/{k}"]) for k in ("class_labels", "augment_labels") if f"{tag}/{k}" in data}
    net = SongUNet(**config)
    variables = variables_from_state_dict(state, _variables_shape(net, inputs[0].shape[0], **labels))
    return net, variables, inputs, labels, data[f"{tag}/output"]


@pytest.mark.parametrize("tag, conv_impl", [("ddpmpp", "xla"), ("ddpmpp", "matmul"), ("ncsnpp", "auto"),
                                            ("skip_encoder", "auto")])
@pytest.mark.slow
def test_output_matches_edm_pytorch(tag, conv_impl):
    """Same weights, same output as NVlabs/edm's PyTorch SongUNet (eval mode).

    The fixture holds EDM's state dict (random weights, float16-exact), inputs and the
    PyTorch output for three tiny nets: DDPM++ with attention, class and augment labels;
    NCSN++-style (Fourier embedding with our fixed frequencies, 'residual' encoder,
    'skip' decoder, (1, 3, 3, 1) filter); the 'skip' encoder.
    """
    net, variables, inputs, labels, expected = _load_reference(tag)
    net = net.clone(conv_impl=conv_impl)
    shapes = jax.tree_util.tree_map(lambda a: a.shape, _variables_shape(net, inputs[0].shape[0], **labels))
    assert jax.tree_util.tree_map(lambda a: a.shape, variables) == shapes
    out = jax.jit(net.apply)(variables, *inputs, **labels)
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)


def test_initialization(tiny_precond):
    """xavier_uniform weights, zero biases; init_zero (x 1e-5) and init_attn (x sqrt(0.2)) where EDM has them."""
    _, variables = tiny_precond
    params = variables["params"]["net"]

    def bound(kernel, gain=1.0):
        *k, fan_in, fan_out = kernel.shape
        area = int(np.prod(k))
        return gain * np.sqrt(6 / (area * fan_in + area * fan_out))

    block = params["dec_4x4_in0"]  # the lowest-resolution decoder block always has attention
    assert set(block) == {"norm0", "conv0", "affine", "norm1", "conv1", "norm2", "qkv", "proj"}
    for name, gain in [("conv0", 1.0), ("affine", 1.0), ("conv1", 1e-5), ("qkv", np.sqrt(0.2)), ("proj", 1e-5)]:
        kernel = np.asarray(block[name]["kernel"])
        assert bound(kernel, gain) >= np.abs(kernel).max() > 0.8 * bound(kernel, gain), name
        np.testing.assert_array_equal(block[name]["bias"], 0)
    for norm in ("norm0", "norm1", "norm2"):
        np.testing.assert_array_equal(block[norm]["scale"], 1)
        np.testing.assert_array_equal(block[norm]["bias"], 0)
    skip = np.asarray(params["dec_8x8_block0"]["skip"]["kernel"])  # 1x1, 8 + 16 -> 8 channels
    assert skip.shape == (1, 1, 24, 8) and np.abs(skip).max() <= bound(skip)
    aux = np.asarray(params["dec_8x8_aux_conv"]["kernel"])
    assert aux.shape == (3, 3, 8, 1) and np.abs(aux).max() <= bound(aux, 1e-5)
    dense = np.asarray(params["map_layer1"]["kernel"])
    assert np.abs(dense).max() <= bound(dense)
    assert dense.std() == pytest.approx(bound(dense) / np.sqrt(3), rel=0.05)


@pytest.mark.slow
def test_dropout_needs_train_and_rng(tiny_random):
    precond, variables = tiny_random  # dropout = 0.1
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    sigma = jnp.full((B,), 0.5)
    evaluate_mode = evaluate(precond, variables, x, sigma, None)
    keys = [bit_generator_key(jax.random.key(k)) for k in (1, 2)]  # the key type edm_loss uses
    a, b = (train_apply(precond, variables, x, sigma, k) for k in keys)
    assert not np.allclose(a, b) and not np.allclose(a, evaluate_mode)
    np.testing.assert_array_equal(a, train_apply(precond, variables, x, sigma, keys[0]))
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(functools.partial(precond.apply, train=True), variables, x, sigma)


@pytest.mark.slow
def test_label_dropout_zeroes_whole_label_vectors():
    """With label_dropout = 0.5, each example sees either its label or the zero vector (EDM)."""
    net = SongUNet(img_resolution=8, in_channels=1, out_channels=1, model_channels=4, channel_mult=(1,),
                   num_blocks=0, label_dim=3, label_dropout=0.5, dropout=0.0)
    x = jax.random.normal(jax.random.key(1), (B, 8, 8, 1))
    noise = jnp.zeros((B,))
    labels = jnp.eye(3)[jnp.arange(B) % 3]
    variables = random_variables(net, jax.random.key(3), x, noise, labels, scale=0.3)
    apply = jax.jit(net.apply, static_argnames="train")
    kept = apply(variables, x, noise, labels)
    dropped = apply(variables, x, noise, jnp.zeros_like(labels))
    out = apply(variables, x, noise, labels, train=True, rngs={"dropout": bit_generator_key(jax.random.key(4))})
    is_kept = np.all(np.isclose(out, kept, atol=1e-6), axis=(1, 2, 3))
    is_dropped = np.all(np.isclose(out, dropped, atol=1e-6), axis=(1, 2, 3))
    assert np.all(is_kept ^ is_dropped) and 2 <= is_dropped.sum() <= B - 2


@pytest.mark.parametrize(
    "options, match",
    [
        ({"img_resolution": 10, "channel_mult": (1, 2, 2)}, r"divisible by 2\*\*\(len\(channel_mult\) - 1\) = 4"),
        ({"img_resolution": 0}, "img_resolution"),
        ({"in_channels": 1.5}, "in_channels"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": (1, 0)}, r"channel_mult\[1\]"),
        ({"num_blocks": -1}, "num_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"label_dropout": -0.1}, "label_dropout"),
        ({"embedding_type": "learned"}, "embedding_type"),
        ({"encoder_type": "dense"}, "encoder_type"),
        ({"decoder_type": "residual"}, "decoder_type"),
        ({"resample_filter": (1, 2, 1)}, "resample_filter"),
        ({"model_channels": 7}, "even number of channels"),
        ({"model_channels": 2}, "GroupNorm"),
        ({"model_channels": 26}, "GroupNorm"),  # 26 channels do not split into min(32, 26 // 4) = 6 groups
        ({"conv_impl": "fft"}, "conv_impl"),
        ({"embedding_type": "fourier", "fourier_freqs": (1.0, 2.0, 3.0)}, "hold .* = 4 numbers; got 3"),
        ({"embedding_type": "fourier", "fourier_freqs": (1.0, float("nan"), 3.0, 4.0)},
         "`fourier_freqs` must be finite"),
    ],
)
def test_bad_config(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SongUNet(**dict(TINY, **options))


def test_lists_are_stored_as_tuples():
    net = SongUNet(**dict(TINY, channel_mult=[1, 2], attn_resolutions=[4]))
    assert net.channel_mult == (1, 2) and net.attn_resolutions == (4,)
    hash(net)


def test_bad_inputs():
    net = SongUNet(**TINY, label_dim=3, augment_dim=2)
    x = jnp.zeros((2, 8, 8, 1))
    labels = jnp.zeros((2, 3))
    variables = jax.eval_shape(net.init, jax.random.key(0), x, jnp.zeros((2,)), labels)
    with pytest.raises(ValueError, match=r"x.*\(N, 8, 8, 1\)"):
        jax.eval_shape(net.apply, variables, jnp.zeros((2, 1, 8, 8)), jnp.zeros((2,)), labels)
    with pytest.raises(ValueError, match="noise_labels"):
        jax.eval_shape(net.apply, variables, x, jnp.zeros((3,)), labels)
    with pytest.raises(ValueError, match="class_labels.*required"):
        jax.eval_shape(net.apply, variables, x, jnp.zeros((2,)))
    with pytest.raises(ValueError, match="augment_labels"):
        jax.eval_shape(net.apply, variables, x, jnp.zeros((2,)), labels, jnp.zeros((2, 3)))
