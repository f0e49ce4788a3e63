"""`load_edm_pickle` on hostile snapshots (issue 21): refused with a ValueError naming the file and the field,
in time and memory linear in the file's size.

The snapshots are tiny networks of the committed zoo (see `test_edm_pickle.py`), edited and written back as
pickles by `write_snapshot` below: a few opcodes per object, no torch. Tensors are written as legacy-format
storages, so a tensor can be any strided view of its storage, e.g. a stride-0 view that makes a few bytes
stand for billions of elements.
"""

import dataclasses
import gzip
import pickle
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bounded import bounded
from pickle_ops import LEGACY_HEADER, Op, call, glob, persistent, top, value

from gaussjax._torch import EDM, ModuleRecord, read_edm_pickle, torch_shapes
from gaussjax.nn import load_edm_pickle
from gaussjax.nn._edm_pickle import denoiser_from_record
from gaussjax.nn._unet import SongUNet

DATA = Path(__file__).parent / "data"
# The snapshots written here hold no NVlabs/edm source code: the reader's warning about that is expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("edm") / "edm_pickle_zoo.pkl"
    path.write_bytes(gzip.decompress((DATA / "edm_pickle_zoo.pkl.gz").read_bytes()))
    return read_edm_pickle(path)


# ---------------------------------------------------------------------------------------------------------------
# A pickle writer for ModuleRecord trees.


@dataclasses.dataclass
class View:
    """The tensor `as_strided(storage, shape, strides)` (strides in elements), as torch pickles one."""

    storage: np.ndarray
    shape: tuple
    strides: tuple


def huge(shape, value=1.0, dtype=np.float32) -> View:
    """A tensor of `shape` whose elements are all one stored `value` (stride 0)."""
    return View(np.full(1, value, dtype), tuple(shape), (0,) * len(shape))


_STORAGES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
             np.dtype(np.float16): "HalfStorage"}


def _storage(raw: np.ndarray) -> Op:
    """`torch.storage._load_from_bytes` of a legacy serialization of one storage holding `raw`."""
    pid = value(("storage", glob("torch", _STORAGES[raw.dtype]), "0", "cpu", raw.size, None)) + b"Q"
    body = pickle.dumps(["0"], protocol=2) + raw.size.to_bytes(8, "little") + raw.tobytes()
    return call("torch.storage", "_load_from_bytes", LEGACY_HEADER + b"\x80\x02" + pid + b"." + body)


def _tensors_and_modules(obj) -> bytes | None:
    """Opcodes for arrays, `View`s and `ModuleRecord`s (the `pickle_ops.value` hook), None for other objects."""
    if isinstance(obj, np.ndarray):
        obj = np.ascontiguousarray(obj)
        obj = View(obj.reshape(-1), obj.shape, tuple(s // obj.itemsize for s in obj.strides))
    if isinstance(obj, View):
        return call("torch._utils", "_rebuild_tensor_v2", _storage(obj.storage), 0, obj.shape, obj.strides,
                    False, {})
    if isinstance(obj, ModuleRecord):
        state = {"_init_args": obj.init_args, "_init_kwargs": obj.init_kwargs, "_parameters": obj.parameters,
                 "_buffers": obj.buffers, "_modules": obj.modules,
                 "_non_persistent_buffers_set": sorted(obj.non_persistent_buffers)}
        return persistent(obj.class_name.rsplit(".")[-1], state, hook=_tensors_and_modules)
    return None


def write_snapshot(path: Path, **networks) -> Path:
    """`path` holding the pickled snapshot `{name: record}`."""
    path.write_bytes(top(networks, hook=_tensors_and_modules))
    return path


def edit(record: ModuleRecord, name: str, *, buffer=None, parameter=None, **init_kwargs) -> ModuleRecord:
    """`record` with the module at dotted `name` ('' the record itself, 'model' its network) changed."""
    if name:
        head, _, rest = name.partition(".")
        modules = {**record.modules, head: edit(record.modules[head], rest, buffer=buffer, parameter=parameter,
                                                **init_kwargs)}
        return dataclasses.replace(record, modules=modules)
    changes = {"init_kwargs": {**record.init_kwargs, **init_kwargs}}
    if buffer is not None:
        changes["buffers"] = {**record.buffers, **buffer}
    if parameter is not None:
        changes["parameters"] = {**record.parameters, **parameter}
    return dataclasses.replace(record, **changes)


def refused(path_or_record, *fields, seconds=20, megabytes=50):
    """Assert that loading raises a ValueError naming every one of `fields` (and the file), in bounded resources."""
    with bounded(seconds=seconds, megabytes=megabytes), pytest.raises(ValueError) as caught:
        if isinstance(path_or_record, Path):
            load_edm_pickle(path_or_record, network="net")
        else:
            denoiser_from_record(path_or_record, source="snapshot.pkl")
    message = str(caught.value)
    for field in (*fields, str(path_or_record) if isinstance(path_or_record, Path) else "snapshot.pkl"):
        assert field in message, (field, message)
    return message


@pytest.mark.slow
def test_the_writer_round_trips(zoo, tmp_path):
    """Unchanged records written by `write_snapshot` load as the committed zoo does (same outputs)."""
    path = write_snapshot(tmp_path / "snapshot.pkl", net=zoo["ve"])
    written, original = load_edm_pickle(path, network="net"), denoiser_from_record(zoo["ve"])
    x = jax.random.normal(jax.random.key(0), (2, written.dim))
    np.testing.assert_array_equal(written.denoise(x, 0.5), original.denoise(x, 0.5))


# ---------------------------------------------------------------------------------------------------------------
# D5: buffers are checked by name and size before any conversion. The views stand for 2^25 elements (a 256 MB
# float64 copy: past the bound, yet safe for the machine if a regression converts them) or for 2^60 (which
# NumPy refuses to allocate at once).

RESAMPLE = "enc.4x4_down.conv0"


@pytest.mark.parametrize("shape", [(1, 1, 2**12, 2**13), (2**60,)])
def test_stride_zero_resample_filter_is_not_converted(zoo, tmp_path, shape):
    record = edit(zoo["vp"], f"model.{RESAMPLE}", buffer={"resample_filter": huge(shape)})
    refused(write_snapshot(tmp_path / "snapshot.pkl", net=record), f"buffer 'model.{RESAMPLE}.resample_filter'")


@pytest.mark.parametrize("where, name, network, shape", [("", "u", "iddpm", (2**25,)), ("", "u", "iddpm", (2**60,)),
                                                         ("model.map_noise", "freqs", "ve", (2**22,)),
                                                         ("model", "extra", "vp", (2**25,))])
def test_stride_zero_buffers_are_not_converted(zoo, tmp_path, where, name, network, shape):
    """(The frequencies became a Python list: 2^22 of them are past the bound, 2^60 would exhaust the memory.)"""
    record = edit(zoo[network], where, buffer={name: huge(shape)})
    path = write_snapshot(tmp_path / "snapshot.pkl", net=record)
    refused(path, "buffer '" + f"{where}.{name}".lstrip(".") + "'")


def test_non_finite_fourier_frequencies(zoo):
    """Reported as non-finite (they were reported as a wrong count)."""
    freqs = np.array(zoo["ve"].modules["model"].modules["map_noise"].buffers["freqs"])
    freqs[3] = np.nan
    assert "NaN or infinite" in refused(edit(zoo["ve"], "model.map_noise", buffer={"freqs": freqs}), "freqs")


# ---------------------------------------------------------------------------------------------------------------
# D9: the network's size is bounded by the elements the file stores, before anything is built.


@pytest.mark.parametrize("key, value", [("num_blocks", 5000), ("model_channels", 2**40), ("model_channels", 2**16),
                                        ("channel_mult", [1, 2**20])])
@pytest.mark.parametrize("network", ["vp", "adm"])
def test_architecture_sizes_must_fit_the_stored_parameters(zoo, tmp_path, key, value, network):
    record = edit(zoo[network], "model", **{key: value})
    path = write_snapshot(tmp_path / "snapshot.pkl", net=record)
    refused(path, f"{zoo[network].class_name}.model", key, seconds=5, megabytes=100)


def _inflated(record: ModuleRecord, model_channels: int) -> ModuleRecord:
    """`record` for `model_channels` with every parameter a stride-0 view of the shape that network expects."""
    kwargs = {**record.modules["model"].init_kwargs, "model_channels": model_channels}
    net = SongUNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    shapes = torch_shapes(jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.ones((1,)))),
                          EDM)

    def inflate(module: ModuleRecord, prefix: str) -> ModuleRecord:
        parameters = {name: huge(shapes[prefix + name]) for name in module.parameters}
        modules = {name: inflate(child, f"{prefix}{name}.") for name, child in module.modules.items()}
        return dataclasses.replace(module, parameters=parameters, modules=modules)

    model = dataclasses.replace(inflate(record.modules["model"], ""), init_kwargs=kwargs)
    return dataclasses.replace(record, modules={**record.modules, "model": model})


def test_stride_zero_parameters_do_not_count_as_stored(zoo, tmp_path):
    """Parameters of exactly the shapes of a 60M-parameter network, all stride-0 views of one float each."""
    path = write_snapshot(tmp_path / "snapshot.pkl", net=_inflated(zoo["vp"], model_channels=512))
    assert path.stat().st_size < 200_000
    refused(path, "stride-0")


def test_parameters_sharing_one_storage_do_not_count_twice(zoo):
    """`map_layer0.weight` (16, 4) as a view of `map_layer1.weight` (16, 16): the right shape, but no bytes of its
    own."""
    layers = zoo["vp"].modules["model"].modules
    shape = layers["map_layer0"].parameters["weight"].shape
    aliased = layers["map_layer1"].parameters["weight"][: shape[0], : shape[1]]
    refused(edit(zoo["vp"], "model.map_layer0", parameter={"weight": aliased}), "overlapping")


# ---------------------------------------------------------------------------------------------------------------
# D8: non-finite or float32-overflowing values.


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e30, "0.5"])
def test_sigma_data_must_be_finite_in_float32(zoo, tmp_path, value):
    record = edit(zoo["ema"], "", sigma_data=value)
    refused(write_snapshot(tmp_path / "snapshot.pkl", net=record), "EDMPrecond", "sigma_data")


def test_non_finite_weights_name_the_entry(zoo, tmp_path):
    weight = np.array(zoo["vp"].modules["model"].modules["map_layer1"].parameters["weight"])
    weight[1, 2] = np.inf
    record = edit(zoo["vp"], "model.map_layer1", parameter={"weight": weight})
    message = refused(write_snapshot(tmp_path / "snapshot.pkl", net=record), "model.map_layer1.weight")
    assert re.search(r"NaN or infinite values: model\.map_layer1\.weight", message), message
