"""DhariwalUNet (ADM): parameter counts and outputs against NVlabs/edm, initialization, validation."""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax._torch import variables_from_state_dict
from gaussjax.nn._dhariwal import DhariwalUNet
from gaussjax.nn._rng import bit_generator_key

REFERENCE = Path(__file__).parent / "data" / "edm_dhariwal_reference.npz"
TINY = {"img_resolution": 8, "in_channels": 2, "out_channels": 3, "model_channels": 16, "channel_mult": (1, 2),
        "channel_mult_emb": 2, "num_blocks": 1, "attn_resolutions": (4,)}


def _variables_shape(net, batch=1, **labels):
    r, c = net.img_resolution, net.in_channels
    x = jax.ShapeDtypeStruct((batch, r, r, c), jnp.float32)
    noise = jax.ShapeDtypeStruct((batch,), jnp.float32)
    return jax.eval_shape(net.init, jax.random.key(0), x, noise, **labels)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: a.shape, tree)


# Counts of EDM's own DhariwalUNet: `sum(p.numel() for p in net.parameters())` in PyTorch,
# printed by tests/nn/data/make_dhariwal_reference.py (COUNT_CONFIGS).
IMAGENET64_ADM = {"img_resolution": 64, "in_channels": 3, "out_channels": 3, "label_dim": 1000}
SMALL = {"img_resolution": 32, "in_channels": 3, "out_channels": 3, "label_dim": 10, "augment_dim": 9,
         "model_channels": 64, "channel_mult": (1, 2), "num_blocks": 2, "attn_resolutions": (16,)}


@pytest.mark.parametrize(
    "config, expected",
    [
        (IMAGENET64_ADM, 295_899_267),  # EDM's edm-imagenet-64x64-cond-adm network
        (SMALL, 4_591_939),  # two resolutions, 2-head attention at 16x16, class and augment labels
    ],
)
@pytest.mark.slow
def test_parameter_count_matches_edm(config, expected):
    labels = {"class_labels": jax.ShapeDtypeStruct((1, config["label_dim"]), jnp.float32)}
    variables = _variables_shape(DhariwalUNet(**config), **labels)
    assert list(variables) == ["params"]
    assert _count(variables) == expected


def _load_reference(tag):
    """EDM's network `tag` from the fixture: (net, state dict, inputs, labels, EDM's output)."""
    data = np.load(REFERENCE)
    config = json.loads(str(data[f"{tag}/config"]))
    for name in ("channel_mult", "attn_resolutions"):
        config[name] = tuple(config[name])
    q = data[f"{tag}/q"].astype(np.float32)
    state_dict, offset = {}, 0
    for name, shape, exponent in json.loads(str(data[f"{tag}/index"])):
        size = int(np.prod(shape))
        state_dict[name] = q[offset:offset + size].reshape(shape) * np.float32(2.0**-exponent)
        offset += size
    assert offset == q.size
    inputs = [jnp.asarray(data[f"{tag}/x"]), jnp.asarray(data[f"{tag}/noise_labels"])]
    labels = {k: jnp.asarray(data[f"{tag}/{k}"]) for k in ("class_labels", "augment_labels") if f"{tag}/{k}" in data}
    return DhariwalUNet(**config), state_dict, inputs, labels, data[f"{tag}/output"]


def _parameters(state_dict: dict) -> dict:
    """The state dict without its buffers (the resampling filters, constants of the architecture)."""
    return {k: v for k, v in state_dict.items() if not k.endswith(".resample_filter")}


@pytest.mark.parametrize("tag, conv_impl", [("cond", "xla"), ("cond", "matmul"), ("uncond", "xla"),
                                            ("uncond", "matmul")])
@pytest.mark.slow
def test_output_matches_edm_pytorch(tag, conv_impl):
    """Same weights, same output as NVlabs/edm's PyTorch DhariwalUNet (eval mode).

    The fixture holds EDM's state dict (random float16-exact weights), inputs and the
    PyTorch output of two tiny nets: 'cond' (class and augment labels, 64 channels, so
    the attention blocks have one head) and 'uncond' (down/up blocks, 1x1 skips, and
    attention resolutions with fewer than 64 channels, hence no attention, as in EDM).
    """
    net, state_dict, inputs, labels, expected = _load_reference(tag)
    net = net.clone(conv_impl=conv_impl)
    variables = variables_from_state_dict(_parameters(state_dict), _variables_shape(net, inputs[0].shape[0], **labels))
    out = jax.jit(net.apply)(variables, *inputs, **labels)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)


def test_attention_heads_follow_edm():
    """A block gets out_channels // 64 heads (EDM); with none it has no attention layers."""
    net, state_dict, inputs, labels, _ = _load_reference("cond")
    shapes = _variables_shape(net, inputs[0].shape[0], **labels)
    params = variables_from_state_dict(_parameters(state_dict), shapes)["params"]
    assert {"norm2", "qkv", "proj"} <= set(params["dec_4x4_in0"])
    params = _variables_shape(DhariwalUNet(**TINY))["params"]
    assert "qkv" not in params["dec_4x4_in0"] and "qkv" not in params["enc_4x4_block0"]


@pytest.fixture(scope="module")
def tiny_init():
    net = DhariwalUNet(**TINY, label_dim=3, augment_dim=2)
    x = jnp.zeros((1, 8, 8, 2))
    variables = jax.jit(net.init)(jax.random.key(0), x, jnp.zeros((1,)), jnp.zeros((1, 3)))
    return net, variables


@pytest.mark.slow
def test_initialization(tiny_init):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases; zeros and N(0, 1) where EDM has them."""
    _, variables = tiny_init
    params = variables["params"]

    def check_uniform(layer):
        kernel, bias = np.asarray(layer["kernel"]), np.asarray(layer["bias"])
        bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
        for value in (kernel, bias):
            assert bound >= np.abs(value).max() > (0.8 if value.size > 20 else 0.2) * bound
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)

    block = params["enc_4x4_block0"]  # 16 -> 32 channels: 1x1 skip
    for name in ("conv0", "affine", "skip"):
        check_uniform(block[name])
    for name in ("map_layer0", "map_layer1", "enc_8x8_conv"):
        check_uniform(params[name])
    encoder, decoder = params["enc_8x8_block0"]["conv0"]["kernel"], params["dec_8x8_block1"]["conv0"]["kernel"]
    assert not np.array_equal(encoder, decoder[:, :, :16])
    for layer in (block["conv1"], params["out_conv"]):
        np.testing.assert_array_equal(layer["kernel"], 0)
        np.testing.assert_array_equal(layer["bias"], 0)
    np.testing.assert_array_equal(params["map_augment"]["kernel"], 0)
    label = np.asarray(params["map_label"]["kernel"])
    assert label.shape == (3, 32) and label.std() == pytest.approx(1.0, rel=0.15)
    for norm in ("norm0", "norm1"):
        np.testing.assert_array_equal(block[norm]["scale"], 1)
        np.testing.assert_array_equal(block[norm]["bias"], 0)


@pytest.mark.slow  # builds an ADM network
def test_attention_initialization():
    """qkv like the other layers, the attention output projection at zero (EDM's init_zero)."""
    net = DhariwalUNet(img_resolution=4, in_channels=1, out_channels=1, model_channels=64, channel_mult=(1,),
                       channel_mult_emb=1, num_blocks=0)
    block = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, 4, 4, 1)), jnp.zeros((1,)))["params"]["dec_4x4_in0"]
    qkv = np.asarray(block["qkv"]["kernel"])
    assert qkv.shape == (1, 1, 64, 192) and 1 / 8 >= np.abs(qkv).max() > 0.9 / 8
    np.testing.assert_array_equal(block["proj"]["kernel"], 0)


@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def _apply(net, variables, x, noise, labels, key=None, *, train=False):
    rngs = {"dropout": key} if key is not None else {}
    return net.apply(variables, x, noise, labels, train=train, rngs=rngs)


def _random_variables(variables, key, scale=0.2):
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)])


@pytest.mark.slow
def test_dropout_needs_train_and_rng():
    net = DhariwalUNet(img_resolution=4, in_channels=1, out_channels=1, label_dim=3, model_channels=8,
                       channel_mult=(1,), channel_mult_emb=1, num_blocks=0, label_dropout=0.5)  # dropout 0.1
    x = jax.random.normal(jax.random.key(1), (4, 4, 4, 1))
    noise = jnp.linspace(-1, 1, 4)
    labels = jnp.eye(3)[jnp.arange(4) % 3]
    variables = _random_variables(jax.eval_shape(net.init, jax.random.key(0), x, noise, labels), jax.random.key(2))
    evaluate_mode = _apply(net, variables, x, noise, labels)
    keys = [bit_generator_key(jax.random.key(k)) for k in (1, 2)]
    a, b = (_apply(net, variables, x, noise, labels, k, train=True) for k in keys)
    assert not np.allclose(a, b) and not np.allclose(a, evaluate_mode)
    np.testing.assert_array_equal(a, _apply(net, variables, x, noise, labels, keys[0], train=True))
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(functools.partial(net.apply, train=True), variables, x, noise, labels)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"img_resolution": 10, "channel_mult": (1, 2, 2)}, r"divisible by 2\*\*\(len\(channel_mult\) - 1\) = 4"),
        ({"img_resolution": 0}, "img_resolution"),
        ({"out_channels": 1.5}, "out_channels"),
        ({"label_dim": -1}, "label_dim"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": (1, 0)}, r"channel_mult\[1\]"),
        ({"attn_resolutions": (4, -4)}, r"attn_resolutions\[1\]"),
        ({"num_blocks": -1}, "num_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"label_dropout": -0.1}, "label_dropout"),
        ({"model_channels": 7}, "even number of channels"),
        ({"model_channels": 2}, "GroupNorm"),
        ({"model_channels": 26}, "GroupNorm"),  # 26 channels do not split into min(32, 26 // 4) = 6 groups
        ({"conv_impl": "fft"}, "conv_impl"),
    ],
)
def test_bad_config(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DhariwalUNet(**dict(TINY, **options))


def test_lists_are_stored_as_tuples():
    net = DhariwalUNet(**dict(TINY, channel_mult=[1, 2], attn_resolutions=[4]))
    assert net.channel_mult == (1, 2) and net.attn_resolutions == (4,)
    hash(net)


def test_bad_inputs():
    net = DhariwalUNet(**TINY, label_dim=3, augment_dim=2)
    x = jnp.zeros((2, 8, 8, 2))
    labels = jnp.zeros((2, 3))
    variables = jax.eval_shape(net.init, jax.random.key(0), x, jnp.zeros((2,)), labels)
    with pytest.raises(ValueError, match=r"x.*\(N, 8, 8, 2\)"):
        jax.eval_shape(net.apply, variables, jnp.zeros((2, 2, 8, 8)), jnp.zeros((2,)), labels)
    with pytest.raises(ValueError, match="noise_labels"):
        jax.eval_shape(net.apply, variables, x, jnp.zeros((3,)), labels)
    with pytest.raises(ValueError, match="class_labels.*required"):
        jax.eval_shape(net.apply, variables, x, jnp.zeros((2,)))
    with pytest.raises(ValueError, match="augment_labels"):
        jax.eval_shape(net.apply, variables, x, jnp.zeros((2,)), labels, jnp.zeros((2, 3)))
