"""Hypothesis strategies and helpers of the property-based tests (test_properties.py,
test_properties_illegal.py): arrays in drawn dtypes and memory orders, geometry, and a layer of
any kind of the table with drawn factors. Import only after hypothesis is known to be there."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import strategies as st

import lrkernels
from layer_cases import _unaligned_float32
from layer_table import N_RANKS, SPEC
from lrk_testing import BOUNDS

ISAS = lrkernels.available_isas()
FLOAT_DTYPES = (np.float16, np.float32, np.float64)
INPUT_DTYPES = FLOAT_DTYPES + (np.longdouble, np.dtype(">f4"), np.dtype(">f8"))
ORDERS = (
    "C",
    "F",
    "transposed",
    "permuted",
    "reversed",
    "strided",
    "offset",
    "broadcast",
    "unaligned",
)


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
        form = data.draw(
            st.sampled_from(["int", "tuple", "list", "np.int64", "0-d array"]),
            label=f"{label} form",
        )
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
# A layer of any kind, with drawn factors
# --------------------------------------------------------------------------------------------


def make_layer(kind, data, rng, in_dim, out_dim, ranks, kernel, bias, geometry=None):
    """A layer of any kind from the table, every factor (and the bias) in a drawn dtype and
    memory order; with its float64 reference and float32 bound."""
    spec, geometry = SPEC[kind], geometry or {}
    shapes = spec.factor_shapes(in_dim, out_dim, tuple(ranks)[: N_RANKS[kind]], kernel)
    factors = [draw_array(data, rng, s, name) for name, s in zip(spec.factor_names, shapes)]
    b = draw_array(data, rng, (out_dim,), "bias") if bias else None
    return (
        spec.cls(*factors, b, **geometry),
        lambda x: spec.reference(x, *factors, b, **geometry),
        lambda x: BOUNDS[kind](x, *factors, b, **geometry),
    )


def conv_geometry(data):
    """Kernel, stride, padding, dilation pairs; output and input sizes that give output >= 1."""
    kh, kw = (
        data.draw(st.one_of(st.integers(1, 4), st.sampled_from([5, 7])), label=f"k{a}")
        for a in "hw"
    )
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
