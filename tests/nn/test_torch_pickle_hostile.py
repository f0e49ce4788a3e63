"""The restricted torch readers on hostile files (issue 21): each is refused in time and memory linear in its size.

Every file here is a few hundred bytes to a few hundred kilobytes, written opcode by opcode, and each
defect it targets cost the old reader exponential time, gigabytes or an internal error. The readers must
refuse it with a ValueError (or UnsafePickleError) whose message is short and names the file, inside
`bounded`, and without running anything (`sentinel`).
"""

import io
import pickle
import random
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pickle_ops
import pytest
from bounded import bounded
from pickle_ops import LEGACY_HEADER, Op, call, glob, top
from pickle_ops import value as v

from gaussjax._torch import EDM_MODULE_SOURCES, read_edm_pickle, read_torch_state_dict
from gaussjax.nn import load_edm_pickle
from gaussjax.quality._inception import load_inception

DATA = Path(__file__).parent / "data"
STATE_DATA = Path(__file__).parents[1] / "quality" / "data"
EDM_FIXTURES = ["edm_pickle_songunet.pkl", "edm_pickle_songunet_mini.pkl", "edm_pickle_songunet_mini_zip.pkl"]
DEPTH = 60  # of the shared DAGs below: 2**60 leaves, which the old reader hashed, printed or walked one by one
MAX_MESSAGE = 1000  # characters of a refusal message

pytestmark = pytest.mark.filterwarnings("ignore:.*rebuilt from their names:UserWarning")  # hand-written sources


def memoize(value) -> Op:
    """Push ``value`` and store it at the next memo index (MEMOIZE)."""
    return Op(v(value) + b"\x94")


def get(index: int) -> Op:
    return Op(b"j" + struct.pack("<I", index))  # LONG_BINGET


def dag(depth: int) -> Op:
    """``t_depth`` with ``t_0 = ()`` and ``t_i = (t_{i-1}, t_{i-1})``: 2 bytes a level, ``2**depth`` leaves."""
    return Op(b")" + b"2\x86" * depth)  # EMPTY_TUPLE, then DUP + TUPLE2


def persistent(class_name="EDMPrecond", state=None, module_src="# a fork\n") -> Op:
    return pickle_ops.persistent(class_name, state, module_src)


def legacy(main: bytes, storages: dict | None = None) -> bytes:
    """A legacy torch serialization: header, ``main`` pickle, then each ``key: float32 array`` storage."""
    storages = storages or {}
    body = b"".join(len(a).to_bytes(8, "little") + np.asarray(a, "f4").tobytes() for a in storages.values())
    return LEGACY_HEADER + main + pickle.dumps(list(storages), protocol=2) + body


def storage_id(key="0", numel=4, view=None) -> bytes:
    fields = ("storage", glob("torch", "FloatStorage"), key, "cpu", numel) + ((view,) if view else ())
    return v(fields) + b"Q"  # BINPERSID


def tensor_v2(storage: bytes, offset, size, stride) -> Op:
    return Op(glob("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + v(offset) + v(size) + v(stride)
              + b"\x89}t" + b"R")


def zip_file(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write(tmp_path, data: bytes, name="hostile.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refused(reader, path, match: str, seconds=5, megabytes=50) -> str:
    """The message ``reader(path)`` refuses ``path`` with, checked: bounded cost, short, naming the file."""
    with bounded(seconds=seconds, megabytes=megabytes):
        with pytest.raises(ValueError, match=match) as error:
            reader(path)
    message = str(error.value)
    assert path.name in message and len(message) < MAX_MESSAGE, message
    return message


# ---------------------------------------------------------------------------------------------------------------
# D1: dict keys and set elements are checked before they are hashed (a DAG key hashes 2**depth leaves).

KEY_ATTACKS = {
    "setitem": Op(b"}" + dag(DEPTH) + b"K\x01s"),
    "setitems": Op(b"}(" + dag(DEPTH) + b"K\x01u"),
    "dict": Op(b"(" + dag(DEPTH) + b"K\x01d"),
    "frozenset": Op(b"(" + dag(DEPTH) + b"\x91"),
    "additems": Op(b"\x8f(" + dag(DEPTH) + b"\x90"),
}


@pytest.mark.parametrize("where", sorted(KEY_ATTACKS))
def test_dag_keys_are_refused_before_hashing_edm(tmp_path, sentinel, where):
    path = write(tmp_path, top({"dataset_kwargs": KEY_ATTACKS[where]}))
    refused(read_edm_pickle, path, "dict key or set element")


@pytest.mark.parametrize("call_", [call("builtins", "set", [dag(DEPTH)]),
                                   call("collections", "OrderedDict", [(dag(DEPTH), 1)])])
def test_dag_keys_are_refused_in_calls(tmp_path, call_):
    refused(read_edm_pickle, write(tmp_path, top({"x": call_})), "set element|built from arguments")


@pytest.mark.parametrize("wrap", ["bare", "legacy", "zip"])
@pytest.mark.parametrize("reader", [read_torch_state_dict, load_inception])
def test_dag_keys_are_refused_in_state_dicts(tmp_path, sentinel, wrap, reader):
    main = top(KEY_ATTACKS["setitem"])
    data = {"bare": main, "legacy": legacy(main), "zip": zip_file({"a/data.pkl": main})}[wrap]
    refused(reader, write(tmp_path, data, "hostile.pth"), "dict key or set element")


# ---------------------------------------------------------------------------------------------------------------
# D2: refusal messages describe offending objects in a bounded summary, never with a full repr.

FLOATS = legacy(b"\x80\x02" + storage_id() + b".", {"0": [1, 2, 3, 4]})
REPR_ATTACKS = {  # name: (payload, what the refusal says)
    "torch.Size": (call("torch", "Size", dag(DEPTH)), r"tensor size or stride \(\(<tuple of 2>, <tuple of 2>\), "),
    "size": (Op(glob("torch._utils", "_rebuild_tensor_v2") + b"(" + call("torch.storage", "_load_from_bytes", FLOATS)
                + b"K\x00" + dag(DEPTH) + b")\x89}tR"), "tensor size or stride"),
    "dtype": (Op(glob("torch._utils", "_rebuild_tensor_v3") + b"(" + call("torch.storage", "_load_from_bytes", FLOATS)
                 + b"K\x00(K\x01t(K\x01t\x89}" + dag(DEPTH) + b"tR"), "refusing tensor dtype"),
    "persistent id": (Op(dag(DEPTH) + b"Q"), "refusing persistent id"),
    "numpy.dtype": (call("numpy", "dtype", dag(DEPTH), False, True), "refusing numpy.dtype"),
    "codecs": (call("_codecs", "encode", "x", dag(DEPTH)), "refusing _codecs.encode"),
    "meta type": (call("torch_utils.persistence", "_reconstruct_persistent_obj", {"type": dag(DEPTH)}),
                  "persistent object of type"),
    "class name": (call("torch_utils.persistence", "_reconstruct_persistent_obj",
                        {"type": "class", "class_name": dag(DEPTH)}), "persistent class name"),
    "call arguments": (Op(glob("builtins", "set") + b"(" + dag(DEPTH) * 9 + b"tR"), "call arguments"),
    "long global": (Op(glob("x" * 10**5, "y" * 10**5)), "refusing global 'xxxx"),
    "huge int": (call("numpy", "dtype", Op(b"\x8b" + struct.pack("<i", 10**5) + b"\x01" * 10**5)),
                 "numpy.dtype\\(<int of 799993 bits>"),
}


@pytest.mark.parametrize("where", sorted(REPR_ATTACKS))
def test_refusals_describe_objects_in_bounded_size(tmp_path, sentinel, where):
    payload, match = REPR_ATTACKS[where]
    refused(read_edm_pickle, write(tmp_path, top({"x": payload})), match)


def test_state_dict_refusals_are_bounded(tmp_path):
    path = write(tmp_path, legacy(top({"w": call("torch", "Size", dag(DEPTH))})), "hostile.pth")
    refused(read_torch_state_dict, path, "tensor size or stride")
    entries = "".join(f"k{i}" for i in range(10**4))  # a long key named in the refusal
    path = write(tmp_path, legacy(top({entries: 1.5})), "long_key.pth")
    refused(read_torch_state_dict, path, "not a tensor")


def test_edm_positional_arguments_dag_never_reaches_the_caller(tmp_path):
    """The old reader returned the DAG; `load_edm_pickle` then printed it in its error (2**60 leaves)."""
    state = {"_init_args": dag(DEPTH), "_init_kwargs": {}, "_modules": {"model": persistent("SongUNet")}}
    path = write(tmp_path, top({"ema": persistent(state=state)}))
    refused(read_edm_pickle, path, "counted as a tree")
    refused(load_edm_pickle, path, "counted as a tree")


def test_data_shared_over_and_over_is_refused(tmp_path):
    shared = memoize(list(range(200)))
    path = write(tmp_path, top({"dataset_kwargs": Op(b"(" + shared + get(0) * 2000 + b"l")}))  # 400k nodes, 14 kB
    refused(read_edm_pickle, path, "counted as a tree")
    path = write(tmp_path, top({"dataset_kwargs": Op(b"(" + shared + get(0) * 3 + b"l")}))  # shared, but small
    assert read_edm_pickle(path)["dataset_kwargs"] == [list(range(200))] * 4


# ---------------------------------------------------------------------------------------------------------------
# D3: modules form a tree; a module (or a container holding one) reached twice is refused.


def _shared_modules(depth: int, plain: bool) -> bytes:
    """``m_k`` has children ``a`` and ``b``, both ``m_{k-1}`` (one memo entry): ``2**depth`` paths to ``m_0``."""
    def module(children: dict) -> Op:
        if plain:
            return Op(glob("torch.nn.modules.container", "ModuleDict") + b")\x81" + v({"_modules": children}) + b"b")
        return persistent("UNetBlock", {"_modules": children}, module_src="")

    levels = [module({}) + b"\x940"]  # MEMOIZE, POP
    levels += [module({"a": get(k - 1), "b": get(k - 1)}) + b"\x940" for k in range(1, depth + 1)]
    return Op(b"".join(levels) + get(depth))


@pytest.mark.parametrize("plain", [False, True])
def test_shared_submodules_are_refused(tmp_path, plain):
    modules = _shared_modules(30, plain)  # 2**30 paths (the reader nests at most 100 levels: 3 per module)
    path = write(tmp_path, top({"ema": persistent(state={"_modules": {"model": modules}})}))
    assert path.stat().st_size < 30_000
    refused(read_edm_pickle, path, "reached twice.*modules must form a tree")
    refused(load_edm_pickle, path, "reached twice")


def test_a_shared_container_of_modules_is_refused(tmp_path):
    children = memoize({"conv": persistent("Conv2d")})
    first = persistent("UNetBlock", {"_modules": children})
    second = persistent("UNetBlock", {"_modules": get(0)})
    refused(read_edm_pickle, write(tmp_path, top({"a": first, "b": second})), "reached twice")


# ---------------------------------------------------------------------------------------------------------------
# D4: zip members are size-checked before they are inflated, then read with a bounded read.


def _deflate_bomb(members: dict, bomb: str, size: int) -> bytes:
    """A zip of ``members`` plus ``bomb``: ``size`` zero bytes, deflated (about 1000:1)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with archive.open(bomb, "w") as member:
            for _ in range(size // 2**20):
                member.write(bytes(2**20))
    return buffer.getvalue()


STATE_PICKLE = top({"w": tensor_v2(storage_id(numel=1), 0, (1,), (1,))})


@pytest.mark.parametrize("bomb, match", [("a/data/0", "holds 33554432 bytes, its storage 4"),
                                         ("a/data.pkl", "would inflate")])
def test_zip_members_are_size_checked_before_inflating(tmp_path, bomb, match):
    members = {"a/data.pkl": STATE_PICKLE, "a/data/0": np.ones(1, "f4").tobytes()}
    members.pop(bomb)
    path = write(tmp_path, _deflate_bomb(members, bomb, 32 * 2**20), "bomb.pth")
    assert path.stat().st_size < 200_000
    message = refused(read_torch_state_dict, path, match, megabytes=20)
    assert bomb in message


def test_zip_inflation_is_bounded_even_when_sizes_agree(tmp_path):
    numel = 8 * 2**20  # 32 MiB of float32, which the storage id claims
    main = top({"w": tensor_v2(storage_id(numel=numel), 0, (numel,), (1,))})
    path = write(tmp_path, _deflate_bomb({"a/data.pkl": main}, "a/data/0", 4 * numel), "bomb.pth")
    refused(read_torch_state_dict, path, "past 4 times the archive's size", megabytes=20)
    blob = _deflate_bomb({"a/data.pkl": b"\x80\x02" + storage_id(numel=numel) + b"."}, "a/data/0", 4 * numel)
    path = write(tmp_path, top({"x": call("torch.storage", "_load_from_bytes", blob)}))
    refused(read_edm_pickle, path, "past 4 times the archive's size", megabytes=20)


def test_deflated_archives_are_still_read(tmp_path):
    """torch stores its members; a re-zipped (deflated) file of ordinary ratio reads the same."""
    source = STATE_DATA / "tiny_state_zip.pt"
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    path = write(tmp_path, zip_file(members, zipfile.ZIP_DEFLATED), "deflated.pth")
    expected = read_torch_state_dict(source)
    got = read_torch_state_dict(path)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


# ---------------------------------------------------------------------------------------------------------------
# L1: storage views and strided views must lie inside their storage.


@pytest.mark.parametrize("view", [("v", -3, 100), ("v", 2, 3), ("v", 0, -1), ("v", 1.5, 1)])
def test_storage_views_outside_the_storage_are_refused(tmp_path, view):
    blob = legacy(b"\x80\x02" + storage_id(numel=4, view=view) + b".", {"0": [0, 1, 2, 3]})
    path = write(tmp_path, top({"x": call("torch.storage", "_load_from_bytes", blob)}))
    refused(read_edm_pickle, path, "does not lie inside its storage of 4 elements")
    main = top({"w": tensor_v2(storage_id(numel=4, view=view), 0, (1,), (1,))})
    path = write(tmp_path, legacy(main, {"0": [0, 1, 2, 3]}), "view.pth")
    refused(read_torch_state_dict, path, "does not lie inside its storage of 4 elements")


def test_storage_views_inside_the_storage_are_read(tmp_path):
    blob = legacy(b"\x80\x02" + storage_id(numel=4, view=("v", 1, 3)) + b".", {"0": [0, 1, 2, 3]})
    tensor = tensor_v2(call("torch.storage", "_load_from_bytes", blob), 1, (2,), (1,))
    np.testing.assert_array_equal(read_edm_pickle(write(tmp_path, top({"x": tensor})))["x"], [2.0, 3.0])
    main = top({"w": tensor_v2(storage_id(numel=4, view=("v", 1, 3)), 0, (3,), (1,))})
    got = read_torch_state_dict(write(tmp_path, legacy(main, {"0": [0, 1, 2, 3]}), "view.pth"))
    np.testing.assert_array_equal(got["w"], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("offset, size, stride, match", [
    (-1, (1,), (1,), "invalid offset"),
    (0, (-1,), (1,), "size or stride"),
    (0, (2,), (-1,), "size or stride"),
    (0, (1,) * 65, (1,) * 65, "at most 64"),
    (0, (2**63,), (1,), "size or stride"),
    (0, (2, 2), (1,), "invalid offset"),
    (3, (2,), (1,), "overruns its storage of 4 elements"),
])
def test_strided_views_outside_the_storage_are_refused(tmp_path, offset, size, stride, match):
    main = top({"w": tensor_v2(storage_id(numel=4), offset, size, stride)})
    refused(read_torch_state_dict, write(tmp_path, legacy(main, {"0": [0, 1, 2, 3]}), "strided.pth"), match)


def test_a_lone_index_may_have_any_stride(tmp_path):
    """torch writes ``t[::1000]`` of a short tensor with size 1 and stride 1000: its stride selects nothing."""
    main = top({"w": tensor_v2(storage_id(numel=4), 2, (1, 2), (2**62, 1))})
    got = read_torch_state_dict(write(tmp_path, legacy(main, {"0": [0, 1, 2, 3]}), "lone.pth"))
    np.testing.assert_array_equal(got["w"], [[2.0, 3.0]])


# ---------------------------------------------------------------------------------------------------------------
# D6: zip members that zipfile cannot read (encrypted, unknown compression) are ValueErrors naming them.

CENTRAL_VERSION, CENTRAL_FLAGS, CENTRAL_METHOD = 6, 8, 10  # offsets in a central directory record


def _patch_central(data: bytes, name: str, field: int, value: int) -> bytes:
    """``data`` with a 2-byte field of ``name``'s central directory record set to ``value``."""
    start = data.index(b"PK\x01\x02")
    while data[start + 46:start + 46 + struct.unpack("<H", data[start + 28:start + 30])[0]] != name.encode():
        start = data.index(b"PK\x01\x02", start + 4)
    old = struct.unpack("<H", data[start + field:start + field + 2])[0]
    value = old | value if field == CENTRAL_FLAGS else value
    return data[:start + field] + struct.pack("<H", value) + data[start + field + 2:]


@pytest.mark.parametrize("field, value, match", [(CENTRAL_FLAGS, 0x1, "is encrypted"),
                                                 (CENTRAL_METHOD, 99, "compression method 99"),
                                                 (CENTRAL_METHOD, zipfile.ZIP_LZMA, "compression method 14")])
@pytest.mark.parametrize("member", ["tiny_state_zip/data.pkl", "tiny_state_zip/data/0"])
def test_unreadable_zip_members_are_value_errors(tmp_path, field, value, match, member):
    data = _patch_central((STATE_DATA / "tiny_state_zip.pt").read_bytes(), member, field, value)
    message = refused(read_torch_state_dict, write(tmp_path, data, "patched.pth"), match)
    assert member in message


def test_unsupported_zip_version_is_a_value_error(tmp_path):
    data = _patch_central((STATE_DATA / "tiny_state_zip.pt").read_bytes(), "tiny_state_zip/version",
                          CENTRAL_VERSION, 99)
    refused(read_torch_state_dict, write(tmp_path, data, "patched.pth"), "unreadable zip archive.*zip file version 9.9")


def test_unreadable_nested_zip_storage_is_a_value_error(tmp_path):
    blob = zip_file({"a/data.pkl": b"\x80\x02" + storage_id(numel=1) + b".", "a/data/0": bytes(4)})
    blob = _patch_central(blob, "a/data/0", CENTRAL_FLAGS, 0x1)
    path = write(tmp_path, top({"x": call("torch.storage", "_load_from_bytes", blob)}))
    assert "a/data/0" in refused(read_edm_pickle, path, "is encrypted")


# ---------------------------------------------------------------------------------------------------------------
# Each reader on the other's files says what the file is.


@pytest.mark.parametrize("reader", [read_torch_state_dict, load_inception])
def test_an_edm_snapshot_is_not_a_state_dict(reader):
    message = refused(reader, DATA / "edm_pickle_songunet_mini.pkl", "EDM snapshot pickle")
    assert "not a torch.save state dict" in message and "storage's serialization header" not in message


@pytest.mark.parametrize("name, kind", [("tiny_state_legacy.pt", "legacy"), ("tiny_state_zip.pt", "zip")])
def test_a_state_dict_is_not_an_edm_snapshot(name, kind):
    refused(read_edm_pickle, STATE_DATA / name, rf"a torch.save file \({kind} format\), not an EDM snapshot")


# ---------------------------------------------------------------------------------------------------------------
# Other costs: calls repeated on shared arguments, deep nesting, declared sizes, many missing storages.


@pytest.mark.parametrize("function, argument", [
    (("torch.storage", "_load_from_bytes"), zip_file({"a/data.pkl": b"\x80\x02" + storage_id(numel=2**13) + b".",
                                                       "a/data/0": bytes(2**15)})),
    (("builtins", "set"), list(range(2000))),
    (("_codecs", "encode"), "x" * 2**15),
])
def test_calls_on_a_shared_argument_are_budgeted(tmp_path, function, argument):
    """Each call is a few bytes (BINGET, TUPLE, REDUCE) but processes the whole shared argument again."""
    extra = ("latin1",) if function[1] == "encode" else ()
    one = glob(*function) + b"(" + get(0) + v(extra)[1:-1] + b"tR"
    path = write(tmp_path, top({"x": Op(b"(" + memoize(argument) + b"0" + one * 5000 + b"l")}))
    refused(read_edm_pickle, path, "units of work per byte")


def test_deep_nesting_is_a_value_error(tmp_path):
    nested = Op(b"]" * 10**4 + b"a" * (10**4 - 1))  # [[[...]]], 10000 deep
    refused(read_edm_pickle, write(tmp_path, top({"x": nested})), "nest deeper than 100 levels")
    metadata = Op(glob("collections", "OrderedDict") + b")R" + v({"_metadata": nested}) + b"b")
    refused(read_torch_state_dict, write(tmp_path, legacy(top(metadata)), "deep.pth"), "nest deeper than 100")


@pytest.mark.parametrize("opcode", [b"\x96" + struct.pack("<Q", 2**40) + b"x",  # BYTEARRAY8
                                    b"\x8e" + struct.pack("<Q", 2**40) + b"x",  # BINBYTES8
                                    b"\x8d" + struct.pack("<Q", 2**40) + b"x",  # BINUNICODE8
                                    b"\x8b" + struct.pack("<i", 2**30) + b"x"],  # LONG4
                         ids=["BYTEARRAY8", "BINBYTES8", "BINUNICODE8", "LONG4"])
def test_declared_sizes_are_not_allocated(tmp_path, opcode):
    refused(read_edm_pickle, write(tmp_path, b"\x80\x04" + opcode + b"."), "not a readable EDM snapshot")


def test_storages_without_bytes_are_summarized(tmp_path):
    main = b"\x80\x02(" + b"".join(storage_id(key=str(i), numel=1) for i in range(5000)) + b"l."
    blob = LEGACY_HEADER + main + pickle.dumps([], protocol=2)
    path = write(tmp_path, top({"x": call("torch.storage", "_load_from_bytes", blob)}))
    refused(read_edm_pickle, path, "5000 storage.* have no bytes")


@pytest.mark.parametrize("name", ["tiny_state_legacy.pt", "tiny_state_zip.pt", "edm_pickle_songunet_mini.pkl"])
def test_mutated_files_raise_only_value_errors(tmp_path, name):
    """Random byte changes and cuts of real files: read or refused with a ValueError, never an internal error."""
    data = bytearray(((STATE_DATA if name.endswith(".pt") else DATA) / name).read_bytes())
    reader = read_torch_state_dict if name.endswith(".pt") else read_edm_pickle
    rng = random.Random(name)
    for trial in range(20):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        if trial % 4 == 0:
            mutated = mutated[: rng.randrange(len(mutated))]
        path = write(tmp_path, bytes(mutated), f"mutated_{trial}{Path(name).suffix}")
        with bounded(seconds=5, megabytes=50), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                reader(path)
            except ValueError as error:
                assert path.name in str(error) and len(str(error)) < MAX_MESSAGE


# ---------------------------------------------------------------------------------------------------------------
# module_src: a source that is no NVlabs/edm release's warns once per read.


@pytest.mark.parametrize("name", EDM_FIXTURES)
def test_edm_release_sources_do_not_warn(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_edm_pickle(DATA / name)


def test_unknown_source_warns_once_per_read(tmp_path):
    data = (DATA / "edm_pickle_songunet_mini.pkl").read_bytes()
    header = b"# Copyright (c) 2022, NVIDIA CORPORATION"
    assert data.count(header) == 3  # networks.py, loss.py, augment.py
    path = write(tmp_path, data.replace(header, b"# Copyright (c) 2024, A FORK'S AUTHORS..", 1), "fork.pkl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snapshot = read_edm_pickle(path)
    assert len(caught) == 1 and caught[0].category is UserWarning
    message = str(caught[0].message)
    assert "fork.pkl" in message and "'EDMPrecond'" in message and "no NVlabs/edm release's" in message
    assert "EDMLoss" not in message  # loss.py's source is EDM's
    assert snapshot["ema"].class_name == "EDMPrecond"


def test_hand_written_sources_warn_once(tmp_path):
    path = write(tmp_path, top({"ema": persistent(state={"_modules": {"model": persistent("SongUNet",
                                                                                      module_src="other")}})}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_edm_pickle(path)
    assert len(caught) == 1 and "'EDMPrecond', 'SongUNet'" in str(caught[0].message)


def test_known_sources_are_sha256_digests():
    assert len(EDM_MODULE_SOURCES) == 4
    assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest in EDM_MODULE_SOURCES)
