"""Fixtures shared by the lrkernels tests.

Global state is touched only by the fixtures that are asked for: `isa` (set_isa, restored
afterwards) and `blocking` (the driver's cache-block override, reset afterwards).
"""

from __future__ import annotations

import zlib
from collections import namedtuple

import lrkernels
import numpy as np
import pytest
from lrkernels import _core

Tile = namedtuple("Tile", "mr nr kc")


@pytest.fixture(params=lrkernels.available_isas(), ids=str)
def isa(request):
    """Each available ISA in turn, made active for the test; the previous ISA is restored."""
    previous = lrkernels.get_isa()
    lrkernels.set_isa(request.param)
    try:
        yield request.param
    finally:
        lrkernels.set_isa(previous)


@pytest.fixture
def tile(isa):
    """(mr, nr, kc) of the active ISA's micro-kernel."""
    return Tile(*_core.kernel_tile(isa))


@pytest.fixture
def blocking():
    """A setter for the driver's cache blocks (`_core._set_blocking`); defaults restored after."""
    _core._set_blocking()
    try:
        yield _core._set_blocking
    finally:
        _core._set_blocking()


@pytest.fixture
def rng(request):
    """A numpy Generator with a fixed seed per test (derived from the test id: reproducible)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _one_thread_for_scratch_counts(request):
    """Scratch-growth tests count buffer growths: run them on one thread. With the pool, each
    worker grows its own per-thread buffer once, on the first task of a size it takes, and which
    thread takes which task varies (tests/test_threads.py bounds that growth instead)."""
    if "scratch" not in request.node.name:
        yield
        return
    before = lrkernels.get_num_threads()
    lrkernels.set_num_threads(1)
    try:
        yield
    finally:
        lrkernels.set_num_threads(before)
