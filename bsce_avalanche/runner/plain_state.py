"""Object graphs as plain data, for files that load with ``torch.load(weights_only=True)``.

:func:`encode` turns the state a checkpoint keeps (replay buffers and their datasets, old models,
plugin attributes) into a table of lists, tuples and dicts of tensors, numbers and strings; shared
and cyclic references survive as ``("@", n)`` (node ``n`` of the table). Objects are taken apart as
pickle does (``__reduce_ex__``), but :func:`decode` rebuilds only instances of the classes in
``allowed`` (and refers only to the functions in it), given as objects, never imported by name:
a forged table can build data structures of those classes, and run nothing else.
Objects of ``refs`` (the benchmark's data) are saved as their index in that list.
"""

from __future__ import annotations

import copyreg
import types
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

__all__ = ["encode", "decode", "check_plain", "global_name", "PlainStateError"]

#: What ``torch.save`` writes and a ``weights_only`` load reads back as it is.
_PLAIN = (type(None), bool, int, float, str, bytes, torch.dtype, torch.device, torch.Size,
          torch.Tensor, torch.nn.Parameter)


class PlainStateError(ValueError):
    """An object that cannot be encoded, or a table that does not decode."""


def global_name(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def check_plain(value, where: str) -> None:
    """Raise :class:`PlainStateError` unless ``value`` is lists, tuples and dicts of what ``torch.save`` writes
    plainly (a ``str`` subclass, e.g. ``torch.__version__``, is not)."""
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif type(value) is dict:
        for k, item in value.items():
            check_plain(k, f"a key of {where}")
            check_plain(item, f"{where}[{k!r}]")
    elif type(value) not in _PLAIN:
        raise PlainStateError(f"{where} is a {type(value).__qualname__}")


def _is_global(obj) -> bool:
    """Saved by name, as pickle does: classes and functions."""
    return isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType))


def encode(root, allowed: Mapping[str, object], refs: Iterable = (), fingerprint: Callable = repr) -> dict:
    """``root`` as ``{"root": value, "table": [node, ...]}``; raises :class:`PlainStateError` for a class or
    function not in ``allowed`` (name -> object), or an object that pickles other than by its class."""
    table: list = []
    memo: dict[int, int] = {}
    keep: list = []  # the encoded objects, alive until the end: their ids stay theirs
    ref_keys = {id(obj): key for key, obj in enumerate(refs)}

    def value(obj):
        if id(obj) not in ref_keys and type(obj) in _PLAIN:
            return obj
        n = memo.get(id(obj))
        if n is None:
            n = memo[id(obj)] = len(table)
            table.append(None)
            keep.append(obj)
            table[n] = node(obj)
        return ("@", n)

    def node(obj) -> list:
        if id(obj) in ref_keys:
            return ["ref", ref_keys[id(obj)], fingerprint(obj)]
        if type(obj) in (list, tuple):
            return [type(obj).__name__, [value(x) for x in obj]]
        if type(obj) is dict:
            return ["dict", [value(k) for k in obj], [value(v) for v in obj.values()]]
        if type(obj) is np.ndarray and obj.dtype.kind in "biuf":  # e.g. Avalanche's eager index lists
            return ["ndarray", torch.from_numpy(np.ascontiguousarray(obj))]
        if _is_global(obj):
            name = global_name(obj)
            if allowed.get(name) is not obj:
                raise PlainStateError(f"{name} is not among the classes and functions saved")
            return ["global", name]
        reduced = obj.__reduce_ex__(4)
        if isinstance(reduced, str):
            raise PlainStateError(f"{type(obj).__name__} object {obj!r} pickles by name")
        func, args, state, items, dict_items = (*reduced, None, None, None)[:5]
        if func is copyreg.__newobj__:
            how, func, args = "new", args[0], args[1:]
        elif isinstance(func, type):
            how = "call"
        else:
            raise PlainStateError(f"{type(obj).__name__} pickles through {getattr(func, '__qualname__', func)!r}")
        return ["object", how, value(func), [value(a) for a in args], value(state),
                None if items is None else [value(x) for x in items],
                None if dict_items is None else [[value(k), value(v)] for k, v in dict_items]]

    return {"root": value(root), "table": table}


def decode(data: dict, allowed: Mapping[str, object], refs: Callable = None):
    """The object graph :func:`encode` wrote. ``refs(key, fingerprint)`` resolves the references to the
    benchmark. Raises :class:`PlainStateError` for a name not in ``allowed`` or a malformed table."""
    table, done = data["table"], {}

    def value(v):
        if type(v) is tuple:
            if len(v) != 2 or v[0] != "@" or not 0 <= v[1] < len(table):
                raise PlainStateError(f"malformed reference {v!r}")
            if v[1] not in done:
                build(v[1])
            return done[v[1]]
        if type(v) not in _PLAIN:
            raise PlainStateError(f"unexpected {type(v).__name__} value")
        return v

    def build(n: int) -> None:
        kind, *args = table[n]
        if kind == "list":
            done[n] = obj = []
            obj.extend(value(x) for x in args[0])
        elif kind == "tuple":
            done[n] = tuple(value(x) for x in args[0])
        elif kind == "dict":
            done[n] = obj = {}
            obj.update((value(k), value(v)) for k, v in zip(*args, strict=True))
        elif kind == "ndarray":
            if type(args[0]) is not torch.Tensor:
                raise PlainStateError("malformed array")
            done[n] = args[0].numpy()
        elif kind == "global":
            if args[0] not in allowed:
                raise PlainStateError(f"it holds {args[0]}, which is not loaded")
            done[n] = allowed[args[0]]
        elif kind == "ref":
            if refs is None:
                raise PlainStateError("it refers to a benchmark's data, but none was given")
            done[n] = refs(*args)
        elif kind == "object":
            how, cls, cls_args, state, items, dict_items = args
            cls = value(cls)
            if not isinstance(cls, type) or how not in ("new", "call"):
                raise PlainStateError(f"cannot build an object with {cls!r}")
            cls_args = [value(a) for a in cls_args]
            done[n] = obj = cls.__new__(cls, *cls_args) if how == "new" else cls(*cls_args)
            if state is not None:
                _set_state(obj, value(state))
            for x in items or ():
                obj.append(value(x))
            for k, v in dict_items or ():
                obj[value(k)] = value(v)
        else:
            raise PlainStateError(f"unknown node kind {kind!r}")

    return value(data["root"])


def _set_state(obj, state) -> None:
    """What pickle's BUILD does (looked up on the class: a half-built object's ``__getattr__`` may recurse)."""
    setstate = getattr(type(obj), "__setstate__", None)
    if setstate is not None:
        setstate(obj, state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        obj.__dict__.update(state)
    for k, v in (slots or {}).items():
        setattr(obj, k, v)
