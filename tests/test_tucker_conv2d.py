"""TuckerConv2d (1x1 Cin->R_in, kxk R_in->R_out, 1x1 R_out->Cout + bias): correctness on every
available ISA and both layouts against the float64 reference; properties, argument errors,
scratch reuse and threads."""

from __future__ import annotations

import lrkernels
import numpy as np
import pytest

if not hasattr(lrkernels, "TuckerConv2d"):
    pytest.skip("lrkernels.TuckerConv2d is not in this build", allow_module_level=True)

from lrk_testing import (  # noqa: E402
    CONV_CHANNELS,
    LAYOUTS,
    Cases,
    ConvCase,
    assert_within_bound,
    blocking_configs,
    check_output_array,
    conv_sweep_cases,
    image_layouts,
    image_shape,
    make_image,
    make_tucker_conv2d,
    run_concurrently,
    run_in_thread,
    tucker_conv2d_bound,
)
from lrkernels import _core, reference  # noqa: E402

F32 = np.float32


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


def _model(rng, case: ConvCase, layout, **kwargs):
    return make_tucker_conv2d(
        rng,
        case.in_channels,
        case.out_channels,
        case.ranks,
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


# --------------------------------------------------------------------------------------------
# Geometry and ranks
# --------------------------------------------------------------------------------------------


def test_geometry_sweep(isa, layout, rng):
    """Kernels 1, 3, 5, 7, 1x3, 3x1, 3x5 x stride 1, 2, (1, 2) x dilation 1, 2 x padding 0,
    k//2, k//2 + 2, with ranks (1, 3, 5, 17, ...), channels, sizes, batch and bias cycling."""
    _run_cases(rng, isa, layout, conv_sweep_cases())


def test_ranks_and_channels(isa, layout, rng):
    """Every (R_in, R_out) of 1, 3, 5, 17 (and tile-sized 8, 16, 33) against tile-edge channels."""
    ranks = [1, 3, 5, 17, 8, 16, 33]
    couts = [1, 7, 9, 16, 17, 33, 64]
    cases = []
    i = 0
    for r_in in ranks:
        for r_out in ranks:
            k = [(3, 3), (1, 1), (3, 5), (5, 5)][i % 4]
            cases.append(
                ConvCase(
                    batch=1 + (i % 3 == 1) * 2,
                    in_channels=CONV_CHANNELS[i % len(CONV_CHANNELS)],
                    out_channels=couts[(3 * i + 1) % len(couts)],
                    hw=[(5, 7), (9, 6), (6, 6), (1, 1)][(i // 4) % 4],
                    kernel_size=k,
                    padding=(k[0] // 2, k[1] // 2),
                    stride=(1, 2, (1, 2))[i % 3],
                    bias=i % 4 != 3,
                    ranks=(r_in, r_out),
                )
            )
            i += 1
    _run_cases(rng, isa, layout, cases)


def test_sizes_and_batches(isa, layout, rng):
    """1x1 inputs (padding makes the output >= 1), odd sizes, an output ring that sees only the
    padding of the 1x1 stage, a dilated kernel exactly as large as the input, larger images."""
    C = ConvCase
    cases = [
        C(1, 3, 5, (1, 1), (3, 3), padding=1, ranks=(1, 1)),
        C(3, 8, 9, (1, 1), (5, 5), padding=2, ranks=(3, 17)),
        C(3, 17, 4, (1, 1), (1, 1), ranks=(5, 3)),
        C(1, 9, 16, (1, 1), (1, 1), padding=3, bias=False, ranks=(3, 3)),  # zeros ring
        C(3, 9, 16, (2, 1), (3, 3), padding=(3, 2), ranks=(17, 5)),
        C(1, 5, 3, (5, 7), (3, 3), ranks=(5, 5)),
        C(3, 7, 15, (9, 6), (3, 3), padding=1, ranks=(3, 1)),
        C(3, 16, 17, (13, 11), (5, 5), padding=2, ranks=(8, 9)),
        C(1, 2, 3, (7, 7), (3, 3), dilation=3, ranks=(1, 17)),
        C(1, 2, 3, (7, 9), (3, 5), dilation=(3, 2), ranks=(2, 2)),
        C(1, 3, 8, (32, 29), (3, 3), stride=2, padding=1, ranks=(3, 5)),
        C(3, 64, 64, (16, 16), (3, 3), padding=1, ranks=(17, 31)),
        C(1, 33, 16, (19, 23), (7, 7), stride=2, padding=3, ranks=(5, 3)),
        C(3, 8, 8, (6, 5), (7, 7), padding=(3, 4), ranks=(3, 5)),  # kernel larger than input
        C(1, 4, 6, (5, 5), (3, 3), padding=1, ranks=(9, 2)),  # R_in > Cin
        C(1, 3, 2, (5, 5), (3, 3), padding=1, ranks=(7, 11)),  # ranks > Cin, Cout
        C(1, 3, 5, (4, 203), (3, 3), padding=1, ranks=(3, 5)),  # a wide output row (> 96 pixels)
        C(3, 9, 17, (150, 3), (3, 1), stride=(2, 1), dilation=(3, 1), ranks=(5, 3)),  # tall
        C(1, 300, 20, (5, 6), (3, 3), padding=1, stride=(1, 2), ranks=(64, 33)),  # long sums
    ]
    _run_cases(rng, isa, layout, cases)


def test_batch_zero(isa, layout, rng):
    """An empty batch gives an empty float32 result of the right shape (as for Linear)."""
    m = _model(rng, ConvCase(1, 4, 6, (5, 7), (3, 3), stride=2, padding=1), layout)
    for dtype in (F32, np.float64):
        y = m.layer(np.empty(image_shape(0, 4, (5, 7), layout), dtype))
        check_output_array(y, image_shape(0, 6, (3, 4), layout), f"batch 0 {dtype.__name__}")


def test_input_layouts_and_dtypes(isa, layout, rng):
    """float64/float16/longdouble, strided views (x[..., ::2]), channel slices, transposed-view
    layouts, negative strides, broadcast, unaligned and big-endian data."""
    C = ConvCase
    cases = [
        C(3, 5, 9, (6, 7), (3, 3), padding=1, stride=(1, 2), ranks=(3, 5)),
        C(1, 16, 17, (5, 5), (1, 1), bias=False, ranks=(1, 17)),
        C(3, 33, 8, (9, 6), (3, 5), padding=(2, 2), dilation=2, ranks=(17, 3)),
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
    f64 = rng.standard_normal((3, 5))
    c64 = rng.standard_normal((4, 3, 3, 2))
    l64 = rng.standard_normal((6, 4))
    b64 = rng.standard_normal(6)
    variants = {
        "float64": (f64, c64, l64, b64),
        "float16": tuple(a.astype(np.float16) for a in (f64, c64, l64, b64)),
        "Fortran": (
            np.asfortranarray(f64),
            np.asfortranarray(c64.astype(F32)),
            np.asfortranarray(l64),
            b64,
        ),
        "strided views": (
            np.repeat(f64, 2, axis=1)[:, ::2],
            np.repeat(c64, 3, axis=0)[::3],
            np.repeat(l64, 2, axis=0)[::2],
            np.repeat(b64, 2)[::2],
        ),
        "negative strides": (
            f64[::-1].copy()[::-1],
            c64[..., ::-1].copy()[..., ::-1],
            l64[:, ::-1].copy()[:, ::-1],
            b64[::-1].copy()[::-1],
        ),
        "lists": tuple(a.tolist() for a in (f64, c64, l64, b64)),
        "big-endian": (f64.astype(">f8"), c64.astype(">f4"), l64.astype(">f8"), b64),
    }
    x = make_image(rng, 3, 5, (6, 7), layout)
    geo = dict(stride=(2, 1), padding=1, dilation=(1, 2), layout=layout)
    results = Cases()
    for name, (f, c, la, b) in variants.items():
        with results.case(name):
            layer = lrkernels.TuckerConv2d(f, c, la, b, **geo)
            for prop, src in [("first", f), ("core", c), ("last", la), ("bias", b)]:
                np.testing.assert_array_equal(
                    getattr(layer, prop), np.asarray(src).astype(F32), prop
                )
            y = layer(x)
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, image_shape(3, 6, (3, 7), layout), name)
            assert_within_bound(
                y,
                reference.tucker_conv2d(x, f, c, la, b, **geo),
                tucker_conv2d_bound(x, f, c, la, b, **geo),
                name,
            )
    results.check()


# --------------------------------------------------------------------------------------------
# Blocked paths
# --------------------------------------------------------------------------------------------


def test_blocked_paths(isa, tile, blocking, layout, rng):
    """Small cache blocks (`_set_blocking`): channels, ranks and pixels cross several blocks."""
    mr, nr = tile.mr, tile.nr
    C = ConvCase
    cases = [
        C(3, 7, 2 * nr + 3, (9, 6), (3, 3), padding=1, ranks=(2 * nr + 1, 5)),
        C(1, 23, nr - 1, (13, 11), (3, 5), 2, (1, 2), (2, 1), ranks=(17, nr + 1)),
        C(3, 33, 3 * nr + 1, (5, 7), (1, 1), bias=False, ranks=(3, 3 * nr + 1)),
        C(1, 1, 1, (1, 1), (3, 3), padding=1, ranks=(1, 1)),
        C(1, 9, nr, (2 * mr + 1, 3), (5, 5), padding=2, ranks=(nr, 2 * nr)),
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
    m = _model(rng, ConvCase(3, 4, 5, (6, 7), (3, 3), padding=1, ranks=(3, 2)), layout)
    x = make_image(rng, 3, 4, (6, 7), layout)
    y1 = m.check(x, isa)
    y2 = m.layer(x)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)  # deterministic
    y1[...] = 1234.0
    np.testing.assert_array_equal(m.layer(x), y2)


def test_known_values(isa, layout):
    """All-ones factors: y = bias + R_in R_out Cin (number of in-range pixels of the window);
    the padding belongs to the middle stage (outputs beyond the image get the bias only)."""
    cin, r_in, r_out = 2, 3, 2
    layer = lrkernels.TuckerConv2d(
        np.ones((r_in, cin)),
        np.ones((r_out, r_in, 3, 3)),
        np.ones((2, r_out)),
        np.array([0.5, -1.0]),
        padding=(1, 2),
        layout=layout,
    )
    y = layer(np.ones(image_shape(1, cin, (3, 4), layout), F32))
    assert lrkernels.last_used_isa() == isa
    rows = np.array([2, 3, 2])
    cols = np.array([1, 2, 3, 3, 2, 1])
    counts = (r_in * r_out * cin * np.outer(rows, cols)).astype(F32)
    expected = np.stack([counts + 0.5, counts - 1.0])[None]
    if layout == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)
    check_output_array(y, expected.shape)
    np.testing.assert_array_equal(y, expected)


def test_no_bias_zero_input_gives_zero(isa, layout):
    layer = lrkernels.TuckerConv2d(
        np.ones((5, 3)), np.ones((17, 5, 3, 3)), np.ones((9, 17)), padding=2, layout=layout
    )
    assert layer.bias is None
    y = layer(np.zeros(image_shape(3, 3, (5, 4), layout)))
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, image_shape(3, 9, (7, 6), layout))
    np.testing.assert_array_equal(y, np.zeros_like(y))


def test_properties(rng):
    f = rng.standard_normal((3, 7))
    c = rng.standard_normal((5, 3, 1, 3))
    la = rng.standard_normal((4, 5))
    b = rng.standard_normal(4)
    layer = lrkernels.TuckerConv2d(
        f, c, la, b, stride=(1, 2), padding=(2, 0), dilation=3, layout="NHWC"
    )
    assert (layer.in_channels, layer.out_channels) == (7, 4)
    assert layer.ranks == (3, 5)
    assert layer.kernel_size == (1, 3)
    assert layer.stride == (1, 2)
    assert layer.padding == (2, 0)
    assert layer.dilation == (3, 3)
    assert layer.layout == "NHWC"
    for name in ("ranks", "kernel_size", "stride", "padding", "dilation"):
        value = getattr(layer, name)
        assert isinstance(value, tuple) and all(type(v) is int for v in value), (name, value)
    for name, src in [("first", f), ("core", c), ("last", la), ("bias", b)]:
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
    scalars = ("in_channels", "out_channels", "ranks", "kernel_size", "stride", "padding")
    for name in scalars + ("dilation", "layout"):
        with pytest.raises(AttributeError):
            setattr(layer, name, getattr(layer, name))
    np.testing.assert_array_equal(layer.core, c.astype(F32))


def test_property_defaults_and_no_bias():
    layer = lrkernels.TuckerConv2d(np.ones((2, 3)), np.ones((4, 2, 3, 3)), np.ones((5, 4)))
    assert layer.bias is None
    assert layer.stride == (1, 1) and layer.padding == (0, 0) and layer.dilation == (1, 1)
    assert layer.layout == "NCHW"
    assert (layer.in_channels, layer.out_channels, layer.ranks) == (3, 5, (2, 4))
    layer = lrkernels.TuckerConv2d(
        np.ones((1, 1)), np.ones((1, 1, 3, 3)), np.ones((1, 1)), None, stride=[2, 3], padding=1
    )
    assert layer.bias is None
    assert layer.stride == (2, 3) and layer.padding == (1, 1) and layer.ranks == (1, 1)


def test_weights_are_copied(isa, rng):
    arrays = [
        rng.standard_normal(s).astype(F32) for s in [(3, 4), (2, 3, 3, 3), (5, 2), (5,)]
    ]
    copies = [a.copy() for a in arrays]
    layer = lrkernels.TuckerConv2d(*arrays, padding=1)
    x = make_image(rng, 2, 4, (5, 5))
    y0 = layer(x)
    for a in arrays:
        a[...] = 3.0
    for name, a0, a in zip(("first", "core", "last", "bias"), copies, arrays):
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
                case = ConvCase(3, 19, 67, (7, 6), (3, 3), padding=1, ranks=(17, 33))
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


def _factors(cin=4, r_in=2, r_out=5, cout=3, k=(3, 3)):
    return {
        "first": _ones((r_in, cin)),
        "core": _ones((r_out, r_in) + k),
        "last": _ones((cout, r_out)),
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
        ("NHWC", (1, 2, 4, 5, 5)),
        ("NCHW", (1, 4, 1, 1)),  # 3x3 core on a 1x1 input without padding: output 0x0
        ("NHWC", (1, 1, 1, 4)),
        ("NCHW", (1, 4, 5, 2)),
        ("NHWC", (3, 2, 9, 4)),
    ],
)
def test_x_bad_shape(layout, x_shape):
    layer = lrkernels.TuckerConv2d(**_factors(), layout=layout)
    with pytest.raises(ValueError) as exc_info:
        layer(_ones(x_shape))
    msg = str(exc_info.value)
    assert str(x_shape) in msg, msg
    y = layer(_ones(image_shape(1, 4, (3, 3), layout)))  # still usable: 1 + 2*5*4*9 = 361
    np.testing.assert_array_equal(y, np.full(image_shape(1, 3, (1, 1), layout), 361.0, F32))


@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.uint8, bool, np.complex64, np.complex128], ids=str
)
def test_x_bad_dtype(dtype):
    layer = lrkernels.TuckerConv2d(**_factors())
    with pytest.raises(TypeError) as exc_info:
        layer(np.ones((1, 4, 3, 3), dtype=dtype))
    assert np.dtype(dtype).name in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "changes, shape_texts",
    [
        ({"first": _ones((4,))}, ["(4,)"]),
        ({"first": _ones((2, 4, 1, 1))}, ["(2, 4, 1, 1)"]),
        ({"core": _ones((5, 2, 3))}, ["(5, 2, 3)"]),
        ({"core": _ones((5, 2))}, ["(5, 2)"]),
        ({"last": _ones((3, 5, 1, 1))}, ["(3, 5, 1, 1)"]),
        ({"last": _ones((3,))}, ["(3,)"]),
        ({"first": _ones((2, 0))}, ["(2, 0)"]),  # Cin = 0
        ({"first": _ones((0, 4)), "core": _ones((5, 0, 3, 3))}, [("(0, 4)", "(5, 0, 3, 3)")]),
        ({"core": _ones((0, 2, 3, 3)), "last": _ones((3, 0))}, [("(0, 2, 3, 3)", "(3, 0)")]),
        ({"core": _ones((5, 2, 0, 3))}, ["(5, 2, 0, 3)"]),  # kh = 0
        ({"last": _ones((0, 5)), "bias": None}, ["(0, 5)"]),  # Cout = 0
        ({"first": _ones((3, 4))}, ["(3, 4)", "(5, 2, 3, 3)"]),  # R_in mismatch
        ({"core": _ones((5, 1, 3, 3))}, ["(2, 4)", "(5, 1, 3, 3)"]),  # R_in mismatch
        ({"last": _ones((3, 4))}, ["(5, 2, 3, 3)", "(3, 4)"]),  # R_out mismatch
        ({"core": _ones((6, 2, 3, 3))}, ["(6, 2, 3, 3)", "(3, 5)"]),  # R_out mismatch
        ({"last": _ones((5, 2)), "bias": None}, ["(5, 2)"]),  # last transposed
        ({"bias": _ones(5)}, ["(5,)"]),  # bias of length R_out
        ({"bias": _ones(4)}, ["(4,)"]),  # bias of length Cin
        ({"bias": _ones((1, 3))}, ["(1, 3)"]),
        ({"bias": _ones(0)}, ["(0,)"]),
    ],
    ids=[
        "first-1d",
        "first-4d",
        "core-3d",
        "core-2d",
        "last-4d",
        "last-1d",
        "cin-0",
        "r_in-0",
        "r_out-0",
        "kh-0",
        "cout-0",
        "first-core-rank",
        "core-first-rank",
        "core-last-rank",
        "last-core-rank",
        "last-transposed",
        "bias-len-r_out",
        "bias-len-cin",
        "bias-2d",
        "bias-empty",
    ],
)
def test_bad_factor_shapes(changes, shape_texts):
    args = _factors()
    args.update(changes)
    with pytest.raises(ValueError) as exc_info:
        lrkernels.TuckerConv2d(**args)
    msg = str(exc_info.value)
    for text in shape_texts:  # a tuple: any one of these shapes (which factor is named first)
        alternatives = text if isinstance(text, tuple) else (text,)
        assert any(t in msg for t in alternatives), f"{text!r} not in {msg!r}"


@pytest.mark.parametrize(
    "which, dtype",
    [
        (w, d)
        for w in ("first", "core", "last", "bias")
        for d in (np.int64, bool, np.complex64, np.complex128)
    ],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_bad_factor_dtypes(which, dtype):
    args = _factors()
    args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError) as exc_info:
        lrkernels.TuckerConv2d(**args)
    assert np.dtype(dtype).name in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"layout": "NCWH"}, "NCWH"),
        ({"layout": ""}, "layout"),
        ({"padding": -1}, "padding"),
        ({"padding": (0, -2)}, "padding"),
        ({"stride": 0}, "stride"),
        ({"stride": (1, -1)}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": (-1, 1)}, "dilation"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_bad_geometry(kwargs, text):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.TuckerConv2d(**_factors(), **kwargs)
    assert text.lower() in str(exc_info.value).lower(), str(exc_info.value)


def test_missing_arguments():
    f = _factors()
    with pytest.raises(TypeError):
        lrkernels.TuckerConv2d(f["first"], f["core"])
    with pytest.raises(TypeError):
        lrkernels.TuckerConv2d(f["first"], None, f["last"])
    with pytest.raises(TypeError):
        lrkernels.TuckerConv2d(**f)(None)


# --------------------------------------------------------------------------------------------
# Scratch, threads
# --------------------------------------------------------------------------------------------


def test_no_per_call_scratch_growth(isa, layout, rng):
    """After a warm-up call, 20 more calls (and smaller batches) never grow the scratch."""
    case = ConvCase(3, 17, 33, (13, 11), (3, 3), padding=1, stride=(1, 2), ranks=(9, 17))
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
    """4 threads call one TuckerConv2d at once on different inputs: every result is right."""
    case = ConvCase(1, 9, 17, (9, 6), (3, 3), padding=1, stride=(1, 2), ranks=(5, 17))
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
