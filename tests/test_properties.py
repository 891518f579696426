"""Property-based tests (hypothesis): every layer against the numpy reference; argument checks.

Each legal example draws the layer (LowRankLinear, Linear, Conv2d, TuckerConv2d, CPConv2d), its
shapes (batch 0, 1-wide features and channels, rank 1, 1x1 kernels, 1x1 and even 0-sized
spatial inputs where padding makes the output >= 1x1), geometry (stride, padding, dilation given as
an int, a tuple, a list or numpy ints), layout, the dtypes (float16/32/64, longdouble, big-endian)
and memory orders (C, Fortran, transposed and permuted views, negative strides, non-unit strides,
offset slices, stride-0 broadcasts, unaligned data) of the input and of every weight, the ISA
(any of `available_isas()`, set for the call and restored) and the thread count (1..3, restored),
then compares the result with the float64 reference under the float32 error bounds of
lrk_testing.py. Views are cut out of NaN-filled buffers, so a read outside a view shows up as NaN.
Each illegal example builds or calls a layer with one thing wrong and requires a ValueError or
TypeError: never another exception, a crash or a result.

Profiles (registered in conftest.py, chosen by the environment variable HYPOTHESIS_PROFILE):

    python -m pytest tests/test_properties.py
        "ci", the default: 50 examples per test, derandomized (the same examples on every run,
        so CI is reproducible), no example database; a few seconds.
    HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py
        2000 random examples per test (a few minutes); failures are saved in .hypothesis/ and
        replayed first on the next run. Add --hypothesis-seed=N for another search.
    ... --hypothesis-show-statistics
        examples run, and their time, per test.

Examples run in the ci profile: CI_EXAMPLES_PER_TEST x N_PROPERTY_TESTS (the `@given` tests
below; `test_example_count_is_documented` keeps the two numbers honest) = 500, plus the 3
explicit `@example` cases, which run on every profile.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import assume, example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lrkernels  # noqa: E402
from lrkernels import reference  # noqa: E402
from lrk_testing import (  # noqa: E402
    _unaligned_float32,
    check_output_array,
    conv2d_bound,
    conv_output_hw,
    cp_conv2d_bound,
    cp_conv2d_reference,
    image_shape,
    linear_bound,
    lowrank_bound,
    tucker_conv2d_bound,
    assert_within_bound,
)

CI_EXAMPLES_PER_TEST = 50  # keep equal to max_examples of the "ci" profile in conftest.py
N_PROPERTY_TESTS = 10  # the @given tests in this file

ISAS = lrkernels.available_isas()
LINEAR_KINDS = ("LowRankLinear", "Linear")
CONV_KINDS = ("Conv2d", "TuckerConv2d", "CPConv2d")
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
INPUT_DTYPES = FLOAT_DTYPES + (np.longdouble, np.dtype(">f4"), np.dtype(">f8"))
ORDERS = ("C", "F", "transposed", "permuted", "reversed", "strided", "offset", "broadcast",
          "unaligned")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def active(isa, threads):
    """Make `isa` and `threads` current for the block; restore the previous ones afterwards."""
    prev_isa, prev_threads = lrkernels.get_isa(), lrkernels.get_num_threads()
    lrkernels.set_isa(isa)
    lrkernels.set_num_threads(threads)
    try:
        yield
    finally:
        lrkernels.set_isa(prev_isa)
        lrkernels.set_num_threads(prev_threads)


def values(rng, shape, dtype, scale=1.0, kind="normal"):
    """Random values of `shape` in `dtype`: normal * scale, or small integers (exact sums)."""
    if kind == "integers":
        a = rng.integers(-3, 4, size=shape).astype(np.float64)
    else:
        a = rng.standard_normal(shape) * scale
    return a.astype(dtype)


def arrange(a, order, axis, perm):
    """`a` laid out in memory as `order` says; the values stay the same except for "broadcast",
    which repeats index 0 along `axis` (callers compute the reference on what this returns)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return a
    axis %= a.ndim
    if order == "C":
        return np.ascontiguousarray(a)
    if order == "F":
        return np.asfortranarray(a)
    if order == "transposed":  # the reversed-axes contiguous array, viewed back
        return np.ascontiguousarray(a.T).T
    if order == "permuted":
        perm = [p for p in perm if p < a.ndim]
        return np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))
    if order == "reversed":  # a negative stride along `axis`
        return np.flip(np.ascontiguousarray(np.flip(a, axis)), axis)
    if order in ("strided", "offset"):
        # A view of a NaN-filled buffer: every other element (stride 2, offset 1), or [2:2+n].
        shape = list(a.shape)
        n = shape[axis]
        shape[axis] = 2 * n + 1 if order == "strided" else n + 5
        buf = np.full(shape, np.nan, dtype=a.dtype)
        index = [slice(None)] * a.ndim
        index[axis] = slice(1, 2 * n + 1, 2) if order == "strided" else slice(2, 2 + n)
        view = buf[tuple(index)]
        view[...] = a
        return view
    if order == "broadcast":  # stride 0 along `axis`
        if a.shape[axis] == 0:
            return a
        return np.broadcast_to(np.take(a, [0], axis=axis), a.shape)
    if order == "unaligned":
        if a.dtype == np.float32 and a.size > 0:
            return _unaligned_float32(np.ascontiguousarray(a))
        return a
    raise AssertionError(order)


@st.composite
def layouts_in_memory(draw, ndim, label):
    """(order, axis, perm) for `arrange`."""
    order = draw(st.sampled_from(ORDERS), label=f"{label} order")
    axis = draw(st.integers(0, ndim - 1), label=f"{label} axis")
    perm = draw(st.permutations(range(ndim)), label=f"{label} perm")
    return order, axis, perm


def draw_array(data, rng, shape, label, dtypes=FLOAT_DTYPES, scale=1.0, kind="normal"):
    """A random array of `shape` in a drawn dtype and memory order."""
    dtype = np.dtype(data.draw(st.sampled_from(dtypes), label=f"{label} dtype"))
    if dtype.itemsize <= 2:
        scale = 1.0  # float16: keep away from overflow
    a = values(rng, shape, dtype, scale, kind)
    order, axis, perm = data.draw(layouts_in_memory(max(len(shape), 1), label))
    return arrange(a, order, axis, perm)


def draw_int_or_pair(data, a, b, label):
    """(a, b) spelled as an int (when equal), a tuple, a list or numpy integers."""
    if a == b:
        form = data.draw(st.sampled_from(["int", "tuple", "list", "np.int64", "0-d array"]),
                         label=f"{label} form")
    else:
        form = data.draw(st.sampled_from(["tuple", "list", "np tuple"]), label=f"{label} form")
    return {
        "int": a,
        "np.int64": np.int64(a),
        "0-d array": np.array(a),
        "tuple": (a, b),
        "list": [a, b],
        "np tuple": (np.int32(a), np.uint8(b)),
    }[form]


dims = st.one_of(st.integers(1, 20), st.sampled_from([31, 32, 33, 63, 64, 65]))
ranks = st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 33]))
isas = st.sampled_from(ISAS)
threads = st.integers(1, 3)
seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------------------------
# Legal arguments: the layers match the reference
# --------------------------------------------------------------------------------------------


def _make_linear(kind, data, rng, in_f, out_f, rank, bias):
    if kind == "LowRankLinear":
        U = draw_array(data, rng, (out_f, rank), "U")
        V = draw_array(data, rng, (rank, in_f), "V")
        b = draw_array(data, rng, (out_f,), "bias") if bias else None
        return (
            lrkernels.LowRankLinear(U, V, b),
            lambda x: reference.lowrank_linear(x, U, V, b),
            lambda x: lowrank_bound(x, U, V, b),
        )
    W = draw_array(data, rng, (out_f, in_f), "W")
    b = draw_array(data, rng, (out_f,), "bias") if bias else None
    return (
        lrkernels.Linear(W, b),
        lambda x: reference.linear(x, W, b),
        lambda x: linear_bound(x, W, b),
    )


@given(data=st.data())
def test_linear_layers_match_reference(data):
    kind = data.draw(st.sampled_from(LINEAR_KINDS), label="kind")
    in_f = data.draw(dims, label="in_features")
    out_f = data.draw(dims, label="out_features")
    rank = data.draw(ranks, label="rank")
    bias = data.draw(st.booleans(), label="bias")
    # None: a 1-D x; large batches cross the row tiles and the threads' work threshold.
    batch = data.draw(st.one_of(st.none(), st.integers(0, 20), st.integers(60, 300)),
                      label="batch")
    isa = data.draw(isas, label="isa")
    n_threads = data.draw(threads, label="threads")
    pack_first = data.draw(st.booleans(), label="construct under the default ISA")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))

    def build():
        return _make_linear(kind, data, rng, in_f, out_f, rank, bias)

    layer, ref, bound = build() if pack_first else (None, None, None)
    with active(isa, n_threads):
        if layer is None:
            layer, ref, bound = build()
        x_shape = (in_f,) if batch is None else (batch, in_f)
        scale = data.draw(st.sampled_from([1.0, 1e-3, 1e3]), label="x scale")
        kind_x = data.draw(st.sampled_from(["normal", "integers"]), label="x values")
        x = draw_array(data, rng, x_shape, "x", INPUT_DTYPES, scale, kind_x)
        y = layer(x)
        assert lrkernels.last_used_isa() == isa
    case = f"{kind} in={in_f} out={out_f} rank={rank} x {x.dtype}{x.shape} strides {x.strides}"
    check_output_array(y, x_shape[:-1] + (out_f,), case)
    assert not np.shares_memory(y, x), case
    assert_within_bound(y, ref(x), bound(x), case)


def _conv_geometry(data):
    """Kernel, stride, padding, dilation pairs; output and input sizes that give output >= 1."""
    kh, kw = (data.draw(st.one_of(st.integers(1, 4), st.sampled_from([5, 7])), label=f"k{a}")
              for a in "hw")
    sh, sw = (data.draw(st.integers(1, 3), label=f"stride {a}") for a in "hw")
    ph, pw = (data.draw(st.integers(0, 3), label=f"padding {a}") for a in "hw")
    dh, dw = (data.draw(st.integers(1, 3), label=f"dilation {a}") for a in "hw")
    hw = []
    for k, s, p, d, a in ((kh, sh, ph, dh, "h"), (kw, sw, pw, dw, "w")):
        # Mostly a few outputs; sometimes enough rows for several bands of the ring buffer.
        out = data.draw(st.one_of(st.integers(1, 7), st.integers(8, 40)), label=f"output {a}")
        extra = data.draw(st.integers(0, s - 1), label=f"extra input {a}")
        # The smallest input with `out` outputs, plus up to stride-1 unused; 0 (an empty input
        # axis) when padding alone covers the kernel span: still a legal, >= 1 output.
        hw.append(max(0, (out - 1) * s + d * (k - 1) + 1 - 2 * p + extra))
    return (kh, kw), (sh, sw), (ph, pw), (dh, dw), tuple(hw)


def _spatial(x, layout):
    shape = np.shape(x)
    return shape[2:] if layout == "NCHW" else shape[1:3]


def _tucker_merged(first, core, last):
    """The dense (Cout, Cin, kh, kw) float64 weight of a Tucker-2 convolution."""
    f, c, la = (np.asarray(a, dtype=np.float64) for a in (first, core, last))
    return np.einsum("os,srhw,rc->ochw", la, c, f, optimize=True)


def _make_conv(kind, data, rng, cin, cout, r1, r2, kernel, bias, geometry):
    kh, kw = kernel
    b = draw_array(data, rng, (cout,), "bias") if bias else None
    if kind == "Conv2d":
        w = draw_array(data, rng, (cout, cin, kh, kw), "weight")
        return (
            lrkernels.Conv2d(w, b, **geometry),
            lambda x: reference.conv2d(x, w, b, **geometry),
            lambda x: conv2d_bound(x, w, b, **geometry),
        )
    if kind == "TuckerConv2d":
        f = draw_array(data, rng, (r1, cin), "first")
        c = draw_array(data, rng, (r2, r1, kh, kw), "core")
        la = draw_array(data, rng, (cout, r2), "last")

        def tucker_ref(x):
            if 0 in _spatial(x, geometry["layout"]):
                # reference.tucker_conv2d refuses an empty input axis (its 1x1 first stage has
                # no output), though padding gives the layer an output: use the merged weight.
                return reference.conv2d(x, _tucker_merged(f, c, la), b, **geometry)
            return reference.tucker_conv2d(x, f, c, la, b, **geometry)

        def tucker_bound(x):
            if 0 in _spatial(x, geometry["layout"]):
                merged = _tucker_merged(*(np.abs(np.asarray(a, np.float64)) for a in (f, c, la)))
                return conv2d_bound(x, merged, b, **geometry)
            return tucker_conv2d_bound(x, f, c, la, b, **geometry)

        return lrkernels.TuckerConv2d(f, c, la, b, **geometry), tucker_ref, tucker_bound
    f = draw_array(data, rng, (r1, cin), "first")
    v = draw_array(data, rng, (r1, kh), "vertical")
    h = draw_array(data, rng, (r1, kw), "horizontal")
    la = draw_array(data, rng, (cout, r1), "last")
    return (
        lrkernels.CPConv2d(f, v, h, la, b, **geometry),
        lambda x: cp_conv2d_reference(x, f, v, h, la, b, **geometry),
        lambda x: cp_conv2d_bound(x, f, v, h, la, b, **geometry),
    )


@pytest.mark.parametrize("kind", CONV_KINDS)
@given(data=st.data())
def test_conv_layers_match_reference(kind, data):
    cin = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([16, 17, 33])), label="Cin")
    cout = data.draw(st.one_of(st.integers(1, 12), st.sampled_from([16, 17, 33])), label="Cout")
    r1 = data.draw(ranks, label="rank (in)")
    r2 = data.draw(ranks, label="rank (out)")
    kernel, stride, padding, dilation, hw = _conv_geometry(data)
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="layout")
    geometry = {
        "stride": draw_int_or_pair(data, *stride, "stride"),
        "padding": draw_int_or_pair(data, *padding, "padding"),
        "dilation": draw_int_or_pair(data, *dilation, "dilation"),
        "layout": layout,
    }
    batch = data.draw(st.integers(0, 3), label="batch")
    bias = data.draw(st.booleans(), label="bias")
    isa = data.draw(isas, label="isa")
    n_threads = data.draw(threads, label="threads")
    pack_first = data.draw(st.booleans(), label="construct under the default ISA")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))

    def build():
        return _make_conv(kind, data, rng, cin, cout, r1, r2, kernel, bias, geometry)

    layer, ref, bound = build() if pack_first else (None, None, None)
    with active(isa, n_threads):
        if layer is None:
            layer, ref, bound = build()
        scale = data.draw(st.sampled_from([1.0, 1e-3, 1e3]), label="x scale")
        x = draw_array(data, rng, image_shape(batch, cin, hw, layout), "x", INPUT_DTYPES, scale)
        y = layer(x)
        assert lrkernels.last_used_isa() == isa
    ho, wo = conv_output_hw(hw, kernel, stride, padding, dilation)
    case = (f"{kind} Cin={cin} Cout={cout} ranks=({r1}, {r2}) kernel={kernel} {geometry} "
            f"x {x.dtype}{x.shape} strides {x.strides}")
    check_output_array(y, image_shape(batch, cout, (ho, wo), layout), case)
    assert not np.shares_memory(y, x), case
    assert_within_bound(y, ref(x), bound(x), case)


@given(data=st.data())
def test_thread_count_does_not_change_results(data):
    """README: work is split over output tiles only, so every thread count gives the same bits.
    The shapes are large enough for the pool to split the call."""
    kind = data.draw(st.sampled_from(LINEAR_KINDS + CONV_KINDS), label="kind")
    isa = data.draw(isas, label="isa")
    counts = data.draw(st.lists(st.integers(2, 5), min_size=1, max_size=2), label="threads")
    rng = np.random.default_rng(data.draw(seeds, label="seed"))
    if kind in LINEAR_KINDS:
        in_f = data.draw(st.integers(100, 300), label="in")
        out_f = data.draw(st.integers(100, 300), label="out")
        batch = data.draw(st.integers(1, 40), label="batch")
        layer, _, _ = _make_linear(kind, data, rng, in_f, out_f, data.draw(ranks), True)
        x = values(rng, (batch, in_f), np.float32)
    else:
        layout = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="layout")
        cin, cout = (data.draw(st.integers(8, 40), label=n) for n in ("Cin", "Cout"))
        k = data.draw(st.sampled_from([1, 3, 5]), label="k")
        h, w = (data.draw(st.integers(10, 30), label=n) for n in "HW")
        geometry = {"stride": data.draw(st.integers(1, 2), label="stride"),
                    "padding": k // 2, "dilation": 1, "layout": layout}
        r = data.draw(st.integers(4, 24), label="rank")
        layer, _, _ = _make_conv(kind, data, rng, cin, cout, r, r, (k, k), True, geometry)
        x = values(rng, image_shape(data.draw(st.integers(1, 3)), cin, (h, w), layout),
                   np.float32)
    with active(isa, 1):
        y1 = layer(x)
    for n in counts:
        with active(isa, n):
            yn = layer(x)
            assert lrkernels.last_used_isa() == isa
        assert np.array_equal(y1, yn, equal_nan=True), (
            f"{kind} {isa}: {n} threads differ from 1 (max |diff| {np.nanmax(np.abs(y1 - yn))})"
        )


# --------------------------------------------------------------------------------------------
# Illegal arguments: ValueError or TypeError, never a crash, another exception or a result
# --------------------------------------------------------------------------------------------

ILLEGAL = (ValueError, TypeError)

# Arrays (or objects) that are never acceptable as weights, inputs or biases: wrong dtype kind.
NON_FLOAT_DTYPES = (np.int8, np.int32, np.int64, np.uint8, np.uint64, bool, np.complex64,
                    np.complex128, "U3", "S3", object, "M8[s]", "m8[s]")


def non_float(shape, dtype):
    if np.dtype(dtype).kind in "OUS":
        return np.full(shape, "1", dtype=dtype) if np.dtype(dtype).kind != "O" else np.full(
            shape, None, dtype=object)
    return np.ones(shape, dtype=dtype)


not_array_likes = st.sampled_from(
    [None, "abc", {"a": 1}, object(), [[1.0, 2.0], [3.0]], 1 + 2j, b"\x00\x01"]
)


def _layer_args(kind, cin, cout, r1, r2, kh, kw):
    """(name, shape, tied axes) of every argument of a layer kind, in constructor order. A tied
    axis must equal an extent of another argument (the rank, or Cout through the bias)."""
    return {
        "LowRankLinear": [("U", (cout, r1), (0, 1)), ("V", (r1, cin), (0,))],
        "Linear": [("W", (cout, cin), (0,))],
        "Conv2d": [("weight", (cout, cin, kh, kw), (0,))],
        "TuckerConv2d": [("first", (r1, cin), (0,)), ("core", (r2, r1, kh, kw), (0, 1)),
                         ("last", (cout, r2), (0, 1))],
        "CPConv2d": [("first", (r1, cin), (0,)), ("vertical", (r1, kh), (0,)),
                     ("horizontal", (r1, kw), (0,)), ("last", (cout, r1), (0, 1))],
    }[kind] + [("bias", (cout,), (0,))]


def _build(kind, args, geometry=None):
    cls = getattr(lrkernels, kind)
    return cls(**args) if geometry is None else cls(**args, **geometry)


def _ones_args(kind, *sizes):
    return {name: np.ones(shape, np.float32) for name, shape, _ in _layer_args(kind, *sizes)}


@given(data=st.data())
def test_illegal_weights_raise(data):
    """One weight (or the bias) of any layer has a wrong ndim, an empty axis, an extent that
    disagrees with another argument, a non-float dtype, or is not an array at all."""
    kind = data.draw(st.sampled_from(LINEAR_KINDS + CONV_KINDS), label="kind")
    sizes = tuple(data.draw(st.integers(1, 5), label=n)
                  for n in ("Cin", "Cout", "rank 1", "rank 2", "kh", "kw"))
    specs = _layer_args(kind, *sizes)
    args = _ones_args(kind, *sizes)
    geometry = None if kind in LINEAR_KINDS else {"padding": 1}
    _build(kind, args, geometry)  # the unmodified arguments are legal
    name, shape, tied = data.draw(st.sampled_from(specs), label="which")
    what = data.draw(st.sampled_from(["ndim", "empty", "mismatch", "dtype", "not array"]),
                     label="what")
    if what == "ndim":
        ndim = data.draw(st.integers(0, 5).filter(lambda n: n != len(shape)), label="ndim")
        args[name] = np.ones([data.draw(st.integers(1, 4)) for _ in range(ndim)], np.float32)
    elif what in ("empty", "mismatch"):
        axis = data.draw(st.sampled_from(range(len(shape)) if what == "empty" else tied),
                         label="axis")
        new = list(shape)
        new[axis] = 0 if what == "empty" else data.draw(
            st.integers(1, shape[axis] + 5).filter(lambda v: v != shape[axis]), label="extent")
        args[name] = np.ones(new, np.float32)
    elif what == "dtype":
        args[name] = non_float(shape, data.draw(st.sampled_from(NON_FLOAT_DTYPES), label="dtype"))
    else:
        bad = data.draw(not_array_likes, label="object")
        assume(not (name == "bias" and bad is None))  # no bias is legal
        args[name] = bad
    with pytest.raises(ILLEGAL):
        _build(kind, args, geometry)


# Values no geometry argument accepts (stride and dilation also refuse 0).
_never_legal = st.one_of(
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.5, 2.0, True, False, np.True_, np.float64(2.0), np.float32(1.0), "2", b"1",
                     None, 1 + 0j, np.array(1.5), np.array(2.0), np.array([2]),
                     np.array([1, 1]), 2**63, 2**70, -(2**63) - 1, {}, object()]),
)
_zero = st.sampled_from([0, np.int64(0), np.array(0)])


@st.composite
def illegal_geometry(draw):
    """(name, value): a stride/padding/dilation that is not an int >= minimum or a pair of them."""
    name = draw(st.sampled_from(("stride", "padding", "dilation")))
    minimum = 0 if name == "padding" else 1
    bad = _never_legal if minimum == 0 else st.one_of(_never_legal, _zero)
    good = st.integers(minimum, 3)
    form = draw(st.sampled_from(["scalar", "pair, first bad", "pair, second bad", "length"]))
    if form == "scalar":
        return name, draw(bad)
    if form == "pair, first bad":
        return name, (draw(bad), draw(good))
    if form == "pair, second bad":
        return name, [draw(good), draw(bad)]
    return name, tuple(draw(good) for _ in range(draw(st.sampled_from([0, 1, 3, 4]))))


@given(kind=st.sampled_from(CONV_KINDS), name_value=illegal_geometry())
# Always run (found by this test, fixed in a66e308 and 501b473): a 0-d float array passed the
# __index__ check and was truncated to an int; an int beyond 64 bits raised RuntimeError.
@example(kind="Conv2d", name_value=("stride", np.array(1.5)))
@example(kind="CPConv2d", name_value=("padding", (1, np.array(2.5))))
@example(kind="TuckerConv2d", name_value=("dilation", 2**64))
def test_illegal_geometry_raises(kind, name_value):
    name, value = name_value
    args = _ones_args(kind, 3, 2, 2, 2, 3, 3)
    with pytest.raises(ILLEGAL):
        _build(kind, args, {name: value})


bad_layouts = st.one_of(
    st.text(max_size=6).filter(lambda s: s not in ("NCHW", "NHWC")),
    st.sampled_from(["nchw", "nhwc", "NCWH", "CHWN", "NCHW ", " NHWC", "", b"NCHW", None, 0, 1,
                     ["NCHW"], ("NHWC",), np.str_("nchw")]),
)


@given(kind=st.sampled_from(CONV_KINDS), layout=bad_layouts)
def test_illegal_layout_raises(kind, layout):
    with pytest.raises(ILLEGAL):
        _build(kind, _ones_args(kind, 3, 2, 2, 2, 3, 3), {"layout": layout})


@given(data=st.data())
def test_illegal_linear_inputs_raise(data):
    """x of a wrong ndim, a wrong last extent, a non-float dtype, or not an array; the layer
    stays usable afterwards."""
    kind = data.draw(st.sampled_from(LINEAR_KINDS), label="kind")
    in_f, out_f, rank = (data.draw(st.integers(1, 6), label=n) for n in ("in", "out", "rank"))
    rng = np.random.default_rng(0)
    layer, ref, bound = _make_linear(kind, data, rng, in_f, out_f, rank, True)
    isa = data.draw(isas, label="isa")
    what = data.draw(st.sampled_from(["ndim", "extent", "dtype", "not array"]), label="what")
    if what == "ndim":
        ndim = data.draw(st.sampled_from([0, 3, 4]), label="ndim")
        shape = tuple(data.draw(st.integers(0, 3)) for _ in range(ndim - 1)) + (in_f,)
        x = np.ones(shape[-ndim:] if ndim else (), np.float32)
    elif what == "extent":
        batch = data.draw(st.one_of(st.none(), st.integers(0, 4)), label="batch")
        k = data.draw(st.integers(0, in_f + 5).filter(lambda v: v != in_f), label="extent")
        x = np.ones((k,) if batch is None else (batch, k), np.float32)
    elif what == "dtype":
        dtype = data.draw(st.sampled_from(NON_FLOAT_DTYPES), label="dtype")
        x = non_float((data.draw(st.integers(0, 3)), in_f), dtype)
    else:
        x = data.draw(not_array_likes, label="object")
    with active(isa, data.draw(threads)):
        with pytest.raises(ILLEGAL):
            layer(x)
        good = np.ones((2, in_f), np.float32)
        assert_within_bound(layer(good), ref(good), bound(good), "after the error")


@given(data=st.data())
def test_illegal_conv_inputs_raise(data):
    """x of a wrong ndim, wrong channel count (also the other layout's shape), a non-float dtype,
    too small for the kernel (output below 1x1), or not an array; the layer stays usable."""
    kind = data.draw(st.sampled_from(CONV_KINDS), label="kind")
    cin = data.draw(st.integers(1, 5), label="Cin")
    cout = data.draw(st.integers(1, 5), label="Cout")
    kernel, stride, padding, dilation, hw = _conv_geometry(data)
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="layout")
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "layout": layout}
    rng = np.random.default_rng(0)
    layer, ref, bound = _make_conv(kind, data, rng, cin, cout, 2, 3, kernel, True, geometry)
    isa = data.draw(isas, label="isa")
    what = data.draw(st.sampled_from(["ndim", "channels", "dtype", "too small", "not array"]),
                     label="what")
    n = data.draw(st.integers(0, 2), label="batch")
    if what == "ndim":
        ndim = data.draw(st.sampled_from([0, 1, 2, 3, 5]), label="ndim")
        x = np.ones(tuple(data.draw(st.integers(1, 4)) for _ in range(ndim)), np.float32)
    elif what == "channels":
        c = data.draw(st.integers(0, cin + 4).filter(lambda v: v != cin), label="channels")
        other = data.draw(st.booleans(), label="other layout")
        x = np.ones(image_shape(n, c, hw, ("NHWC" if layout == "NCHW" else "NCHW")
                                if other else layout), np.float32)
        assume(x.shape[1 if layout == "NCHW" else 3] != cin)
    elif what == "dtype":
        dtype = data.draw(st.sampled_from(NON_FLOAT_DTYPES), label="dtype")
        x = non_float(image_shape(n, cin, hw, layout), dtype)
    elif what == "too small":
        small = []
        for size, k, p, d, a in zip(hw, kernel, padding, dilation, "hw"):
            span = d * (k - 1) + 1
            if size + 2 * p >= span and data.draw(st.booleans(), label=f"shrink {a}"):
                size = data.draw(st.integers(0, max(0, span - 2 * p - 1)), label=f"size {a}")
            small.append(size)
        assume(min(conv_output_hw(small, kernel, stride, padding, dilation)) < 1)
        x = np.ones(image_shape(n, cin, small, layout), np.float32)
    else:
        x = data.draw(not_array_likes, label="object")
    with active(isa, data.draw(threads)):
        with pytest.raises(ILLEGAL):
            layer(x)
        good = values(rng, image_shape(1, cin, hw, layout), np.float32)
        assert_within_bound(layer(good), ref(good), bound(good), "after the error")


def test_example_count_is_documented():
    """N_PROPERTY_TESTS counts the @given tests (the parametrized one once per kind)."""
    given_tests = [
        f for name, f in globals().items()
        if name.startswith("test_") and getattr(f, "is_hypothesis_test", False)
    ]
    n = sum(len(CONV_KINDS) if f is test_conv_layers_match_reference else 1 for f in given_tests)
    assert n == N_PROPERTY_TESTS
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if profile == "ci":
        assert hypothesis.settings().max_examples == CI_EXAMPLES_PER_TEST
