"""Object graphs as plain data (what checkpoints hold): round trip, shared and cyclic references, refusals."""

from __future__ import annotations

import collections
import functools
import io
import os

import numpy as np
import pytest
import torch

from bsce_avalanche.runner.plain_state import PlainStateError, decode, encode, global_name


class Node:
    def __init__(self, value):
        self.value, self.next = value, None


ALLOWED = {global_name(obj): obj for obj in (Node, set, collections.OrderedDict, collections.Counter,
                                             collections.defaultdict, functools.partial, max)}


def round_trip(obj, allowed=ALLOWED, **kwargs):
    buffer = io.BytesIO()
    torch.save(encode(obj, allowed, **kwargs), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # plain data only


def test_round_trip_keeps_shared_and_cyclic_references():
    shared, tensor = [1, 2.5, "x"], torch.arange(3)
    a = Node(shared)
    a.next = a  # a cycle
    graph = {"a": a, "again": shared, "t": (tensor, tensor), "set": {3, 4}, (1, 2): None,
             "od": collections.OrderedDict(b=1, a=2), "counts": collections.Counter([1, 1, 2]),
             "dd": collections.defaultdict(set, {1: {2}}), "partial": functools.partial(max, 1),
             "array": np.arange(4, dtype=np.int64)}
    out = decode(round_trip(graph), ALLOWED)
    assert out["a"].next is out["a"] and out["a"].value is out["again"] == shared
    assert out["t"][0] is out["t"][1] and torch.equal(out["t"][0], tensor)
    assert out["set"] == {3, 4} and (1, 2) in out and list(out["od"]) == ["b", "a"]
    assert out["counts"] == collections.Counter([1, 1, 2]) and out["dd"][5] == set() and out["partial"](3) == 3
    assert out["array"].dtype == np.int64 and out["array"].tolist() == [0, 1, 2, 3]


def test_unlisted_classes_and_functions_are_refused_both_ways():
    with pytest.raises(PlainStateError, match=rf"{global_name(os.system)} is not among"):
        encode({"f": os.system}, ALLOWED)
    with pytest.raises(PlainStateError, match=r"Node is not among"):
        encode(Node(1), {})
    forged = {"root": ("@", 0), "table": [["object", "call", ("@", 1), ["true"], None, None, None],
                                          ["global", "posix.system"]]}
    with pytest.raises(PlainStateError, match="it holds posix.system, which is not loaded"):
        decode(forged, ALLOWED)
    with pytest.raises(PlainStateError, match="cannot build an object"):  # a listed function is not a class
        decode({"root": ("@", 0), "table": [["object", "call", ("@", 1), [], None, None, None],
                                            ["global", global_name(max)]]}, ALLOWED)


def test_references_are_saved_as_keys():
    data = torch.zeros(1000)
    encoded = round_trip({"memory": data}, refs=[data], fingerprint=lambda obj: tuple(obj.shape))
    assert encoded["table"][1] == ["ref", 0, (1000,)]
    assert decode(encoded, ALLOWED, refs=lambda key, fingerprint: ("rebuilt", key, fingerprint))["memory"] == (
        "rebuilt", 0, (1000,))
