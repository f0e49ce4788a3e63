"""The restricted EDM snapshot reader: state dicts against torch's own, both storage formats, refusals."""

import io
import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from nn_helpers import import_edm
from pickle_ops import LEGACY_HEADER, Op, call, glob, persistent, top, value

from gaussjax._torch import SNAPSHOT, STATE_DICT, STORAGE, ModuleRecord, UnsafePickleError, read_edm_pickle

DATA = Path(__file__).parent / "data"
DOCS = Path(__file__).parents[2] / "docs" / "pretrained.md"
FIXTURES = [  # (pickle, npz of torch's state_dict() and the constructor kwargs)
    ("edm_pickle_songunet.pkl", "edm_pickle_songunet_state.npz"),
    ("edm_pickle_songunet_mini.pkl", "edm_pickle_songunet_mini_state.npz"),
    ("edm_pickle_songunet_mini_zip.pkl", "edm_pickle_songunet_mini_state.npz"),
]


def _reference(npz: str) -> tuple[dict, dict]:
    with np.load(DATA / npz) as f:
        kwargs = json.loads(str(f["__init_kwargs__"]))
        return {k: f[k] for k in f.files if k != "__init_kwargs__"}, kwargs


@pytest.mark.parametrize("pkl, npz", FIXTURES)
def test_state_dict_equals_torch(pkl, npz):
    expected, kwargs = _reference(npz)
    ema = read_edm_pickle(DATA / pkl)["ema"]
    got = ema.state_dict()
    assert list(got) == list(expected)  # same names, same order as torch's Module.state_dict()
    for name, array in expected.items():
        assert got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)
    assert ema.class_name == "EDMPrecond"
    assert ema.init_args == ()
    assert ema.init_kwargs == kwargs


def test_legacy_and_zip_storages_agree():
    legacy = read_edm_pickle(DATA / "edm_pickle_songunet_mini.pkl")["ema"].state_dict()
    zipped = read_edm_pickle(DATA / "edm_pickle_songunet_mini_zip.pkl")["ema"].state_dict()
    assert list(legacy) == list(zipped)
    for name in legacy:
        np.testing.assert_array_equal(legacy[name], zipped[name], err_msg=name)


def test_snapshot_layout():
    snapshot = read_edm_pickle(DATA / "edm_pickle_songunet.pkl")
    assert list(snapshot) == ["ema", "loss_fn", "augment_pipe", "dataset_kwargs"]
    ema, loss = snapshot["ema"], snapshot["loss_fn"]
    assert ema.attributes["sigma_data"] == 0.5 and ema.attributes["training"] is False
    unet = ema.modules["model"]
    assert unet.class_name == "SongUNet"
    assert unet.modules["enc"].class_name == "torch.nn.modules.container.ModuleDict"
    block = unet.modules["dec"].modules["8x8_block0"]
    assert block.class_name == "UNetBlock"
    assert isinstance(block.attributes["skip_scale"], np.float64) and block.attributes["skip_scale"] == np.sqrt(0.5)
    assert block.modules["skip"].parameters["bias"] is not None
    assert (loss.class_name, loss.attributes) == ("EDMLoss", {"P_mean": -1.2, "P_std": 1.2, "sigma_data": 0.5})
    assert snapshot["augment_pipe"].class_name == "AugmentPipe"
    assert snapshot["augment_pipe"].init_kwargs["p"] == 0.12
    assert snapshot["dataset_kwargs"]["class_name"] == "training.dataset.ImageFolderDataset"


def test_state_dict_skips_none_and_nonpersistent():
    w = np.arange(3.0)
    child = ModuleRecord("torch.nn.modules.linear.Linear", (), {}, {"weight": w, "bias": None}, {}, {})
    parent = ModuleRecord("Net", (), {}, {}, {"kept": w, "dropped": w, "empty": None}, {"a": child, "b": None},
                          non_persistent_buffers=frozenset({"dropped"}))
    assert list(parent.state_dict()) == ["kept", "a.weight"]


# ---------------------------------------------------------------------------------------------------------------
# Hand-written pickles: a tiny opcode builder, so no torch, EDM or dangerous object is needed to write them.


def _persistent_id(*fields) -> bytes:
    return value(fields) + b"Q"


def _legacy_storage(inner: bytes) -> Op:
    """``_load_from_bytes`` of a legacy-format serialization whose main pickle is ``inner``."""
    return call("torch.storage", "_load_from_bytes", LEGACY_HEADER + inner + pickle.dumps([], protocol=2))


def _zip_storage(inner: bytes) -> Op:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", inner)
    return call("torch.storage", "_load_from_bytes", buffer.getvalue())


def _read(tmp_path, data: bytes):
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(data)
    return read_edm_pickle(path)


def _touch(sentinel) -> str:
    return f"touch {sentinel}"


_ATTACKS = {
    "os.system": lambda s: (call("posix", "system", _touch(s)), "posix.system"),
    "eval": lambda s: (call("builtins", "eval", f"open({str(s)!r}, 'w')"), "builtins.eval"),
    "exec": lambda s: (call("builtins", "exec", f"open({str(s)!r}, 'w')"), "builtins.exec"),
    "popen": lambda s: (call("subprocess", "Popen", ["touch", str(s)]), "subprocess.Popen"),
    "import_module": lambda s: (call("importlib", "import_module", "os"), "importlib.import_module"),
    "getattr": lambda s: (call("builtins", "getattr", glob("os", "path"), "join"), "builtins.getattr"),
}


@pytest.mark.parametrize("attack", sorted(_ATTACKS))
@pytest.mark.parametrize("where", ["top", "state", "parameter", "legacy_storage", "zip_storage"])
def test_refuses_globals_outside_the_allow_list(tmp_path, sentinel, attack, where):
    payload, reference = _ATTACKS[attack](sentinel)
    if where == "state":
        payload = {"ema": persistent(state={"_parameters": {}, "sigma_data": payload})}
    elif where == "parameter":
        payload = {"ema": persistent(state={"_parameters": {"weight": payload}})}
    elif where == "legacy_storage":
        payload = _legacy_storage(b"\x80\x02" + payload + b".")
    elif where == "zip_storage":
        payload = _zip_storage(b"\x80\x02" + payload + b".")
    with pytest.raises(UnsafePickleError, match=f"global '{reference}'"):
        _read(tmp_path, top(payload))


def test_module_src_is_never_executed(tmp_path, sentinel):
    source = f"open({str(sentinel)!r}, 'w').close()\nclass EDMPrecond:\n    pass\n"
    with pytest.warns(UserWarning, match="'EDMPrecond' were rebuilt from their names"):
        snapshot = _read(tmp_path, top({"ema": persistent(module_src=source, state={"sigma_data": 0.5})}))
    assert snapshot["ema"].class_name == "EDMPrecond" and snapshot["ema"].attributes == {"sigma_data": 0.5}
    assert "module_src" not in repr(snapshot)


@pytest.mark.parametrize(
    "payload, message",
    [
        (persistent(type_="function"), "type 'function'"),
        (persistent(class_name="os.system"), "class name 'os.system'"),
        (Op(b"Pevil\n"), "persistent id 'evil'"),
        (_legacy_storage(b"\x80\x02Pevil\n."), "persistent id 'evil'"),
        (_legacy_storage(b"\x80\x02" + _persistent_id("evil", glob("torch", "FloatStorage"), "0", "cpu", 1)
                         + b"."), "persistent id"),
        (Op(glob("torch._utils", "_rebuild_parameter") + value({"function": 1}) + b"b"), "set state"),
        (Op(glob("collections", "OrderedDict") + value({"__setitem__": 1}) + b"b"), "set state on <class"),
        ({"x": glob("torch", "Size")}, "refusing StandIn"),
        (call("torch._utils", "_rebuild_tensor_v2", b"raw", 0, (1,), (1,), False, {}), "not a storage"),
        (call("numpy", "dtype", "O8", False, True), r"numpy.dtype\('O8'\)"),
        (call("_codecs", "encode", "x", "rot13"), "encoding 'rot13'"),
        ([1, 2], "expected a snapshot dict"),
    ],
)
def test_refuses_non_data(tmp_path, payload, message):
    with pytest.raises(ValueError, match=message):
        _read(tmp_path, top(payload))


def test_refuses_storage_view_past_its_end(tmp_path):
    storage = b"\x80\x02" + _persistent_id("storage", glob("torch", "FloatStorage"), "0", "cpu", 2, None) + b"."
    blob = (LEGACY_HEADER + storage + pickle.dumps(["0"], protocol=2)
            + (2).to_bytes(8, "little") + np.ones(2, "f4").tobytes())
    loaded = call("torch.storage", "_load_from_bytes", blob)
    ok = _read(tmp_path, top({"x": call("torch._utils", "_rebuild_tensor_v2", loaded, 1, (1,), (1,), False, {})}))
    np.testing.assert_array_equal(ok["x"], [1.0])
    with pytest.raises(ValueError, match="overruns its storage"):
        _read(tmp_path, top({"x": call("torch._utils", "_rebuild_tensor_v2", loaded, 1, (2,), (1,), False, {})}))


def _legacy_blob(storage_class: str, raw: np.ndarray) -> Op:
    """``_load_from_bytes`` of a one-storage legacy serialization holding ``raw`` (written by NumPy, not torch)."""
    pid = _persistent_id("storage", glob("torch", storage_class), "0", "cpu", raw.size, None)
    body = pickle.dumps(["0"], protocol=2) + raw.size.to_bytes(8, "little") + raw.tobytes()
    return call("torch.storage", "_load_from_bytes", LEGACY_HEADER + b"\x80\x02" + pid + b"." + body)


@pytest.mark.parametrize(
    "storage_class, dtype",
    [("FloatStorage", np.float32), ("HalfStorage", np.float16), ("DoubleStorage", np.float64),
     ("LongStorage", np.int64), ("IntStorage", np.int32), ("ByteStorage", np.uint8), ("BoolStorage", np.bool_)],
)
def test_typed_storages_and_strided_views(tmp_path, storage_class, dtype):
    raw = (np.arange(12) % 5 - 1).astype(dtype)
    storage = _legacy_blob(storage_class, raw)
    tensor = call("torch._utils", "_rebuild_tensor_v2", storage, 1, (3, 2), (1, 4), False, {})  # offset, transposed
    got = _read(tmp_path, top({"t": tensor, "p": call("torch._utils", "_rebuild_parameter", tensor, True, {})}))
    expected = np.lib.stride_tricks.as_strided(raw[1:], (3, 2), (raw.itemsize, 4 * raw.itemsize))
    for name in "tp":
        assert got[name].dtype == dtype
        np.testing.assert_array_equal(got[name], expected)


def test_untyped_storage_takes_the_dtype_of_the_tensor(tmp_path):
    raw = np.array([1.5, -2.0, 0.25], np.float16)
    storage = _legacy_blob("UntypedStorage", raw.view(np.uint8))
    tensor = call("torch._utils", "_rebuild_tensor_v3", storage, 0, (3,), (1,), False, {}, glob("torch", "float16"))
    got = _read(tmp_path, top({"t": tensor}))["t"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, raw)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.999])
def test_truncated_file_names_the_path(tmp_path, cut):
    data = (DATA / "edm_pickle_songunet_mini.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ValueError, match="cut.pkl"):
        read_edm_pickle(path)


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(os.urandom(64) + b"\x00")
    with pytest.raises(ValueError, match="garbage.pkl"):
        read_edm_pickle(path)
    with pytest.raises(FileNotFoundError):
        read_edm_pickle(tmp_path / "missing.pkl")


# ---------------------------------------------------------------------------------------------------------------
# The allow-lists, spelled out here so that any change to one is a visible change, and their documentation.

_STORAGE_GLOBALS = {("torch", f"{kind}Storage") for kind in
                    ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char", "Byte", "Bool", "Untyped")}
_TENSOR_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
                   ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
                   ("torch", "Size")} | {("torch", dtype) for dtype in (
                       "float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool",
                       "uint16", "uint32", "uint64")}
_PLAIN_MODULES = {("torch.nn.modules.container", name) for name in
                  ("ModuleDict", "ModuleList", "Sequential", "ParameterDict", "ParameterList")} | {
    ("torch.nn.modules.linear", "Linear"), ("torch.nn.modules.linear", "Identity"), ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.normalization", "GroupNorm"), ("torch.nn.modules.activation", "SiLU"),
    ("torch.nn.modules.dropout", "Dropout")}
ALLOWED = {  # name: (allow-list, its globals)
    "snapshot": (SNAPSHOT, {("torch_utils.persistence", "_reconstruct_persistent_obj"),
                            ("torch.storage", "_load_from_bytes"), ("collections", "OrderedDict"),
                            ("dnnlib.util", "EasyDict"), ("builtins", "set"), ("builtins", "frozenset"),
                            ("_codecs", "encode"), ("numpy", "dtype"), ("numpy._core.multiarray", "scalar"),
                            ("numpy.core.multiarray", "scalar")} | _PLAIN_MODULES | _TENSOR_GLOBALS),
    "storage": (STORAGE, _STORAGE_GLOBALS),
    "state dict": (STATE_DICT, {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor")}
                   | _TENSOR_GLOBALS | _STORAGE_GLOBALS),
}


def _table_globals(table: str) -> list[tuple[str, str]]:
    """The globals a Markdown table of `AllowList.table` names in its first column (`module.{a, b}` expanded)."""
    found = []
    for row in table.splitlines():
        if row.startswith("| `"):
            for shown in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
                module, _, names = shown.partition(".{") if shown.endswith("}") else shown.rpartition(".")
                found += [(module, name) for name in names.rstrip("}").split(", ")]
    return found


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allow_lists_are_exactly_these(name):
    allowed, expected = ALLOWED[name]
    assert {(entry.module, entry.name) for entry in allowed.entries} == expected
    assert sorted(_table_globals(allowed.table())) == sorted(expected)  # each global documented once
    assert all(entry.why for entry in allowed.entries)
    for module, global_name in [("builtins", "eval"), ("posix", "system"), ("torch", "load"), ("numpy", "ndarray")]:
        with pytest.raises(UnsafePickleError, match=f"refusing global '{module}.{global_name}'"):
            allowed.find(module, global_name)


def test_docs_show_the_allow_lists():
    """docs/pretrained.md holds exactly the tables the allow-lists render (regenerate with AllowList.table)."""
    text = DOCS.read_text()
    begin, end = text.index("<!-- allow-lists: generated"), text.index("<!-- allow-lists: end -->")
    assert text[text.index("\n", begin) + 1:end] == "\n".join(allowed.table() for allowed in (SNAPSHOT, STORAGE,
                                                                                                STATE_DICT))


# ---------------------------------------------------------------------------------------------------------------
# Live parity with EDM's own code; runs only where torch and EDM (GAUSSJAX_EDM_SRC) import.


@pytest.mark.parametrize("model_type", ["SongUNet", "DhariwalUNet"])
def test_live_pickle_matches_torch_state_dict(tmp_path, model_type):
    torch, networks = import_edm()
    torch.manual_seed(3)
    kwargs = {"img_resolution": 8, "img_channels": 2, "label_dim": 3, "model_type": model_type, "model_channels": 8,
                  "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4]}
    net = networks.EDMPrecond(**kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p))
    net = net.eval().requires_grad_(False).cpu()
    path = tmp_path / "live.pkl"
    path.write_bytes(pickle.dumps({"ema": net, "dataset_kwargs": {"resolution": 8}}))
    got = read_edm_pickle(path)["ema"]
    expected = {k: v.numpy() for k, v in net.state_dict().items()}
    assert list(got.state_dict()) == list(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(got.state_dict()[name], array, err_msg=name)
    assert got.init_kwargs == kwargs
    assert math.isclose(got.attributes["sigma_data"], 0.5)


def test_live_dtypes_and_strided_views_match_torch(tmp_path):
    torch, _ = import_edm()
    torch.manual_seed(4)
    tensors = {
        "float16_transposed": torch.randn(3, 5).half().t(),
        "bfloat16": torch.randn(4, 2).to(torch.bfloat16),
        "float64_slice": torch.randn(6, 6, dtype=torch.float64)[1:5:2, ::3],
        "int64": torch.arange(7),
        "int32": torch.arange(5, dtype=torch.int32) - 2,
        "uint8": torch.arange(9, dtype=torch.uint8).reshape(3, 3),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
        "parameter": torch.nn.Parameter(torch.randn(2, 3)),
    }
    path = tmp_path / "tensors.pkl"
    path.write_bytes(pickle.dumps(tensors))
    got = read_edm_pickle(path)
    for name, tensor in tensors.items():
        expected = tensor.detach()
        if expected.dtype == torch.bfloat16:  # numpy has no bfloat16: compare its float32 values exactly
            assert str(got[name].dtype) == "bfloat16"
            np.testing.assert_array_equal(got[name].astype(np.float32), expected.float().numpy(), err_msg=name)
        else:
            assert got[name].dtype == expected.numpy().dtype, name
            np.testing.assert_array_equal(got[name], expected.numpy(), err_msg=name)
