"""save_safetensors / load_safetensors: the safetensors layout, read back by an independent parser and by huggingface's."""

import json
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
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
    with pytest.raises(ValueError, match="does not build EDMPrecond.*unexpected keyword"):
        load_edited(lambda h, c: c["net"]["kwargs"].update(depth=3))
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
