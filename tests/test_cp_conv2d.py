"""CPConv2d (1x1 Cin->R, kh x 1 depthwise along H, 1 x kw depthwise along W, 1x1 R->Cout + bias):
correctness on every available ISA and both layouts against the float64 reference (the staged
`reference.cp_conv2d` where it exists, else a dense convolution with the merged weight);
properties, argument errors, scratch reuse and threads."""

from __future__ import annotations

from dataclasses import replace

import lrkernels
import numpy as np
import pytest

if not hasattr(lrkernels, "CPConv2d"):
    pytest.skip("lrkernels.CPConv2d is not in this build", allow_module_level=True)

from lrk_testing import (  # noqa: E402
    CONV_CHANNELS,
    CP_REFERENCE,
    EPS32,
    LAYOUTS,
    Cases,
    ConvCase,
    assert_within_bound,
    blocking_configs,
    check_output_array,
    conv2d_bound,
    conv_output_hw,
    conv_sweep_cases,
    cp_conv2d_bound,
    cp_conv2d_merged,
    cp_conv2d_reference,
    cp_merged_weight,
    image_layouts,
    image_shape,
    make_cp_conv2d,
    make_image,
    run_concurrently,
    run_in_thread,
)
from lrkernels import _core  # noqa: E402

F32 = np.float32
EPS64 = float(np.finfo(np.float64).eps)

# Ranks cycled through the geometry sweep: 1, around the SIMD widths (8, 16) and past them.
CP_RANKS = [1, 3, 8, 16, 17, 33, 5, 2]


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


def C(batch, cin, cout, hw, kernel, stride=1, padding=0, dilation=1, *, rank, bias=True):
    """A ConvCase for CPConv2d: `ranks` holds the single CP rank, as (R,)."""
    return ConvCase(batch, cin, cout, hw, kernel, stride, padding, dilation, bias, (rank,))


def _model(rng, case: ConvCase, layout, **kwargs):
    return make_cp_conv2d(
        rng,
        case.in_channels,
        case.out_channels,
        case.ranks[0],
        case.kernel_size,
        bias=case.bias,
        **case.geometry(layout),
        **kwargs,
    )


def _run_cases(rng, isa, layout, cases):
    results = Cases()
    for case in cases:
        with results.case(f"{case} layout={layout}"):
            m = _model(rng, case, layout)
            m.check(make_image(rng, case.batch, case.in_channels, case.hw, layout), isa)
    results.check()


def _sweep_cases():
    return [
        replace(case, ranks=(CP_RANKS[i % len(CP_RANKS)],))
        for i, case in enumerate(conv_sweep_cases())
    ]


# --------------------------------------------------------------------------------------------
# The oracle
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(CP_REFERENCE is None, reason="lrkernels.reference.cp_conv2d is absent")
def test_reference_matches_merged_weight(rng):
    """The staged float64 `reference.cp_conv2d` equals the dense convolution with the merged
    weight W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c]."""
    results = Cases()
    for i, case in enumerate(_sweep_cases()[::3]):
        layout = LAYOUTS[i % 2]
        with results.case(f"{case} layout={layout}"):
            kh, kw = case.kernel_size
            r = case.ranks[0]
            factors = [
                rng.standard_normal(s)
                for s in [(r, case.in_channels), (r, kh), (r, kw), (case.out_channels, r)]
            ]
            b = rng.standard_normal(case.out_channels) if case.bias else None
            x = rng.standard_normal(image_shape(case.batch, case.in_channels, case.hw, layout))
            geo = case.geometry(layout)
            staged = CP_REFERENCE(x, *factors, b, **geo)
            merged = cp_conv2d_merged(x, *factors, b, **geo)
            assert staged.shape == merged.shape, (staged.shape, merged.shape)
            # float64 rounding of both evaluation orders only: the float32 bound scaled to eps64.
            tol = cp_conv2d_bound(x, *factors, b, **geo) * (EPS64 / EPS32)
            assert_within_bound(staged, merged, tol, "reference.cp_conv2d vs merged weight")


# --------------------------------------------------------------------------------------------
# Geometry and ranks
# --------------------------------------------------------------------------------------------


def test_geometry_sweep(isa, layout, rng):
    """Kernels 1, 3, 5, 7, 1x3, 3x1, 3x5 x stride 1, 2, (1, 2) x dilation 1, 2 x padding 0,
    k//2, k//2 + 2, with ranks (1, 3, 8, 16, 17, 33, ...), channels, sizes, batch and bias
    cycling."""
    _run_cases(rng, isa, layout, _sweep_cases())


def test_ranks_and_channels(isa, layout, rng):
    """Ranks 1..64 around the SIMD widths of the depthwise passes against tile-edge channels."""
    ranks = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64]
    couts = [1, 7, 9, 16, 17, 33, 64, 3, 8, 15, 31]
    kernels = [(3, 3), (1, 1), (3, 5), (5, 5), (1, 3), (3, 1), (7, 7)]
    sizes = [(5, 7), (9, 6), (6, 6), (1, 1), (7, 5)]
    cases = []
    i = 0
    for rank in ranks:
        for _ in range(4):
            k = kernels[i % len(kernels)]
            hw = sizes[(i // 3) % len(sizes)]
            stride = (1, 2, (1, 2), (2, 1))[i % 4]
            padding = (k[0] // 2, k[1] // 2)
            dilation = 2 if i % 3 == 2 else 1
            if min(conv_output_hw(hw, k, stride, padding, dilation)) < 1:
                dilation = 1
            cases.append(
                C(
                    1 + (i % 3 == 1) * 2,
                    CONV_CHANNELS[i % len(CONV_CHANNELS)],
                    couts[(3 * i + 1) % len(couts)],
                    hw,
                    k,
                    stride,
                    padding,
                    dilation,
                    rank=rank,
                    bias=i % 4 != 3,
                )
            )
            i += 1
    _run_cases(rng, isa, layout, cases)


def test_sizes_and_batches(isa, layout, rng):
    """1x1 inputs (padding makes the output >= 1), odd sizes, rows and columns that see only the
    padding, strides that skip input rows and columns, asymmetric padding, kernels larger than
    the input, wide rows (> 96 output pixels: one row per band) and tall images (many bands and
    ring wrap-arounds), ranks larger than the channels, long first-stage sums."""
    cases = [
        C(1, 3, 5, (1, 1), (3, 3), padding=1, rank=1),
        C(3, 8, 9, (1, 1), (5, 5), padding=2, rank=17),
        C(3, 17, 4, (1, 1), (1, 1), rank=3),
        C(1, 9, 16, (1, 1), (1, 1), padding=3, bias=False, rank=3),  # a zeros ring
        C(3, 1, 7, (1, 1), (3, 5), padding=(1, 2), rank=8),
        C(1, 1, 1, (1, 1), (7, 7), padding=4, rank=33),  # padding > k // 2 on a 1x1 input
        C(3, 9, 16, (2, 1), (3, 3), padding=(3, 2), rank=16),
        C(1, 5, 3, (5, 7), (3, 3), rank=5),
        C(3, 7, 15, (9, 6), (3, 3), padding=1, rank=1),
        C(3, 16, 17, (13, 11), (5, 5), padding=2, rank=9),
        C(1, 2, 3, (7, 7), (3, 3), dilation=3, rank=17),  # dilated kernel exactly the input
        C(1, 2, 3, (7, 9), (3, 5), dilation=(3, 2), rank=2),
        C(1, 4, 5, (11, 13), (3, 3), stride=4, rank=8),  # stride > kernel: skipped rows, columns
        C(3, 6, 5, (10, 11), (1, 1), stride=3, padding=1, rank=7),
        C(1, 5, 4, (9, 8), (1, 3), padding=(2, 1), rank=3),  # rows of padding only (kh = 1)
        C(1, 5, 4, (8, 9), (3, 1), padding=(1, 3), rank=3),  # columns of padding only (kw = 1)
        C(3, 4, 6, (6, 7), (3, 5), padding=(0, 4), rank=16),  # W-only padding, > kw // 2
        C(3, 4, 6, (7, 6), (5, 3), padding=(4, 0), stride=(2, 1), rank=16),  # H-only padding
        C(1, 3, 8, (32, 29), (3, 3), stride=2, padding=1, rank=5),
        C(3, 64, 64, (16, 16), (3, 3), padding=1, rank=31),
        C(1, 33, 16, (19, 23), (7, 7), stride=2, padding=3, rank=17),
        C(3, 8, 8, (6, 5), (7, 7), padding=(3, 4), rank=3),  # kernel larger than the input
        C(1, 4, 6, (5, 5), (3, 3), padding=1, rank=9),  # R > Cin
        C(1, 3, 2, (5, 5), (3, 3), padding=1, rank=33),  # R > Cin, Cout
        C(1, 3, 5, (4, 203), (3, 3), padding=1, rank=3),  # a wide output row (> 96 pixels)
        C(1, 3, 5, (3, 150), (1, 7), stride=(1, 2), padding=(0, 5), dilation=(1, 2), rank=17),
        C(3, 9, 17, (150, 3), (3, 1), stride=(2, 1), dilation=(3, 1), rank=5),  # tall
        C(1, 2, 3, (61, 2), (7, 1), padding=(3, 0), rank=8),  # tall: ring wraps many times
        C(1, 300, 20, (5, 6), (3, 3), padding=1, stride=(1, 2), rank=64),  # long sums
    ]
    _run_cases(rng, isa, layout, cases)


def test_batch_zero(isa, layout, rng):
    """An empty batch gives an empty float32 result of the right shape (as for Linear)."""
    m = _model(rng, C(1, 4, 6, (5, 7), (3, 3), stride=2, padding=1, rank=3), layout)
    for dtype in (F32, np.float64):
        y = m.layer(np.empty(image_shape(0, 4, (5, 7), layout), dtype))
        check_output_array(y, image_shape(0, 6, (3, 4), layout), f"batch 0 {dtype.__name__}")


def test_input_layouts_and_dtypes(isa, layout, rng):
    """float64/float16/longdouble, strided views (x[..., ::2]), channel slices, transposed-view
    layouts, negative strides, broadcast, unaligned and big-endian data."""
    cases = [
        C(3, 5, 9, (6, 7), (3, 3), padding=1, stride=(1, 2), rank=3),
        C(1, 16, 17, (5, 5), (1, 1), bias=False, rank=17),
        C(3, 33, 8, (9, 6), (3, 5), padding=(2, 2), dilation=2, rank=8),
    ]
    results = Cases()
    for case in cases:
        m = _model(rng, case, layout)
        for name, x in image_layouts(rng, case.batch, case.in_channels, case.hw, layout):
            with results.case(f"{name}: {case} layout={layout}"):
                x_before = np.array(x, copy=True)
                m.check(x, isa)
                np.testing.assert_array_equal(x, x_before, "input was modified")
    results.check()


def test_weight_dtypes_and_layouts(isa, layout, rng):
    """Factors of any real float dtype and memory layout are converted to float32."""
    f64 = rng.standard_normal((4, 5))
    v64 = rng.standard_normal((4, 3))
    h64 = rng.standard_normal((4, 2))
    l64 = rng.standard_normal((6, 4))
    b64 = rng.standard_normal(6)
    all64 = (f64, v64, h64, l64, b64)
    variants = {
        "float64": all64,
        "float16": tuple(a.astype(np.float16) for a in all64),
        "longdouble": tuple(a.astype(np.longdouble) for a in all64),
        "Fortran": (
            np.asfortranarray(f64),
            np.asfortranarray(v64.astype(F32)),
            np.asfortranarray(h64),
            np.asfortranarray(l64),
            b64,
        ),
        "strided views": (
            np.repeat(f64, 2, axis=1)[:, ::2],
            np.repeat(v64, 3, axis=0)[::3],
            np.repeat(h64, 2, axis=1)[:, ::2],
            np.repeat(l64, 2, axis=0)[::2],
            np.repeat(b64, 2)[::2],
        ),
        "negative strides": (
            f64[::-1].copy()[::-1],
            v64[:, ::-1].copy()[:, ::-1],
            h64[::-1].copy()[::-1],
            l64[:, ::-1].copy()[:, ::-1],
            b64[::-1].copy()[::-1],
        ),
        "transposed views": tuple(np.ascontiguousarray(a.T).T for a in all64),
        "lists": tuple(a.tolist() for a in all64),
        "big-endian": (
            f64.astype(">f8"),
            v64.astype(">f4"),
            h64.astype(">f8"),
            l64.astype(">f4"),
            b64.astype(">f8"),
        ),
    }
    x = make_image(rng, 3, 5, (6, 7), layout)
    geo = dict(stride=(2, 1), padding=1, dilation=(1, 2), layout=layout)
    names = ("first", "vertical", "horizontal", "last", "bias")
    results = Cases()
    for name, factors in variants.items():
        with results.case(name):
            layer = lrkernels.CPConv2d(*factors, **geo)
            for prop, src in zip(names, factors):
                np.testing.assert_array_equal(
                    getattr(layer, prop), np.asarray(src).astype(F32), prop
                )
            y = layer(x)
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, image_shape(3, 6, (3, 7), layout), name)
            assert_within_bound(
                y,
                cp_conv2d_reference(x, *factors, **geo),
                cp_conv2d_bound(x, *factors, **geo),
                name,
            )
    results.check()


def test_agrees_with_conv2d_of_merged_weight(isa, layout, rng):
    """The fused layer and lrkernels.Conv2d with the merged (float32-rounded) weight agree
    within the sum of their two bounds."""
    cases = [
        C(3, 7, 9, (9, 8), (3, 3), padding=1, rank=17),
        C(1, 16, 33, (7, 11), (3, 5), stride=(2, 1), padding=(1, 3), dilation=(1, 2), rank=8),
        C(3, 3, 8, (1, 1), (5, 5), padding=2, rank=1, bias=False),
    ]
    results = Cases()
    for case in cases:
        with results.case(f"{case} layout={layout}"):
            m = _model(rng, case, layout)
            w = m.weights
            factors = [w[k] for k in ("first", "vertical", "horizontal", "last")]
            merged = cp_merged_weight(*factors).astype(F32)
            geo = case.geometry(layout)
            dense = lrkernels.Conv2d(merged, w["bias"], **geo)
            x = make_image(rng, case.batch, case.in_channels, case.hw, layout)
            y = m.check(x, isa)
            y_dense = dense(x)
            bound = m.bound(x) + conv2d_bound(x, merged, w["bias"], **geo)
            # The merged weight's own float32 rounding: u |W| per weight, within m.bound's terms.
            assert_within_bound(y, y_dense.astype(np.float64), bound, "CPConv2d vs Conv2d")
    results.check()


# --------------------------------------------------------------------------------------------
# Blocked paths
# --------------------------------------------------------------------------------------------


def test_blocked_paths(isa, tile, blocking, layout, rng):
    """Small cache blocks (`_set_blocking`): channels, rank and pixels cross several blocks."""
    mr, nr = tile.mr, tile.nr
    cases = [
        C(3, 7, 2 * nr + 3, (9, 6), (3, 3), padding=1, rank=2 * nr + 1),
        C(1, 23, nr - 1, (13, 11), (3, 5), 2, (1, 2), (2, 1), rank=nr + 1),
        C(3, 33, 3 * nr + 1, (5, 7), (1, 1), bias=False, rank=3 * nr + 1),
        C(1, 1, 1, (1, 1), (3, 3), padding=1, rank=1),
        C(1, 9, nr, (2 * mr + 1, 3), (5, 5), padding=2, rank=nr),
        C(3, 17, 5, (4, 2 * mr + 3), (1, 7), padding=(0, 3), stride=(1, 2), rank=nr - 1),
    ]
    results = Cases()
    for name, kwargs in blocking_configs(mr, nr):
        blocking(**kwargs)
        for case in cases:
            with results.case(f"blocking {name} {kwargs}: {case} layout={layout}"):
                m = _model(rng, case, layout)
                m.check(make_image(rng, case.batch, case.in_channels, case.hw, layout), isa)
    results.check()


# --------------------------------------------------------------------------------------------
# Results, exact values, properties
# --------------------------------------------------------------------------------------------


def test_result_is_new_array(isa, layout, rng):
    m = _model(rng, C(3, 4, 5, (6, 7), (3, 3), padding=1, rank=3), layout)
    x = make_image(rng, 3, 4, (6, 7), layout)
    y1 = m.check(x, isa)
    y2 = m.layer(x)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)  # deterministic
    y1[...] = 1234.0
    np.testing.assert_array_equal(m.layer(x), y2)


def test_known_values(isa, layout):
    """All-ones factors: y = bias + R Cin (number of in-range pixels of the window); the H
    padding belongs to the vertical stage and the W padding to the horizontal one (outputs
    beyond the image get the bias only)."""
    cin, rank = 2, 3
    layer = lrkernels.CPConv2d(
        np.ones((rank, cin)),
        np.ones((rank, 3)),
        np.ones((rank, 3)),
        np.ones((2, rank)),
        np.array([0.5, -1.0]),
        padding=(1, 2),
        layout=layout,
    )
    y = layer(np.ones(image_shape(1, cin, (3, 4), layout), F32))
    assert lrkernels.last_used_isa() == isa
    rows = np.array([2, 3, 2])
    cols = np.array([1, 2, 3, 3, 2, 1])
    counts = (rank * cin * np.outer(rows, cols)).astype(F32)
    expected = np.stack([counts + 0.5, counts - 1.0])[None]
    if layout == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)
    check_output_array(y, expected.shape)
    np.testing.assert_array_equal(y, expected)


def test_impulse_response_orientation(isa, layout):
    """One input pixel set to 1: the output is the kernel vertical[y] * horizontal[x] flipped
    (cross-correlation), vertical along H and horizontal along W, exactly."""
    vertical = np.array([[1.0, 2.0, 3.0]])
    horizontal = np.array([[1.0, 10.0, 100.0, 1000.0, 10000.0]])
    layer = lrkernels.CPConv2d(
        [[1.0]], vertical, horizontal, [[1.0]], padding=(1, 2), layout=layout
    )
    x = np.zeros((5, 7), F32)
    x[2, 3] = 1.0
    y = layer(x[None, None] if layout == "NCHW" else x[None, :, :, None])
    assert lrkernels.last_used_isa() == isa
    expected = np.zeros((5, 7), F32)
    for i in range(1, 4):
        for j in range(1, 6):
            expected[i, j] = vertical[0, 3 - i] * horizontal[0, 5 - j]
    check_output_array(y, (1, 1, 5, 7) if layout == "NCHW" else (1, 5, 7, 1))
    np.testing.assert_array_equal(y.reshape(5, 7), expected)


def test_no_bias_zero_input_gives_zero(isa, layout):
    layer = lrkernels.CPConv2d(
        np.ones((17, 3)), np.ones((17, 3)), np.ones((17, 5)), np.ones((9, 17)), padding=2,
        layout=layout,
    )
    assert layer.bias is None
    y = layer(np.zeros(image_shape(3, 3, (5, 4), layout)))
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, image_shape(3, 9, (7, 4), layout))
    np.testing.assert_array_equal(y, np.zeros_like(y))


def test_properties(rng):
    f = rng.standard_normal((3, 7))
    v = rng.standard_normal((3, 1))
    h = rng.standard_normal((3, 5))
    la = rng.standard_normal((4, 3))
    b = rng.standard_normal(4)
    layer = lrkernels.CPConv2d(
        f, v, h, la, b, stride=(1, 2), padding=(2, 0), dilation=3, layout="NHWC"
    )
    assert (layer.in_channels, layer.out_channels, layer.rank) == (7, 4, 3)
    assert type(layer.rank) is int
    assert layer.kernel_size == (1, 5)
    assert layer.stride == (1, 2)
    assert layer.padding == (2, 0)
    assert layer.dilation == (3, 3)
    assert layer.layout == "NHWC"
    for name in ("kernel_size", "stride", "padding", "dilation"):
        value = getattr(layer, name)
        assert isinstance(value, tuple) and len(value) == 2, (name, value)
        assert all(type(v) is int for v in value), (name, value)
    for name, src in [("first", f), ("vertical", v), ("horizontal", h), ("last", la), ("bias", b)]:
        a = getattr(layer, name)
        assert isinstance(a, np.ndarray) and a.dtype == F32 and a.shape == src.shape, name
        np.testing.assert_array_equal(a, src.astype(F32), name)
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a[...] = 0.0
        with pytest.raises(ValueError):
            a.setflags(write=True)
        with pytest.raises(AttributeError):
            setattr(layer, name, src)
    scalars = ("in_channels", "out_channels", "rank", "kernel_size", "stride", "padding")
    for name in scalars + ("dilation", "layout"):
        with pytest.raises(AttributeError):
            setattr(layer, name, getattr(layer, name))
    text = repr(layer)
    assert text.startswith("CPConv2d(") and "rank=3" in text and "NHWC" in text, text


def test_property_defaults_and_no_bias():
    layer = lrkernels.CPConv2d(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), np.ones((5, 2)))
    assert layer.bias is None
    assert layer.stride == (1, 1) and layer.padding == (0, 0) and layer.dilation == (1, 1)
    assert layer.layout == "NCHW"
    assert (layer.in_channels, layer.out_channels, layer.rank) == (3, 5, 2)
    assert layer.kernel_size == (3, 3)
    layer = lrkernels.CPConv2d(
        np.ones((1, 1)), np.ones((1, 3)), np.ones((1, 1)), np.ones((1, 1)), None,
        stride=[2, 3], padding=1, dilation=np.int64(2),
    )
    assert layer.bias is None
    assert layer.stride == (2, 3) and layer.padding == (1, 1) and layer.dilation == (2, 2)
    assert layer.rank == 1 and layer.kernel_size == (3, 1)


def test_weights_are_copied(isa, rng):
    arrays = [
        rng.standard_normal(s).astype(F32) for s in [(3, 4), (3, 3), (3, 2), (5, 3), (5,)]
    ]
    copies = [a.copy() for a in arrays]
    layer = lrkernels.CPConv2d(*arrays, padding=1)
    x = make_image(rng, 2, 4, (5, 5))
    y0 = layer(x)
    for a in arrays:
        a[...] = 3.0
    for name, a0, a in zip(("first", "vertical", "horizontal", "last", "bias"), copies, arrays):
        np.testing.assert_array_equal(getattr(layer, name), a0, name)
        assert not np.shares_memory(getattr(layer, name), a), name
    np.testing.assert_array_equal(layer(x), y0)


def test_isa_switch_after_construction(rng):
    """A layer built under one ISA runs correctly under every other."""
    previous = lrkernels.get_isa()
    results = Cases()
    try:
        for built in lrkernels.available_isas():
            lrkernels.set_isa(built)
            for layout in LAYOUTS:
                case = C(3, 19, 67, (7, 6), (3, 3), padding=1, rank=33)
                m = _model(rng, case, layout)
                for run in lrkernels.available_isas():
                    lrkernels.set_isa(run)
                    with results.case(f"built={built} run={run} layout={layout}"):
                        m.check(make_image(rng, 3, 19, (7, 6), layout), run)
    finally:
        lrkernels.set_isa(previous)
    results.check()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _ones(shape, dtype=F32):
    return np.ones(shape, dtype=dtype)


def _factors(cin=4, rank=2, cout=3, k=(3, 3)):
    return {
        "first": _ones((rank, cin)),
        "vertical": _ones((rank, k[0])),
        "horizontal": _ones((rank, k[1])),
        "last": _ones((cout, rank)),
        "bias": _ones(cout),
    }


@pytest.mark.parametrize(
    "layout, x_shape",
    [
        ("NCHW", (2, 3, 5, 5)),  # 3 channels, first expects 4
        ("NCHW", (2, 5, 5, 4)),  # an NHWC image given to an NCHW layer
        ("NHWC", (2, 5, 5, 3)),
        ("NHWC", (2, 4, 5, 5)),  # an NCHW image given to an NHWC layer
        ("NCHW", (4, 5, 5)),
        ("NHWC", (5, 5, 4)),
        ("NCHW", (1, 2, 4, 5, 5)),
        ("NHWC", (1, 2, 4, 5, 5)),
        ("NCHW", (1, 4, 1, 1)),  # 3x3 kernel on a 1x1 input without padding: output 0x0
        ("NHWC", (1, 1, 1, 4)),
        ("NCHW", (1, 4, 5, 2)),  # output width 0
        ("NHWC", (3, 2, 9, 4)),  # output height 0
    ],
)
def test_x_bad_shape(layout, x_shape):
    layer = lrkernels.CPConv2d(**_factors(), layout=layout)
    with pytest.raises(ValueError) as exc_info:
        layer(_ones(x_shape))
    msg = str(exc_info.value)
    assert str(x_shape) in msg, msg
    y = layer(_ones(image_shape(1, 4, (3, 3), layout)))  # still usable: 1 + R Cin 9 = 73
    np.testing.assert_array_equal(y, np.full(image_shape(1, 3, (1, 1), layout), 73.0, F32))


@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.uint8, bool, np.complex64, np.complex128, object], ids=str
)
def test_x_bad_dtype(dtype):
    layer = lrkernels.CPConv2d(**_factors())
    with pytest.raises(TypeError) as exc_info:
        layer(np.ones((1, 4, 3, 3), dtype=dtype))
    assert np.dtype(dtype).name in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "changes, shape_texts",
    [
        ({"first": _ones((4,))}, ["(4,)"]),
        ({"first": _ones((2, 4, 1, 1))}, ["(2, 4, 1, 1)"]),
        ({"vertical": _ones((3,))}, ["(3,)"]),
        ({"vertical": _ones((2, 3, 1))}, ["(2, 3, 1)"]),
        ({"horizontal": _ones((2, 1, 3))}, ["(2, 1, 3)"]),
        ({"horizontal": _ones(())}, ["horizontal", "()"]),
        ({"last": _ones((3, 2, 1, 1))}, ["(3, 2, 1, 1)"]),
        ({"last": _ones((3,))}, ["(3,)"]),
        ({"first": _ones((2, 0))}, ["(2, 0)"]),  # Cin = 0
        ({"vertical": _ones((2, 0))}, ["(2, 0)"]),  # kh = 0
        ({"horizontal": _ones((2, 0))}, ["(2, 0)"]),  # kw = 0
        ({"last": _ones((0, 2)), "bias": None}, ["(0, 2)"]),  # Cout = 0
        (
            {
                "first": _ones((0, 4)),
                "vertical": _ones((0, 3)),
                "horizontal": _ones((0, 3)),
                "last": _ones((3, 0)),
            },
            [("(0, 4)", "(0, 3)", "(3, 0)")],
        ),  # R = 0
        ({"first": _ones((3, 4))}, ["(3, 4)", "(2, 3)", "(3, 2)"]),  # R of first
        ({"vertical": _ones((3, 3))}, ["(3, 3)", "(2, 4)", "(2, 3)", "(3, 2)"]),
        ({"horizontal": _ones((1, 5))}, ["(1, 5)", "(2, 4)", "(2, 3)", "(3, 2)"]),
        ({"last": _ones((3, 5))}, ["(3, 5)", "(2, 4)", "(2, 3)"]),
        ({"vertical": _ones((3, 2)), "horizontal": _ones((3, 2))}, ["(3, 2)", "(2, 4)"]),
        ({"last": _ones((2, 3)), "bias": None}, ["(2, 3)", "(2, 4)"]),  # last transposed
        ({"vertical": _ones((3, 2))}, ["(3, 2)", "(2, 4)"]),  # vertical transposed (kh, R)
        ({"bias": _ones(2)}, ["(2,)"]),  # bias of length R
        ({"bias": _ones(4)}, ["(4,)"]),  # bias of length Cin
        ({"bias": _ones((1, 3))}, ["(1, 3)"]),
        ({"bias": _ones(0)}, ["(0,)"]),
    ],
    ids=[
        "first-1d",
        "first-4d",
        "vertical-1d",
        "vertical-3d",
        "horizontal-3d",
        "horizontal-0d",
        "last-4d",
        "last-1d",
        "cin-0",
        "kh-0",
        "kw-0",
        "cout-0",
        "rank-0",
        "first-rank",
        "vertical-rank",
        "horizontal-rank",
        "last-rank",
        "depthwise-rank",
        "last-transposed",
        "vertical-transposed",
        "bias-len-rank",
        "bias-len-cin",
        "bias-2d",
        "bias-empty",
    ],
)
def test_bad_factor_shapes(changes, shape_texts):
    args = _factors()
    args.update(changes)
    with pytest.raises(ValueError) as exc_info:
        lrkernels.CPConv2d(**args)
    msg = str(exc_info.value)
    for text in shape_texts:  # a tuple: any one of these shapes (which factor is named first)
        alternatives = text if isinstance(text, tuple) else (text,)
        assert any(t in msg for t in alternatives), f"{text!r} not in {msg!r}"


@pytest.mark.parametrize(
    "which, dtype",
    [
        (w, d)
        for w in ("first", "vertical", "horizontal", "last", "bias")
        for d in (np.int64, bool, np.complex64, np.complex128)
    ],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_bad_factor_dtypes(which, dtype):
    args = _factors()
    args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError) as exc_info:
        lrkernels.CPConv2d(**args)
    assert np.dtype(dtype).name in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"layout": "NCWH"}, "NCWH"),
        ({"layout": "nchw"}, "nchw"),
        ({"layout": ""}, "layout"),
        ({"layout": None}, "layout"),
        ({"padding": -1}, "padding"),
        ({"padding": (0, -2)}, "padding"),
        ({"stride": 0}, "stride"),
        ({"stride": (1, 0)}, "stride"),
        ({"stride": (1, -1)}, "stride"),
        ({"stride": (1, 2, 3)}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": (-1, 1)}, "dilation"),
        ({"dilation": (0, 2)}, "dilation"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_bad_geometry(kwargs, text):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.CPConv2d(**_factors(), **kwargs)
    assert text.lower() in str(exc_info.value).lower(), str(exc_info.value)


@pytest.mark.parametrize(
    "kwargs", [{"stride": 1.5}, {"padding": True}, {"dilation": "2"}, {"stride": (1, 2.0)}],
    ids=str,
)
def test_non_integer_geometry(kwargs):
    with pytest.raises(TypeError) as exc_info:
        lrkernels.CPConv2d(**_factors(), **kwargs)
    assert next(iter(kwargs)) in str(exc_info.value), str(exc_info.value)


def test_missing_arguments():
    f = _factors()
    with pytest.raises(TypeError):
        lrkernels.CPConv2d(f["first"], f["vertical"], f["horizontal"])
    with pytest.raises(TypeError):
        lrkernels.CPConv2d(f["first"], None, f["horizontal"], f["last"])
    with pytest.raises(TypeError):  # geometry is keyword-only
        lrkernels.CPConv2d(f["first"], f["vertical"], f["horizontal"], f["last"], f["bias"], 1)
    with pytest.raises(TypeError):
        lrkernels.CPConv2d(**f)(None)


# --------------------------------------------------------------------------------------------
# Scratch, threads
# --------------------------------------------------------------------------------------------


def test_no_per_call_scratch_growth(isa, layout, rng):
    """After a warm-up call, 20 more calls (and smaller batches) never grow the scratch."""
    case = C(3, 17, 33, (13, 11), (3, 3), padding=1, stride=(1, 2), rank=17)
    m = _model(rng, case, layout)
    x = make_image(rng, 3, 17, (13, 11), layout)

    def body():
        m.layer(x)
        c1 = _core._scratch_allocations()
        for _ in range(20):
            m.layer(x)
        c2 = _core._scratch_allocations()
        m.layer(x[:1])
        m.layer(x[1:3])
        return c1, c2, _core._scratch_allocations()

    c1, c2, c3 = run_in_thread(body)
    assert c2 == c1, f"20 repeated calls grew the scratch buffer {c2 - c1} times"
    assert c3 == c2, f"smaller batches after the warm-up grew the scratch buffer {c3 - c2} times"
    m.layer(x)
    before = _core._scratch_allocations()
    for _ in range(20):
        m.layer(x)
    assert _core._scratch_allocations() == before


@pytest.mark.parametrize("layout_", LAYOUTS)
def test_threads_share_one_layer(isa, rng, layout_):
    """4 threads call one CPConv2d at once on different inputs: every result is right."""
    case = C(1, 9, 17, (9, 6), (3, 3), padding=1, stride=(1, 2), rank=17)
    m = _model(rng, case, layout_)
    sizes = [(1, (9, 6)), (3, (5, 7)), (2, (13, 11)), (1, (1, 1))]
    inputs = [make_image(rng, n, 9, hw, layout_) for n, hw in sizes]
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
