"""What the tests sweep, for every layer kind of the table: the geometry cases (shapes around
the micro-kernel tiles, ranks around the tile widths, batches, kernels, strides, paddings,
dilations), the shrunken cache blocks, and the input and weight layouts and dtypes a layer must
accept. Imported by the test modules as a plain module (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from layer_table import N_RANKS, SPEC
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
            **geometry,
            **kwargs,
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
        return (
            f"batch={self.batch} in={self.in_dim} out={self.out_dim}{g} bias={self.bias} "
            f"ranks={self.ranks}"
        )


def conv(batch, cin, cout, hw, kernel, stride=1, padding=0, dilation=1, *, ranks=(3, 5), bias=True):
    """A convolution Case; `ranks` an int r stands for (r, r)."""
    ranks = (ranks, ranks) if np.ndim(ranks) == 0 else tuple(ranks)
    return Case(batch, cin, cout, tuple(hw), tuple(kernel), stride, padding, dilation, bias, ranks)


# --------------------------------------------------------------------------------------------
# Vocabulary: shapes around the tile edges, ranks, batches, cache blocks, conv geometry
# --------------------------------------------------------------------------------------------

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
                        Case(
                            batch=3 if i % 4 in (1, 2) else 1,
                            in_dim=CONV_CHANNELS[i % nc],
                            out_dim=CONV_CHANNELS[(5 * i + 3) % nc],
                            hw=hw,
                            kernel=kernel,
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


# --------------------------------------------------------------------------------------------
# Sweeps: named lists of cases, per kind (linear sweeps for linear kinds, conv sweeps for
# convolutions; "ranks" only for factorized kinds). `tile` is the ISA's (mr, nr, kc).
# --------------------------------------------------------------------------------------------


def _linear_tile_edges(kind, tile):
    """Every (in, out) pair of DIMS; ranks, batches (1-D included) and bias cycle along."""
    batches = [None] + batches_for(tile.mr)
    return [
        Case(
            batches[(3 * i + j) % len(batches)],
            in_f,
            out_f,
            bias=(i + j) % 2 == 0,
            ranks=(RANKS[(i + 2 * j) % len(RANKS)],) * 2,
        )
        for i, in_f in enumerate(DIMS)
        for j, out_f in enumerate(DIMS)
    ]


def _linear_ranks(kind, tile):
    """Ranks 1..256 against a few in/out shapes and batches around mr."""
    mr = tile.mr
    shapes = [(1, 1), (17, 33), (64, 5), (33, 65)]
    return [
        Case(batch, in_f, out_f, bias=(rank + k) % 2 == 0, ranks=(rank, rank))
        for rank in RANKS
        for k, (in_f, out_f) in enumerate(shapes)
        for batch in (None, 1, mr - 1, mr, mr + 1, 2 * mr + 1, 37)
    ]


def _linear_batches(kind, tile):
    """Batch 0, 1, 2, 3, odd, mr-1 .. 2*mr+1, 100 and 300 on shapes at the tile edges, with and
    without bias; and shapes larger than the default blocks (K > kc, out > nc, batch > mc)."""
    nr = tile.nr
    shapes = [
        (7, 3, 5),
        (33, nr + 1, 17),
        (65, 2 * nr - 1, 64),
        (16, nr, nr),
        (256, 3 * nr + 5, 33),
    ]  # (in, out, rank)
    cases = [
        Case(batch, in_f, out_f, bias=bias, ranks=(rank, rank))
        for in_f, out_f, rank in shapes
        for batch in [None] + batches_for(tile.mr)
        for bias in (True, False)
    ]
    return cases + [Case(b, 1000, 600, ranks=(300, 300)) for b in (300, 3)]


def _conv_tile_edges(kind, tile):
    """Cin x Cout over the tile-edge channel counts, 3x3 'same' and 1x1 kernels, ranks cycling;
    a factorized kind takes every other pair (its "ranks" sweep crosses the tile edges too)."""
    couts = [1, 3, 8, 9, 16, 17, 31, 33, 64]
    cases = []
    for i, cin in enumerate(CONV_CHANNELS):
        for j, cout in enumerate(couts):
            k = (3, 3) if (i + j) % 3 else (1, 1)
            cases.append(
                conv(
                    1 + (i + j) % 2 * 2,
                    cin,
                    cout,
                    [(5, 7), (9, 6), (4, 4)][(i + 2 * j) % 3],
                    k,
                    stride=2 if (i * j) % 4 == 1 else 1,
                    padding=k[0] // 2,
                    bias=(i + j) % 2 == 0,
                    ranks=(CONV_RANKS[(i + j) % 8], CONV_RANKS[(i + 2 * j + 3) % 8]),
                )
            )
    return cases[:: 2 if SPEC[kind].factorized else 1]


def _conv_geometry(kind, tile):
    """Kernels 1, 3, 5, 7, 1x3, 3x1, 3x5 x stride 1, 2, (1, 2) x dilation 1, 2 x padding 0,
    k//2, k//2 + 2, with channels, sizes, batch, ranks and bias cycling along."""
    return conv_sweep_cases()


def _conv_sizes(kind, tile):
    """1x1 inputs (padding makes the output >= 1), outputs and rows/columns that see only the
    padding, strides that skip input rows, asymmetric padding, a dilated kernel exactly as large
    as the input, kernels larger than the input, ranks larger than the channels, wide rows
    (> 96 output pixels) and tall images (many bands), long first-stage sums."""
    C = conv
    return [
        C(1, 3, 5, (1, 1), (3, 3), padding=1, ranks=1),
        C(3, 8, 9, (1, 1), (5, 5), padding=2, ranks=(17, 3)),
        C(3, 17, 4, (1, 1), (1, 1), ranks=(3, 5)),
        C(1, 4, 7, (1, 1), (3, 3), stride=2, padding=3),
        C(1, 9, 16, (1, 1), (1, 1), padding=3, bias=False, ranks=3),  # a ring of bias (0) only
        C(3, 9, 16, (1, 1), (1, 1), padding=(2, 1)),
        C(3, 9, 16, (2, 1), (3, 3), padding=(3, 2), ranks=(16, 5)),
        C(3, 1, 7, (1, 1), (3, 5), padding=(1, 2), ranks=(8, 3)),
        C(1, 1, 1, (1, 1), (7, 7), padding=4, ranks=(33, 1)),  # padding > k // 2, 1x1 input
        C(1, 5, 3, (5, 7), (3, 3), ranks=5),
        C(3, 7, 15, (9, 6), (3, 3), padding=1, ranks=(1, 3)),
        C(3, 16, 17, (13, 11), (5, 5), padding=2, ranks=(9, 8)),
        C(1, 2, 3, (7, 7), (3, 3), dilation=3, ranks=(17, 1)),  # dilated kernel = the input
        C(1, 2, 3, (7, 9), (3, 5), dilation=(3, 2), ranks=2),
        C(1, 4, 5, (11, 13), (3, 3), stride=4, ranks=8),  # stride > kernel: skipped rows
        C(3, 6, 5, (10, 11), (1, 1), stride=3, padding=1, ranks=7),
        C(3, 6, 5, (3, 4), (1, 3), stride=(1, 2), padding=(0, 5), ranks=(3, 5)),
        C(1, 5, 4, (9, 8), (1, 3), padding=(2, 1), ranks=3),  # rows of padding only (kh = 1)
        C(1, 5, 4, (8, 9), (3, 1), padding=(1, 3), ranks=3),  # columns of padding only
        C(3, 4, 6, (6, 7), (3, 5), padding=(0, 4), ranks=16),  # W-only padding, > kw // 2
        C(3, 4, 6, (7, 6), (5, 3), padding=(4, 0), stride=(2, 1), ranks=16),  # H-only padding
        C(1, 3, 8, (32, 29), (3, 3), stride=2, padding=1, ranks=(5, 3)),
        C(1, 16, 33, (28, 28), (3, 3), padding=1, ranks=(9, 17)),
        C(1, 64, 64, (10, 9), (3, 3), padding=1, ranks=(31, 17)),
        C(1, 33, 16, (19, 23), (7, 7), stride=2, padding=3, ranks=(17, 3)),
        C(3, 8, 8, (6, 5), (7, 7), padding=(3, 4), ranks=(3, 5)),  # kernel larger than input
        C(1, 4, 6, (5, 5), (3, 3), padding=1, ranks=(9, 2)),  # R_in > Cin
        C(1, 3, 2, (5, 5), (3, 3), padding=1, ranks=(33, 11)),  # ranks > Cin, Cout
        C(1, 3, 5, (4, 203), (3, 3), padding=1, ranks=(3, 5)),  # a wide output row
        C(1, 3, 5, (3, 150), (1, 7), stride=(1, 2), padding=(0, 5), dilation=(1, 2), ranks=17),
        C(3, 9, 17, (150, 3), (3, 1), stride=(2, 1), dilation=(3, 1), ranks=(5, 3)),  # tall
        C(1, 2, 3, (61, 2), (7, 1), padding=(3, 0), ranks=8),  # tall: the ring wraps often
        C(1, 300, 20, (5, 6), (3, 3), padding=1, stride=(1, 2), ranks=(64, 33)),  # long sums
    ]


def _conv_ranks(kind, tile):
    """One rank: 1..64 around the SIMD widths, four geometries each; two ranks: every
    (R_in, R_out) of 1, 3, 5, 8, 16, 17, 33. Against tile-edge channels and cycling kernels,
    strides, dilations and sizes."""
    if N_RANKS[kind] == 2:
        pools = list(itertools.product([1, 3, 5, 17, 8, 16, 33], repeat=2))
    else:
        pools = [(r, r) for r in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64) for _ in range(4)]
    couts = [1, 7, 9, 16, 17, 33, 64, 3, 8, 15, 31]
    kernels = [(3, 3), (1, 1), (3, 5), (5, 5), (1, 3), (3, 1), (7, 7)]
    sizes = [(5, 7), (9, 6), (6, 6), (1, 1), (7, 5)]
    cases = []
    for i, ranks in enumerate(pools):
        k, hw = kernels[i % len(kernels)], sizes[(i // 3) % len(sizes)]
        stride, padding = (1, 2, (1, 2), (2, 1))[i % 4], (k[0] // 2, k[1] // 2)
        dilation = 2 if i % 3 == 2 else 1
        if min(conv_output_hw(hw, k, stride, padding, dilation)) < 1:
            dilation = 1
        cases.append(
            conv(
                1 + (i % 3 == 1) * 2,
                CONV_CHANNELS[i % len(CONV_CHANNELS)],
                couts[(3 * i + 1) % len(couts)],
                hw,
                k,
                stride,
                padding,
                dilation,
                ranks=ranks,
                bias=i % 4 != 3,
            )
        )
    return cases


SWEEPS = {  # name: (linear cases, conv cases); None where the sweep does not apply
    "tile-edges": (_linear_tile_edges, _conv_tile_edges),
    "batches": (_linear_batches, None),
    "geometry": (None, _conv_geometry),
    "sizes": (None, _conv_sizes),
    "ranks": (_linear_ranks, _conv_ranks),
}


def sweeps_for(kind) -> list:
    spec = SPEC[kind]
    return [
        name
        for name, fns in SWEEPS.items()
        if fns[spec.conv] is not None and (name != "ranks" or spec.factorized)
    ]


def sweep(name, kind, tile) -> list:
    return SWEEPS[name][SPEC[kind].conv](kind, tile)


def blocked_cases(kind, tile) -> list:
    """Cases for shrunken cache blocks: K, ranks, channels, pixels and batch cross several
    blocks, none a block multiple."""
    mr, nr = tile.mr, tile.nr
    if not SPEC[kind].conv:
        shapes = [
            (23, 2 * nr + 5, 5 * nr + 3),
            (64, 3 * nr + 1, 2 * nr + 1),
            (9, 7, nr - 1),
            (1, 1, 1),
            (17, nr, 3 * nr),
        ]  # (in, rank, out)
        return [
            Case(batch, in_f, out_f, bias=k % 2 == 0, ranks=(rank, rank))
            for k, (in_f, rank, out_f) in enumerate(shapes)
            for batch in (None, 1, mr, mr + 1, 2 * mr, 4 * mr + 3, 7 * mr + 1, 61)
        ]
    C = conv
    return [
        C(3, 7, 2 * nr + 3, (9, 6), (3, 3), padding=1, ranks=(2 * nr + 1, 5)),
        C(1, 23, nr - 1, (13, 11), (3, 5), 2, (1, 2), (2, 1), ranks=(nr + 1, 17)),
        C(3, 33, 3 * nr + 1, (5, 7), (1, 1), bias=False, ranks=(3 * nr + 1, 3)),
        C(1, 1, 1, (1, 1), (3, 3), padding=1, ranks=(1, 1)),
        C(1, 9, nr, (2 * mr + 1, 3), (5, 5), padding=2, ranks=(nr, 2 * nr)),
        C(3, 17, 5, (4, 2 * mr + 3), (1, 7), padding=(0, 3), stride=(1, 2), ranks=(nr - 1, nr)),
    ]
