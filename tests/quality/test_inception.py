"""FID's InceptionV3: torch state-dict reading, weight mapping, torch-exact resize, features against pytorch-fid.

The committed fixtures come from `data/make_inception_fixture.py` (torch + pytorch-fid, run
outside this venv). Feature parity uses random weights that are a pure function of each
parameter's name and shape, so they are rebuilt here without torch. Feature errors are
measured as max |ours - torch| / max |torch| over the whole (B, 2048) batch.
"""

import collections
import importlib.util
import io
import os
import pickle
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from gaussjax._errors import InputTypeError, InputValueError
from gaussjax._torch import UnsafePickleError, read_torch_state_dict
from gaussjax.quality._inception import (
    FEATURES,
    InceptionFeatures,
    check_images,
    expected_state_dict_shapes,
    inception_from_state_dict,
    load_inception,
    resize_bilinear,
    resize_matrix,
)

DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-4  # relative: max abs difference / max abs torch feature


def _generator():
    spec = importlib.util.spec_from_file_location("make_inception_fixture", DATA / "make_inception_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def _relative_error(got, expected) -> float:
    return float(np.max(np.abs(np.asarray(got) - expected)) / np.max(np.abs(expected)))


# ---------------------------------------------------------------------------------------------------------------
# read_torch_state_dict on committed torch.save files (written by torch 2.14).


@pytest.mark.parametrize("name", ["tiny_state_legacy.pt", "tiny_state_zip.pt"])
def test_reads_torch_save_files(name):
    got = read_torch_state_dict(DATA / name)
    with np.load(DATA / "tiny_state_expected.npz") as f:
        expected = {k: f[k] for k in f.files}
    assert list(got) == list(expected) == ["layer.weight", "layer.weight_t_view", "half", "counts", "scalar"]
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert not got[key].flags.writeable
    assert got["scalar"].shape == () and got["half"].dtype == np.float16 and got["counts"][1, 0] == 2**40
    assert not got["layer.weight_t_view"].flags.c_contiguous


class _Call:
    """Pickles as `fn(*args)` (a REDUCE of the global `fn`): how a malicious file runs code on load."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


_MAGIC = 0x1950A86A20F9469CFC6C


def _legacy_file(obj, raw: bytes | None = None, storages: bytes | None = None) -> bytes:
    """A legacy-format torch file: its main pickle is `obj` (or the bytes `raw`), then `storages` (default none)."""
    header = b"".join(pickle.dumps(v, protocol=2) for v in (_MAGIC, 1001, {"little_endian": True}))
    main = raw if raw is not None else pickle.dumps(obj, protocol=3)
    return header + main + (storages if storages is not None else pickle.dumps([], protocol=2))


def _zip_file(obj, raw: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("evil/data.pkl", raw if raw is not None else pickle.dumps(obj, protocol=3))
    return buffer.getvalue()


def _attacks(sentinel: Path) -> dict:
    touch = f"open({str(sentinel)!r}, 'w').close()"
    return {"posix.system": _Call(os.system, f"touch {sentinel}"), "builtins.eval": _Call(eval, touch),
            "builtins.exec": _Call(exec, touch)}


@pytest.mark.parametrize("wrap", ["legacy", "zip", "bare"])
@pytest.mark.parametrize("where", ["value", "top", "metadata"])
@pytest.mark.parametrize("attack", ["posix.system", "builtins.eval", "builtins.exec"])
def test_refuses_code_in_the_pickle(tmp_path, sentinel, wrap, where, attack):
    payload = _attacks(sentinel)[attack]
    if where == "value":
        payload = collections.OrderedDict(weight=payload)
    elif where == "metadata":
        state = collections.OrderedDict()
        state._metadata = collections.OrderedDict([("", payload)])
        payload = state
    data = {"legacy": _legacy_file, "zip": _zip_file, "bare": lambda obj: pickle.dumps(obj, protocol=2)}[wrap](payload)
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=f"global '{attack}'" if wrap != "bare" else "global"):
        read_torch_state_dict(path)


def _state_with_attribute():
    state = collections.OrderedDict()
    state.hook = "x"
    return state


@pytest.mark.parametrize(
    "payload, message",
    [
        (collections.OrderedDict(weight=1.5), "'weight': a float, not a tensor"),
        ({"weight": "text"}, "'weight': a str, not a tensor"),
        ({"nested": collections.OrderedDict()}, "'nested': a _StateDict, not a tensor"),
        ({3: None}, "key of type int"),
        (_state_with_attribute(), r"attributes \['hook'\] on collections.OrderedDict"),
    ],
)
@pytest.mark.parametrize("wrap", [_legacy_file, _zip_file])
def test_refuses_non_tensor_leaves(tmp_path, payload, message, wrap):
    path = tmp_path / "odd.pth"
    path.write_bytes(wrap(payload))
    with pytest.raises(UnsafePickleError, match=message):
        read_torch_state_dict(path)


def test_refuses_a_tensor_not_built_on_a_storage(tmp_path):
    raw = pickle.dumps({"w": _Call(len, b"raw", 0, (1,), (1,), False, collections.OrderedDict())}, protocol=3)
    raw = raw.replace(b"cbuiltins\nlen\n", b"ctorch._utils\n_rebuild_tensor_v2\n")
    path = tmp_path / "fake.pth"
    path.write_bytes(_legacy_file(None, raw=raw))
    with pytest.raises(UnsafePickleError, match="not a storage"):
        read_torch_state_dict(path)


class _StoragePickler(pickle.Pickler):
    """Writes `_Storage` objects as torch storage persistent ids (their class as the placeholder `builtins.float`)."""

    def persistent_id(self, obj):
        return ("storage", float, obj.key, "cpu", obj.raw.size) if isinstance(obj, _Storage) else None


class _Storage:
    def __init__(self, key: str, raw: np.ndarray):
        self.key, self.raw = key, raw


@pytest.mark.parametrize("rebuild, extra", [("_rebuild_tensor", ()), ("_rebuild_tensor_v2", (False, {}))])
def test_reads_a_hand_written_legacy_file(tmp_path, rebuild, extra):
    """A legacy torch file written without torch: storage after the pickle, a strided view, torch < 0.4's rebuild."""
    raw = np.arange(6, dtype=np.float32) - 2.5
    storage = _Storage("42", raw)
    buffer = io.BytesIO()
    _StoragePickler(buffer, protocol=3).dump(collections.OrderedDict(
        view=_Call(len, storage, 1, (2, 2), (1, 2), *extra), whole=_Call(len, storage, 0, (6,), (1,), *extra)))
    main = buffer.getvalue().replace(b"cbuiltins\nfloat\n", b"ctorch\nFloatStorage\n")
    main = main.replace(b"cbuiltins\nlen\n", b"ctorch._utils\n" + rebuild.encode() + b"\n")
    storages = pickle.dumps(["42"], protocol=2) + raw.size.to_bytes(8, "little") + raw.tobytes()
    path = tmp_path / "hand.pth"
    path.write_bytes(_legacy_file(None, raw=main, storages=storages))
    got = read_torch_state_dict(path)
    np.testing.assert_array_equal(got["whole"], raw)
    np.testing.assert_array_equal(got["view"], np.lib.stride_tricks.as_strided(raw[1:], (2, 2), (4, 8)))


def test_bad_files_name_the_path(tmp_path):
    path = tmp_path / "not_torch.pth"
    for data in (b"not a torch file\x00" * 4, (DATA / "tiny_state_legacy.pt").read_bytes()[:-10],
                 (DATA / "tiny_state_zip.pt").read_bytes()[:500], _legacy_file([1, 2])):
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not_torch.pth"):
            read_torch_state_dict(path)
    with pytest.raises(FileNotFoundError):
        read_torch_state_dict(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------------------
# The state-dict -> Flax mapping.


@pytest.fixture(scope="module")
def shapes():
    return expected_state_dict_shapes()


def test_expected_entries(shapes):
    assert len(shapes) == 94 * 5  # 94 BasicConv2d: conv weight, bn weight, bias, running mean and var
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["Mixed_7c.branch3x3dbl_3b.bn.running_var"] == (384,)
    assert sum(int(np.prod(s)) for n, s in shapes.items() if not n.endswith(("mean", "var"))) == 21_785_568


def test_mapping_errors_name_the_entries(shapes):
    zeros = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    extras = {"fc.weight": np.zeros((1008, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32),
              "Conv2d_1a_3x3.bn.num_batches_tracked": np.array(0)}
    features = inception_from_state_dict({**zeros, **extras})  # the classifier and counters are ignored
    assert isinstance(features, InceptionFeatures)
    conv = features.variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
    assert conv.shape == (1, 7, 128, 128) and conv.dtype == jnp.float32
    assert features.variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"].shape == (32,)

    broken = dict(zeros)
    del broken["Mixed_5b.branch_pool.bn.running_mean"], broken["Mixed_7a.branch3x3_2.conv.weight"]
    broken["Mixed_5b.branch9x9.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    broken["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    broken["Conv2d_2a_3x3.conv.weight"] = np.zeros((32, 32, 3, 1), np.float32)
    broken["Conv2d_2b_3x3.bn.weight"] = np.zeros(64, np.int64)
    with pytest.raises(ValueError) as error:
        inception_from_state_dict(broken, source="'my.pth'")
    message = str(error.value)
    for name in ("'my.pth'", "Mixed_5b.branch_pool.bn.running_mean", "Mixed_7a.branch3x3_2.conv.weight",
                 "Mixed_5b.branch9x9.conv.weight", "AuxLogits.fc.weight",
                 "Conv2d_2a_3x3.conv.weight (32, 32, 3, 1), expected (32, 32, 3, 3)",
                 "Conv2d_2b_3x3.bn.weight (int64)"):
        assert name in message, name


def test_load_inception_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"tiny_state_zip.pt.*missing entries: .*Conv2d_1a_3x3"):
        load_inception(DATA / "tiny_state_zip.pt")


# ---------------------------------------------------------------------------------------------------------------
# Input pipeline.


def _torch_bilinear_1d(x: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """An independent float64 loop of torch's align_corners=False linear interpolation along `axis`."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, 0)
    n = x.shape[0]
    out = np.empty((out_size, *x.shape[1:]))
    for i in range(out_size):
        src = max((i + 0.5) * n / out_size - 0.5, 0.0)
        lo = int(np.floor(src))
        hi = lo + 1 if lo < n - 1 else lo
        w = src - lo
        out[i] = (1 - w) * x[lo] + w * x[hi]
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("n, m", [(32, 299), (7, 299), (1, 5), (400, 299), (320, 299), (1000, 299), (299, 299),
                                  (5, 3), (10, 4)])
def test_resize_matrix_is_torch_bilinear(n, m):
    # torch rounds the source coordinate to float32 (as resize_matrix does; the live test checks it
    # bitwise): the float64 formula differs by up to one float32 ulp of it, n * 2^-24.
    matrix = resize_matrix(n, m)
    assert matrix.shape == (m, n) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, _torch_bilinear_1d(np.eye(n), m, axis=0), rtol=0, atol=n * 2.0**-23 + 1e-7)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
    if n == m:
        np.testing.assert_array_equal(matrix, np.eye(n))


@pytest.mark.parametrize("shape", [(2, 13, 40, 3), (1, 301, 9, 1), (1, 299, 299, 2)])
def test_resize_bilinear_images(shape):
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    expected = _torch_bilinear_1d(_torch_bilinear_1d(x, 299, axis=1), 299, axis=2)
    got = np.asarray(resize_bilinear(jnp.asarray(x), (299, 299)))
    assert got.shape == (shape[0], 299, 299, shape[3])
    np.testing.assert_allclose(got, expected, rtol=0, atol=max(shape[1:3]) * 2.0**-22 + 1e-6)


def test_check_images():
    gray = np.random.default_rng(1).uniform(-1, 1, (2, 5, 6, 1)).astype(np.float64)
    rgb = np.asarray(check_images(gray))
    assert rgb.shape == (2, 5, 6, 3) and rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb, np.repeat(gray.astype(np.float32), 3, axis=-1))
    for bad in (np.zeros((5, 6, 3)), np.zeros((1, 5, 6, 4)), np.zeros((1, 3, 5, 6)), np.zeros((0, 5, 6, 3)),
                np.full((1, 5, 6, 3), np.nan)):
        with pytest.raises(InputValueError, match="`images`"):
            check_images(bad)
    with pytest.raises(InputTypeError, match="`images` must be a float array"):
        check_images(np.zeros((1, 5, 6, 3), np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Features against pytorch-fid (committed torch outputs, random weights rebuilt from names and shapes).


@pytest.fixture(scope="module")
def random_inception(shapes):
    return inception_from_state_dict(GENERATOR.random_state_dict(shapes))


@pytest.mark.slow
@pytest.mark.parametrize("key", ["a", "b"])  # a: 2 x 32x32 (upsampled), b: 1 x 400x24 (down in H, up in W)
def test_features_match_pytorch_fid(random_inception, key):
    with np.load(DATA / "inception_features.npz") as f:
        images, expected = GENERATOR.images_from_uint8(f[f"images_{key}"]), f[f"features_{key}"]
    got = random_inception(images)
    assert got.shape == (images.shape[0], FEATURES) and got.dtype == jnp.float32
    assert np.abs(expected).max() > 1  # the random weights neither vanish nor explode
    assert _relative_error(got, expected) <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Live parity with torch + pytorch-fid (skipped unless both import).


def _import_torch():
    try:
        import pytorch_fid.inception  # noqa: F401
        import torch
        import torchvision  # noqa: F401
    except Exception as error:  # noqa: BLE001 (torchvision beside a mismatched torch raises RuntimeError)
        pytest.skip(f"torch, torchvision or pytorch-fid unavailable: {type(error).__name__}: {error}")
    return torch


@pytest.mark.slow
def test_live_features_match_pytorch_fid(tmp_path):
    torch = _import_torch()
    net, inception = GENERATOR.pytorch_fid_network(torch)
    state = inception.state_dict()
    loaded = {}
    for fmt, zip_format in (("legacy", False), ("zip", True)):
        path = tmp_path / f"inception_{fmt}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
        read = read_torch_state_dict(path)
        assert list(read) == list(state)  # fc.* and num_batches_tracked included, then ignored by the loader
        for name, value in state.items():
            np.testing.assert_array_equal(read[name], value.numpy(), err_msg=name)
        loaded[fmt] = load_inception(path)
    for n, m in [(32, 299), (320, 299), (400, 299), (1000, 299), (7, 5)]:  # torch's bilinear weights, bitwise
        eye = torch.eye(n, dtype=torch.float32)[None, None]
        weights = torch.nn.functional.interpolate(eye, size=(m, n), mode="bilinear", align_corners=False)
        np.testing.assert_array_equal(resize_matrix(n, m), weights[0, 0].numpy())
    rng = np.random.default_rng(7)
    for shape in [(2, 32, 32, 3), (1, 299, 299, 3), (3, 341, 64, 3)]:
        images = rng.uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy((images + 1) / 2).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
        for fmt, features in loaded.items():
            error = _relative_error(features(images), expected)
            print(f"{fmt} {shape}: relative error {error:.2e}")
            assert error <= TOLERANCE, (fmt, shape, error)


@pytest.mark.parametrize("name, value, message", [
    ("Mixed_6b.branch7x7_2.bn.running_var", -1.0, "running variances with negative values: Mixed_6b.branch7x7_2.bn."),
    ("Mixed_6b.branch7x7_2.bn.running_var", np.inf, "NaN or infinite values: Mixed_6b.branch7x7_2.bn.running_var"),
    ("Conv2d_1a_3x3.conv.weight", np.nan, "NaN or infinite values: Conv2d_1a_3x3.conv.weight"),
    ("Mixed_7c.branch_pool.bn.bias", 1e39, "NaN or infinite values: Mixed_7c.branch_pool.bn.bias"),  # float32: inf
])
def test_weights_must_be_finite_and_variances_nonnegative(shapes, name, value, message):
    """D8: a running variance of -1 (or a NaN weight) made every feature NaN; now the entry is named."""
    state = {key: np.ones(shape, np.float32) for key, shape in shapes.items()}
    state[name] = np.array(state[name], np.float64)
    state[name].flat[3] = value
    with pytest.raises(ValueError, match="'my.pth' does not hold FID's Inception weights") as error:
        inception_from_state_dict(state, source="'my.pth'")
    assert message in str(error.value)
