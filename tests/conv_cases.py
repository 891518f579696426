"""The convolutions' geometry vocabulary (kernels, strides, dilations, paddings, channels,
sizes, ranks), their named sweeps (see layer_sweeps.SWEEPS) and their cases for shrunken cache
blocks. `tile` is the ISA's (mr, nr, kc).
"""

from __future__ import annotations

import itertools

from layer_cases import Case, conv, with_activation
from layer_table import N_RANKS, SPEC
from lrk_testing import conv_output_hw

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


def conv_tile_edges(kind, tile):
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


def conv_geometry(kind, tile):
    """Kernels 1, 3, 5, 7, 1x3, 3x1, 3x5 x stride 1, 2, (1, 2) x dilation 1, 2 x padding 0,
    k//2, k//2 + 2, with channels, sizes, batch, ranks and bias cycling along."""
    return conv_sweep_cases()


def conv_sizes(kind, tile):
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


def conv_ranks(kind, tile):
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


def conv_blocked_cases(kind, tile) -> list:
    """Cases for shrunken cache blocks: K, ranks, channels, pixels and batch cross several
    blocks, none a block multiple."""
    mr, nr = tile.mr, tile.nr
    C = conv
    return [
        C(3, 7, 2 * nr + 3, (9, 6), (3, 3), padding=1, ranks=(2 * nr + 1, 5)),
        C(1, 23, nr - 1, (13, 11), (3, 5), 2, (1, 2), (2, 1), ranks=(nr + 1, 17)),
        C(3, 33, 3 * nr + 1, (5, 7), (1, 1), bias=False, ranks=(3 * nr + 1, 3)),
        C(1, 1, 1, (1, 1), (3, 3), padding=1, ranks=(1, 1)),
        C(1, 9, nr, (2 * mr + 1, 3), (5, 5), padding=2, ranks=(nr, 2 * nr)),
        C(3, 17, 5, (4, 2 * mr + 3), (1, 7), padding=(0, 3), stride=(1, 2), ranks=(nr - 1, nr)),
    ]


def conv_activations(kind, tile):
    """The tile-edge channels and the odd sizes (1x1 images, wide rows, many bands), each with
    relu, relu6 or an asymmetric clamp in turn: Conv2d clamps in its kxk stage, the chains in
    their last 1x1 stage."""
    return with_activation(conv_tile_edges(kind, tile) + conv_sizes(kind, tile))
