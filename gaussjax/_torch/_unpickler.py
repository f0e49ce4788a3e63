"""One restricted unpickler: pickle's pure-Python loop, globals looked up in an :class:`AllowList`, every step that
hashes, calls or sets state checked first.

A read costs time and memory linear in the size of the serialization:

- dict keys and set elements must be str, bytes, None, bool, float or 64-bit int, checked before they are
  hashed (a tuple key, which the memo can make a DAG of ``2**depth`` leaves, is refused);
- calls take at most ``MAX_ARGS`` arguments and are charged the lengths of their arguments, at most
  ``WORK_PER_BYTE`` per byte of the serialization in all (so a memo-shared argument cannot be processed over
  and over);
- ``BUILD`` sets state only on :class:`Buildable` stand-ins, ``NEWOBJ`` builds only classes, without arguments;
- declared sizes (``BYTEARRAY8``, ``BINBYTES8``, ...) are read from the stream, never allocated up front.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

from gaussjax._errors import InputValueError
from gaussjax._torch._errors import Global, UnsafePickleError, describe, global_name

WORK_PER_BYTE = 2  # call-argument lengths charged per byte of a serialization
MAX_ARGS = 8  # arguments of one call (_rebuild_tensor_v3 takes 8)

_KEY_TYPES = (str, bytes, int, float, bool, type(None))
_SIZED = (str, bytes, bytearray, tuple, list, dict, set, frozenset)


class Allowed(NamedTuple):
    """One global a pickle may name: ``module.name`` is replaced by ``stand_in``; ``why`` says what it is read as."""

    module: str
    name: str
    stand_in: Any
    why: str


class StandIn(Global):
    """A named, callable stand-in for an allowed global function."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function: Callable):
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self) -> str:
        return f"<global {self.name}>"


def function(module: str, name: str, stand_in: Callable, why: str) -> Allowed:
    """The :class:`Allowed` entry of a global function, called as ``stand_in`` (wrapped in a :class:`StandIn`)."""
    return Allowed(module, name, StandIn(f"{module}.{name}", stand_in), why)


class Buildable:
    """Base of the stand-ins that ``BUILD`` may set state on: each defines a ``__setstate__`` that takes only what
    torch writes."""

    __slots__ = ()


class AllowList:
    """The globals one kind of pickle may name, each mapped to its stand-in.

    Args:
        title: what the pickle is (the heading of :meth:`table`).
        entries: the allowed globals, in the order :meth:`table` lists them.
        where: how a refusal names the pickle, after ``refusing global 'module.name'`` (``''`` for nothing).
        hints: module -> why its globals are refused here, said after the refusal; ``''`` for any other module.
    """

    def __init__(self, title: str, entries: tuple[Allowed, ...], *, where: str = "",
                 hints: Mapping[str, str] | None = None):
        self.title, self.entries, self.where, self.hints = title, entries, where, dict(hints or {})
        self._stand_ins = {(entry.module, entry.name): entry.stand_in for entry in entries}

    def find(self, module: str, name: str):
        """The stand-in of ``module.name``; :class:`UnsafePickleError` if it is not allowed."""
        stand_in = self._stand_ins.get((module, name))
        if stand_in is None:
            raise UnsafePickleError(self.refusal(f"global {global_name(module, name)}", module))
        return stand_in

    def refusal(self, what: str, module: str = "") -> str:
        """The message refusing ``what`` (met in this kind of pickle)."""
        hint = self.hints.get(module, self.hints.get(""))
        return f"refusing {what}" + (f" {self.where}" if self.where else "") + (f": {hint}" if hint else "")

    def table(self) -> str:
        """The entries as a Markdown table under the title, one row per run of entries read alike."""
        rows: list[tuple[str, dict[str, list[str]]]] = []  # (why, module -> names)
        for entry in self.entries:
            if not rows or rows[-1][0] != entry.why:
                rows.append((entry.why, {}))
            rows[-1][1].setdefault(entry.module, []).append(entry.name)
        lines = [f"**{self.title}**", "", "| global | read as |", "| --- | --- |"]
        for why, modules in rows:
            shown = (f"`{module}.{names[0]}`" if len(names) == 1 else f"`{module}.{{{', '.join(names)}}}`"
                     for module, names in modules.items())
            lines.append(f"| {', '.join(shown)} | {why} |")
        return "\n".join(lines) + "\n"


def check_key(key):
    """``key``, if it may be hashed in time linear in its own bytes (a dict key or set element); else refused."""
    if type(key) not in _KEY_TYPES or (type(key) is int and key.bit_length() > 64):
        raise UnsafePickleError(f"refusing dict key or set element {describe(key)}: only str, bytes, None, bool, "
                                "float and 64-bit int")
    return key


def _fill(target, items: list):
    """``target`` (a dict) with ``items`` ``[key, value, key, value, ...]`` set, each key checked before hashing."""
    if not isinstance(target, dict):
        raise UnsafePickleError(f"refusing to set items on {describe(target)}: only on dicts")
    if len(items) % 2:
        raise pickle.UnpicklingError("odd number of items to set in a dict")
    for index in range(0, len(items), 2):
        target[check_key(items[index])] = items[index + 1]
    return target


def _new(cls, args, kwargs):
    """``cls.__new__(cls)`` for NEWOBJ: torch writes no arguments for the classes allowed here."""
    if not isinstance(cls, type) or type(args) is not tuple or args or type(kwargs) is not dict or kwargs:
        raise UnsafePickleError(f"refusing NEWOBJ of {describe(cls)} with arguments {describe(args)}")
    return cls.__new__(cls)


class RestrictedUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler, every step that hashes, calls or sets state checked first.

    Args:
        stream: the pickle, at its start (other serializations may follow it).
        size: the length in bytes of the serialization the pickle belongs to; it sets the budget of work its
            calls may take.
        allowed: the globals the pickle may name.
        persistent_load: the stand-in of persistent ids (torch's storages); None refuses them.
    """

    dispatch: ClassVar[dict[int, Callable[[Any], Any]]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, stream: io.BytesIO, size: int, allowed: AllowList,
                 persistent_load: Callable[[Any], Any] | None = None):
        super().__init__(stream)
        self.allowed, self.persistent = allowed, persistent_load
        self.work_left = WORK_PER_BYTE * size

    def find_class(self, module, name):
        return self.allowed.find(module, name)

    def persistent_load(self, pid):
        if self.persistent is None:
            raise UnsafePickleError(self.allowed.refusal(f"persistent id {describe(pid)}"))
        return self.persistent(pid)

    def load(self):
        """pickle's load loop, reading the in-memory stream directly (frames are only a buffering hint)."""
        self.metastack, self.stack, self.proto = [], [], 0
        self.append = self.stack.append
        self.read, self.readline = self._file_read, self._file_readline
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                opcode = read(1)
                if not opcode:
                    raise EOFError
                dispatch[opcode[0]](self)
        except pickle._Stop as stop:
            return stop.value

    def load_frame(self):
        self.read(8)  # the frame's size: its bytes follow in the stream all the same

    dispatch[pickle.FRAME[0]] = load_frame

    def load_bytearray8(self):
        size = int.from_bytes(self.read(8), "little")
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        _fill(self.stack[-1], [key, value])

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        _fill(self.stack[-1], items)

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self):
        self.append(_fill({}, self.pop_mark()))

    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise UnsafePickleError(f"refusing to add items to {describe(target)}: only to sets")
        target.update(map(check_key, items))

    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self):
        self.append(frozenset(map(check_key, self.pop_mark())))

    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, Buildable):
            raise UnsafePickleError(f"refusing to set state on {describe(target)}")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build

    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        self.append(_new(self.stack.pop(), args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.append(_new(self.stack.pop(), args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass, args):  # OBJ and INST
        self.append(self._call(klass, tuple(args)))

    def _call(self, function, args):
        """``function(*args)``, charged the number and the lengths of its arguments."""
        if type(args) is not tuple or len(args) > MAX_ARGS:
            raise UnsafePickleError(f"refusing call arguments {describe(args)}: a tuple of at most {MAX_ARGS}")
        self.work_left -= len(args) + sum(len(arg) for arg in args if type(arg) in _SIZED)
        if self.work_left < 0:
            raise InputValueError(f"the pickle's calls take more than {WORK_PER_BYTE} units of work per byte "
                                  "(arguments shared through its memo and passed over and over)")
        return function(*args)
