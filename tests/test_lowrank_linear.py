"""LowRankLinear only: hand-computed outputs, its dimensions, rank-mismatch messages, the GIL.
Everything every layer kind shares (the sweeps against the reference on every ISA, layouts,
dtypes, blocking, threads, properties, argument checks) is in test_conformance*.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import lrkernels
from lrk_testing import check_output_array, make_model

F32 = np.float32


def test_known_values(isa):
    """y = U (V x) + b on small integers, exact in float32; x as arrays and as lists."""
    U = [[1.0, 2.0], [3.0, 4.0], [0.0, -1.0]]
    V = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, -1.0]]
    layer = lrkernels.LowRankLinear(U, V, [0.5, -1.0, 2.0])
    y = layer(np.array([1.0, 2.0, 3.0, 4.0], F32))  # V x = (4, -2), U V x = (0, 4, 2)
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, (3,))
    np.testing.assert_array_equal(y, [0.5, 3.0, 4.0])
    y = layer([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.25]])  # V x = (2.5, -1.25)
    np.testing.assert_array_equal(y, [[0.5, 3.0, 4.0], [0.5, 1.5, 3.25]])
    ones = lrkernels.LowRankLinear(np.ones((3, 2)), np.ones((2, 4)), np.ones(3))
    np.testing.assert_array_equal(ones([0.5, -1.0, 2.0, 0.25]), np.full(3, 1.0 + 2 * 1.75, F32))


def test_dimensions(rng):
    layer = make_model(rng, "LowRankLinear", 7, 5, (3,)).layer
    assert (layer.in_features, layer.out_features, layer.rank) == (7, 5, 3)
    assert all(type(v) is int for v in (layer.in_features, layer.out_features, layer.rank))


@pytest.mark.parametrize(
    "U, V, texts",
    [
        ((3, 4), (5, 6), ["(3, 4)", "(5, 6)"]),
        ((3, 2), (3, 4), ["(3, 2)", "(3, 4)"]),
        ((3, 4), (2, 4), ["(3, 4)", "(2, 4)"]),  # U given as the dense weight
    ],
)
def test_rank_mismatch_names_both_shapes(U, V, texts):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.LowRankLinear(np.ones(U, F32), np.ones(V, F32))
    for text in texts:
        assert text in str(exc_info.value), str(exc_info.value)


def test_gil_released_during_compute():
    """While one thread computes a large call, another Python thread keeps running."""
    rng = np.random.default_rng(7)
    m = make_model(rng, "LowRankLinear", 1024, 1024, (256,))
    x = m.make_input(rng, 256)

    def time_one_call():
        m.layer(x)  # warm-up at this size (packing, scratch growth, page faults)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            m.layer(x)
            times.append(time.perf_counter() - t0)
        return min(times)

    one_call = time_one_call()
    if one_call < 0.05:  # make one call last >= ~50 ms, far above scheduler noise
        x = np.tile(x, (min(32, int(np.ceil(0.05 / max(one_call, 1e-4)))), 1))
        one_call = time_one_call()
    n_calls = max(4, min(100, int(0.6 / one_call)))
    gap_limit = 0.5 * one_call  # a gap this long means the main thread waited out a whole call
    done = threading.Event()

    def worker():
        try:
            for _ in range(n_calls):
                m.layer(x)
        finally:
            done.set()

    t = threading.Thread(target=worker)
    blocked = 0.0  # main-thread time lost in gaps longer than gap_limit
    t.start()
    start = last = time.perf_counter()
    while not done.is_set():
        now = time.perf_counter()
        if now - last > gap_limit:
            blocked += now - last
        last = now
    total = time.perf_counter() - start
    t.join()
    # With the GIL held during compute, the main thread would be blocked for ~all of `total`.
    assert blocked < 0.5 * total, (
        f"main thread was blocked {blocked:.3f} s of {total:.3f} s while another thread computed "
        f"({n_calls} calls of {one_call * 1e3:.1f} ms, batch {x.shape[0]}): "
        "is the GIL held during the computation?"
    )
