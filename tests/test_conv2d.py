"""Conv2d: correctness on every available ISA and both layouts against the float64 reference;
properties, argument errors, scratch reuse and threads."""

from __future__ import annotations

import lrkernels
import numpy as np
import pytest

if not hasattr(lrkernels, "Conv2d"):
    pytest.skip("lrkernels.Conv2d is not in this build", allow_module_level=True)

from lrk_testing import (  # noqa: E402
    CONV_CHANNELS,
    LAYOUTS,
    Cases,
    ConvCase,
    assert_within_bound,
    blocking_configs,
    check_output_array,
    conv2d_bound,
    conv_sweep_cases,
    image_layouts,
    image_shape,
    make_conv2d,
    make_image,
    run_concurrently,
    run_in_thread,
)
from lrkernels import _core, reference  # noqa: E402

F32 = np.float32


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


def _model(rng, case: ConvCase, layout, **kwargs):
    return make_conv2d(
        rng,
        case.in_channels,
        case.out_channels,
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
# Geometry: kernels, strides, paddings, dilations, channels, sizes
# --------------------------------------------------------------------------------------------


def test_geometry_sweep(isa, layout, rng):
    """Kernels 1, 3, 5, 7, 1x3, 3x1, 3x5 x stride 1, 2, (1, 2) x dilation 1, 2 x padding 0,
    k//2, k//2 + 2, with channel counts, odd/1x1 sizes, batch 1/3 and bias cycling along."""
    _run_cases(rng, isa, layout, conv_sweep_cases())


def test_channels_around_tile_edges(isa, layout, rng):
    """Cin x Cout over the tile-edge channel counts, 3x3 'same' and 1x1 kernels."""
    couts = [1, 3, 8, 9, 16, 17, 31, 33, 64]
    cases = []
    for i, cin in enumerate(CONV_CHANNELS):
        for j, cout in enumerate(couts):
            k = (3, 3) if (i + j) % 3 else (1, 1)
            cases.append(
                ConvCase(
                    batch=1 + (i + j) % 2 * 2,
                    in_channels=cin,
                    out_channels=cout,
                    hw=[(5, 7), (9, 6), (4, 4)][(i + 2 * j) % 3],
                    kernel_size=k,
                    padding=k[0] // 2,
                    stride=2 if (i * j) % 4 == 1 else 1,
                    bias=(i + j) % 2 == 0,
                )
            )
    _run_cases(rng, isa, layout, cases)


def test_sizes_and_batches(isa, layout, rng):
    """1x1 inputs (padding makes the output >= 1), odd sizes, a dilated kernel exactly as large
    as the input, outputs that see only padding, larger images, batch 1 and 3."""
    C = ConvCase
    cases = [
        C(1, 3, 5, (1, 1), (3, 3), padding=1),
        C(3, 8, 9, (1, 1), (5, 5), padding=2),
        C(3, 17, 4, (1, 1), (1, 1)),
        C(1, 4, 7, (1, 1), (3, 3), stride=2, padding=3),
        C(1, 9, 16, (1, 1), (1, 1), padding=3, bias=False),  # outer rings are bias (here 0) only
        C(3, 9, 16, (1, 1), (1, 1), padding=(2, 1)),
        C(1, 5, 3, (5, 7), (3, 3)),
        C(3, 7, 15, (9, 6), (3, 3), padding=1),
        C(3, 16, 17, (13, 11), (5, 5), padding=2),
        C(1, 2, 3, (7, 7), (3, 3), dilation=3),  # the dilated kernel covers the input exactly
        C(1, 2, 3, (7, 9), (3, 5), dilation=(3, 2)),
        C(3, 6, 5, (3, 4), (1, 3), stride=(1, 2), padding=(0, 5)),
        C(1, 3, 8, (32, 29), (3, 3), stride=2, padding=1),
        C(3, 16, 33, (28, 28), (3, 3), padding=1),
        C(1, 33, 16, (19, 23), (7, 7), stride=2, padding=3),
        C(3, 8, 8, (6, 5), (7, 7), padding=(3, 4)),  # kernel larger than the input
        C(1, 3, 5, (4, 203), (3, 3), padding=1),  # a wide output row (> 96 pixels)
        C(3, 9, 17, (150, 3), (3, 1), stride=(2, 1), dilation=(3, 1)),  # tall and thin
        C(1, 300, 20, (5, 6), (3, 3), padding=1, stride=(1, 2)),  # long dot products
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
        C(3, 5, 9, (6, 7), (3, 3), padding=1, stride=(1, 2)),
        C(1, 16, 17, (5, 5), (1, 1), bias=False),
        C(3, 33, 8, (9, 6), (3, 5), padding=(2, 2), dilation=2),
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
    """Weights of any real float dtype and memory layout are converted to float32."""
    w64 = rng.standard_normal((6, 5, 3, 2))
    b64 = rng.standard_normal(6)
    variants = {
        "float64": (w64, b64),
        "float16": (w64.astype(np.float16), b64.astype(np.float16)),
        "Fortran": (np.asfortranarray(w64.astype(F32)), b64),
        "strided views": (np.repeat(w64, 2, axis=1)[:, ::2], np.repeat(b64, 2)[::2]),
        "transposed view": (np.ascontiguousarray(w64.transpose(3, 2, 1, 0)).T, b64),
        "negative strides": (w64[:, :, ::-1].copy()[:, :, ::-1], b64[::-1].copy()[::-1]),
        "lists": (w64.tolist(), b64.tolist()),
        "big-endian": (w64.astype(">f8"), b64.astype(">f4")),
    }
    x = make_image(rng, 3, 5, (6, 7), layout)
    geo = dict(stride=(2, 1), padding=1, dilation=(1, 2), layout=layout)
    results = Cases()
    for name, (w, b) in variants.items():
        with results.case(name):
            layer = lrkernels.Conv2d(w, b, **geo)
            np.testing.assert_array_equal(layer.weight, np.asarray(w).astype(F32))
            np.testing.assert_array_equal(layer.bias, np.asarray(b).astype(F32))
            y = layer(x)
            assert lrkernels.last_used_isa() == isa
            check_output_array(y, image_shape(3, 6, (3, 7), layout), name)
            assert_within_bound(
                y, reference.conv2d(x, w, b, **geo), conv2d_bound(x, w, b, **geo), name
            )
    results.check()


# --------------------------------------------------------------------------------------------
# Blocked paths
# --------------------------------------------------------------------------------------------


def test_blocked_paths(isa, tile, blocking, layout, rng):
    """Small cache blocks (`_set_blocking`): channels, Cin kh kw and pixels cross several blocks."""
    mr, nr = tile.mr, tile.nr
    C = ConvCase
    cases = [
        C(3, 7, 2 * nr + 3, (9, 6), (3, 3), padding=1),
        C(1, 17, nr - 1, (13, 11), (3, 5), stride=2, padding=(1, 2), dilation=(2, 1)),
        C(3, 33, 3 * nr + 1, (5, 7), (1, 1), bias=False),
        C(1, 1, 1, (1, 1), (3, 3), padding=1),
        C(1, 9, nr, (2 * mr + 1, 3), (5, 5), padding=2),
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
    m = _model(rng, ConvCase(3, 4, 5, (6, 7), (3, 3), padding=1), layout)
    x = make_image(rng, 3, 4, (6, 7), layout)
    y1 = m.check(x, isa)
    y2 = m.layer(x)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y1, y2)  # deterministic
    y1[...] = 1234.0
    np.testing.assert_array_equal(m.layer(x), y2)


def test_known_values(isa, layout):
    """Exactly representable sums: an all-ones 3x3 kernel counts the in-range pixels."""
    layer = lrkernels.Conv2d(np.ones((2, 1, 3, 3)), np.array([0.0, 10.0]), padding=1, layout=layout)
    x = np.ones(image_shape(1, 1, (3, 4), layout), F32)
    y = layer(x)
    assert lrkernels.last_used_isa() == isa
    counts = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]], F32)
    expected = np.stack([counts, counts + 10])[None]  # NCHW
    if layout == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(y, expected)
    # Cross-correlation, not convolution: the kernel is not flipped.
    w = np.zeros((1, 1, 3, 3), F32)
    w[0, 0, 0, 0] = 1.0  # picks the pixel up-left of the output position
    x = np.arange(12, dtype=F32).reshape(3, 4)
    shift = lrkernels.Conv2d(w, padding=1, layout=layout)
    y = shift(x.reshape(image_shape(1, 1, (3, 4), layout)))
    expected = np.zeros((3, 4), F32)
    expected[1:, 1:] = x[:-1, :-1]
    np.testing.assert_array_equal(y.reshape(3, 4), expected)


def test_no_bias_zero_input_gives_zero(isa, layout):
    layer = lrkernels.Conv2d(np.ones((17, 3, 3, 3)), padding=2, dilation=2, layout=layout)
    assert layer.bias is None
    y = layer(np.zeros(image_shape(3, 3, (5, 4), layout)))
    assert lrkernels.last_used_isa() == isa
    check_output_array(y, image_shape(3, 17, (5, 4), layout))
    np.testing.assert_array_equal(y, np.zeros_like(y))


def test_nan_propagates_only_to_its_window(isa):
    layer = lrkernels.Conv2d(np.ones((2, 1, 3, 3)), padding=1)
    x = np.zeros((1, 1, 7, 7), F32)
    x[0, 0, 3, 3] = np.nan
    y = layer(x)
    assert lrkernels.last_used_isa() == isa
    nan = np.zeros((7, 7), bool)
    nan[2:5, 2:5] = True
    for o in range(2):
        np.testing.assert_array_equal(np.isnan(y[0, o]), nan)


def test_properties(rng):
    w = rng.standard_normal((5, 3, 2, 4))
    b = rng.standard_normal(5)
    layer = lrkernels.Conv2d(w, b, stride=(2, 1), padding=3, dilation=(1, 2), layout="NHWC")
    assert (layer.in_channels, layer.out_channels) == (3, 5)
    assert layer.kernel_size == (2, 4)
    assert layer.stride == (2, 1)
    assert layer.padding == (3, 3)
    assert layer.dilation == (1, 2)
    assert layer.layout == "NHWC"
    for name in ("kernel_size", "stride", "padding", "dilation"):
        value = getattr(layer, name)
        assert isinstance(value, tuple) and all(type(v) is int for v in value), (name, value)
    for name, src in [("weight", w), ("bias", b)]:
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
    scalars = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")
    for name in scalars + ("layout",):
        with pytest.raises(AttributeError):
            setattr(layer, name, getattr(layer, name))
    np.testing.assert_array_equal(layer.weight, w.astype(F32))


def test_property_defaults_and_no_bias():
    layer = lrkernels.Conv2d(np.ones((4, 2, 3, 3), F32))
    assert layer.bias is None
    assert lrkernels.Conv2d(np.ones((4, 2, 3, 3)), None).bias is None
    assert layer.stride == (1, 1) and layer.padding == (0, 0) and layer.dilation == (1, 1)
    assert layer.layout == "NCHW"
    assert (layer.in_channels, layer.out_channels, layer.kernel_size) == (2, 4, (3, 3))
    layer = lrkernels.Conv2d(np.ones((4, 2, 1, 5)), stride=[3, 2], padding=(0, 2), dilation=2)
    assert layer.stride == (3, 2) and layer.padding == (0, 2) and layer.dilation == (2, 2)
    assert layer.kernel_size == (1, 5)


def test_weights_are_copied(isa, rng):
    w = rng.standard_normal((6, 3, 3, 3)).astype(F32)
    b = rng.standard_normal(6).astype(F32)
    w0, b0 = w.copy(), b.copy()
    layer = lrkernels.Conv2d(w, b, padding=1)
    x = make_image(rng, 2, 3, (5, 5))
    y0 = layer(x)
    w[...] = 0.0
    b[...] = 1.0
    np.testing.assert_array_equal(layer.weight, w0)
    np.testing.assert_array_equal(layer.bias, b0)
    np.testing.assert_array_equal(layer(x), y0)
    assert not np.shares_memory(layer.weight, w)


def test_isa_switch_after_construction(rng):
    """A layer built under one ISA runs correctly under every other."""
    previous = lrkernels.get_isa()
    results = Cases()
    try:
        for built in lrkernels.available_isas():
            lrkernels.set_isa(built)
            for layout in LAYOUTS:
                m = _model(rng, ConvCase(3, 19, 67, (7, 6), (3, 3), padding=1), layout)
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


@pytest.mark.parametrize(
    "layout, x_shape",
    [
        ("NCHW", (2, 3, 5, 5)),  # 3 channels, weight expects 4
        ("NCHW", (2, 5, 5, 4)),  # an NHWC image given to an NCHW layer
        ("NHWC", (2, 5, 5, 3)),
        ("NHWC", (2, 4, 5, 5)),  # an NCHW image given to an NHWC layer
        ("NCHW", (4, 5, 5)),  # ndim 3
        ("NCHW", (1, 2, 4, 5, 5)),  # ndim 5
        ("NHWC", (5, 4)),  # ndim 2
        ("NCHW", (1, 4, 1, 1)),  # 3x3 kernel on a 1x1 input without padding: output 0x0
        ("NHWC", (1, 1, 1, 4)),
        ("NCHW", (1, 4, 5, 2)),  # width too small only
        ("NHWC", (3, 2, 9, 4)),  # height too small only
    ],
)
def test_x_bad_shape(layout, x_shape):
    layer = lrkernels.Conv2d(_ones((3, 4, 3, 3)), _ones(3), layout=layout)
    with pytest.raises(ValueError) as exc_info:
        layer(_ones(x_shape))
    msg = str(exc_info.value)
    assert str(x_shape) in msg, msg
    # The layer is still usable afterwards.
    y = layer(_ones(image_shape(1, 4, (3, 3), layout)))
    np.testing.assert_array_equal(y, np.full(image_shape(1, 3, (1, 1), layout), 37.0, F32))


def test_x_too_small_for_the_dilated_kernel():
    layer = lrkernels.Conv2d(_ones((2, 1, 3, 3)), dilation=3)
    with pytest.raises(ValueError) as exc_info:
        layer(_ones((1, 1, 6, 7)))
    assert "(1, 1, 6, 7)" in str(exc_info.value), str(exc_info.value)
    assert layer(_ones((1, 1, 7, 7))).shape == (1, 2, 1, 1)  # exactly fits


@pytest.mark.parametrize(
    "dtype", [np.int64, np.int32, np.uint8, bool, np.complex64, np.complex128], ids=str
)
def test_x_bad_dtype(dtype):
    layer = lrkernels.Conv2d(_ones((3, 4, 3, 3)))
    with pytest.raises(TypeError) as exc_info:
        layer(np.ones((1, 4, 3, 3), dtype=dtype))
    assert np.dtype(dtype).name in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "weight, bias, shape_texts",
    [
        (_ones((3, 4, 3)), None, ["(3, 4, 3)"]),
        (_ones((3, 4)), None, ["(3, 4)"]),
        (_ones((1, 3, 4, 3, 3)), None, ["(1, 3, 4, 3, 3)"]),
        (np.array(1.0, F32), None, ["()"]),
        (_ones((0, 4, 3, 3)), None, ["(0, 4, 3, 3)"]),
        (_ones((3, 0, 3, 3)), None, ["(3, 0, 3, 3)"]),
        (_ones((3, 4, 0, 3)), None, ["(3, 4, 0, 3)"]),
        (_ones((3, 4, 3, 0)), None, ["(3, 4, 3, 0)"]),
        (_ones((3, 4, 3, 3)), _ones(4), ["(4,)"]),
        (_ones((3, 4, 3, 3)), _ones(2), ["(2,)"]),
        (_ones((3, 4, 3, 3)), _ones((1, 3)), ["(1, 3)"]),
        (_ones((3, 4, 3, 3)), _ones((3, 1)), ["(3, 1)"]),
        (_ones((3, 4, 3, 3)), np.array(1.0, F32), ["()"]),
        (_ones((3, 4, 3, 3)), _ones(0), ["(0,)"]),
    ],
    ids=[
        "weight-3d",
        "weight-2d",
        "weight-5d",
        "weight-0d",
        "weight-no-cout",
        "weight-no-cin",
        "weight-kh0",
        "weight-kw0",
        "bias-len-cin",
        "bias-len-2",
        "bias-2d-row",
        "bias-2d-col",
        "bias-0d",
        "bias-empty",
    ],
)
def test_bad_weight_shapes(weight, bias, shape_texts):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.Conv2d(weight, bias)
    msg = str(exc_info.value)
    for text in shape_texts:
        assert text in msg, f"{text!r} not in {msg!r}"


@pytest.mark.parametrize(
    "which, dtype",
    [(w, d) for w in ("weight", "bias") for d in (np.int64, bool, np.complex64, np.complex128)],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_bad_weight_dtypes(which, dtype):
    args = {"weight": _ones((3, 4, 3, 3)), "bias": _ones(3)}
    args[which] = args[which].astype(dtype)
    with pytest.raises(TypeError) as exc_info:
        lrkernels.Conv2d(**args)
    assert np.dtype(dtype).name in str(exc_info.value), str(exc_info.value)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"layout": "NCWH"}, "NCWH"),
        ({"layout": "CHWN"}, "CHWN"),
        ({"layout": ""}, "layout"),
        ({"padding": -1}, "padding"),
        ({"padding": (0, -2)}, "padding"),
        ({"padding": (-1, 0)}, "padding"),
        ({"stride": 0}, "stride"),
        ({"stride": -1}, "stride"),
        ({"stride": (1, 0)}, "stride"),
        ({"stride": (-2, 1)}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": -2}, "dilation"),
        ({"dilation": (1, 0)}, "dilation"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_bad_geometry(kwargs, text):
    with pytest.raises(ValueError) as exc_info:
        lrkernels.Conv2d(_ones((3, 4, 3, 3)), **kwargs)
    assert text.lower() in str(exc_info.value).lower(), str(exc_info.value)


def test_bad_pair_length():
    for kwargs in ({"stride": (1, 2, 3)}, {"padding": (1,)}, {"dilation": ()}):
        with pytest.raises((TypeError, ValueError)):
            lrkernels.Conv2d(_ones((3, 4, 3, 3)), **kwargs)


def test_missing_arguments():
    with pytest.raises(TypeError):
        lrkernels.Conv2d()
    with pytest.raises(TypeError):
        lrkernels.Conv2d(None)
    with pytest.raises(TypeError):
        lrkernels.Conv2d(_ones((3, 4, 3, 3)))(None)


# --------------------------------------------------------------------------------------------
# Scratch, threads
# --------------------------------------------------------------------------------------------


def test_no_per_call_scratch_growth(isa, layout, rng):
    """After a warm-up call, 20 more calls (and smaller batches) never grow the scratch."""
    m = _model(rng, ConvCase(3, 17, 33, (13, 11), (3, 3), padding=1, stride=(1, 2)), layout)
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


def test_threads_share_one_layer(isa, rng):
    m = _model(rng, ConvCase(1, 9, 17, (9, 6), (3, 3), padding=1), "NHWC")
    sizes = [(1, (9, 6)), (3, (5, 7)), (2, (13, 11)), (1, (1, 1))]
    inputs = [make_image(rng, n, 9, hw, "NHWC") for n, hw in sizes]
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
