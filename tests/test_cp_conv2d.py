"""CPConv2d (1x1 Cin->R, kh x 1 depthwise along H, 1 x kw depthwise along W, 1x1 R->Cout + bias)
only: the staged float64 oracle against the merged dense weight, hand-computed outputs (where
the H and W padding belong, the orientation of the two depthwise passes), its dimensions and
repr, and the rank-mismatch messages. Everything every layer kind shares (the sweeps against the
reference on every ISA and layout, dtypes, blocking, threads, properties, argument checks) is in
test_conformance*.py."""

from __future__ import annotations

import numpy as np
import pytest

import lrkernels
from conv_cases import conv_sweep_cases
from lrk_testing import (
    EPS32,
    LAYOUTS,
    Cases,
    assert_within_bound,
    check_output_array,
    check_padded_window_sums,
    cp_conv2d_bound,
    cp_conv2d_merged,
    image_shape,
    raises,
)
from lrkernels import reference

F32 = np.float32
EPS64 = float(np.finfo(np.float64).eps)


def test_reference_matches_merged_weight(rng):
    """The staged float64 `reference.cp_conv2d` equals the dense convolution with the merged
    weight W[o, c, y, x] = sum_r last[o, r] vertical[r, y] horizontal[r, x] first[r, c]."""
    results = Cases()
    for i, case in enumerate(conv_sweep_cases()[::3]):
        layout = LAYOUTS[i % 2]
        with results.case(f"{case} layout={layout}"):
            (kh, kw), r = case.kernel, case.ranks[0]
            factors = [
                rng.standard_normal(s)
                for s in [(r, case.in_dim), (r, kh), (r, kw), (case.out_dim, r)]
            ]
            b = rng.standard_normal(case.out_dim) if case.bias else None
            x = rng.standard_normal(image_shape(case.batch, case.in_dim, case.hw, layout))
            geo = case.geometry(layout)
            staged = reference.cp_conv2d(x, *factors, b, **geo)
            merged = cp_conv2d_merged(x, *factors, b, **geo)
            # float64 rounding of both evaluation orders only: the float32 bound scaled to eps64.
            tol = cp_conv2d_bound(x, *factors, b, **geo) * (EPS64 / EPS32)
            assert_within_bound(staged, merged, tol, "reference.cp_conv2d vs merged weight")
    results.check()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_known_values(isa, layout):
    """All-ones factors: y = bias + R Cin (number of in-range pixels of the window); the H
    padding belongs to the vertical stage and the W padding to the horizontal one (outputs
    beyond the image get the bias only)."""
    cin, rank = 2, 3
    layer = lrkernels.CPConv2d(
        np.ones((rank, cin)),
        np.ones((rank, 3)),
        np.ones((rank, 3)),
        np.ones((2, rank)),
        np.array([0.5, -1.0]),
        padding=(1, 2),
        layout=layout,
    )
    check_padded_window_sums(layer, isa, rank * cin, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_impulse_response_orientation(isa, layout):
    """One input pixel set to 1: the output is the kernel vertical[y] * horizontal[x] flipped
    (cross-correlation), vertical along H and horizontal along W, exactly."""
    vertical = np.array([[1.0, 2.0, 3.0]])
    horizontal = np.array([[1.0, 10.0, 100.0, 1000.0, 10000.0]])
    layer = lrkernels.CPConv2d(
        [[1.0]], vertical, horizontal, [[1.0]], padding=(1, 2), layout=layout
    )
    x = np.zeros((5, 7), F32)
    x[2, 3] = 1.0
    y = layer(x[None, None] if layout == "NCHW" else x[None, :, :, None])
    assert lrkernels.last_used_isa() == isa
    expected = np.zeros((5, 7), F32)
    for i in range(1, 4):
        for j in range(1, 6):
            expected[i, j] = vertical[0, 3 - i] * horizontal[0, 5 - j]
    check_output_array(y, (1, 1, 5, 7) if layout == "NCHW" else (1, 5, 7, 1))
    np.testing.assert_array_equal(y.reshape(5, 7), expected)


def test_dimensions_and_repr():
    layer = lrkernels.CPConv2d(
        np.ones((3, 7)),
        np.ones((3, 1)),
        np.ones((3, 5)),
        np.ones((4, 3)),
        np.ones(4),
        stride=(1, 2),
        padding=(2, 0),
        dilation=3,
        layout="NHWC",
    )
    assert (layer.in_channels, layer.out_channels, layer.rank) == (7, 4, 3)
    assert type(layer.rank) is int
    assert layer.kernel_size == (1, 5) and layer.dilation == (3, 3)
    text = repr(layer)
    assert text.startswith("CPConv2d(") and "rank=3" in text and "NHWC" in text, text


@pytest.mark.parametrize(
    "changes, texts",
    [
        ({"first": (3, 4)}, ["(3, 4)", "(2, 3)", "(3, 2)"]),
        ({"vertical": (3, 3)}, ["(3, 3)", "(2, 4)", "(2, 3)", "(3, 2)"]),
        ({"horizontal": (1, 5)}, ["(1, 5)", "(2, 4)", "(2, 3)", "(3, 2)"]),
        ({"last": (3, 5)}, ["(3, 5)", "(2, 4)", "(2, 3)"]),
        ({"vertical": (3, 2), "horizontal": (3, 2)}, ["(3, 2)", "(2, 4)"]),  # depthwise rank
        ({"last": (2, 3), "bias": None}, ["(2, 3)", "(2, 4)"]),  # last transposed
        ({"vertical": (3, 2)}, ["(3, 2)", "(2, 4)"]),  # vertical transposed (kh, R)
    ],
    ids=["first", "vertical", "horizontal", "last", "depthwise", "last-T", "vertical-T"],
)
def test_rank_mismatch_names_the_shapes(changes, texts):
    shapes = {
        "first": (2, 4),
        "vertical": (2, 3),
        "horizontal": (2, 3),
        "last": (3, 2),
        "bias": (3,),
    }
    shapes.update(changes)
    args = {k: None if s is None else np.ones(s, F32) for k, s in shapes.items()}
    with raises(ValueError, *texts):
        lrkernels.CPConv2d(**args)
