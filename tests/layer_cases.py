"""The cases the tests are made of, for every layer kind of the table: one layer and its input
(`Case`, `conv`), the vocabulary of shapes around the micro-kernel tiles (dims, ranks, batches,
shrunken cache blocks), and the input and weight layouts and dtypes a layer must accept. The
named sweeps are in layer_sweeps.py (linear_cases.py, conv_cases.py). Imported by the test
modules as a plain module (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from layer_table import SPEC
from lrk_testing import conv_output_hw, image_shape, make_model, rand

F32 = np.float32


# --------------------------------------------------------------------------------------------
# One case: a layer's shapes and geometry, and the input's batch (and image size)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A layer of any kind and its input. `ranks` is a pool the kind takes its ranks from (none,
    the first, or both); `hw` is None for a linear layer, whose batch None means a 1-D x."""

    batch: int | None
    in_dim: int
    out_dim: int
    hw: tuple | None = None
    kernel: tuple = (1, 1)
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    bias: bool = True
    ranks: tuple = (3, 5)
    activation: object = None  # the layer's fused output clamp

    def __post_init__(self):
        if self.hw is not None:
            assert min(self.output_hw()) >= 1, f"test case without output: {self}"

    def output_hw(self) -> tuple:
        return conv_output_hw(self.hw, self.kernel, self.stride, self.padding, self.dilation)

    def geometry(self, layout) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, layout=layout)

    def model(self, rng, kind, layout=None, **kwargs):
        geometry = self.geometry(layout) if SPEC[kind].conv else {}
        return make_model(
            rng,
            kind,
            self.in_dim,
            self.out_dim,
            self.ranks,
            self.kernel,
            bias=self.bias,
            **{"activation": self.activation, **geometry, **kwargs},
        )

    def input(self, rng, model, dtype=F32):
        return model.make_input(rng, self.batch, self.hw, dtype)

    def __str__(self) -> str:
        g = (
            ""
            if self.hw is None
            else (
                f" HxW={self.hw} k={self.kernel} stride={self.stride} padding={self.padding} "
                f"dilation={self.dilation}"
            )
        )
        act = "" if self.activation is None else f" activation={self.activation!r}"
        return (
            f"batch={self.batch} in={self.in_dim} out={self.out_dim}{g} bias={self.bias} "
            f"ranks={self.ranks}{act}"
        )


def conv(
    batch,
    cin,
    cout,
    hw,
    kernel,
    stride=1,
    padding=0,
    dilation=1,
    *,
    ranks=(3, 5),
    bias=True,
    activation=None,
):
    """A convolution Case; `ranks` an int r stands for (r, r)."""
    ranks = (ranks, ranks) if np.ndim(ranks) == 0 else tuple(ranks)
    return Case(
        batch,
        cin,
        cout,
        tuple(hw),
        tuple(kernel),
        stride,
        padding,
        dilation,
        bias,
        ranks,
        activation,
    )


# --------------------------------------------------------------------------------------------
# Vocabulary: shapes around the tile edges, ranks, batches, cache blocks
# --------------------------------------------------------------------------------------------

DIMS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65]

RANKS = [1, 2, 3, 7, 8, 9, 16, 17, 33, 64, 128, 256]

# The fused output clamps every kind is run with: relu, relu6 and an asymmetric hardtanh whose
# bounds are not float32-exact in decimal (the layer clamps at their float32 values).
ACTIVATIONS = ["relu", "relu6", (-0.7, 0.3)]


def with_activation(cases, activations=ACTIVATIONS) -> list:
    """The cases, each with one of `activations` in turn (every activation meets every kind of
    shape the list cycles through)."""
    return [
        dataclasses.replace(c, activation=activations[i % len(activations)])
        for i, c in enumerate(cases)
    ]


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
# Inputs and weights in every layout and dtype a layer must accept
# --------------------------------------------------------------------------------------------


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


def make_input(rng, batch, in_f, dtype=F32):
    """x of shape (batch, in_f), or (in_f,) for batch None."""
    return rand(rng, (in_f,) if batch is None else (batch, in_f), dtype)


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


def image_layouts(rng, batch, channels, hw, layout):
    """(name, x) pairs: images of one shape in the dtypes and memory layouts a layer must accept."""
    h, w = hw
    c_axis = 1 if layout == "NCHW" else 3
    w_axis = 3 if layout == "NCHW" else 2
    h_axis = 2 if layout == "NCHW" else 1

    def widened(axis, factor, extra=0):
        shape = list(image_shape(batch, channels, hw, layout))
        shape[axis] = factor * shape[axis] + extra
        return rand(rng, tuple(shape))

    def take(a, axis, sl):
        index = [slice(None)] * 4
        index[axis] = sl
        return a[tuple(index)]

    base = rand(rng, image_shape(batch, channels, hw, layout))
    other = "NHWC" if layout == "NCHW" else "NCHW"
    to_layout = (0, 2, 3, 1) if layout == "NHWC" else (0, 3, 1, 2)
    yield "C float32", base
    yield "float64", rand(rng, image_shape(batch, channels, hw, layout), np.float64)
    yield "float16", rand(rng, image_shape(batch, channels, hw, layout), np.float16)
    yield "longdouble", rand(rng, image_shape(batch, channels, hw, layout), np.longdouble)
    last = "channel" if layout == "NHWC" else "W"
    yield f"x[..., ::2] ({last} stride 2)", widened(3, 2)[..., ::2]
    yield "float64 x[..., ::2]", widened(3, 2).astype(np.float64)[..., ::2]
    yield "W stride 3", take(widened(w_axis, 3), w_axis, slice(None, None, 3))
    yield "H stride 2", take(widened(h_axis, 2), h_axis, slice(None, None, 2))
    yield "batch stride x[::2]", widened(0, 2)[::2]
    yield (
        "channel slice [3:3+C] of a wider array",
        take(widened(c_axis, 1, 5), c_axis, slice(3, 3 + channels)),
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


def inputs_in_every_layout(rng, case: Case, layout=None):
    """(name, x) for a case's input in every layout and dtype: rows (and 1-D vectors) for a
    linear layer, images for a convolution."""
    if case.hw is None:
        yield from input_layouts(rng, case.batch, case.in_dim)
        if case.batch == 1:
            yield from input_layouts_1d(rng, case.in_dim)
    else:
        yield from image_layouts(rng, case.batch, case.in_dim, case.hw, layout)


def weight_variants(arrays):
    """(name, arrays): float64 arrays (factors and bias, None kept) in every dtype and memory
    layout the constructors accept; the values stay the same."""

    def each(fn):
        return [None if a is None else fn(a) for a in arrays]

    yield "float64", list(arrays)
    yield "float16", each(lambda a: a.astype(np.float16))
    yield "longdouble", each(lambda a: a.astype(np.longdouble))
    yield "Fortran", each(lambda a: np.asfortranarray(a.astype(F32)))
    yield "strided views", each(lambda a: np.repeat(a, 2, axis=-1)[..., ::2])
    yield "negative strides", each(lambda a: np.flip(np.flip(a, 0).copy(), 0))
    yield "transposed views", each(lambda a: np.ascontiguousarray(a.T).T)
    yield "lists", each(lambda a: a.tolist())
    yield (
        "big-endian",
        [None if a is None else a.astype(">f4" if i % 2 else ">f8") for i, a in enumerate(arrays)],
    )
