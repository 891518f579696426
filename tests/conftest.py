"""Fixtures shared by the lrkernels tests.

Global state is touched only by the fixtures that are asked for: `isa` (set_isa, restored
afterwards) and `blocking` (the driver's cache-block override, reset afterwards).
"""

from __future__ import annotations

import zlib
from collections import namedtuple

import numpy as np
import pytest

import lrkernels
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


# --------------------------------------------------------------------------------------------
# Hypothesis profiles (tests/test_properties.py): HYPOTHESIS_PROFILE=ci (the default) or thorough
# --------------------------------------------------------------------------------------------

try:
    import os as _os

    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the `test` extra; without it test_properties.py skips
    pass
else:
    # ci: reproducible (derandomize: the same examples on every run, no example database), fast.
    settings.register_profile(
        "ci",
        max_examples=50,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # thorough: a long random search for local runs (failures are saved in .hypothesis/).
    settings.register_profile(
        "thorough",
        max_examples=2000,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    settings.load_profile(_os.environ.get("HYPOTHESIS_PROFILE", "ci"))

    # On a failure hypothesis's pytest plugin imports its patch writer (libcst when installed),
    # whose import can warn (mypy_extensions DeprecationWarning); under filterwarnings=error that
    # turns a test failure into an INTERNALERROR. Import it once here, warnings ignored.
    import warnings as _warnings

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        try:
            import hypothesis.extra._patching  # noqa: F401
        except Exception:  # noqa: BLE001 - optional; the plugin copes without it
            pass
