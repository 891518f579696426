"""Linear (the dense baseline): correctness on every available ISA against the float64 reference."""

from __future__ import annotations

import gc
import threading

import lrkernels
import numpy as np
import pytest
from lrk_testing import (
    DIMS,
    Cases,
    assert_within_bound,
    batches_for,
    blocking_configs,
    check_output_array,
    input_layouts,
    input_layouts_1d,
    linear_bound,
    make_input,
    make_linear,
)
from lrkernels import _core, reference


def test_shapes_around_tile_edges(isa, tile, rng):
    batches = [None] + batches_for(tile.mr)
    cases = Cases()
    for i, in_f in enumerate(DIMS):
        for j, out_f in enumerate(DIMS):
            batch = batches[(3 * i + j) % len(batches)]
            bias = (i + j) % 2 == 0
            with cases.case(f"in={in_f} out={out_f} batch={batch} bias={bias}"):
                m = make_linear(rng, in_f, out_f, bias)
                m.check(make_input(rng, batch, in_f), isa)
    cases.check()


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_batches(isa, tile, rng, bias):
    nr = tile.nr
    cases = Cases()
    for in_f, out_f in [(7, 3), (33, nr + 1), (65, 2 * nr - 1), (16, nr), (256, 3 * nr + 5)]:
        m = make_linear(rng, in_f, out_f, bias)
        for batch in [None] + batches_for(tile.mr):
            with cases.case(f"in={in_f} out={out_f} batch={batch} bias={bias}"):
                m.check(make_input(rng, batch, in_f), isa)
    cases.check()


def test_batch_zero(isa, rng):
    m = make_linear(rng, 5, 7)
    y = m.layer(np.empty((0, 5), dtype=np.float32))
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, (0, 7), "batch 0")


def test_input_layouts(isa, tile, rng):
    mr = tile.mr
    cases = Cases()
    for in_f, out_f in [(1, 3), (13, 2 * tile.nr + 3), (64, 17)]:
        m = make_linear(rng, in_f, out_f, bias=in_f != 13)
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
    m = make_linear(rng, 20, 40)
    wide = make_input(rng, 51, 35)
    x = wide[:, 4:24]
    np.testing.assert_array_equal(m.check(x, isa), m.layer(np.ascontiguousarray(x)))
    xr = wide[::3, 10:30]
    np.testing.assert_array_equal(m.check(xr, isa), m.layer(np.ascontiguousarray(xr)))


def test_weight_dtypes_and_layouts(isa, rng):
    W64 = rng.standard_normal((19, 11))
    b64 = rng.standard_normal(19)
    variants = {
        "float64": (W64, b64),
        "float16": (W64.astype(np.float16), b64.astype(np.float16)),
        "Fortran": (np.asfortranarray(W64.astype(np.float32)), b64),
        "strided views": (np.repeat(W64, 2, axis=1)[:, ::2], np.repeat(b64, 3)[::3]),
        "lists": (W64.tolist(), b64.tolist()),
        "big-endian": (W64.astype(">f4"), b64.astype(">f8")),
    }
    x = make_input(rng, 9, 11)
    cases = Cases()
    for name, (W, b) in variants.items():
        with cases.case(name):
            layer = lrkernels.Linear(W, b)
            np.testing.assert_array_equal(layer.W, np.asarray(W).astype(np.float32))
            np.testing.assert_array_equal(layer.bias, np.asarray(b).astype(np.float32))
            y = layer(x)
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, (9, 19), name)
            assert_within_bound(y, reference.linear(x, W, b), linear_bound(x, W, b), name)
    cases.check()


def test_no_bias_means_zero_bias(isa):
    cases = Cases()
    for out_f in [1, 3, 8, 17, 40, 65]:
        with cases.case(f"out={out_f}"):
            layer = lrkernels.Linear(np.ones((out_f, 4), np.float32))
            assert layer.bias is None
            for x in (np.zeros(4, np.float32), np.zeros((7, 4), np.float32)):
                y = layer(x)
                assert lrkernels.last_used_isa() == isa
                np.testing.assert_array_equal(
                    y, np.zeros_like(y), f"zero input, no bias, out={out_f}"
                )
    cases.check()


def test_special_values(isa, rng):
    m = make_linear(rng, 10, 21)
    x = make_input(rng, 12, 10)
    x[3, 4] = np.nan
    y = m.layer(x)
    assert lrkernels.last_used_isa() == isa
    assert np.isnan(y[3]).all()
    good = [i for i in range(12) if i != 3]
    assert_within_bound(y[good], m.reference(x[good]), m.bound(x[good]), "finite rows")


@pytest.mark.parametrize(
    "config", range(len(blocking_configs(1, 1))), ids=[c[0] for c in blocking_configs(1, 1)]
)
def test_blocked_paths(isa, tile, blocking, rng, config):
    """Small cache blocks: K, out and batch cross several blocks, none a block multiple."""
    mr, nr = tile.mr, tile.nr
    name, kwargs = blocking_configs(mr, nr)[config]
    blocking(**kwargs)
    shapes = [(23, 5 * nr + 3), (64, 2 * nr + 1), (9, nr - 1), (1, 1), (17, 3 * nr)]
    batches = [None, 1, mr, mr + 1, 2 * mr, 4 * mr + 3, 7 * mr + 1, 61]
    cases = Cases()
    for k, (in_f, out_f) in enumerate(shapes):
        m = make_linear(rng, in_f, out_f, bias=k % 2 == 0)
        for batch in batches:
            with cases.case(f"blocking {name} {kwargs} in={in_f} out={out_f} batch={batch}"):
                m.check(make_input(rng, batch, in_f), isa)
        with cases.case(f"blocking {name} row-strided input in={in_f}"):
            wide = make_input(rng, 4 * mr + 3, in_f + 9)
            m.check(wide[:, 2 : 2 + in_f], isa)
    cases.check()


def test_default_blocking_large(isa, rng):
    """Larger than the default blocks: K > kc, out > nc, batch > mc."""
    m = make_linear(rng, 1000, 600)
    m.check(make_input(rng, 300, 1000), isa)
    m.check(make_input(rng, 2, 1000), isa)


def test_result_is_new_array(isa, rng):
    m = make_linear(rng, 8, 6)
    x = make_input(rng, 5, 8)
    y1, y2 = m.layer(x), m.layer(x)
    assert lrkernels.last_used_isa() == isa
    assert not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)
    y1[...] = 99.0
    np.testing.assert_array_equal(m.layer(x), y2)
    check_output_array(m.layer(x[0]), (6,))


def test_properties(rng):
    W = rng.standard_normal((5, 7))
    b = rng.standard_normal(5)
    layer = lrkernels.Linear(W, b)
    assert (layer.in_features, layer.out_features) == (7, 5)
    for name, src in [("W", W), ("bias", b)]:
        a = getattr(layer, name)
        assert isinstance(a, np.ndarray)
        assert a.dtype == np.float32 and a.shape == src.shape, name
        np.testing.assert_array_equal(a, src.astype(np.float32), name)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 1.0
        with pytest.raises(ValueError):
            a.setflags(write=True)
        with pytest.raises(AttributeError):
            setattr(layer, name, src)
    assert lrkernels.Linear(W).bias is None
    assert lrkernels.Linear(W=W, bias=None).bias is None


def test_weights_are_copied_and_views_keep_layer_alive(isa, rng):
    W = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    W0, b0 = W.copy(), b.copy()
    layer = lrkernels.Linear(W, b)
    x = make_input(rng, 3, 5)
    y0 = layer(x)
    W[...] = 0.0
    b[...] = 0.0
    np.testing.assert_array_equal(layer(x), y0)
    w_view, b_view = layer.W, layer.bias
    del layer
    gc.collect()
    lrkernels.Linear(np.ones((6, 5)), np.ones(6))
    np.testing.assert_array_equal(w_view, W0)
    np.testing.assert_array_equal(b_view, b0)


def test_repr():
    r = repr(lrkernels.Linear(np.ones((5, 7)), np.ones(5)))
    assert r.startswith("Linear") and "7" in r and "5" in r, r


def test_isa_switch_after_construction(rng):
    previous = lrkernels.get_isa()
    cases = Cases()
    try:
        for built in lrkernels.available_isas():
            lrkernels.set_isa(built)
            m = make_linear(rng, 19, 67)
            for run in lrkernels.available_isas() + [built]:
                lrkernels.set_isa(run)
                for batch in (None, 1, 9, 40):
                    with cases.case(f"built={built} run={run} batch={batch}"):
                        m.check(make_input(rng, batch, 19), run)
    finally:
        lrkernels.set_isa(previous)
    cases.check()


def test_no_per_call_allocation(isa, rng):
    m = make_linear(rng, 33, 17)
    x = make_input(rng, 100, 33)
    m.layer(x)
    before = _core._scratch_allocations()
    for _ in range(50):
        m.layer(x)
    m.layer(x[0])
    m.layer(x[:3])
    assert _core._scratch_allocations() == before


def test_threads_share_one_layer(isa, rng):
    m = make_linear(rng, 65, 33)
    inputs = [make_input(rng, b, 65) for b in (None, 7, 33, 130)]
    refs = [(m.reference(x), m.bound(x)) for x in inputs]
    barrier = threading.Barrier(4)
    errors = []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            for it in range(40):
                y = m.layer(inputs[i])
                assert lrkernels.last_used_isa() == isa
                assert_within_bound(y, *refs[i], f"thread {i} iteration {it}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, "\n".join(errors)
