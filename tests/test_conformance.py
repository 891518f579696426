"""Conformance of every layer kind, generated from the layer table (layer_table.py).

Every kind x every available ISA (the `isa` fixture) x layout (NCHW and NHWC for convolutions,
rows for linear layers) x geometry sweep (layer_sweeps.py: shapes around the micro-kernel tile
edges, ranks around the tile widths, batch 0/1/odd/around mr, kernels, strides, paddings,
dilations, shrunken cache blocks), with inputs and weights in every layout and dtype. Each call
is checked against the float64 reference under the float32 error bound (lrk_testing.py), with
`last_used_isa() == isa` as proof of the kernel that ran and the result array's dtype, shape and
ownership. Results, scratch reuse and threads too. Argument checking: test_conformance_api.py.
What is specific to one kind (exact known values, its own messages) stays in its own file.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lrkernels
from layer_cases import (
    ACTIVATIONS,
    Case,
    blocking_configs,
    conv,
    inputs_in_every_layout,
    weight_variants,
)
from layer_sweeps import blocked_activation_cases, blocked_cases, sweep, sweeps_for
from layer_table import KIND_LAYOUTS, LINEAR_KINDS, N_RANKS, SPEC, kind_layout_id, spec_for
from lrk_testing import (
    BOUNDS,
    Cases,
    assert_within_bound,
    call,
    check_output_array,
    make_model,
    rand,
    run_concurrently,
    run_in_thread,
)
from lrkernels import _core

F32 = np.float32


def kind_layouts(factorized=None):
    return [
        pytest.param(k, layout, id=f"{k}-{kind_layout_id(layout)}")
        for k, layout in KIND_LAYOUTS
        if factorized is None or SPEC[k].factorized == factorized
    ]


every_kind = pytest.mark.parametrize("kind, layout", kind_layouts())


def small(kind, batch=3):
    """A small case of each kind: ranks (3, 2); a convolution 4 -> 5 channels, 3x3 'same' on
    6x7 images; a linear layer 8 -> 6 features."""
    if SPEC[kind].conv:
        return conv(batch, 4, 5, (6, 7), (3, 3), padding=1, ranks=(3, 2))
    return Case(batch, 8, 6, ranks=(3, 2))


def run_cases(rng, isa, kind, layout, cases, strided=False):
    """Each case: a fresh layer and input, checked against the reference; with `strided`, every
    third case also on a view of a wider array (last axis + 9, offset 2)."""
    results = Cases()
    for i, case in enumerate(cases):
        with results.case(f"{case} layout={layout}"):
            m = case.model(rng, kind, layout)
            x = case.input(rng, m)
            m.check(x, isa)
            if strided and i % 3 == 1:
                wide = rand(rng, x.shape[:-1] + (x.shape[-1] + 9,))
                m.check(wide[..., 2 : 2 + x.shape[-1]], isa, "strided view")
    results.check()
    assert results.count == len(cases) > 0


# --------------------------------------------------------------------------------------------
# Geometry sweeps and blocked paths
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, layout, name",
    [
        pytest.param(k, layout, name, id=f"{k}-{kind_layout_id(layout)}-{name}")
        for k, layout in KIND_LAYOUTS
        for name in sweeps_for(k)
    ],
)
def test_sweep(isa, tile, rng, kind, layout, name):
    """tile-edges, batches, geometry, sizes, ranks: see layer_sweeps.SWEEPS."""
    run_cases(rng, isa, kind, layout, sweep(name, kind, tile))


CONFIGS = blocking_configs(1, 1)


@pytest.mark.parametrize("config", range(len(CONFIGS)), ids=[c[0] for c in CONFIGS])
@every_kind
def test_blocked_paths(isa, tile, blocking, rng, kind, layout, config):
    """Small cache blocks (`_set_blocking`): K, ranks, channels, pixels and batch cross several
    blocks, none a block multiple; contiguous and strided inputs."""
    name, kwargs = blocking_configs(tile.mr, tile.nr)[config]
    blocking(**kwargs)
    run_cases(rng, isa, kind, layout, blocked_cases(kind, tile), strided=True)


# --------------------------------------------------------------------------------------------
# The fused output clamp (activation=): relu, relu6 and (min, max) on every kind, ISA and layout
# (the "activations" sweep above runs them against the clamped reference at the tile edges)
# --------------------------------------------------------------------------------------------

ACTIVATION_CONFIGS = [0, 1, 7]  # blocking_configs: kc5 ..., kc1 ..., tiny-rounding


@pytest.mark.parametrize(
    "config", ACTIVATION_CONFIGS, ids=[CONFIGS[i][0] for i in ACTIVATION_CONFIGS]
)
@every_kind
def test_blocked_paths_with_activation(isa, tile, blocking, rng, kind, layout, config):
    """Several K blocks per output tile: the clamp is applied after the last one only (a clamp
    of a partial sum would differ from the reference)."""
    blocking(**blocking_configs(tile.mr, tile.nr)[config][1])
    run_cases(rng, isa, kind, layout, blocked_activation_cases(kind, tile), strided=True)


def _clamp32(y, activation):
    """The clamp the kernels apply, in float32: x < min -> min, x > max -> max, else x."""
    lo, hi = (np.float32(b) for b in lrkernels.reference.output_bounds(activation))
    y = np.where(y < lo, lo, y)
    return np.where(y > hi, hi, y).astype(F32)


def _unclamped(m):
    return m.spec.cls(*m.factors, m.bias, **m.geometry)


def _assert_same_bits(y, expected, case):
    assert y.shape == expected.shape, case
    same = y.view(np.int32) == expected.view(np.int32)
    assert same.all(), (
        f"{case}: {int((~same).sum())} outputs differ from the clamped unclamped output; first "
        f"at {tuple(np.argwhere(~same)[0])}: {y[~same][0]!r} vs {expected[~same][0]!r}"
    )


def _clamp_cases(kind, tile):
    """A few shapes across the tile edges (full tiles, tails, 1-row tiles)."""
    mr, nr = tile.mr, tile.nr
    if SPEC[kind].conv:
        return [
            conv(2, 5, nr + 3, (5, mr + 2), (3, 3), padding=1, ranks=(nr - 1, 7)),
            conv(1, 3, 2 * nr, (4, 4), (1, 1), ranks=(2, 3)),
            conv(3, 9, 7, (6, 5), (3, 1), stride=2, padding=(1, 0), ranks=(5, 17)),
        ]
    return [
        Case(2 * mr + 3, 37, 2 * nr + 5, ranks=(nr + 1,) * 2),
        Case(1, 9, nr - 1, ranks=(3, 3)),
        Case(mr, 5, 3 * nr, bias=False, ranks=(2, 2)),
    ]


@pytest.mark.parametrize("activation", ACTIVATIONS + [(None, 0.25), (-1e-3, None), (0.5, 0.5)])
@every_kind
def test_activation_is_the_exact_clamp_of_the_output(
    isa, tile, blocking, rng, kind, layout, activation
):
    """The kernels really clamp: every output is exactly the unclamped layer's output (same
    factors, same kernels) clamped at the float32 bounds, so all lie within them; the attributes
    say which clamp it is. With shrunken blocks too (several K blocks)."""
    lo, hi = lrkernels.reference.output_bounds(activation)
    for blocked in (False, True):
        if blocked:
            blocking(kc=3, nc=tile.nr, mc=tile.mr, mb=tile.mr)
        for case in _clamp_cases(kind, tile):
            m = dataclasses.replace(case, activation=activation).model(rng, kind, layout)
            assert (m.layer.output_min, m.layer.output_max) == (lo, hi)
            x = case.input(rng, m) * F32(3)
            y = m.check(x, isa, f"blocked={blocked}")
            assert ((y >= lo) & (y <= hi)).all()
            y0 = _unclamped(m)(x)
            assert (y0 < lo).any() or (y0 > hi).any() or lo == -np.inf, "the clamp never acted"
            _assert_same_bits(y, _clamp32(y0, activation), f"{case} blocked={blocked}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@every_kind
def test_activation_passes_nan_and_clamps_inf(isa, tile, rng, kind, layout, activation):
    """NaN in -> NaN out (as torch.relu / torch.clamp); +-inf outputs are clamped like any value.
    Positive factors, so that an infinite input gives infinite outputs (no inf - inf)."""
    case = small(kind, batch=3)
    m = dataclasses.replace(case, activation=activation).model(rng, kind, layout)
    for a in (*m.factors, m.bias):
        np.abs(a, out=a)
    x = case.input(rng, m)
    x.reshape(3, -1)[0, 1] = np.nan
    x.reshape(3, -1)[1, 2] = np.inf
    x.reshape(3, -1)[2, 3] = -np.inf
    with np.errstate(all="ignore"):
        y = call(m.layer, x, isa)
        y0 = _unclamped(m)(x)
    assert np.isnan(y0[0]).any(), "the NaN input reached no output"
    assert np.isposinf(y0[1]).any() and np.isneginf(y0[2]).any(), "no infinite output"
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y0))
    _assert_same_bits(y, _clamp32(y0, activation), "NaN and inf")
    lo, hi = lrkernels.reference.output_bounds(activation)
    assert (y[np.isneginf(y0)] == lo).all() and (y[np.isposinf(y0)] == hi).all()


@every_kind
def test_activation_batch_zero(isa, rng, kind, layout):
    case = conv(0, 4, 6, (5, 7), (3, 3), padding=1) if SPEC[kind].conv else small(kind, batch=0)
    for activation in ACTIVATIONS:
        m = dataclasses.replace(case, activation=activation).model(rng, kind, layout)
        x = m.make_input(rng, 0, case.hw)
        y = call(m.layer, x, isa)
        check_output_array(y, m.output_shape(x.shape), f"batch 0 activation={activation!r}")


@every_kind
def test_batch_zero(isa, rng, kind, layout):
    """An empty batch (float32 or float64) gives an empty float32 result of the right shape;
    the call still goes through the ISA's layer (seen from a fresh thread, which has no
    earlier call)."""
    case = conv(0, 4, 6, (5, 7), (3, 3), stride=2, padding=1) if SPEC[kind].conv else small(kind)
    m = case.model(rng, kind, layout)
    for dtype in (F32, np.float64):
        x = m.make_input(rng, 0, case.hw, dtype)
        y, used = run_in_thread(lambda x=x: (m.layer(x), lrkernels.last_used_isa()))
        assert used == isa
        check_output_array(y, m.output_shape(x.shape), f"batch 0 {np.dtype(dtype).name}")
        assert y.shape[0] == 0 and 0 not in m.output_shape(x.shape)[1:]


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_one_d_input_is_a_batch_of_one(isa, rng, kind):
    m = make_model(rng, kind, 9, 17, (4, 4))
    x = rand(rng, (9,))
    assert m.check(x, isa).shape == (17,)
    y2 = m.layer(x[None, :])
    assert y2.shape == (1, 17)
    assert_within_bound(y2[0], m.reference(x), 2 * m.bound(x), "1-D vs (1, in)")


# --------------------------------------------------------------------------------------------
# Input and weight layouts and dtypes
# --------------------------------------------------------------------------------------------


def _layout_cases(kind, tile):
    if SPEC[kind].conv:
        return [
            conv(3, 5, 9, (6, 7), (3, 3), padding=1, stride=(1, 2), ranks=(3, 5)),
            conv(1, 16, 17, (5, 5), (1, 1), bias=False, ranks=(17, 1)),
            conv(3, 33, 8, (9, 6), (3, 5), padding=(2, 2), dilation=2, ranks=(8, 3)),
        ]
    shapes = [(1, 3, 2), (13, 2 * tile.nr + 3, 9), (64, 17, 33)]
    return [
        Case(batch, in_f, out_f, bias=in_f != 13, ranks=(rank, rank))
        for in_f, out_f, rank in shapes
        for batch in (1, 2, tile.mr, 2 * tile.mr + 1, 37)
    ]


@every_kind
def test_input_layouts_and_dtypes(isa, tile, rng, kind, layout):
    """float64/float16/longdouble, Fortran, strided and offset views, channel slices,
    transposed views, negative and zero strides, big-endian, unaligned, packed records, lists;
    1-D vectors for linear layers. The input is never modified."""
    results = Cases()
    for case in _layout_cases(kind, tile):
        m = case.model(rng, kind, layout)
        for name, x in inputs_in_every_layout(rng, case, layout):
            with results.case(f"{name}: {case} layout={layout}"):
                x_before = np.array(x, copy=True)
                m.check(x, isa)
                np.testing.assert_array_equal(np.asarray(x), x_before, "input was modified")
    results.check()


@every_kind
def test_strided_float32_input_gives_the_bits_of_its_contiguous_copy(isa, tile, rng, kind, layout):
    """A float32 view (used in place, with strides) gives exactly the result of its copy."""
    case = _layout_cases(kind, tile)[-1]
    m = case.model(rng, kind, layout)
    views = 0
    for name, x in inputs_in_every_layout(rng, case, layout):
        if isinstance(x, np.ndarray) and x.dtype == F32 and not x.flags.c_contiguous:
            views += 1
            np.testing.assert_array_equal(
                m.check(x, isa), m.layer(np.ascontiguousarray(x)), err_msg=name
            )
    assert views >= 5


def _weight_case(kind):
    """Factors of every kind, a geometry with every argument not 1 (for convolutions)."""
    if SPEC[kind].conv:
        return conv(3, 5, 6, (6, 7), (3, 2), (2, 1), 1, (1, 2), ranks=(3, 4))
    return Case(9, 11, 19, ranks=(6, 6))


def _factors64(rng, kind, case):
    """Random float64 factors and bias for a case."""
    spec = SPEC[kind]
    shapes = spec.factor_shapes(case.in_dim, case.out_dim, case.ranks[: N_RANKS[kind]], case.kernel)
    return [rng.standard_normal(s) for s in shapes] + [rng.standard_normal(case.out_dim)]


@every_kind
def test_weight_dtypes_and_layouts(isa, rng, kind, layout):
    """Factors and bias of any real float dtype and memory layout are converted to float32 at
    construction; the layer then matches the reference of the given (float64) values."""
    spec, case = SPEC[kind], _weight_case(kind)
    geometry = case.geometry(layout) if spec.conv else {}
    m = case.model(rng, kind, layout)
    x = case.input(rng, m)
    results = Cases()
    for name, arrays in weight_variants(_factors64(rng, kind, case)):
        with results.case(name):
            layer = spec.cls(*arrays, **geometry)
            for prop, src in zip(spec.factor_names + ("bias",), arrays):
                np.testing.assert_array_equal(getattr(layer, prop), np.asarray(src).astype(F32))
            y = layer(x)
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, m.output_shape(x.shape), name)
            ref = spec.reference(x, *arrays, **geometry)
            assert_within_bound(y, ref, BOUNDS[kind](x, *arrays, **geometry), name)
    results.check()
    assert results.count == 9


@every_kind
def test_keyword_arguments(isa, rng, kind, layout):
    """Factors, bias and geometry by keyword; x by keyword."""
    case = small(kind)
    m = case.model(rng, kind, layout)
    layer = SPEC[kind].cls(**m.weights, **m.geometry)
    x = case.input(rng, m)
    y = layer(x=x)
    assert lrkernels.last_used_isa() == isa
    assert_within_bound(y, m.reference(x), m.bound(x), "keywords")


@every_kind
def test_no_bias_zero_input_gives_exact_zero(isa, rng, kind, layout):
    """Without a bias the output is exactly the factors' product: zero input, zero output."""
    results = Cases()
    for out in (1, 3, 8, 17, 40, 65):
        with results.case(f"out={out}"):
            case = (
                Case(7, 4, out, bias=False)
                if not SPEC[kind].conv
                else conv(3, 3, out, (5, 4), (3, 3), padding=2, dilation=2, bias=False)
            )
            m = case.model(rng, kind, layout)
            assert m.layer.bias is None
            y = m.layer(np.zeros(m.input_shape(case.batch, case.hw)))
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, m.output_shape(m.input_shape(case.batch, case.hw)))
            np.testing.assert_array_equal(y, np.zeros_like(y))
    results.check()


@every_kind
def test_extreme_input_scales(isa, rng, kind, layout):
    """Inputs far from 1 in magnitude (no overflow or underflow in float32 at these scales)."""
    case = small(kind, batch=11)
    m = case.model(rng, kind, layout)
    results = Cases()
    for scale in (1e-30, 1e-10, 1e10, 1e25):
        with results.case(f"scale={scale}"):
            m.check(case.input(rng, m, np.float64) * scale, isa)
    results.check()


# --------------------------------------------------------------------------------------------
# Results, factorized layers against their dense equivalent, ISA switches
# --------------------------------------------------------------------------------------------


@every_kind
def test_result_is_a_new_array_and_deterministic(isa, rng, kind, layout):
    case = small(kind)
    m = case.model(rng, kind, layout)
    x = case.input(rng, m)
    y1 = m.check(x, isa)
    y2 = m.layer(x)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)
    y1[...] = 1234.0
    np.testing.assert_array_equal(m.layer(x), y2)


@pytest.mark.parametrize("kind, layout", kind_layouts(factorized=True))
def test_agrees_with_its_dense_equivalent(isa, rng, kind, layout):
    """The factorized layer and the dense layer of its merged (float32-rounded) weight agree
    within the sum of their two bounds."""
    spec = SPEC[kind]
    if spec.conv:
        cases = [
            conv(3, 7, 9, (9, 8), (3, 3), padding=1, ranks=(17, 5)),
            conv(1, 16, 33, (7, 11), (3, 5), (2, 1), (1, 3), (1, 2), ranks=(8, 9)),
            conv(3, 3, 8, (1, 1), (5, 5), padding=2, ranks=(1, 1), bias=False),
        ]
    else:
        cases = [Case(9, 23, 31, ranks=(7, 7)), Case(None, 64, 5, ranks=(33, 33))]
    results = Cases()
    for case in cases:
        with results.case(f"{case} layout={layout}"):
            m = case.model(rng, kind, layout)
            weight = np.asarray(spec.to_dense(m.layer), dtype=np.float64).astype(F32)
            dense = spec.dense_equivalent(m.layer, weight)
            x = case.input(rng, m)
            y = m.check(x, isa)
            bound = m.bound(x) + BOUNDS[spec_for(dense).name](x, weight, m.bias, **m.geometry)
            assert_within_bound(y, dense(x).astype(np.float64), bound, f"{kind} vs dense")
    results.check()


@every_kind
def test_isa_switch_after_construction(rng, kind, layout):
    """A layer built under one ISA runs correctly under every other (repacked on first use)."""
    isas = lrkernels.available_isas()
    if SPEC[kind].conv:
        case = conv(3, 19, 67, (7, 6), (3, 3), padding=1, ranks=(17, 33))
        batches = (3,)
    else:
        case, batches = Case(None, 19, 67, ranks=(11, 11)), (None, 1, 9, 40)
    previous = lrkernels.get_isa()
    results = Cases()
    try:
        for built in isas:
            lrkernels.set_isa(built)
            m = case.model(rng, kind, layout)
            assert m.layer is not None  # constructed under `built`
            for run in isas + [built]:
                lrkernels.set_isa(run)
                for batch in batches:
                    with results.case(f"built={built} run={run} batch={batch}"):
                        m.check(m.make_input(rng, batch, case.hw), run)
    finally:
        lrkernels.set_isa(previous)
    results.check()


# --------------------------------------------------------------------------------------------
# Scratch and threads
# --------------------------------------------------------------------------------------------


@every_kind
def test_no_per_call_scratch_growth(isa, tile, rng, kind, layout):
    """After a warm-up call, repeated calls (same or smaller batch) never grow the scratch; the
    first call in a fresh thread does (the counter works). One thread (conftest.py)."""
    if SPEC[kind].conv:
        case = conv(3, 17, 33, (13, 11), (3, 3), padding=1, stride=(1, 2), ranks=(9, 17))
    else:
        case = Case(100, 33, 17, ranks=(64, 64))
    m = case.model(rng, kind, layout)
    x = case.input(rng, m)
    n = case.batch
    smaller = sorted({b for b in (1, 2, tile.mr, tile.mr + 1, 2 * tile.mr + 1, n - 1) if b < n})

    def body():
        c0 = _core._scratch_allocations()
        m.layer(x)
        c1 = _core._scratch_allocations()
        for _ in range(20):
            m.layer(x)
        c2 = _core._scratch_allocations()
        for b in smaller:
            m.layer(x[:b])
        return c0, c1, c2, _core._scratch_allocations()

    c0, c1, c2, c3 = run_in_thread(body)
    if SPEC[kind].factorized or SPEC[kind].conv:  # an intermediate or an im2col buffer
        assert c1 > c0, "the first call in a new thread did not count a scratch allocation"
    assert c2 == c1, f"20 repeated calls grew the scratch buffer {c2 - c1} times"
    assert c3 == c2, f"smaller batches {smaller} grew the scratch buffer {c3 - c2} times"
    m.layer(x)
    before = _core._scratch_allocations()
    for _ in range(20):
        m.layer(x)
    assert _core._scratch_allocations() == before


def _thread_inputs(rng, kind, layout):
    """A layer and four inputs of different sizes for it."""
    if SPEC[kind].conv:
        m = conv(1, 9, 17, (9, 6), (3, 3), padding=1, stride=(1, 2), ranks=(5, 17)).model(
            rng, kind, layout
        )
        sizes = [(1, (9, 6)), (3, (5, 7)), (2, (13, 11)), (1, (1, 1))]
        return m, [m.make_input(rng, n, hw) for n, hw in sizes]
    m = make_model(rng, kind, 65, 33, (48, 48))
    return m, [m.make_input(rng, b) for b in (None, 7, 33, 130)]


@every_kind
def test_threads_share_one_layer(isa, rng, kind, layout):
    """4 threads call the same layer at once on different inputs: every result is right."""
    m, inputs = _thread_inputs(rng, kind, layout)
    refs = [(m.reference(x), m.bound(x)) for x in inputs]

    def calls(i):
        def run():
            for it in range(20):
                y = m.layer(inputs[i])
                assert lrkernels.last_used_isa() == isa
                assert_within_bound(y, *refs[i], f"thread {i} iteration {it}")

        return run

    errors = run_concurrently([calls(i) for i in range(4)])
    assert not errors, "\n".join(errors)


@every_kind
def test_threads_first_use_packing(isa, rng, kind, layout):
    """Layers built under another ISA get packed for this one on first use, by 4 threads at once."""
    others = [i for i in lrkernels.available_isas() if i != isa]
    if not others:
        pytest.skip("only one ISA available")
    lrkernels.set_isa(others[0])
    try:
        pairs = [_thread_inputs(rng, kind, layout) for _ in range(4)]
        for m, _ in pairs:
            assert m.layer is not None  # constructed under the other ISA
    finally:
        lrkernels.set_isa(isa)
    errors = []
    for m, inputs in pairs:

        def calls(i, m=m, inputs=inputs):
            def run():
                y = m.layer(inputs[i])
                assert lrkernels.last_used_isa() == isa
                assert_within_bound(y, m.reference(inputs[i]), m.bound(inputs[i]), f"thread {i}")

            return run

        errors += run_concurrently([calls(i) for i in range(4)])
    assert not errors, "\n".join(errors)


@every_kind
def test_last_used_isa_is_per_thread(isa, rng, kind, layout):
    case = small(kind, batch=1)
    m = case.model(rng, kind, layout)
    x = case.input(rng, m)
    m.check(x, isa)

    def fresh():
        before = lrkernels.last_used_isa()
        m.layer(x)
        return before, lrkernels.last_used_isa()

    before, after = run_in_thread(fresh)
    assert before is None, "a new thread that made no call must report None"
    assert after == isa
