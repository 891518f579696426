"""Numerical edge cases of every layer kind on every available ISA: NaN, Inf and large values.

- NaN and Inf in inputs, weights or bias propagate as IEEE arithmetic says: the NaN/+Inf/-Inf
  pattern of the output equals that of the float64 reference exactly (and, where it is simple to
  state, the expected pattern itself: a NaN in row i of a linear input makes row i of the output
  all NaN; a NaN pixel of an image makes exactly the outputs whose receptive field holds it NaN);
  the finite outputs stay within the float32 error bound. Every call runs in a worker thread with
  a timeout, so a hang fails the test instead of stalling the suite. NaN left in the per-thread
  scratch by one call never leaks into a later one.
- Large values (1e30 inputs, 1e37 outputs) do not overflow intermediates that the float64
  reference keeps finite within the float32 range.

Subnormals and flush-to-zero: test_subnormals.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from layer_table import CONV_KINDS, KINDS, LINEAR_KINDS
from lrk_testing import (
    LAYOUTS,
    assert_within_bound,
    call,
    conv_output_hw,
    finite_bound,
    image_shape,
    make_spec,
    pair,
    reference_of,
)

F32 = np.float32


def pattern(a):
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    a = np.asarray(a, dtype=np.float64)
    p = np.zeros(a.shape, np.int8)
    p[np.isnan(a)] = 1
    p[np.isposinf(a)] = 2
    p[np.isneginf(a)] = 3
    return p


def assert_ieee_like_reference(y, spec, x, case=""):
    """The NaN/+Inf/-Inf pattern of y is the reference's; the finite part is within the bound."""
    case = f"{case} {spec.describe()}".strip()
    ref = reference_of(spec, x)
    assert y.shape == ref.shape, f"{case}: shape {y.shape}, expected {ref.shape}"
    py, pr = pattern(y), pattern(ref)
    if not np.array_equal(py, pr):
        bad = np.argwhere(py != pr)
        names = ("finite", "NaN", "+Inf", "-Inf")
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{case}: {len(bad)} of {y.size} outputs differ from the reference's NaN/Inf pattern; "
            f"first at {first}: got {y[first]!r} ({names[py[first]]}), reference "
            f"{ref[first]!r} ({names[pr[first]]})"
        )
    finite = pr == 0
    assert_within_bound(
        np.where(finite, y, 0.0),
        np.where(finite, ref, 0.0),
        np.where(finite, finite_bound(spec, x), 0.0),
        case,
    )
    return ref


def field_mask(out_hw, pixel, kernel, stride, padding, dilation):
    """(Ho, Wo) bool: the outputs whose receptive field contains input pixel (h, w)."""
    masks = []
    for size, p0, k, s, pd, d in zip(
        out_hw, pixel, pair(kernel), pair(stride), pair(padding), pair(dilation)
    ):
        masks.append(
            np.array([any(i * s + t * d - pd == p0 for t in range(k)) for i in range(size)])
        )
    return np.outer(*masks)


def to_nchw(a, layout):
    return a if layout == "NCHW" else np.moveaxis(a, 3, 1)


# --------------------------------------------------------------------------------------------
# NaN and Inf: linear layers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LINEAR_KINDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("batch", [None, 1, 7, 40])
def test_nonfinite_input_linear(isa, rng, kind, value, batch):
    """One non-finite x element per chosen row: those rows (only) become non-finite; a NaN row is
    all NaN; with Linear an Inf gives +-Inf with the sign of the weight times the Inf."""
    spec = make_spec(kind, rng, cin=19, cout=37, r1=5)
    layer = spec.build()
    shape = (19,) if batch is None else (batch, 19)
    x = rng.standard_normal(shape).astype(F32)
    x2 = x.reshape(-1, 19)
    rows = sorted({0, x2.shape[0] - 1, x2.shape[0] // 2})
    cols = [int(rng.integers(19)) for _ in rows]
    x2[rows, cols] = value
    y = call(layer, x, isa)
    assert_ieee_like_reference(y, spec, x, f"x[{rows}, {cols}] = {value}")
    y2 = y.reshape(-1, 37)
    others = np.setdiff1d(np.arange(x2.shape[0]), rows)
    assert np.isfinite(y2[others]).all()
    if np.isnan(value):
        assert np.isnan(y2[rows]).all(), "a NaN in x row i must make row i of y all NaN"
    elif kind == "Linear":
        W = spec.weights["W"]
        expected = np.sign(W[:, cols].T) * value  # (rows, out): the Inf times the weight's sign
        np.testing.assert_array_equal(y2[rows], expected)


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_inf_minus_inf_and_inf_times_zero_linear(isa, rng, kind):
    """+Inf and -Inf meeting in one sum give NaN; Inf times an exact zero weight gives NaN."""
    spec = make_spec(kind, rng, cin=8, cout=6, r1=3)
    first = "W" if kind == "Linear" else "V"
    w = spec.weights[first]
    w[:, 0] = np.abs(w[:, 0]) + 0.5
    w[:, 1] = np.abs(w[:, 1]) + 0.5
    w[:, 2] = 0.0  # zero weights: Inf * 0 = NaN
    x = rng.standard_normal((4, 8)).astype(F32)
    x[0, 0], x[0, 1] = np.inf, -np.inf  # opposite Infs into every output of stage 1: NaN
    x[1, 2] = np.inf  # only into the zero column: NaN
    x[2, 0] = np.inf  # +Inf times positive weights
    y = call(spec.build(), x, isa)
    assert_ieee_like_reference(y, spec, x)
    assert np.isnan(y[0]).all() and np.isnan(y[1]).all()
    assert np.isfinite(y[3]).all()
    if kind == "Linear":
        assert (y[2] == np.inf).all()


@pytest.mark.parametrize("kind", LINEAR_KINDS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
def test_nonfinite_weights_linear(isa, rng, kind, value):
    """A non-finite weight or bias element: the reference's pattern (W[o, k] or U[o, r] or
    bias[o]: column o; V[r, k]: every output), for a batch of rows and for a single row."""
    for name in ("W", "bias") if kind == "Linear" else ("U", "V", "bias"):
        spec = make_spec(kind, rng, cin=21, cout=35, r1=4)
        w = spec.weights[name]
        index = tuple(int(rng.integers(n)) for n in w.shape)
        w[index] = value
        layer = spec.build()
        for x in (rng.standard_normal((9, 21)).astype(F32), rng.standard_normal(21).astype(F32)):
            y = call(layer, x, isa)
            assert_ieee_like_reference(y, spec, x, f"{name}{list(index)} = {value}")
            y2 = y.reshape(-1, 35)
            if np.isnan(value) and name in ("W", "U", "bias"):
                o = index[0]
                assert np.isnan(y2[:, o]).all()
                assert np.isfinite(np.delete(y2, o, axis=1)).all()
            if np.isnan(value) and name == "V":
                assert np.isnan(y2).all()


# --------------------------------------------------------------------------------------------
# NaN and Inf: convolutions
# --------------------------------------------------------------------------------------------

# (kernel, stride, padding, dilation, (H, W)): same padding, a stride that skips input pixels,
# mixed pairs with dilation, a 1x1 kernel with padding (outputs made of padding only), padding
# as large as the kernel (likewise).
CONV_GEOMETRIES = [
    (3, 1, 1, 1, (6, 7)),
    (3, 2, 0, 1, (7, 8)),
    ((3, 2), (1, 2), (2, 0), (2, 1), (5, 7)),
    (1, 2, 1, 1, (4, 5)),
    (3, 1, 3, 1, (3, 4)),
]


def _geometry_id(g):
    k, s, p, d, hw = g
    return f"k{k}-s{s}-p{p}-d{d}-{hw[0]}x{hw[1]}".replace(" ", "")


def _conv_spec(kind, rng, g, layout, **kwargs):
    kernel, stride, padding, dilation, hw = g
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "layout": layout}
    return make_spec(kind, rng, kernel=kernel, geometry=geometry, **kwargs), hw


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", CONV_KINDS)
@pytest.mark.parametrize("g", CONV_GEOMETRIES, ids=_geometry_id)
def test_nonfinite_pixel_spreads_to_its_receptive_field(isa, rng, kind, layout, g):
    """A NaN (or +-Inf) at one input pixel: exactly the outputs whose receptive field holds that
    pixel become non-finite, in every output channel and in that image only; NaN everywhere there,
    Infs as the reference says. Pixels a stride skips change nothing."""
    spec, hw = _conv_spec(kind, rng, g, layout, cin=3, cout=4)
    kernel, stride, padding, dilation, _ = g
    layer = spec.build()
    out_hw = conv_output_hw(hw, kernel, stride, padding, dilation)
    h, w = hw
    pixels = [(0, 0), (h - 1, w - 1), (h // 2, w // 2), (1, w - 2)]
    for value in (np.nan, np.inf, -np.inf):
        for pixel in pixels:
            x = rng.standard_normal(image_shape(2, 3, hw, layout)).astype(F32)
            c = int(rng.integers(3))
            to_nchw(x, layout)[1, c, pixel[0], pixel[1]] = value
            y = call(layer, x, isa)
            case = f"x[1, c={c}, {pixel}] = {value}"
            assert_ieee_like_reference(y, spec, x, case)
            y4 = to_nchw(y, layout)
            mask = field_mask(out_hw, pixel, kernel, stride, padding, dilation)
            nonfinite = ~np.isfinite(y4)
            assert not nonfinite[0].any(), f"{case}: image 0 has non-finite outputs"
            np.testing.assert_array_equal(
                nonfinite[1],
                np.broadcast_to(mask, nonfinite[1].shape),
                err_msg=f"{case}: non-finite outputs are not the pixel's receptive field",
            )
            if np.isnan(value):
                assert np.isnan(y4[1][:, mask]).all(), case


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", CONV_KINDS)
@pytest.mark.parametrize("g", CONV_GEOMETRIES, ids=_geometry_id)
def test_nonfinite_weights_conv(isa, rng, kind, layout, g):
    """A NaN or +-Inf in one element of each weight and of the bias in turn: the output's pattern
    is the reference's. The reference pads with explicit zeros, so a NaN weight meets padding
    zeros too (0 * NaN = NaN): a NaN in `weight`, `core`, `horizontal` or `last` (or the bias)
    reaches every output of the channels it feeds, while a NaN in `first` (applied before the
    padding) reaches only outputs whose receptive field holds a real pixel."""
    kernel, stride, padding, dilation, hw = g
    names = list(make_spec(kind, rng, kernel=kernel).weights)
    if kind == "CPConv2d":
        names.remove("vertical")  # see test_cp_nonfinite_vertical_factor_skips_padding_columns
    for name in names:
        for value in (np.nan, np.inf, -np.inf):
            spec, _ = _conv_spec(kind, rng, g, layout, cin=3, cout=4)
            w = spec.weights[name]
            index = tuple(int(rng.integers(n)) for n in w.shape)
            w[index] = value
            x = rng.standard_normal(image_shape(2, 3, hw, layout)).astype(F32)
            y = call(spec.build(), x, isa)
            ref = assert_ieee_like_reference(y, spec, x, f"{name}{list(index)} = {value}")
            if np.isnan(value) and name in ("weight", "bias", "last"):
                o = index[0]
                assert np.isnan(to_nchw(ref, layout)[:, o]).all()  # the reference's semantics


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_cp_nonfinite_vertical_factor_skips_padding_columns(isa, rng, layout, value):
    """CPConv2d with a NaN (or Inf) in `vertical`: the reference runs the kh x 1 pass on the
    real columns and then pads the W axis with zeros for the 1 x kw pass, so outputs whose
    horizontal receptive field holds only padding columns stay finite (= the bias), and an Inf
    stays an Inf. The layer must agree.

    Found by this test (fixed in commit 501b473): the kernel ran the vertical pass over the
    zero-padded width too, so 0 * NaN (or 0 * Inf) put NaN into the padding columns, which the
    horizontal pass spread to every output (turning Inf outputs into NaN) on every ISA. Only
    non-finite `vertical` weights show it; with finite weights the two orders agree.
    """
    g = {"stride": (1, 2), "padding": (1, 3), "dilation": 1, "layout": layout}
    spec = make_spec("CPConv2d", rng, cin=3, cout=4, r1=3, kernel=(3, 1), geometry=g)
    spec.weights["vertical"][1, 0] = value
    x = rng.standard_normal(image_shape(1, 3, (5, 6), layout)).astype(F32)
    ref = reference_of(spec, x)
    assert np.isfinite(ref).any()  # the padding-only columns (wo = 6 with pw = 3, stride 2)
    y = call(spec.build(), x, isa)
    assert_ieee_like_reference(y, spec, x, f"vertical[1, 0] = {value}")


@pytest.mark.parametrize("kind", CONV_KINDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scattered_nans_large_image_threads(isa, rng, kind, layout):
    """2% NaN pixels in a large image (many bands of the row ring, several threads): the NaN
    pattern is the reference's exactly, so no band reads a stale or wrong row."""
    before = lrkernels.get_num_threads()
    lrkernels.set_num_threads(3)
    try:
        g = {"stride": (1, 2), "padding": 1, "dilation": 1, "layout": layout}
        spec = make_spec(kind, rng, cin=8, cout=16, r1=8, r2=8, kernel=3, geometry=g)
        x = rng.standard_normal(image_shape(2, 8, (70, 23), layout)).astype(F32)
        x[rng.random(x.shape) < 0.02 / 8] = np.nan  # ~2% of pixels hold a NaN channel
        y = call(spec.build(), x, isa)
        assert_ieee_like_reference(y, spec, x)
        assert np.isnan(y).any() and np.isfinite(y).any()
    finally:
        lrkernels.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_does_not_leak_into_later_calls(isa, rng, kind):
    """A call on all-NaN data (with NaN weights too) fills the per-thread scratch with NaN; later
    calls of other layers (smaller and larger) on finite data on the same threads are finite and
    right: no stale scratch value is ever multiplied in, even by a zero."""
    before = lrkernels.get_num_threads()
    try:
        for threads in (1, 3):
            lrkernels.set_num_threads(threads)
            g = {"stride": 1, "padding": 2, "dilation": 1, "layout": "NHWC"}
            big = make_spec(kind, rng, cin=40, cout=48, r1=24, r2=24, kernel=3, geometry=g)
            for w in big.weights.values():
                if w is not None:
                    w[...] = np.nan
            nan_layer = big.build()
            small = [
                make_spec(kind, rng, cin=c, cout=o, r1=r, r2=r, kernel=k, geometry=g)
                for c, o, r, k in ((3, 5, 2, 1), (17, 9, 7, 3), (40, 48, 24, 3))
            ]

            def x_for(spec, n, hw):
                if kind in LINEAR_KINDS:
                    return (
                        np.full((n * hw[0], spec.in_dim), np.nan, F32)
                        if spec is big
                        else rng.standard_normal((n * hw[0], spec.in_dim)).astype(F32)
                    )
                shape = image_shape(n, spec.in_dim, hw, "NHWC")
                return (
                    np.full(shape, np.nan, F32)
                    if spec is big
                    else rng.standard_normal(shape).astype(F32)
                )

            for spec in small:
                y_nan = call(nan_layer, x_for(big, 2, (24, 19)), isa)
                assert np.isnan(y_nan).all()
                for n, hw in ((1, (5, 4)), (2, (24, 19))):
                    x = x_for(spec, n, hw)
                    y = call(spec.build(), x, isa)
                    assert np.isfinite(y).all(), f"{spec.describe()}: NaN leaked from scratch"
                    assert_within_bound(y, spec.reference(x), spec.bound(x), spec.describe())
    finally:
        lrkernels.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Large values
# --------------------------------------------------------------------------------------------

# Per layer: weight scales that keep every intermediate of a ~1e30 input far inside float32 range
# (~1e31 to ~1e34) while the output comes back to ~1-100 (or, with a 1e30 bias, stays ~1e30).
LARGE_SCALES = {
    "LowRankLinear": {"V": 1.0, "U": 1e-31, "bias": 1.0},
    "Linear": {"W": 1.0, "bias": 1e30},
    "Conv2d": {"weight": 1.0, "bias": 1e30},
    "TuckerConv2d": {"first": 1.0, "core": 1.0, "last": 1e-32, "bias": 1.0},
    "CPConv2d": {"first": 1.0, "vertical": 1.0, "horizontal": 1.0, "last": 1e-31, "bias": 1.0},
}
# x scale -> factor on the first stage's weights: 1e30 inputs with O(1) weights, 1e-30 inputs with
# 1e30 weights, 1e35 inputs with 1e-5 weights (each first-stage product ~1e30).
LARGE_X = {1e30: 1.0, 1e-30: 1e30, 1e35: 1e-5}
STAGES = {
    "LowRankLinear": ("V", "U"),
    "Linear": ("W",),
    "Conv2d": ("weight",),
    "TuckerConv2d": ("first", "core", "last"),
    "CPConv2d": ("first", "vertical", "horizontal", "last"),
}


def _intermediate_bounds(spec, x):
    """An upper bound on |every partial sum| of each stage, whatever the summation order: max|x|
    times the product of the stages' infinity norms (max over outputs of the sum of |weights|)."""
    m = float(np.max(np.abs(np.asarray(x, np.float64))))
    bounds = []
    for name in STAGES[spec.kind]:
        w = np.abs(spec.weights[name].astype(np.float64))
        m *= float(np.max(w.reshape(w.shape[0], -1).sum(axis=1)))
        bounds.append(m)
    if spec.weights["bias"] is not None:
        bounds.append(m + float(np.max(np.abs(spec.weights["bias"].astype(np.float64)))))
    return bounds


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("x_scale", sorted(LARGE_X), ids=lambda v: f"x{v:g}")
def test_large_values_do_not_overflow(isa, rng, kind, x_scale):
    """Inputs of ~1e30 (or 1e35 against 1e-5 weights, or 1e-30 against 1e30 weights) with later
    stages scaled so that every intermediate, whatever the summation order, stays within 1/1000
    of float32's maximum: the result is finite and within the bound (no partial sum overflows,
    no scale is lost)."""
    scales = dict(LARGE_SCALES[kind])
    first = STAGES[kind][0]
    scales[first] *= LARGE_X[x_scale]
    g = {"stride": 1, "padding": 1, "dilation": 1, "layout": "NHWC"}
    spec = make_spec(kind, rng, cin=24, cout=20, r1=12, r2=10, kernel=3, geometry=g, scales=scales)
    if kind in LINEAR_KINDS:
        x = (rng.standard_normal((7, 24)) * x_scale).astype(F32)
    else:
        x = (rng.standard_normal(image_shape(2, 24, (9, 8), "NHWC")) * x_scale).astype(F32)
    for a in [x] + [w for w in spec.weights.values() if w is not None]:
        assert np.isfinite(a).all() and (np.abs(a[a != 0]) >= np.finfo(F32).tiny).all()
    limit = float(np.finfo(F32).max) / 1e3
    bounds = _intermediate_bounds(spec, x)
    assert max(bounds) < limit, f"test set-up: intermediates up to {bounds} exceed {limit:g}"
    assert max(bounds) > 1e30 or x_scale < 1, bounds
    y = call(spec.build(), x, isa)
    assert np.isfinite(y).all(), f"{kind}: non-finite output, intermediates bounded by {bounds}"
    assert_within_bound(y, spec.reference(x), spec.bound(x), f"{kind} x ~ {x_scale:g}")


@pytest.mark.parametrize("kind", LINEAR_KINDS)
def test_values_near_float32_max(isa, rng, kind):
    """Outputs up to ~1e38 (near float32 max 3.4e38) from cancelling +-1e38 terms: finite,
    within the bound."""
    spec = make_spec(kind, rng, cin=6, cout=5, r1=3, scales={"bias": 0.0})
    for w in spec.weights.values():
        if w is not None:
            w[...] = np.sign(w) * 0.25
    x = np.array([[1e38, -1e38, 1e38, -1e38, 1e38, 1e38]] * 3, F32)
    if kind == "LowRankLinear":
        spec.weights["U"][...] = np.sign(spec.weights["U"]) * 1e-2
    ref = spec.reference(x)
    assert np.all(np.abs(ref) < np.finfo(F32).max)
    y = call(spec.build(), x, isa)
    assert np.isfinite(y).all()
    assert_within_bound(y, ref, spec.bound(x), kind)


# --------------------------------------------------------------------------------------------
# Subnormals: flush-to-zero behaviour and speed
# --------------------------------------------------------------------------------------------
