"""save_safetensors / load_safetensors: the safetensors layout, read back by an independent parser and by
huggingface's."""

import json
import os
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from bounded import bounded
from nn_helpers import TINY, B

import gaussjax.nn
from gaussjax.nn import EDMPrecond, NeuralDenoiser, SongUNet
from gaussjax.nn._safetensors import load_safetensors, save_safetensors

NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


@pytest.fixture(scope="module")
def denoiser(tiny_random):
    return NeuralDenoiser(*tiny_random)


@pytest.fixture(scope="module")
def queries():
    x = 2.0 * jax.random.normal(jax.random.key(0), (B, 64))
    return x, jnp.geomspace(0.05, 30.0, B)


def by_dotted_name(variables) -> dict:
    """`{'params.net.x.kernel': np.ndarray}` written out by hand from the nested dict (not the module's helper)."""
    out = {}

    def walk(prefix, node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(prefix + key + ".", value)
            else:
                out[prefix + key] = np.asarray(value)

    walk("", variables)
    return out


def parse(path):
    """`(header, data)` of a safetensors file, read with struct and json directly."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def write_raw(path, header: dict, data: bytes, *, length=None):
    """A file with the given header (as JSON), data bytes and, optionally, a lying header length."""
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


def edited(source, target, edit):
    """Copy of the safetensors file `source` at `target`, with `edit(header, config)` applied to its header."""
    header, data = parse(source)
    config = json.loads(header["__metadata__"]["gaussjax"])
    edit(header, config)
    header["__metadata__"]["gaussjax"] = json.dumps(config)
    return write_raw(target, header, data)


@pytest.mark.slow
def test_round_trip_gives_identical_outputs(denoiser, queries, tmp_path):
    path = save_safetensors(tmp_path / "net.safetensors", denoiser)
    loaded = load_safetensors(path)
    assert loaded.module.net.channel_mult == (1, 2) and loaded.module.net.attn_resolutions == ()
    assert loaded.module.net.dropout == 0.1 and loaded.module.sigma_data == 0.5
    assert loaded.image_shape == (8, 8, 1) and loaded.class_labels is None
    original, restored = by_dotted_name(denoiser.params), by_dotted_name(loaded.params)
    assert restored.keys() == original.keys()
    for name in original:
        np.testing.assert_array_equal(restored[name], original[name], err_msg=name)
    x, sigma = queries
    np.testing.assert_array_equal(loaded.denoise(x, sigma), denoiser.denoise(x, sigma))


def test_layout_read_by_a_plain_parser(denoiser, tmp_path):
    path = save_safetensors(tmp_path / "net.safetensors", denoiser)
    header, data = parse(path)
    config = json.loads(header.pop("__metadata__")["gaussjax"])
    assert config["format"] == "gaussjax.network/1" and config["image_shape"] == [8, 8, 1]
    assert config["precond"] == {"class": "EDMPrecond", "kwargs": {"compute_dtype": None, "sigma_data": 0.5}}
    assert config["net"]["class"] == "SongUNet"
    assert {k: config["net"]["kwargs"][k] for k in TINY} == {**TINY, "channel_mult": [1, 2], "attn_resolutions": []}
    assert "params.net.enc_8x8_conv.kernel" in header
    params = by_dotted_name(denoiser.params)
    assert header.keys() == params.keys()
    assert sum(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values()) == len(data)
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        assert entry["dtype"] == "F32" and tuple(entry["shape"]) == params[name].shape
        assert data[begin:end] == params[name].astype("<f4").tobytes(), name


@pytest.mark.parametrize("dtype, tag", [("float16", "F16"), ("bfloat16", "BF16")])
@pytest.mark.slow
def test_half_precision_storage(denoiser, queries, tmp_path, dtype, tag):
    path = save_safetensors(tmp_path / "net.safetensors", denoiser, dtype=dtype)
    header, data = parse(path)
    params = by_dotted_name(denoiser.params)
    entry = header["params.net.enc_8x8_conv.kernel"]
    begin, end = entry["data_offsets"]
    assert entry["dtype"] == tag
    assert data[begin:end] == params["params.net.enc_8x8_conv.kernel"].astype(NUMPY_DTYPES[tag]).tobytes()
    loaded = load_safetensors(path)
    for name, value in by_dotted_name(loaded.params).items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, params[name].astype(NUMPY_DTYPES[tag]).astype(np.float32))
    x, sigma = queries
    np.testing.assert_allclose(loaded.denoise(x, sigma), denoiser.denoise(x, sigma), atol=0.05)
    assert len(data) == 2 * sum(p.size for p in params.values())


def test_class_labels_of_a_conditional_network(tmp_path):
    module = EDMPrecond(SongUNet(**{**TINY, "label_dim": 3}))
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
    params = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.25, s.dtype), shapes)
    labels = np.array([0.0, 1.0, 0.3], np.float32)
    path = save_safetensors(tmp_path / "cond.safetensors", NeuralDenoiser(module, params, class_labels=labels))
    assert json.loads(parse(path)[0]["__metadata__"]["gaussjax"])["class_labels"] == labels.tolist()
    loaded = load_safetensors(path)
    assert loaded.module.net.label_dim == 3
    np.testing.assert_array_equal(loaded.class_labels, labels)


def test_huggingface_safetensors_reads_ours_and_we_read_theirs(denoiser, queries, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    ours = save_safetensors(tmp_path / "ours.safetensors", denoiser)
    params = by_dotted_name(denoiser.params)
    theirs_view = safetensors_numpy.load_file(str(ours))
    assert theirs_view.keys() == params.keys()
    for name in params:
        np.testing.assert_array_equal(theirs_view[name], params[name])
    with safe_open(str(ours), framework="numpy") as file:
        metadata = file.metadata()
    assert json.loads(metadata["gaussjax"])["net"]["class"] == "SongUNet"

    x, sigma = queries
    for dtype in (np.float32, np.float16):
        path = tmp_path / f"theirs-{np.dtype(dtype).name}.safetensors"
        safetensors_numpy.save_file({k: v.astype(dtype) for k, v in params.items()}, str(path), metadata=metadata)
        loaded = load_safetensors(path)
        expected = denoiser.denoise(x, sigma)
        if dtype == np.float32:
            np.testing.assert_array_equal(loaded.denoise(x, sigma), expected)
        else:
            np.testing.assert_allclose(loaded.denoise(x, sigma), expected, atol=0.05)


def test_corrupt_and_truncated_files(denoiser, tmp_path):
    path = save_safetensors(tmp_path / "net.safetensors", denoiser)
    raw = path.read_bytes()
    (tmp_path / "short").write_bytes(raw[:5])
    with pytest.raises(ValueError, match="short is truncated"):
        load_safetensors(tmp_path / "short")
    (tmp_path / "cut").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="cut is truncated"):
        load_safetensors(tmp_path / "cut")
    (tmp_path / "long").write_bytes(raw + b"\0\0\0\0")
    with pytest.raises(ValueError, match="long is truncated or has trailing bytes"):
        load_safetensors(tmp_path / "long")
    (tmp_path / "length").write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])
    with pytest.raises(ValueError, match="corrupt header: it declares 1099511627776 header bytes"):
        load_safetensors(tmp_path / "length")
    (tmp_path / "garbled").write_bytes(raw[:8] + b"#" + raw[9:])
    with pytest.raises(ValueError, match="garbled has a corrupt header"):
        load_safetensors(tmp_path / "garbled")
    header, data = parse(path)
    header["params.net.enc_8x8_conv.bias"]["data_offsets"][1] += 4
    with pytest.raises(ValueError, match="tensor params.net.enc_8x8_conv.bias spans bytes"):
        load_safetensors(write_raw(tmp_path / "span", header, data))
    with pytest.raises(FileNotFoundError, match="`path`"):
        load_safetensors(tmp_path / "missing.safetensors")


def test_metadata_errors(denoiser, tmp_path, monkeypatch):
    path = save_safetensors(tmp_path / "net.safetensors", denoiser)

    def load_edited(edit):
        return load_safetensors(edited(path, tmp_path / "edited", edit))

    with pytest.raises(ValueError, match="unknown network format 'gaussjax.network/2'"):
        load_edited(lambda h, c: c.update(format="gaussjax.network/2"))
    with pytest.raises(ValueError, match="unknown precond class 'os.system'; expected one of EDMPrecond"):
        load_edited(lambda h, c: c["precond"].update({"class": "os.system"}))
    with pytest.raises(ValueError, match="unknown net class 'Dense'"):
        load_edited(lambda h, c: c["net"].update({"class": "Dense"}))
    with pytest.raises(ValueError, match="net.kwargs: SongUNet has no argument.*'depth'"):
        load_edited(lambda h, c: c["net"]["kwargs"].update(depth=3))
    with pytest.raises(ValueError, match=r"does not build EDMPrecond\(SongUNet\): `img_resolution` \(7\)"):
        load_edited(lambda h, c: c["net"]["kwargs"].update(img_resolution=7))
    monkeypatch.delattr(gaussjax.nn, "EDMPrecond")
    with pytest.raises(ValueError, match="precond class 'EDMPrecond' is not available"):
        load_safetensors(path)
    monkeypatch.undo()
    header, data = parse(path)
    del header["__metadata__"]
    with pytest.raises(ValueError, match="is not a gaussjax network"):
        load_safetensors(write_raw(tmp_path / "plain", header, data))


def test_tensors_must_match_the_network(denoiser, tmp_path):
    path = save_safetensors(tmp_path / "net.safetensors", denoiser)
    header, data = parse(path)
    kernel = "params.net.enc_8x8_conv.kernel"

    def variant(name, **changes):
        new = json.loads(json.dumps(header))
        new[name].update(changes)
        return write_raw(tmp_path / "variant", new, data)

    n = int(np.prod(header[kernel]["shape"]))
    with pytest.raises(ValueError, match=rf"tensor {kernel} has shape \(1, {n}\), the network expects"):
        load_safetensors(variant(kernel, shape=[1, n]))
    with pytest.raises(ValueError, match=f"tensor {kernel} has dtype 'I32'"):
        load_safetensors(variant(kernel, dtype="I32"))
    renamed = json.loads(json.dumps(header))
    renamed["params.net.extra.kernel"] = renamed.pop(kernel)
    with pytest.raises(ValueError, match=f"lacks tensor {kernel}"):
        load_safetensors(write_raw(tmp_path / "renamed", renamed, data))
    extra = json.loads(json.dumps(header))
    end = len(data)
    extra["params.net.extra.bias"] = {"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}
    with pytest.raises(ValueError, match="has tensor params.net.extra.bias, which the network does not have"):
        load_safetensors(write_raw(tmp_path / "extra", extra, data + bytes(8)))


def test_save_arguments(denoiser, tmp_path):
    with pytest.raises(TypeError, match="`denoiser` must be a NeuralDenoiser"):
        save_safetensors(tmp_path / "x", denoiser.params)
    with pytest.raises(ValueError, match="`dtype`"):
        save_safetensors(tmp_path / "x", denoiser, dtype="int8")
    big = NeuralDenoiser(denoiser.module, jax.tree_util.tree_map(lambda p: p * 1e6, denoiser.params))
    with pytest.raises(ValueError, match="overflows float16"):
        save_safetensors(tmp_path / "x", big, dtype="float16")


# ---------------------------------------------------------------------------------------------------------------
# Hostile files (issue 21): each refused with a ValueError naming the file and the field, in bounded time and memory.


@pytest.fixture(scope="module")
def saved(denoiser, tmp_path_factory):
    """The tiny network as a safetensors file: 45,745 float32 elements, 0.2 MB."""
    return save_safetensors(tmp_path_factory.mktemp("saved") / "net.safetensors", denoiser)


def refused(path, *fields, seconds=20, megabytes=50):
    """Assert that loading `path` raises a ValueError whose message names the file and every one of `fields`."""
    with bounded(seconds=seconds, megabytes=megabytes), pytest.raises(ValueError) as caught:
        load_safetensors(path)
    message = str(caught.value)
    assert str(path) in message, message
    for field in fields:
        assert field in message, (field, message)
    return message


def with_config_text(source, target, replace: tuple[str, str]):
    """Copy of `source` whose 'gaussjax' metadata string has `replace[0]` replaced by `replace[1]` (raw JSON text)."""
    header, data = parse(source)
    old, new = replace
    assert old in header["__metadata__"]["gaussjax"]
    header["__metadata__"]["gaussjax"] = header["__metadata__"]["gaussjax"].replace(old, new)
    return write_raw(target, header, data)


@pytest.mark.parametrize("key, value", [("num_blocks", 5000), ("model_channels", 2**40), ("model_channels", 2**16),
                                        ("channel_mult", [1, 2**20]), ("label_dim", 10**9),
                                        ("channel_mult_noise", 2**24)])
def test_architecture_sizes_must_fit_the_stored_tensors(saved, tmp_path, key, value):
    """D9: sizes in the metadata cannot make a 0.2 MB file build a network of millions of parameters."""
    path = edited(saved, tmp_path / "big", lambda h, c: c["net"]["kwargs"].update({key: value}))
    refused(path, "net.kwargs", key, seconds=5, megabytes=100)


def test_parameter_budget_message(saved, tmp_path):
    path = edited(saved, tmp_path / "blocks", lambda h, c: c["net"]["kwargs"].update(num_blocks=5000))
    message = refused(path)
    assert "num_blocks=5000" in message and "the file holds only 45745 tensor elements" in message, message


def test_only_constructor_arguments_reach_flax(saved, tmp_path):
    """D7: Flax's `parent` and `name`, and unknown keys, are refused by an allow-list, not passed to the module."""
    for key, value in (("parent", None), ("name", "evil"), ("depth", 3)):
        path = edited(saved, tmp_path / key, lambda h, c, k=key, v=value: c["net"]["kwargs"].update({k: v}))
        refused(path, "net.kwargs", repr(key))
    path = edited(saved, tmp_path / "precond", lambda h, c: c["precond"]["kwargs"].update(parent=None))
    refused(path, "precond.kwargs", "'parent'")
    path = edited(saved, tmp_path / "nested", lambda h, c: c["net"]["kwargs"].update(channel_mult=[[1], [2]]))
    refused(path, "net.kwargs.channel_mult[0]")
    path = edited(saved, tmp_path / "long", lambda h, c: c["net"]["kwargs"].update(attn_resolutions=[1] * 1000))
    refused(path, "net.kwargs.attn_resolutions", "1000 entries")


def test_json_that_nests_deeply_or_has_huge_integers(saved, tmp_path):
    """D7: nesting and 5000-digit integers in the header or the metadata give ValueErrors naming the place."""
    deep = b"[" * 100_000 + b"]" * 100_000
    path = tmp_path / "deep_header"
    path.write_bytes(struct.pack("<Q", len(deep)) + deep)
    refused(path, "header")
    path = with_config_text(saved, tmp_path / "deep_config", ('"num_blocks": 1', '"num_blocks": ' + "[" * 100_000))
    refused(path, "'gaussjax' metadata")
    path = with_config_text(saved, tmp_path / "digits", ('"num_blocks": 1', '"num_blocks": ' + "9" * 5000))
    refused(path, "net.kwargs.num_blocks", "(5000 digits)")
    path = with_config_text(saved, tmp_path / "long_int", ('"num_blocks": 1', '"num_blocks": ' + "9" * 30))
    refused(path, "net.kwargs.num_blocks")
    header, data = parse(saved)
    text = json.dumps(header).replace('"shape": [8]', '"shape": [' + "9" * 5000 + "]", 1)
    path = tmp_path / "digits_header"
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + data)
    refused(path, "tensor", "(5000 digits)")


def test_tensor_dtype_must_be_a_name(saved, tmp_path):
    """D7: `"dtype": ["F32"]` is refused as a malformed entry (it was a TypeError: unhashable type)."""
    header, data = parse(saved)
    header["params.net.enc_8x8_conv.bias"]["dtype"] = ["F32"]
    refused(write_raw(tmp_path / "dtype", header, data), "params.net.enc_8x8_conv.bias", "dtype")


@pytest.mark.parametrize("labels", ["abc", [[1, "x", 0]], [[1, 0, 0], [1]], [1.0, 2.0], {"a": 1}, [True, False, True],
                                    [float("nan"), 0.0, 1.0], [1e39, 0.0, 0.0]])
@pytest.mark.slow
def test_stored_class_labels_are_checked(tmp_path, labels):
    """D7/D8: malformed or non-finite class labels name the file and `class_labels`."""
    module = EDMPrecond(SongUNet(**{**TINY, "label_dim": 3}))
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))
    params = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.25, s.dtype), shapes)
    path = save_safetensors(tmp_path / "cond.safetensors", NeuralDenoiser(module, params))
    refused(edited(path, tmp_path / "labels", lambda h, c: c.update(class_labels=labels)), "class_labels")


def test_class_labels_of_an_unconditional_network_and_a_wrong_image_shape(saved, tmp_path):
    refused(edited(saved, tmp_path / "labels", lambda h, c: c.update(class_labels=[1.0])), "class_labels")
    refused(edited(saved, tmp_path / "shape", lambda h, c: c.update(image_shape=[4, 16, 1])), "image_shape")


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e30, -0.5, 0.0])
def test_sigma_data_must_be_finite_in_float32(saved, tmp_path, value):
    """D8: `sigma_data` of Infinity or 1e30 (its square overflows float32) made every output NaN."""
    refused(edited(saved, tmp_path / "sigma", lambda h, c: c["precond"]["kwargs"].update(sigma_data=value)),
            "sigma_data")


def test_sigma_data_must_be_a_number(saved, tmp_path):
    refused(edited(saved, tmp_path / "sigma", lambda h, c: c["precond"]["kwargs"].update(sigma_data="0.5")),
            "sigma_data", "number")


@pytest.mark.parametrize("dtype, value", [("float32", np.nan), ("float32", -np.inf), ("float16", np.inf)])
def test_non_finite_weights_name_the_tensor(denoiser, tmp_path, dtype, value):
    """D8: a NaN or infinite weight is refused, naming its tensor (the network returned NaN)."""
    path = save_safetensors(tmp_path / "net.safetensors", denoiser, dtype=dtype)
    header, data = parse(path)
    name = "params.net.dec_8x8_block0.conv1.kernel"
    begin = header[name]["data_offsets"][0] + 4 * NUMPY_DTYPES[header[name]["dtype"]]().itemsize
    bad = np.array(value, NUMPY_DTYPES[header[name]["dtype"]]).tobytes()
    data = data[:begin] + bad + data[begin + len(bad):]
    refused(write_raw(tmp_path / "nan", header, data), name, "NaN or infinite")


def test_save_writes_through_a_unique_temporary_file(denoiser, tmp_path, monkeypatch):
    """D17: `path + '.tmp'` of the user's is neither overwritten nor deleted; no temporary file is left behind."""
    path = tmp_path / "net.safetensors"
    mine = tmp_path / "net.safetensors.tmp"
    mine.write_bytes(b"the user's own file")
    save_safetensors(path, denoiser)
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors", "net.safetensors.tmp"]
    assert load_safetensors(path).image_shape == (8, 8, 1)
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() creates it, not mkstemp's 0o600
    before = path.read_bytes()

    def fail(*args):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        save_safetensors(path, denoiser, dtype="float16")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors", "net.safetensors.tmp"]
    assert path.read_bytes() == before and mine.read_bytes() == b"the user's own file"
