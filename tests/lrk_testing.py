"""Shared helpers for the lrkernels tests: float32 error bounds, layer models, case collection.

Imported by the test modules as a plain module (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable

import lrkernels
import numpy as np
import pytest
from lrkernels import reference

EPS32 = float(np.finfo(np.float32).eps)
# Products of tiny numbers can land in float32 subnormals, where the rounding error is absolute.
SUBNORMAL32 = float(np.finfo(np.float32).smallest_subnormal)
# Safety factor on top of the classic n * u bound (u = eps / 2): generous enough for any summation
# order and FMA use, still orders of magnitude below what a wrong kernel produces.
BOUND_FACTOR = 8.0

CANONICAL_ISAS = ("scalar", "neon", "avx2", "avx512")


def _abs64(a) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.float64))


def lowrank_bound(x, U, V, bias=None) -> np.ndarray:
    """Elementwise bound on |y - y_exact| for y = U (V x) + b computed in float32.

    Stage 1 (t = V x, K terms) errs by <= K u |V||x|; stage 2 (y = U t + b, R + 1 terms) by
    <= (R + 1) u (|U||t| + |b|) plus the propagated stage-1 error |U| K u |V||x|; the cast of
    float64 inputs/weights to float32 adds <= u per factor. All of it is covered by
    8 eps (K + R + 2) (|U| (|V| |x|) + |b|).
    """
    aV = _abs64(V)
    R, K = aV.shape
    mag = (_abs64(x) @ aV.T) @ _abs64(U).T
    if bias is not None:
        mag = mag + _abs64(bias)
    n = K + R + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def linear_bound(x, W, bias=None) -> np.ndarray:
    """Elementwise bound on |y - y_exact| for y = W x + b in float32: 8 eps (K+2) (|W||x| + |b|)."""
    aW = _abs64(W)
    K = aW.shape[1]
    mag = _abs64(x) @ aW.T
    if bias is not None:
        mag = mag + _abs64(bias)
    n = K + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def assert_within_bound(y, ref, bound, case: str = "") -> None:
    """|y - ref| <= bound elementwise (NaN in y is a violation); the message names the case."""
    y64 = np.asarray(y, dtype=np.float64)
    assert y64.shape == ref.shape, f"{case}: shape {y64.shape}, expected {ref.shape}"
    if y64.size == 0:
        return
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(y64 - ref)
        ok = err <= bound
        if ok.all():
            return
        bad = ~ok
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        ratio = np.where(np.isnan(err), np.inf, err / bound)
        worst = float(np.max(ratio))
    raise AssertionError(
        f"{case}: {int(bad.sum())} of {bad.size} outputs outside the float32 error bound "
        f"(worst |err|/bound = {worst:.3g}); first at index {first}: got {y64[first]!r}, "
        f"expected {ref[first]!r}, bound {bound[first]:.3g}"
    )


def check_output_array(y, expected_shape, case: str = "") -> None:
    """A layer result: a fresh, writeable, C-contiguous float32 ndarray of the expected shape."""
    assert isinstance(y, np.ndarray), f"{case}: result is {type(y).__name__}, not ndarray"
    assert y.dtype == np.float32, f"{case}: result dtype {y.dtype}"
    assert y.shape == tuple(expected_shape), (
        f"{case}: result shape {y.shape}, expected {expected_shape}"
    )
    assert y.flags.c_contiguous, f"{case}: result is not C-contiguous"
    assert y.flags.writeable, f"{case}: result is read-only"


@dataclass
class Model:
    """A layer together with its weights, the float64 oracle and the error bound."""

    kind: str
    layer: object
    in_features: int
    out_features: int
    rank: int | None
    reference: Callable
    bound: Callable
    weights: dict

    def describe(self) -> str:
        r = f", rank={self.rank}" if self.rank is not None else ""
        b = self.weights.get("bias") is not None
        return f"{self.kind}(in={self.in_features}, out={self.out_features}{r}, bias={b})"

    def check(self, x, isa: str, case: str = ""):
        """Call the layer on x; check the ISA that ran, the result array and the error bound."""
        case = f"{case} {self.describe()} isa={isa} x.shape={np.shape(x)}".strip()
        y = self.layer(x)
        used = lrkernels.last_used_isa()
        assert used == isa, f"{case}: last_used_isa() == {used!r} after the call, expected {isa!r}"
        xs = np.shape(x)
        check_output_array(y, xs[:-1] + (self.out_features,), case)
        if isinstance(x, np.ndarray):
            assert not np.shares_memory(y, x), f"{case}: result aliases the input"
        assert_within_bound(y, self.reference(x), self.bound(x), case)
        return y


def _rand(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def make_lowrank(rng, in_features, out_features, rank, bias=True, dtype=np.float32) -> Model:
    U = _rand(rng, (out_features, rank), dtype)
    V = _rand(rng, (rank, in_features), dtype)
    b = _rand(rng, (out_features,), dtype) if bias else None
    layer = lrkernels.LowRankLinear(U, V, b)
    return Model(
        "LowRankLinear",
        layer,
        in_features,
        out_features,
        rank,
        lambda x: reference.lowrank_linear(x, U, V, b),
        lambda x: lowrank_bound(x, U, V, b),
        {"U": U, "V": V, "bias": b},
    )


def make_linear(rng, in_features, out_features, bias=True, dtype=np.float32) -> Model:
    W = _rand(rng, (out_features, in_features), dtype)
    b = _rand(rng, (out_features,), dtype) if bias else None
    layer = lrkernels.Linear(W, b)
    return Model(
        "Linear",
        layer,
        in_features,
        out_features,
        None,
        lambda x: reference.linear(x, W, b),
        lambda x: linear_bound(x, W, b),
        {"W": W, "bias": b},
    )


def make_input(rng, batch, in_features, dtype=np.float32):
    """x of shape (batch, in_features), or (in_features,) for batch None."""
    shape = (in_features,) if batch is None else (batch, in_features)
    return _rand(rng, shape, dtype)


def _unaligned_float32(a: np.ndarray) -> np.ndarray:
    """A float32 copy of `a` whose data pointer is not 4-byte aligned."""
    buf = bytearray(a.size * 4 + 1)
    out = np.frombuffer(buf, dtype=np.float32, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _packed_record_rows(a: np.ndarray) -> np.ndarray:
    """float32 rows of a packed structured array: row stride 4 * in + 1 bytes (not 4-aligned)."""
    rec = np.zeros(a.shape[0], dtype=np.dtype([("x", "<f4", (a.shape[1],)), ("pad", "u1")]))
    rec["x"] = a
    return rec["x"]


def input_layouts(rng, batch, in_f):
    """(name, x) pairs: the same kind of data in every layout and dtype the layer must accept."""
    base = make_input(rng, batch, in_f)
    wide = make_input(rng, 3 * batch + 2, 2 * in_f + 7)
    yield "C float32", base
    yield "float64", make_input(rng, batch, in_f, np.float64)
    yield "float16", make_input(rng, batch, in_f, np.float16)
    yield "longdouble", make_input(rng, batch, in_f, np.longdouble)
    yield "Fortran float32", np.asfortranarray(base)
    yield "Fortran float64", np.asfortranarray(make_input(rng, batch, in_f, np.float64))
    yield "column stride x[:, ::2]", wide[:batch, : 2 * in_f : 2]
    yield "row stride x[::3]", wide[: 3 * batch : 3, :in_f]
    yield "row slice of wider float32 x[:, :in]", wide[:batch, :in_f]
    yield "offset row slice x[:, 3:3+in]", wide[:batch, 3 : 3 + in_f]
    yield "row stride + offset x[1::2, 5:5+in]", wide[1 : 2 * batch + 1 : 2, 5 : 5 + in_f]
    yield "column stride float64", make_input(rng, batch, 2 * in_f, np.float64)[:, ::2]
    yield "negative row stride", base[::-1]
    yield "negative column stride", base[:, ::-1]
    yield "transposed view", np.ascontiguousarray(base.T).T
    yield "broadcast row (stride 0)", np.broadcast_to(base[:1], (batch, in_f))
    yield "big-endian float32", base.astype(">f4")
    yield "unaligned float32", _unaligned_float32(base)
    yield "packed record rows", _packed_record_rows(base)
    yield "list of lists", base.astype(np.float64).tolist()


def input_layouts_1d(rng, in_f):
    base = make_input(rng, None, in_f)
    wide = make_input(rng, None, 3 * in_f + 5)
    yield "1-D float32", base
    yield "1-D float64", base.astype(np.float64)
    yield "1-D float16", make_input(rng, None, in_f, np.float16)
    yield "1-D strided x[::3]", wide[: 3 * in_f : 3]
    yield "1-D offset slice", wide[2 : 2 + in_f]
    yield "1-D reversed", base[::-1]
    yield "1-D unaligned", _unaligned_float32(base)
    yield "1-D list of floats", [float(v) for v in base]
    yield "row of a 2-D array", make_input(rng, 4, in_f)[2]
    yield "column of a 2-D array", make_input(rng, in_f, 4)[:, 1]


class Cases:
    """Runs many sub-cases inside one test and reports every failing one by name at the end."""

    def __init__(self, limit: int = 25):
        self.limit = limit
        self.count = 0
        self.failures: list[str] = []

    @contextlib.contextmanager
    def case(self, name: str):
        self.count += 1
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - collect and report all failing cases
            self.failures.append(f"[{name}] {type(exc).__name__}: {exc}")

    def check(self) -> None:
        if self.failures:
            shown = "\n".join(self.failures[: self.limit])
            more = len(self.failures) - self.limit
            tail = f"\n... and {more} more" if more > 0 else ""
            pytest.fail(
                f"{len(self.failures)} of {self.count} cases failed:\n{shown}{tail}", pytrace=False
            )


# Shape vocabulary around the tile edges (every ISA's nr is among 8, 16, 32; mr among 4, 6, 8).
DIMS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65]
RANKS = [1, 2, 3, 7, 8, 9, 16, 17, 33, 64, 128, 256]


def batches_for(mr: int) -> list:
    """Batch sizes around the row tile mr of an ISA, plus 0, small odd ones and large ones."""
    values = {
        0,
        1,
        2,
        3,
        5,
        7,
        11,
        13,
        mr - 1,
        mr,
        mr + 1,
        2 * mr - 1,
        2 * mr,
        2 * mr + 1,
        3 * mr + 2,
        100,
        300,
    }
    return sorted(v for v in values if v >= 0)


def blocking_configs(mr: int, nr: int) -> list:
    """Small cache blocks for `_core._set_blocking`, so small shapes cross every block edge.

    Returned as (id, kwargs). nc/mc/mb are rounded down to tile multiples by the library; the
    "+1" variants check that rounding.
    """
    return [
        ("kc5-nc2nr-mc2mr-mbmr", {"kc": 5, "nc": 2 * nr, "mc": 2 * mr, "mb": mr}),
        ("kc1-ncnr-mcmr-mb2mr", {"kc": 1, "nc": nr, "mc": mr, "mb": 2 * mr}),
        ("kc7-nc2nr-mc2mr-mb3mr", {"kc": 7, "nc": 2 * nr, "mc": 2 * mr, "mb": 3 * mr}),
        ("kc5-nc3nr-mcmr", {"kc": 5, "nc": 3 * nr, "mc": mr}),
        ("kc3-only", {"kc": 3}),
        ("nc-mc-mb-only", {"nc": nr, "mc": 2 * mr, "mb": 5 * mr}),
        ("kc2-rounding", {"kc": 2, "nc": 2 * nr + 1, "mc": 2 * mr + 1, "mb": 2 * mr + 1}),
        ("tiny-rounding", {"kc": 1, "nc": 1, "mc": 1, "mb": 1}),
    ]


# --------------------------------------------------------------------------------------------
# 2-D convolutions: Conv2d and TuckerConv2d
# --------------------------------------------------------------------------------------------

LAYOUTS = ("NCHW", "NHWC")


def pair(value) -> tuple:
    """An int or a pair -> (a, b)."""
    return (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value)


def conv_output_hw(hw, kernel_size, stride=1, padding=0, dilation=1) -> tuple:
    """(Ho, Wo) by the formula Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1 (may be <= 0)."""
    out = []
    for size, k, s, p, d in zip(hw, *(pair(v) for v in (kernel_size, stride, padding, dilation))):
        span = d * (k - 1) + 1
        out.append((size + 2 * p - span) // s + 1 if size + 2 * p >= span else 0)
    return tuple(out)


def image_shape(batch, channels, hw, layout) -> tuple:
    h, w = hw
    return (batch, channels, h, w) if layout == "NCHW" else (batch, h, w, channels)


def conv2d_bound(x, weight, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"):
    """Elementwise bound on |y - y_exact| for a dense convolution computed in float32.

    Every output is a dot product of Cin kh kw terms plus the bias, so, as for `linear_bound`:
    8 eps (Cin kh kw + 2) (|W| * |x| + |b|), with * the same convolution (zero padding included).
    """
    aw = _abs64(weight)
    ab = None if bias is None else _abs64(bias)
    mag = reference.conv2d(_abs64(x), aw, ab, stride, padding, dilation, layout)
    _, cin, kh, kw = aw.shape
    n = cin * kh * kw + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def tucker_conv2d_bound(
    x, first, core, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """Elementwise bound on |y - y_exact| for the Tucker-2 convolution computed in float32.

    The magnitude chains the absolute values through the three stages, |last| * (|core| *
    (|first| * |x|)) + |b|. Stage by stage the rounding errors add up to (Cin + R_in kh kw +
    R_out + 1) u times it; the terms also include Cin kh kw + R_in, the count of a kernel that
    merges `first` into the core convolution (a Cin kh kw dot product with weights that carry
    an R_in-term rounding of their own), so either order of evaluation is covered:
    8 eps (Cin kh kw + R_in + R_in kh kw + R_out + 2) (magnitude).
    """
    af, ac, al = _abs64(first), _abs64(core), _abs64(last)
    ab = None if bias is None else _abs64(bias)
    mag = reference.tucker_conv2d(_abs64(x), af, ac, al, ab, stride, padding, dilation, layout)
    r_in, cin = af.shape
    r_out, _, kh, kw = ac.shape
    n = cin * kh * kw + r_in + r_in * kh * kw + r_out + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


@dataclass
class ConvModel:
    """A Conv2d or TuckerConv2d with its weights, geometry, float64 oracle and error bound."""

    kind: str
    layer: object
    in_channels: int
    out_channels: int
    ranks: tuple | None
    kernel_size: tuple
    geometry: dict  # stride, padding, dilation, layout as given to the constructor
    reference: Callable
    bound: Callable
    weights: dict

    @property
    def layout(self) -> str:
        return self.geometry["layout"]

    def describe(self) -> str:
        r = f", ranks={self.ranks}" if self.ranks is not None else ""
        g = self.geometry
        return (
            f"{self.kind}(Cin={self.in_channels}, Cout={self.out_channels}{r}, "
            f"kernel={self.kernel_size}, stride={g['stride']}, padding={g['padding']}, "
            f"dilation={g['dilation']}, layout={g['layout']}, "
            f"bias={self.weights.get('bias') is not None})"
        )

    def output_shape(self, x_shape) -> tuple:
        g = self.geometry
        if self.layout == "NCHW":
            n, _, h, w = x_shape
        else:
            n, h, w, _ = x_shape
        hw = conv_output_hw((h, w), self.kernel_size, g["stride"], g["padding"], g["dilation"])
        return image_shape(n, self.out_channels, hw, self.layout)

    def check(self, x, isa: str, case: str = ""):
        """Call the layer on x; check the ISA that ran, the result array and the error bound."""
        case = f"{case} {self.describe()} isa={isa} x.shape={np.shape(x)}".strip()
        y = self.layer(x)
        used = lrkernels.last_used_isa()
        assert used == isa, f"{case}: last_used_isa() == {used!r} after the call, expected {isa!r}"
        check_output_array(y, self.output_shape(np.shape(x)), case)
        if isinstance(x, np.ndarray):
            assert not np.shares_memory(y, x), f"{case}: result aliases the input"
        assert_within_bound(y, self.reference(x), self.bound(x), case)
        return y


def make_conv2d(
    rng,
    in_channels,
    out_channels,
    kernel_size,
    *,
    bias=True,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    dtype=np.float32,
) -> ConvModel:
    kh, kw = pair(kernel_size)
    W = _rand(rng, (out_channels, in_channels, kh, kw), dtype)
    b = _rand(rng, (out_channels,), dtype) if bias else None
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "layout": layout}
    layer = lrkernels.Conv2d(W, b, **geometry)
    return ConvModel(
        "Conv2d",
        layer,
        in_channels,
        out_channels,
        None,
        (kh, kw),
        geometry,
        lambda x: reference.conv2d(x, W, b, **geometry),
        lambda x: conv2d_bound(x, W, b, **geometry),
        {"weight": W, "bias": b},
    )


def make_tucker_conv2d(
    rng,
    in_channels,
    out_channels,
    ranks,
    kernel_size,
    *,
    bias=True,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    dtype=np.float32,
) -> ConvModel:
    kh, kw = pair(kernel_size)
    r_in, r_out = pair(ranks)
    first = _rand(rng, (r_in, in_channels), dtype)
    core = _rand(rng, (r_out, r_in, kh, kw), dtype)
    last = _rand(rng, (out_channels, r_out), dtype)
    b = _rand(rng, (out_channels,), dtype) if bias else None
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "layout": layout}
    layer = lrkernels.TuckerConv2d(first, core, last, b, **geometry)
    return ConvModel(
        "TuckerConv2d",
        layer,
        in_channels,
        out_channels,
        (r_in, r_out),
        (kh, kw),
        geometry,
        lambda x: reference.tucker_conv2d(x, first, core, last, b, **geometry),
        lambda x: tucker_conv2d_bound(x, first, core, last, b, **geometry),
        {"first": first, "core": core, "last": last, "bias": b},
    )


def make_image(rng, batch, channels, hw, layout="NCHW", dtype=np.float32):
    """A random image batch: (N, C, H, W) for NCHW, (N, H, W, C) for NHWC."""
    return _rand(rng, image_shape(batch, channels, hw, layout), dtype)


def image_layouts(rng, batch, channels, hw, layout):
    """(name, x) pairs: images of one shape in the dtypes and memory layouts a layer must accept."""
    h, w = hw
    c_axis = 1 if layout == "NCHW" else 3
    w_axis = 3 if layout == "NCHW" else 2
    h_axis = 2 if layout == "NCHW" else 1

    def widened(axis, factor, extra=0):
        shape = list(image_shape(batch, channels, hw, layout))
        shape[axis] = factor * shape[axis] + extra
        return _rand(rng, tuple(shape))

    def take(a, axis, sl):
        index = [slice(None)] * 4
        index[axis] = sl
        return a[tuple(index)]

    base = make_image(rng, batch, channels, hw, layout)
    other = "NHWC" if layout == "NCHW" else "NCHW"
    to_layout = (0, 2, 3, 1) if layout == "NHWC" else (0, 3, 1, 2)
    yield "C float32", base
    yield "float64", make_image(rng, batch, channels, hw, layout, np.float64)
    yield "float16", make_image(rng, batch, channels, hw, layout, np.float16)
    yield "longdouble", make_image(rng, batch, channels, hw, layout, np.longdouble)
    last = "channel" if layout == "NHWC" else "W"
    yield f"x[..., ::2] ({last} stride 2)", widened(3, 2)[..., ::2]
    yield "float64 x[..., ::2]", widened(3, 2).astype(np.float64)[..., ::2]
    yield "W stride 3", take(widened(w_axis, 3), w_axis, slice(None, None, 3))
    yield "H stride 2", take(widened(h_axis, 2), h_axis, slice(None, None, 2))
    yield "batch stride x[::2]", widened(0, 2)[::2]
    yield "channel slice [3:3+C] of a wider array", take(
        widened(c_axis, 1, 5), c_axis, slice(3, 3 + channels)
    )
    yield "channel stride 2", take(widened(c_axis, 2), c_axis, slice(None, None, 2))
    yield (
        f"transposed view ({other} array viewed as {layout})",
        np.ascontiguousarray(base.transpose(np.argsort(to_layout))).transpose(to_layout),
    )
    yield "negative W stride", take(base, w_axis, slice(None, None, -1))
    yield "negative channel stride", take(base, c_axis, slice(None, None, -1))
    yield "Fortran order", np.asfortranarray(base)
    yield "broadcast batch (stride 0)", np.broadcast_to(base[:1], base.shape)
    yield "big-endian float32", base.astype(">f4")
    yield "unaligned float32", _unaligned_float32(base)


@dataclass(frozen=True)
class ConvCase:
    """One geometry of a convolution test: shapes, kernel, stride, padding, dilation, bias."""

    batch: int
    in_channels: int
    out_channels: int
    hw: tuple
    kernel_size: tuple
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    bias: bool = True
    ranks: tuple = (3, 5)  # TuckerConv2d only

    def __post_init__(self):
        assert min(self.output_hw()) >= 1, f"test case without output: {self}"

    def geometry(self, layout) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "layout": layout,
        }

    def output_hw(self) -> tuple:
        return conv_output_hw(self.hw, self.kernel_size, self.stride, self.padding, self.dilation)

    def __str__(self) -> str:
        return (
            f"N={self.batch} Cin={self.in_channels} Cout={self.out_channels} HxW={self.hw} "
            f"k={self.kernel_size} stride={self.stride} padding={self.padding} "
            f"dilation={self.dilation} bias={self.bias} ranks={self.ranks}"
        )


# Kernel geometries of the sweep and the values cycled through it.
CONV_KERNELS = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1), (3, 5)]
CONV_STRIDES = [1, 2, (1, 2)]
CONV_DILATIONS = [1, 2]
CONV_PADDINGS = ["zero", "same", "large"]  # 0, k // 2, k // 2 + 2
CONV_CHANNELS = [1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64]
CONV_SPATIAL = [(5, 7), (9, 6), (13, 11), (1, 1), (6, 9), (8, 8), (2, 3), (15, 13)]
CONV_RANKS = [1, 3, 5, 17, 8, 16, 2, 9]


def conv_padding(kind, kernel_size):
    kh, kw = kernel_size
    if kind == "zero":
        return 0
    extra = 2 if kind == "large" else 0
    p = (kh // 2 + extra, kw // 2 + extra)
    return p[0] if p[0] == p[1] else p


def conv_sweep_cases() -> list:
    """Every kernel x stride x dilation x padding; channels, sizes, batch and ranks cycle along.

    The spatial size is the first of CONV_SPATIAL (from a rotating start) that gives an output
    of at least 1x1, so 1x1 inputs occur exactly with the paddings that make them valid.
    """
    cases = []
    i = 0
    for kernel in CONV_KERNELS:
        for stride in CONV_STRIDES:
            for dilation in CONV_DILATIONS:
                for pad_kind in CONV_PADDINGS:
                    padding = conv_padding(pad_kind, kernel)
                    for j in range(len(CONV_SPATIAL)):
                        hw = CONV_SPATIAL[(i + j) % len(CONV_SPATIAL)]
                        if min(conv_output_hw(hw, kernel, stride, padding, dilation)) >= 1:
                            break
                    else:
                        raise AssertionError(f"no valid size for {kernel} {padding} {dilation}")
                    nc = len(CONV_CHANNELS)
                    cases.append(
                        ConvCase(
                            batch=3 if i % 4 in (1, 2) else 1,
                            in_channels=CONV_CHANNELS[i % nc],
                            out_channels=CONV_CHANNELS[(5 * i + 3) % nc],
                            hw=hw,
                            kernel_size=kernel,
                            stride=stride,
                            padding=padding,
                            dilation=dilation,
                            bias=i % 5 != 2,
                            ranks=(
                                CONV_RANKS[i % len(CONV_RANKS)],
                                CONV_RANKS[(3 * i + 2) % len(CONV_RANKS)],
                            ),
                        )
                    )
                    i += 1
    return cases


def run_in_thread(fn):
    """fn() in a fresh thread (an empty per-thread scratch); its result, or its exception raised."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive(), "worker thread hung"
    if "error" in result:
        raise result["error"]
    return result["value"]


def run_concurrently(calls) -> list:
    """calls[i]() in len(calls) threads released together by a barrier; the errors, by thread."""
    barrier = threading.Barrier(len(calls))
    errors = []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            calls[i]()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    return errors


# --------------------------------------------------------------------------------------------
# CPConv2d: 1x1 Cin -> R, kh x 1 and 1 x kw depthwise, 1x1 R -> Cout
# --------------------------------------------------------------------------------------------

# The staged float64 oracle, when this lrkernels has it (resolved once, at import).
CP_REFERENCE = getattr(reference, "cp_conv2d", None)


def cp_merged_weight(first, vertical, horizontal, last) -> np.ndarray:
    """The dense float64 (Cout, Cin, kh, kw) weight of a CP convolution:
    W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c]."""
    f, v, h, la = (np.asarray(a, dtype=np.float64) for a in (first, vertical, horizontal, last))
    return np.einsum("or,ry,rx,rc->ocyx", la, v, h, f, optimize=True)


def cp_conv2d_merged(
    x, first, vertical, horizontal, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """The CP convolution as one dense float64 convolution with the merged weight."""
    weight = cp_merged_weight(first, vertical, horizontal, last)
    b = None if bias is None else np.asarray(bias, dtype=np.float64)
    return reference.conv2d(x, weight, b, stride, padding, dilation, layout)


def cp_conv2d_reference(
    x, first, vertical, horizontal, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """The float64 oracle: `reference.cp_conv2d` where it exists, else the merged dense weight."""
    fn = CP_REFERENCE if CP_REFERENCE is not None else cp_conv2d_merged
    return fn(x, first, vertical, horizontal, last, bias, stride, padding, dilation, layout)


def cp_conv2d_bound(
    x, first, vertical, horizontal, last, bias=None, stride=1, padding=0, dilation=1, layout="NCHW"
):
    """Elementwise bound on |y - y_exact| for the CP convolution computed in float32.

    The magnitude is the convolution of |x| with the merged weight of the absolute factors,
    sum_r |last||vertical||horizontal||first| (the same as chaining |.| through the four stages),
    plus |b|. Stage by stage the rounding errors add up to (Cin + kh + kw + R + 1) u times it; a
    kernel that merges the factors does a Cin kh kw dot product whose weights carry an R-term sum
    of 3-fold products (R + 3 roundings). The terms cover both orders of evaluation:
    8 eps (Cin kh kw + kh + kw + 2 R + 3 + 2) (magnitude).
    """
    af, av, ah, al = (_abs64(a) for a in (first, vertical, horizontal, last))
    ab = None if bias is None else _abs64(bias)
    mag = reference.conv2d(
        _abs64(x), cp_merged_weight(af, av, ah, al), ab, stride, padding, dilation, layout
    )
    rank, cin = af.shape
    kh, kw = av.shape[1], ah.shape[1]
    n = cin * kh * kw + kh + kw + 2 * rank + 3 + 2
    return BOUND_FACTOR * n * (EPS32 * mag + SUBNORMAL32)


def make_cp_conv2d(
    rng,
    in_channels,
    out_channels,
    rank,
    kernel_size,
    *,
    bias=True,
    stride=1,
    padding=0,
    dilation=1,
    layout="NCHW",
    dtype=np.float32,
) -> ConvModel:
    """A CPConv2d with random factors; `ranks` of the model is the int rank R."""
    kh, kw = pair(kernel_size)
    first = _rand(rng, (rank, in_channels), dtype)
    vertical = _rand(rng, (rank, kh), dtype)
    horizontal = _rand(rng, (rank, kw), dtype)
    last = _rand(rng, (out_channels, rank), dtype)
    b = _rand(rng, (out_channels,), dtype) if bias else None
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "layout": layout}
    layer = lrkernels.CPConv2d(first, vertical, horizontal, last, b, **geometry)
    factors = (first, vertical, horizontal, last, b)
    return ConvModel(
        "CPConv2d",
        layer,
        in_channels,
        out_channels,
        rank,
        (kh, kw),
        geometry,
        lambda x: cp_conv2d_reference(x, *factors, **geometry),
        lambda x: cp_conv2d_bound(x, *factors, **geometry),
        {"first": first, "vertical": vertical, "horizontal": horizontal, "last": last, "bias": b},
    )
