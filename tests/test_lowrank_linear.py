"""LowRankLinear: correctness on every available ISA against the float64 reference."""

from __future__ import annotations

import gc
import threading
import time

import lrkernels
import numpy as np
import pytest
from lrk_testing import (
    DIMS,
    RANKS,
    Cases,
    assert_within_bound,
    batches_for,
    blocking_configs,
    check_output_array,
    input_layouts,
    input_layouts_1d,
    lowrank_bound,
    make_input,
    make_lowrank,
)
from lrkernels import _core, reference

# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def test_shapes_around_tile_edges(isa, tile, rng):
    """Every (in_features, out_features) pair of DIMS; ranks and batches cycle through lists."""
    batches = [None] + batches_for(tile.mr)  # None: 1-D input
    cases = Cases()
    n = 0
    for i, in_f in enumerate(DIMS):
        for j, out_f in enumerate(DIMS):
            rank = RANKS[(i + 2 * j) % len(RANKS)]
            batch = batches[(3 * i + j) % len(batches)]
            bias = (i + j) % 2 == 0
            n += 1
            with cases.case(f"in={in_f} out={out_f} rank={rank} batch={batch} bias={bias}"):
                m = make_lowrank(rng, in_f, out_f, rank, bias)
                m.check(make_input(rng, batch, in_f), isa)
    cases.check()
    assert n == len(DIMS) ** 2


def test_ranks(isa, tile, rng):
    """Ranks 1..256 against a few in/out shapes and batches around mr."""
    mr = tile.mr
    shapes = [(1, 1), (17, 33), (64, 5), (33, 65)]
    batches = [None, 1, mr - 1, mr, mr + 1, 2 * mr + 1, 37]
    cases = Cases()
    for rank in RANKS:
        for k, (in_f, out_f) in enumerate(shapes):
            bias = (rank + k) % 2 == 0
            with cases.case(f"in={in_f} out={out_f} rank={rank} bias={bias}"):
                m = make_lowrank(rng, in_f, out_f, rank, bias)
                for batch in batches:
                    m.check(make_input(rng, batch, in_f), isa, f"batch={batch}")
    cases.check()


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_batches(isa, tile, rng, bias):
    """Batch 0, 1, 2, 3, odd sizes, mr-1 .. 2*mr+1, 100 and 300 on shapes at the tile edges."""
    nr = tile.nr
    shapes = [(7, 3, 5), (33, nr + 1, 17), (65, 2 * nr - 1, 64), (16, nr, nr)]
    cases = Cases()
    for in_f, out_f, rank in shapes:
        m = make_lowrank(rng, in_f, out_f, rank, bias)
        for batch in batches_for(tile.mr):
            with cases.case(f"in={in_f} out={out_f} rank={rank} batch={batch} bias={bias}"):
                m.check(make_input(rng, batch, in_f), isa)
    cases.check()


def test_one_d_input(isa, rng):
    m = make_lowrank(rng, 9, 17, 4)
    x = make_input(rng, None, 9)
    y = m.check(x, isa)
    assert y.shape == (17,)
    # A 1-D input and the same row as a batch of one agree to float32 rounding.
    y2 = m.layer(x[None, :])
    assert y2.shape == (1, 17)
    assert_within_bound(y2[0], m.reference(x), 2 * m.bound(x), "1-D vs (1, in)")


def test_batch_zero(isa, rng):
    m = make_lowrank(rng, 5, 7, 3)
    y = m.layer(np.empty((0, 5), dtype=np.float32))
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, (0, 7), "batch 0")
    # any dtype of empty input
    y = m.layer(np.empty((0, 5), dtype=np.float64))
    check_output_array(y, (0, 7), "batch 0 float64")


# --------------------------------------------------------------------------------------------
# Input layouts and dtypes
# --------------------------------------------------------------------------------------------


def test_input_layouts(isa, tile, rng):
    mr = tile.mr
    cases = Cases()
    for in_f, out_f, rank in [(1, 3, 2), (13, 2 * tile.nr + 3, 9), (64, 17, 33)]:
        m = make_lowrank(rng, in_f, out_f, rank, bias=in_f != 13)
        for batch in [1, 2, mr, 2 * mr + 1, 37]:
            for name, x in input_layouts(rng, batch, in_f):
                with cases.case(f"{name} batch={batch}"):
                    x_before = np.array(x, copy=True)
                    m.check(x, isa)
                    np.testing.assert_array_equal(np.asarray(x), x_before, "input was modified")
        for name, x in input_layouts_1d(rng, in_f):
            with cases.case(name):
                m.check(x, isa)
    cases.check()


def test_float32_row_stride_used_in_place_gives_same_result(isa, rng):
    """A float32 slice of a wider array (used in place, row stride) equals its contiguous copy."""
    m = make_lowrank(rng, 20, 40, 12)
    wide = make_input(rng, 51, 35)
    x = wide[:, 4:24]
    assert not x.flags.c_contiguous
    y = m.check(x, isa)
    np.testing.assert_array_equal(y, m.layer(np.ascontiguousarray(x)))
    xr = wide[::3, 10:30]
    np.testing.assert_array_equal(m.check(xr, isa), m.layer(np.ascontiguousarray(xr)))


def test_weight_dtypes_and_layouts(isa, rng):
    """Weights of any real float dtype and layout are converted to float32 at construction."""
    out_f, rank, in_f = 19, 6, 11
    U64 = rng.standard_normal((out_f, rank))
    V64 = rng.standard_normal((rank, in_f))
    b64 = rng.standard_normal(out_f)
    variants = {
        "float64": (U64, V64, b64),
        "float16": (U64.astype(np.float16), V64.astype(np.float16), b64.astype(np.float16)),
        "Fortran": (np.asfortranarray(U64), np.asfortranarray(V64.astype(np.float32)), b64),
        "strided views": (
            np.repeat(U64, 2, axis=1)[:, ::2],
            np.repeat(V64, 3, axis=0)[::3],
            np.repeat(b64, 2)[::2],
        ),
        "negative strides": (
            U64[::-1, ::-1].copy()[::-1, ::-1],
            V64[::-1].copy()[::-1],
            b64[::-1].copy()[::-1],
        ),
        "lists": (U64.tolist(), V64.tolist(), b64.tolist()),
        "big-endian": (U64.astype(">f4"), V64.astype(">f8"), b64.astype(">f4")),
    }
    x = make_input(rng, 9, in_f)
    cases = Cases()
    for name, (U, V, b) in variants.items():
        with cases.case(name):
            layer = lrkernels.LowRankLinear(U, V, b)
            np.testing.assert_array_equal(layer.U, np.asarray(U).astype(np.float32))
            np.testing.assert_array_equal(layer.V, np.asarray(V).astype(np.float32))
            np.testing.assert_array_equal(layer.bias, np.asarray(b).astype(np.float32))
            y = layer(x)
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, (9, out_f), name)
            assert_within_bound(
                y, reference.lowrank_linear(x, U, V, b), lowrank_bound(x, U, V, b), name
            )
    cases.check()


def test_keyword_arguments(isa, rng):
    U = rng.standard_normal((4, 2)).astype(np.float32)
    V = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x = make_input(rng, 5, 3)
    layer = lrkernels.LowRankLinear(U=U, V=V, bias=b)
    y = layer(x=x)
    assert lrkernels.last_used_isa() == isa
    assert_within_bound(y, reference.lowrank_linear(x, U, V, b), lowrank_bound(x, U, V, b))


def test_no_bias_means_zero_bias(isa, rng):
    """Without a bias the output is exactly U (V x): zero input gives exactly zero output."""
    cases = Cases()
    for out_f in [1, 3, 8, 17, 40, 65]:
        with cases.case(f"out={out_f}"):
            layer = lrkernels.LowRankLinear(
                np.ones((out_f, 2), np.float32), np.ones((2, 4), np.float32)
            )
            assert layer.bias is None
            for x in (np.zeros(4, np.float32), np.zeros((7, 4), np.float32)):
                y = layer(x)
                assert lrkernels.last_used_isa() == isa
                np.testing.assert_array_equal(
                    y, np.zeros_like(y), f"zero input, no bias, out={out_f}"
                )
    cases.check()


def test_special_values(isa, rng):
    """NaN and inf are not errors: they propagate to their rows, the other rows stay correct."""
    m = make_lowrank(rng, 10, 21, 5)
    x = make_input(rng, 12, 10)
    x[3, 4] = np.nan
    x[7, 0] = np.inf
    y = m.layer(x)
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, (12, 21))
    assert np.isnan(y[3]).all(), y[3]
    assert not np.isfinite(y[7]).any(), y[7]  # inf * mixed-sign weights: inf and NaN
    good = [i for i in range(12) if i not in (3, 7)]
    assert_within_bound(y[good], m.reference(x[good]), m.bound(x[good]), "finite rows")
    y1 = m.layer(np.full(10, np.nan, np.float32))
    assert np.isnan(y1).all()


def test_extreme_scales(isa, rng):
    """Inputs far from 1 in magnitude (no overflow in float32 at these scales)."""
    m = make_lowrank(rng, 33, 17, 9)
    cases = Cases()
    for scale in [1e-30, 1e-10, 1e10, 1e25]:
        with cases.case(f"scale={scale}"):
            m.check(make_input(rng, 11, 33, np.float64) * scale, isa)
    cases.check()


def test_deterministic(isa, rng):
    m = make_lowrank(rng, 37, 29, 13)
    x = make_input(rng, 23, 37)
    y1 = m.layer(x)
    y2 = m.layer(x)
    assert lrkernels.last_used_isa() == isa
    np.testing.assert_array_equal(y1, y2)


# --------------------------------------------------------------------------------------------
# Blocked paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", range(len(blocking_configs(1, 1))), ids=[c[0] for c in blocking_configs(1, 1)]
)
def test_blocked_paths(isa, tile, blocking, rng, config):
    """Small cache blocks: K, rank, out and batch cross several blocks, none a block multiple."""
    mr, nr = tile.mr, tile.nr
    name, kwargs = blocking_configs(mr, nr)[config]
    blocking(**kwargs)
    shapes = [  # (in, rank, out)
        (23, 2 * nr + 5, 5 * nr + 3),
        (64, 3 * nr + 1, 2 * nr + 1),
        (9, 7, nr - 1),
        (1, 1, 1),
        (17, nr, 3 * nr),
    ]
    batches = [None, 1, mr, mr + 1, 2 * mr, 4 * mr + 3, 7 * mr + 1, 61]
    cases = Cases()
    for k, (in_f, rank, out_f) in enumerate(shapes):
        m = make_lowrank(rng, in_f, out_f, rank, bias=k % 2 == 0)
        for batch in batches:
            with cases.case(
                f"blocking {name} {kwargs} in={in_f} rank={rank} out={out_f} batch={batch}"
            ):
                m.check(make_input(rng, batch, in_f), isa)
        with cases.case(f"blocking {name} row-strided input in={in_f}"):
            wide = make_input(rng, 4 * mr + 3, in_f + 9)
            m.check(wide[:, 2 : 2 + in_f], isa)
    cases.check()


def test_default_blocking_large(isa, rng):
    """Shapes larger than the default blocks: K > kc, out > nc, batch > mb and mc."""
    m = make_lowrank(rng, 1000, 600, 300)
    m.check(make_input(rng, 300, 1000), isa)
    m.check(make_input(rng, 3, 1000), isa)


# --------------------------------------------------------------------------------------------
# Results, properties
# --------------------------------------------------------------------------------------------


def test_result_is_new_array(isa, rng):
    m = make_lowrank(rng, 8, 6, 3)
    x = make_input(rng, 5, 8)
    y1 = m.layer(x)
    y2 = m.layer(x)
    assert lrkernels.last_used_isa() == isa
    assert y1 is not y2
    assert not np.shares_memory(y1, y2)
    assert not np.shares_memory(y1, x)
    np.testing.assert_array_equal(y1, y2)
    y1[...] = 1234.0
    y3 = m.layer(x)
    np.testing.assert_array_equal(y3, y2)
    # 1-D
    v1, v2 = m.layer(x[0]), m.layer(x[0])
    assert not np.shares_memory(v1, v2)
    check_output_array(v1, (6,))


def test_properties(rng):
    U = rng.standard_normal((5, 3))
    V = rng.standard_normal((3, 7))
    b = rng.standard_normal(5)
    layer = lrkernels.LowRankLinear(U, V, b)
    assert (layer.in_features, layer.out_features, layer.rank) == (7, 5, 3)
    for name, src in [("U", U), ("V", V), ("bias", b)]:
        a = getattr(layer, name)
        assert isinstance(a, np.ndarray)
        assert a.dtype == np.float32, name
        assert a.shape == src.shape, name
        np.testing.assert_array_equal(a, src.astype(np.float32), name)
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a[0] = 1.0
        with pytest.raises(ValueError):
            a[...] = 0.0
        with pytest.raises(ValueError):
            a.setflags(write=True)
        with pytest.raises(AttributeError):
            setattr(layer, name, src)
    for name in ("in_features", "out_features", "rank"):
        with pytest.raises(AttributeError):
            setattr(layer, name, 1)
    np.testing.assert_array_equal(layer.U, U.astype(np.float32))  # unchanged by the attempts


def test_properties_without_bias(rng):
    U = rng.standard_normal((4, 2)).astype(np.float32)
    V = rng.standard_normal((2, 6)).astype(np.float32)
    layer = lrkernels.LowRankLinear(U, V)
    assert layer.bias is None
    assert lrkernels.LowRankLinear(U, V, None).bias is None
    np.testing.assert_array_equal(layer.U, U)
    np.testing.assert_array_equal(layer.V, V)


def test_weights_are_copied(isa, rng):
    """Changing the constructor's arrays afterwards changes neither properties nor results."""
    U = rng.standard_normal((6, 3)).astype(np.float32)
    V = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    U0, V0, b0 = U.copy(), V.copy(), b.copy()
    layer = lrkernels.LowRankLinear(U, V, b)
    x = make_input(rng, 4, 5)
    y0 = layer(x)
    U[...] = 0.0
    V[...] = 7.0
    b[...] = -1.0
    np.testing.assert_array_equal(layer.U, U0)
    np.testing.assert_array_equal(layer.V, V0)
    np.testing.assert_array_equal(layer.bias, b0)
    np.testing.assert_array_equal(layer(x), y0)
    assert not np.shares_memory(layer.U, U)


def test_property_views_keep_layer_alive(rng):
    U = rng.standard_normal((6, 3)).astype(np.float32)
    V = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    layer = lrkernels.LowRankLinear(U, V, b)
    u, v, bias = layer.U, layer.V, layer.bias
    del layer
    gc.collect()
    for _ in range(3):  # churn the allocator
        lrkernels.LowRankLinear(np.ones((6, 3)), np.ones((3, 5)), np.ones(6))
    np.testing.assert_array_equal(u, U)
    np.testing.assert_array_equal(v, V)
    np.testing.assert_array_equal(bias, b)


def test_repr(rng):
    layer = lrkernels.LowRankLinear(np.ones((5, 3)), np.ones((3, 7)), np.ones(5))
    r = repr(layer)
    assert isinstance(r, str) and r.startswith("LowRankLinear")
    for value in ("7", "5", "3"):
        assert value in r, r
    r2 = repr(lrkernels.LowRankLinear(np.ones((5, 3)), np.ones((3, 7))))
    assert r2.startswith("LowRankLinear") and r2 != r, (r, r2)


def test_isa_switch_after_construction(rng):
    """A layer built under one ISA runs correctly under every other (repacked on first use)."""
    previous = lrkernels.get_isa()
    cases = Cases()
    try:
        for built in lrkernels.available_isas():
            lrkernels.set_isa(built)
            m = make_lowrank(rng, 19, 2 * 32 + 3, 11)
            for run in lrkernels.available_isas() + [built]:
                lrkernels.set_isa(run)
                for batch in (None, 1, 9, 40):
                    with cases.case(f"built={built} run={run} batch={batch}"):
                        m.check(make_input(rng, batch, 19), run)
    finally:
        lrkernels.set_isa(previous)
    cases.check()


# --------------------------------------------------------------------------------------------
# Allocation, threads
# --------------------------------------------------------------------------------------------


def _run_in_thread(fn):
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "worker thread hung"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_no_per_call_allocation(isa, tile, rng):
    """After a warm-up call, repeated calls (same or smaller batch) never grow the scratch."""
    m = make_lowrank(rng, 33, 17, 64)
    x = make_input(rng, 100, 33)

    def body():
        # A fresh thread has an empty scratch buffer: the first call grows it (the counter works).
        c0 = _core._scratch_allocations()
        m.layer(x)
        c1 = _core._scratch_allocations()
        for _ in range(50):
            m.layer(x)
        c2 = _core._scratch_allocations()
        for batch in (1, 2, tile.mr, tile.mr + 1, 2 * tile.mr + 1, 99, 100):
            m.layer(x[:batch])
        m.layer(x[0])
        c3 = _core._scratch_allocations()
        return c0, c1, c2, c3

    c0, c1, c2, c3 = _run_in_thread(body)
    assert c1 > c0, "first call in a new thread did not count a scratch allocation"
    assert c2 == c1, f"50 repeated calls grew the scratch buffer {c2 - c1} times"
    assert c3 == c2, f"smaller batches after the warm-up grew the scratch buffer {c3 - c2} times"

    # The same in the main thread.
    m.layer(x)
    before = _core._scratch_allocations()
    for _ in range(50):
        m.layer(x)
    assert _core._scratch_allocations() == before


def _concurrent(layer_calls, n_threads=4):
    """Run layer_calls[i]() in n_threads threads started together; return the collected errors."""
    barrier = threading.Barrier(n_threads)
    errors = []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            layer_calls[i]()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    return errors


def test_threads_share_one_layer(isa, rng):
    """4 threads call the same layer concurrently on different inputs: every result is right."""
    m = make_lowrank(rng, 65, 33, 48)
    inputs = [make_input(rng, b, 65) for b in (None, 7, 33, 130)]
    refs = [(m.reference(x), m.bound(x)) for x in inputs]

    def calls(i):
        def run():
            for it in range(40):
                y = m.layer(inputs[i])
                assert lrkernels.last_used_isa() == isa
                assert_within_bound(y, *refs[i], f"thread {i} iteration {it}")

        return run

    errors = _concurrent([calls(i) for i in range(4)])
    assert not errors, "\n".join(errors)


def test_threads_first_use_packing(isa, rng):
    """Layers built under another ISA get packed for this one on first use, by 4 threads at once."""
    others = [i for i in lrkernels.available_isas() if i != isa]
    if not others:
        pytest.skip("only one ISA available")
    models = []
    lrkernels.set_isa(others[0])
    try:
        for _ in range(8):
            models.append(make_lowrank(rng, 40, 70, 20))
    finally:
        lrkernels.set_isa(isa)
    inputs = [make_input(rng, b, 40) for b in (1, 5, 17, 64)]
    all_errors = []
    for m in models:

        def calls(i, m=m):
            def run():
                y = m.layer(inputs[i])
                assert lrkernels.last_used_isa() == isa
                assert_within_bound(y, m.reference(inputs[i]), m.bound(inputs[i]), f"thread {i}")

            return run

        all_errors += _concurrent([calls(i) for i in range(4)])
    assert not all_errors, "\n".join(all_errors)


def test_last_used_isa_is_per_thread(isa, rng):
    m = make_lowrank(rng, 4, 3, 2)
    m.layer(np.ones(4))
    assert lrkernels.last_used_isa() == isa

    def fresh():
        before = lrkernels.last_used_isa()
        m.layer(np.ones(4))
        return before, lrkernels.last_used_isa()

    before, after = _run_in_thread(fresh)
    assert before is None, "a new thread that made no call must report None"
    assert after == isa


def test_gil_released_during_compute():
    """While one thread computes a large call, another Python thread keeps running."""
    rng = np.random.default_rng(7)
    m = make_lowrank(rng, 1024, 1024, 256)
    x = make_input(rng, 256, 1024)

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
