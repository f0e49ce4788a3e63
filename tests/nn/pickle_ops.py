"""A tiny pickle assembler for the torch-reader tests: raw opcodes, so no torch, no EDM and nothing dangerous
is needed to write a file, and a test controls every byte (memo sharing, huge declared sizes, odd globals).
"""

from __future__ import annotations

import pickle
import struct


class Op(bytes):
    """Opcodes that push one value."""


def value(obj, hook=None) -> bytes:
    """Opcodes pushing `obj` (None, bool, int, float, str, bytes, tuple, list, dict or an `Op`); no memo writes.

    `hook(obj)`, when given, is asked first at every level: opcodes for the objects it knows (e.g.
    tensors), or None for the rest.
    """
    if hook is not None and (ops := hook(obj)) is not None:
        return ops
    if isinstance(obj, Op):
        return obj
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        data = obj.to_bytes(obj.bit_length() // 8 + 1, "little", signed=True)
        return b"\x8a" + bytes([len(data)]) + data  # LONG1
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, str):
        return b"X" + struct.pack("<I", len(obj.encode())) + obj.encode()
    if isinstance(obj, bytes):
        return b"B" + struct.pack("<I", len(obj)) + obj
    if isinstance(obj, tuple):
        return b"(" + b"".join(value(x, hook) for x in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(value(x, hook) for x in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(value(k, hook) + value(x, hook) for k, x in obj.items()) + b"u"
    raise TypeError(f"no opcodes for {type(obj).__name__}")


def glob(module: str, name: str) -> Op:
    """GLOBAL `module.name`."""
    return Op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")


def call(module: str, name: str, *args, hook=None) -> Op:
    """`module.name(*args)` (REDUCE)."""
    return Op(glob(module, name) + value(args, hook) + b"R")


def top(obj, hook=None) -> bytes:
    """A whole protocol-4 pickle of `obj`."""
    return b"\x80\x04" + value(obj, hook) + b"."


def persistent(class_name="EDMPrecond", state=None, module_src="", type_="class", hook=None) -> Op:
    """EDM's `torch_utils.persistence._reconstruct_persistent_obj(meta)` of one object."""
    meta = {"type": type_, "version": 6, "module_src": module_src, "class_name": class_name, "state": state or {}}
    return call("torch_utils.persistence", "_reconstruct_persistent_obj", meta, hook=hook)


MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy serialization magic number
LEGACY_HEADER = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, {"little_endian": True}))
