"""The Winograd F(2x2, 3x3) kxk stage (algorithm="winograd") of Conv2d and TuckerConv2d: against
the float64 reference within the stated error bound (lrk_testing.winograd_conv2d_bound) on every
ISA, both layouts, shapes around the tile edges (odd and even output sizes, 1x1 maps, channel
counts around the transforms' SIMD blocks); the automatic choice; the argument checks; threads;
non-finite inputs; archives. The direct path's own sweeps are in test_conformance*.py."""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from lrk_testing import (
    LAYOUTS,
    assert_within_bound,
    raises,
    winograd_conv2d_bound,
    winograd_tucker_conv2d_bound,
)
from lrkernels import _core, reference

F32 = np.float32

# (cin, cout, h, w, padding): output sizes odd and even (the half-empty last tile row and
# column), 1x1 and 1xN maps, channel counts below, at and above the SIMD blocks of the
# transforms (4, 8, 16) and the micro-kernels' panel widths.
CONV_CASES = [
    (1, 1, 3, 3, 1),
    (3, 5, 1, 1, 1),
    (7, 9, 3, 4, 0),
    (8, 16, 5, 7, 1),
    (16, 17, 6, 6, 1),
    (17, 33, 7, 4, 2),
    (33, 31, 9, 14, 1),
    (40, 64, 3, 11, 0),
    (64, 48, 8, 9, 1),
]

# (cin, r_in, r_out, cout, h, w, padding)
TUCKER_CASES = [
    (4, 1, 1, 3, 3, 3, 1),
    (9, 8, 7, 5, 4, 5, 1),
    (16, 16, 17, 33, 7, 7, 1),
    (20, 33, 31, 9, 6, 10, 0),
    (48, 32, 40, 70, 9, 9, 1),
    (33, 17, 16, 40, 1, 5, 1),
]


def _image(rng, batch, c, h, w, layout):
    x = rng.standard_normal((batch, c, h, w)).astype(F32)
    return x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _to_nchw(y, layout):
    return y if layout == "NCHW" else y.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_winograd_matches_reference(isa, rng, layout, case):
    cin, cout, h, w, pad = case
    weight = rng.standard_normal((cout, cin, 3, 3)).astype(F32)
    bias = rng.standard_normal(cout).astype(F32)
    x = _image(rng, 2, cin, h, w, layout)
    layer = lrkernels.Conv2d(weight, bias, padding=pad, layout=layout, algorithm="winograd")
    assert layer.algorithm == "winograd"
    y = layer(x)
    assert lrkernels.last_used_isa() == isa
    ref = reference.conv2d(x.astype(np.float64), weight, bias, padding=pad, layout=layout)
    bound = winograd_conv2d_bound(x, weight, bias, pad, layout)
    assert_within_bound(y, ref, bound, f"Conv2d winograd {case} {layout} on {isa}")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", TUCKER_CASES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_tucker_winograd_matches_reference(isa, rng, layout, case, with_bias):
    cin, r_in, r_out, cout, h, w, pad = case
    first = rng.standard_normal((r_in, cin)).astype(F32)
    core = rng.standard_normal((r_out, r_in, 3, 3)).astype(F32)
    last = rng.standard_normal((cout, r_out)).astype(F32)
    bias = rng.standard_normal(cout).astype(F32) if with_bias else None
    x = _image(rng, 2, cin, h, w, layout)
    layer = lrkernels.TuckerConv2d(
        first, core, last, bias, padding=pad, layout=layout, algorithm="winograd"
    )
    y = layer(x)
    assert lrkernels.last_used_isa() == isa and layer.algorithm == "winograd"
    ref = reference.tucker_conv2d(
        x.astype(np.float64), first, core, last, bias, padding=pad, layout=layout
    )
    bound = winograd_tucker_conv2d_bound(x, first, core, last, bias, pad, layout)
    assert_within_bound(y, ref, bound, f"TuckerConv2d winograd {case} {layout} on {isa}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_activation_is_applied_after_the_output_transform(isa, rng, layout):
    cin, cout = 33, 40
    weight = rng.standard_normal((cout, cin, 3, 3)).astype(F32)
    bias = rng.standard_normal(cout).astype(F32)
    x = _image(rng, 1, cin, 7, 5, layout)
    for activation, lo, hi in [("relu", 0.0, np.inf), ((-1.0, 2.5), -1.0, 2.5)]:
        layer = lrkernels.Conv2d(
            weight, bias, padding=1, layout=layout, algorithm="winograd", activation=activation
        )
        y = layer(x)
        free = lrkernels.Conv2d(weight, bias, padding=1, layout=layout, algorithm="winograd")(x)
        np.testing.assert_array_equal(y, np.clip(free, lo, hi))


# The benchmark shapes (benchmarks/test_bench_conv.py): the stated accuracy of F(2x2, 3x3), max
# |y - y64| / max |y64| <= 1e-4 on Gaussian inputs and weights scaled like a trained layer's.
BENCH_SHAPES = [(64, 56, 16), (128, 28, 32), (256, 14, 64), (512, 7, 128)]


@pytest.mark.parametrize("shape", BENCH_SHAPES, ids=lambda s: f"{s[0]}ch{s[1]}r{s[2]}")
def test_winograd_relative_error_on_the_benchmark_shapes(rng, shape):
    c, hw, r = shape
    first = (rng.standard_normal((r, c)) / np.sqrt(c)).astype(F32)
    core = (rng.standard_normal((r, r, 3, 3)) / np.sqrt(9 * r)).astype(F32)
    last = (rng.standard_normal((c, r)) / np.sqrt(r)).astype(F32)
    x = rng.standard_normal((1, c, hw, hw)).astype(F32)
    y = lrkernels.TuckerConv2d(first, core, last, padding=1, algorithm="winograd")(x)
    ref = reference.tucker_conv2d(x.astype(np.float64), first, core, last, padding=1)
    assert np.abs(y - ref).max() / np.abs(ref).max() <= 1e-4
    dense = lrkernels.Conv2d(core, padding=1, algorithm="winograd")
    t = rng.standard_normal((1, r, hw, hw)).astype(F32)
    ref = reference.conv2d(t.astype(np.float64), core, padding=1)
    assert np.abs(dense(t) - ref).max() / np.abs(ref).max() <= 1e-4


def test_auto_picks_winograd_where_it_pays():
    ones = np.ones
    wide = lrkernels.Conv2d(ones((16, 16, 3, 3)), padding=1)
    assert wide.algorithm == "winograd"
    assert lrkernels.Conv2d(ones((32, 32, 3, 3)), padding=1, algorithm="direct").algorithm == (
        "direct"
    )
    # Below 16 channels on either side, other kernels, strides, dilations and precisions: direct.
    for weight, kw in [
        (ones((15, 64, 3, 3)), {}),
        (ones((64, 8, 3, 3)), {}),
        (ones((64, 64, 5, 5)), {}),
        (ones((64, 64, 3, 1)), {}),
        (ones((64, 64, 3, 3)), {"stride": 2}),
        (ones((64, 64, 3, 3)), {"dilation": 2}),
        (ones((64, 64, 3, 3)), {"precision": "fp16"}),
        (ones((64, 64, 3, 3)), {"precision": "int8"}),
    ]:
        assert lrkernels.Conv2d(weight, **kw).algorithm == "direct", kw
    tucker = lrkernels.TuckerConv2d(ones((32, 8)), ones((48, 32, 3, 3)), ones((8, 48)))
    assert tucker.algorithm == "winograd"
    small = lrkernels.TuckerConv2d(ones((12, 8)), ones((16, 12, 3, 3)), ones((8, 16)))
    assert small.algorithm == "direct"
    cp = lrkernels.CPConv2d(ones((4, 8)), ones((4, 3)), ones((4, 3)), ones((8, 4)))
    assert cp.algorithm == "direct"


@pytest.mark.parametrize(
    "weight_shape, kwargs, text",
    [
        ((8, 8, 5, 5), {}, "kernel (5, 5)"),
        ((8, 8, 3, 3), {"stride": (1, 2)}, "stride (1, 2)"),
        ((8, 8, 3, 3), {"dilation": 2}, "dilation (2, 2)"),
        ((8, 8, 3, 3), {"precision": "fp16"}, 'precision "fp16"'),
        ((8, 8, 3, 3), {"precision": "int8"}, 'precision "int8"'),
    ],
)
def test_winograd_where_it_does_not_apply_raises(weight_shape, kwargs, text):
    with raises(ValueError, 'algorithm="winograd"', text):
        lrkernels.Conv2d(np.ones(weight_shape, F32), algorithm="winograd", **kwargs)


def test_bad_algorithm_values_raise():
    w = np.ones((4, 4, 3, 3), F32)
    for bad in ["Winograd", "fast", "", 3, None]:
        with raises(ValueError, "algorithm must be", '"auto", "direct" or "winograd"'):
            lrkernels.Conv2d(w, algorithm=bad)
    with raises(ValueError, 'algorithm="winograd"', "no kxk core"):
        lrkernels.CPConv2d(
            np.ones((2, 4)), np.ones((2, 3)), np.ones((2, 3)), np.ones((4, 2)), algorithm="winograd"
        )
    with raises(TypeError, "unexpected keyword argument 'algorithm'"):
        lrkernels.Linear(np.ones((3, 4)), algorithm="direct")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_threads_give_bitwise_identical_outputs(rng, layout):
    """Every phase (input transform, the 16 GEMMs, output transform, the planar last stage) splits
    its work so that each output element is computed by one thread in one order."""
    c, r = 64, 48
    first = rng.standard_normal((r, c)).astype(F32)
    core = rng.standard_normal((r, r, 3, 3)).astype(F32)
    last = rng.standard_normal((c, r)).astype(F32)
    bias = rng.standard_normal(c).astype(F32)
    dense = rng.standard_normal((c, c, 3, 3)).astype(F32)
    layers = [
        lrkernels.TuckerConv2d(first, core, last, bias, padding=1, layout=layout),
        lrkernels.Conv2d(dense, bias, padding=1, layout=layout),
    ]
    assert all(layer.algorithm == "winograd" for layer in layers)
    previous = lrkernels.get_num_threads()
    try:
        for hw in [(7, 7), (14, 15), (30, 29)]:
            x = _image(rng, 2, c, *hw, layout)
            outputs = {}
            for threads in [1, 2, 3, 4]:
                lrkernels.set_num_threads(threads)
                outputs[threads] = [layer(x) for layer in layers]
            for threads in [2, 3, 4]:
                for a, b in zip(outputs[1], outputs[threads]):
                    np.testing.assert_array_equal(a, b, err_msg=f"{hw} threads={threads}")
    finally:
        lrkernels.set_num_threads(previous)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_finite_inputs_stay_in_their_receptive_field(rng, layout):
    """An inf or NaN pixel makes exactly the outputs whose 3x3 window covers it non-finite, as the
    direct algorithm does (the transforms mix a 4x4 tile, but an output's coefficients on pixels
    outside its window are structurally zero)."""
    c = 32
    weight = rng.standard_normal((c, c, 3, 3)).astype(F32)
    x = rng.standard_normal((1, c, 9, 8)).astype(F32)
    x[0, 3, 4, 5] = np.inf
    x[0, 7, 0, 0] = np.nan
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    wino = lrkernels.Conv2d(weight, padding=1, layout=layout, algorithm="winograd")(x)
    direct = lrkernels.Conv2d(weight, padding=1, layout=layout, algorithm="direct")(x)
    np.testing.assert_array_equal(np.isfinite(wino), np.isfinite(direct))
    assert not np.isfinite(wino).all()


def test_archive_keeps_the_algorithm(tmp_path, rng):
    w = rng.standard_normal((32, 32, 3, 3)).astype(F32)
    layers = {
        "forced_direct": lrkernels.Conv2d(w, padding=1, algorithm="direct"),
        "auto": lrkernels.Conv2d(w, padding=1),
    }
    path = tmp_path / "layers.lrk"
    lrkernels.save_layers(layers, path)
    loaded = lrkernels.load_layers(path)
    x = rng.standard_normal((1, 32, 6, 5)).astype(F32)
    for name, layer in layers.items():
        assert loaded[name].algorithm == layer.algorithm
        np.testing.assert_array_equal(loaded[name](x), layer(x))
    # An archive from before algorithm= (no keyword) was computed direct: it loads direct, not as
    # auto's Winograd.
    description, arrays = lrkernels.archive.describe_layer(layers["forced_direct"])
    assert "algorithm" not in description["keywords"]
    old = lrkernels.archive.build_layer(description, arrays)
    assert old.algorithm == "direct"
    np.testing.assert_array_equal(old(x), layers["forced_direct"](x))


def test_no_per_call_scratch_growth_winograd(rng):
    c, r = 40, 36
    tucker = lrkernels.TuckerConv2d(
        rng.standard_normal((r, c)), rng.standard_normal((r, r, 3, 3)), rng.standard_normal((c, r))
    )
    assert tucker.algorithm == "winograd"
    x = rng.standard_normal((2, c, 11, 13)).astype(F32)
    tucker(x)
    before = _core._scratch_allocations()
    for _ in range(3):
        tucker(x)
    assert _core._scratch_allocations() == before
