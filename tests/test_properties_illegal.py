"""Property-based tests (hypothesis) of illegal arguments: each example builds or calls a layer
of any kind with one thing wrong and requires a ValueError or TypeError: never another exception,
a crash or a result; the layer stays usable. Profiles and example counts: test_properties.py."""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import assume, example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from layer_table import CONV_KINDS, LINEAR_KINDS, N_RANKS, SPEC  # noqa: E402
from lrk_testing import assert_within_bound, conv_output_hw, image_shape  # noqa: E402
from property_strategies import (  # noqa: E402
    active,
    conv_geometry,
    isas,
    make_layer,
    threads,
    values,
)

# --------------------------------------------------------------------------------------------
# Illegal arguments: ValueError or TypeError, never a crash, another exception or a result
# --------------------------------------------------------------------------------------------

ILLEGAL = (ValueError, TypeError)

# Arrays (or objects) that are never acceptable as weights, inputs or biases: wrong dtype kind.
NON_FLOAT_DTYPES = (
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.uint64,
    bool,
    np.complex64,
    np.complex128,
    "U3",
    "S3",
    object,
    "M8[s]",
    "m8[s]",
)


def non_float(shape, dtype):
    if np.dtype(dtype).kind in "OUS":
        return (
            np.full(shape, "1", dtype=dtype)
            if np.dtype(dtype).kind != "O"
            else np.full(shape, None, dtype=object)
        )
    return np.ones(shape, dtype=dtype)


not_array_likes = st.sampled_from(
    [None, "abc", {"a": 1}, object(), [[1.0, 2.0], [3.0]], 1 + 2j, b"\x00\x01"]
)


def _layer_args(kind, cin, cout, r1, r2, kh, kw):
    """(name, shape, tied axes) of every argument of a layer kind, in constructor order. A tied
    axis must equal an extent of another argument (the rank, or Cout through the bias): found
    from the table's shapes for distinct extents, as the axes whose extent another argument
    shares."""
    spec, n = SPEC[kind], N_RANKS[kind]
    kernel = (kh, kw) if spec.conv else (1, 1)
    names = spec.factor_names + ("bias",)
    shapes = list(spec.factor_shapes(cin, cout, (r1, r2)[:n], kernel)) + [(cout,)]
    probe = list(spec.factor_shapes(2, 3, (5, 7)[:n], (11, 13) if spec.conv else (1, 1)))
    probe.append((3,))

    def tied(i, axis):
        return any(probe[i][axis] in p for j, p in enumerate(probe) if j != i)

    return [
        (name, shape, tuple(a for a in range(len(shape)) if tied(i, a)))
        for i, (name, shape) in enumerate(zip(names, shapes))
    ]


def _build(kind, args, geometry=None):
    cls = SPEC[kind].cls
    return cls(**args) if geometry is None else cls(**args, **geometry)


def _ones_args(kind, *sizes):
    return {name: np.ones(shape, np.float32) for name, shape, _ in _layer_args(kind, *sizes)}


@given(data=st.data())
def test_illegal_weights_raise(data):
    """One weight (or the bias) of any layer has a wrong ndim, an empty axis, an extent that
    disagrees with another argument, a non-float dtype, or is not an array at all."""
    kind = data.draw(st.sampled_from(LINEAR_KINDS + CONV_KINDS), label="kind")
    sizes = tuple(
        data.draw(st.integers(1, 5), label=n)
        for n in ("Cin", "Cout", "rank 1", "rank 2", "kh", "kw")
    )
    specs = _layer_args(kind, *sizes)
    args = _ones_args(kind, *sizes)
    geometry = None if kind in LINEAR_KINDS else {"padding": 1}
    _build(kind, args, geometry)  # the unmodified arguments are legal
    name, shape, tied = data.draw(st.sampled_from(specs), label="which")
    what = data.draw(
        st.sampled_from(["ndim", "empty", "mismatch", "dtype", "not array"]), label="what"
    )
    if what == "ndim":
        ndim = data.draw(st.integers(0, 5).filter(lambda n: n != len(shape)), label="ndim")
        args[name] = np.ones([data.draw(st.integers(1, 4)) for _ in range(ndim)], np.float32)
    elif what in ("empty", "mismatch"):
        axis = data.draw(
            st.sampled_from(range(len(shape)) if what == "empty" else tied), label="axis"
        )
        new = list(shape)
        new[axis] = (
            0
            if what == "empty"
            else data.draw(
                st.integers(1, shape[axis] + 5).filter(lambda v: v != shape[axis]), label="extent"
            )
        )
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
    st.sampled_from(
        [
            1.5,
            2.0,
            True,
            False,
            np.True_,
            np.float64(2.0),
            np.float32(1.0),
            "2",
            b"1",
            None,
            1 + 0j,
            np.array(1.5),
            np.array(2.0),
            np.array([2]),
            np.array([1, 1]),
            2**63,
            2**70,
            -(2**63) - 1,
            {},
            object(),
        ]
    ),
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
    st.sampled_from(
        [
            "nchw",
            "nhwc",
            "NCWH",
            "CHWN",
            "NCHW ",
            " NHWC",
            "",
            b"NCHW",
            None,
            0,
            1,
            ["NCHW"],
            ("NHWC",),
            np.str_("nchw"),
        ]
    ),
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
    layer, ref, bound = make_layer(kind, data, rng, in_f, out_f, (rank,), (1, 1), True)
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
    kernel, stride, padding, dilation, hw = conv_geometry(data)
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]), label="layout")
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "layout": layout}
    rng = np.random.default_rng(0)
    layer, ref, bound = make_layer(kind, data, rng, cin, cout, (2, 3), kernel, True, geometry)
    isa = data.draw(isas, label="isa")
    what = data.draw(
        st.sampled_from(["ndim", "channels", "dtype", "too small", "not array"]), label="what"
    )
    n = data.draw(st.integers(0, 2), label="batch")
    if what == "ndim":
        ndim = data.draw(st.sampled_from([0, 1, 2, 3, 5]), label="ndim")
        x = np.ones(tuple(data.draw(st.integers(1, 4)) for _ in range(ndim)), np.float32)
    elif what == "channels":
        c = data.draw(st.integers(0, cin + 4).filter(lambda v: v != cin), label="channels")
        other = data.draw(st.booleans(), label="other layout")
        x = np.ones(
            image_shape(n, c, hw, ("NHWC" if layout == "NCHW" else "NCHW") if other else layout),
            np.float32,
        )
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
